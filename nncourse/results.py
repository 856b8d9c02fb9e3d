"""What a grading run produces, each in one type: the statuses, a submission as the planner
found it, the task a worker executes, its outcome, and the results instructors read.

An outcome is kept as its record (record.py) beside the autograded notebooks; a StudentResult
joins it with the gradebook's score; a CellResult is one grade cell of it, for the exports.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any

from traitlets.config import Config


class Status(enum.StrEnum):
    """What became of a student's submission; the value is what records, CSVs and pages say."""

    GRADED = "graded"
    MISSING = "missing"
    UNGRADABLE = "ungradable"
    CRASHED = "crashed"
    TIMED_OUT = "timed out"


NEEDS_ATTENTION = (Status.UNGRADABLE, Status.CRASHED, Status.TIMED_OUT)
# A grade cell's `grading`: scored by the grader, by a person, or waiting for a person.
AUTO, BY_HAND, NEEDS_MANUAL = "auto", "by hand", "needs manual grading"


@dataclasses.dataclass
class Submission:
    """A submitted folder as the grader found it, before anything in it was parsed."""

    files: dict[str, int] = dataclasses.field(default_factory=dict)  # path -> bytes
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> why not read
    problem: str = ""  # why none of it can be graded
    timestamp: datetime.datetime | None = None
    digest: str = ""


@dataclasses.dataclass
class AssignmentFiles:
    """What grading a submission reads of the course beyond it: read once, shipped with tasks."""

    release_notebooks: dict[str, str]  # notebook -> the release's JSON ("" when not built here)
    release_files: list[str]  # every file of the release, relative to its folder
    kernel_files: dict[str, bytes]  # the source's other files, laid out beside every kernel


@dataclasses.dataclass
class Task:
    """One submission to execute: everything a worker process needs, nothing it must share.

    A worker reads from disk only the submitted folder (submitted/<student>/<assignment>/, by
    the safe reader) and, at read_db_url, a SQLite copy of the master's cells (to restore them;
    record.master_cells), never the gradebook; everything else of the course comes in `files`.
    It writes only into `staging`.
    """

    config: Config
    student: str
    assignment: str
    notebooks: list[str]
    read_db_url: str
    digest: str
    submission: Submission
    files: AssignmentFiles
    staging: str = ""  # where the worker builds the new autograded folder


@dataclasses.dataclass
class Outcome:
    """What became of one student's submission."""

    student: str
    assignment: str
    status: Status
    reason: str = ""
    digest: str = ""
    seconds: float = 0.0
    executed: dict[str, str] = dataclasses.field(
        default_factory=dict
    )  # notebook -> autograded path
    retry: bool = False  # the grading system failed, not the submission: grade it again next run
    flags: list[str] = dataclasses.field(default_factory=list)  # for a human to look at
    submission_id: str = ""  # the gradebook's submission these scores were saved in
    # Written answers (grade cells a person scores): "notebook/grade_id" -> their text's hash,
    # so that a regrading keeps a person's score of an answer that did not change.
    answers: dict[str, str] = dataclasses.field(default_factory=dict)
    # Written answers a person had graded that changed since: to be graded again.
    grade_again: list[str] = dataclasses.field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """The part worth keeping beside the autograded notebooks."""
        return {
            "status": self.status,
            "reason": self.reason,
            "digest": self.digest,
            "seconds": self.seconds,
            "retry": self.retry,
            "flags": self.flags,
            # A record whose submission is no longer the gradebook's was left by a run that
            # stopped between its commit and its renames: the submission is graded again.
            "submission_id": self.submission_id,
            "answers": self.answers,
            "grade_again": self.grade_again,
            "feedback": False,  # set once feedback is written, so a crash before it is repaired
        }


class SubmissionError(Exception):
    """A submission that cannot be graded as it stands; the message says why."""


@dataclasses.dataclass
class ManualGrade:
    """What a person gave one grade cell in the formgrader."""

    manual_score: float | None
    extra_credit: float | None
    manual_comment: str | None


@dataclasses.dataclass
class StudentResult:
    """A student's result in one assignment, as the summary, the exports and the report show it."""

    student: str
    assignment: str
    status: Status
    score: float
    max_score: float
    reason: str = ""
    seconds: float = 0.0
    regraded: bool = False
    flags: list[str] = dataclasses.field(default_factory=list)
    # Written answers no person has graded yet: grade id -> its points, not in the score yet.
    to_grade: dict[str, float] = dataclasses.field(default_factory=dict)
    # Of those, the answers that changed since a person graded them.
    grade_again: list[str] = dataclasses.field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        """Whether an instructor should look at this submission."""
        return self.status in NEEDS_ATTENTION or bool(self.flags)


@dataclasses.dataclass
class CellResult:
    """One student's result in one grade cell."""

    assignment: str
    student: str
    status: Status
    notebook: str
    grade_id: str
    score: float
    max_score: float
    message: str  # the failure as the student's feedback shows it; empty when the cell passed
    grading: str = AUTO  # AUTO, BY_HAND or NEEDS_MANUAL (score 0: its points not yet awarded)
