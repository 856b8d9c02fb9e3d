"""Planning, the first step of a run: what each student submitted, surveyed without parsing or
following anything, and whether it needs grading (a Task) or its last outcome stands."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

from nncourse import crashpoints, exchange
from nncourse.files import NOT_READ, Folder, Refused, course_folder
from nncourse.inert import safe_student_id
from nncourse.limits import GradingLimits, setting
from nncourse.record import read_record
from nncourse.results import AssignmentFiles, Outcome, Status, Submission, Task


def plan_class(
    gb: Gradebook,
    course: CourseDirectory,
    config: Config,
    notebooks: dict[str, list[str]],
    force: bool,
) -> tuple[list[Task], list[Outcome]]:
    """Every student on the roster or in submitted/, for each assignment: a task, or the outcome
    that stands. Planning only reads."""
    roster = sorted({s.id for s in gb.students} | submitters(course))
    limits = GradingLimits(config=config)
    tasks, kept = [], []
    for assignment, names in notebooks.items():
        files = assignment_files(course, assignment, names)
        for student in roster:
            crashpoints.reached("planning")
            kept_or_task = plan_submission(
                gb, course, config, limits, student, assignment, names, files, force
            )
            (tasks if isinstance(kept_or_task, Task) else kept).append(kept_or_task)
    return tasks, kept


def submitters(course: CourseDirectory) -> set[str]:
    """Students with a folder in submitted/ (or a link there, which grading refuses)."""
    folder = Path(course.root) / course.submitted_directory
    return (
        {
            p.name
            for p in folder.iterdir()
            if (p.is_symlink() or p.is_dir()) and not p.name.startswith(".")
        }
        if folder.exists()
        else set()
    )


def plan_submission(
    gb: Gradebook,
    course: CourseDirectory,
    config: Config,
    limits: GradingLimits,
    student: str,
    assignment: str,
    notebooks: list[str],
    files: AssignmentFiles,
    force: bool,
) -> Task | Outcome:
    """Decide on one student's assignment: a task to run, or the outcome already known."""
    submission = inspect_submission(course, limits, student, assignment)
    if submission is None:
        return Outcome(student, assignment, Status.MISSING, reason="no submission")
    if not safe_student_id(student):
        # Kept out of the gradebook, so out of the formgrader, which would run it as HTML.
        return Outcome(
            student,
            assignment,
            Status.UNGRADABLE,
            reason="the student id holds HTML or control characters (<>&\"'` ...), which "
            "nbgrader's formgrader prints unescaped; rename its folder in submitted/",
        )
    digest = submission.digest
    record = read_record(course, student, assignment)
    # Content decides, not timestamp.txt: a resubmission without a new timestamp is regraded too.
    # The record must be of the gradebook's submission: a run stopped between its commit and its
    # renames left the old record, and one stopped between its renames none.
    unchanged = (
        record
        and record["digest"] == digest
        and not record.get("retry")
        and record.get("submission_id")
        and record["submission_id"] == _submission_id(gb, student, assignment)
    )
    if not force and unchanged:
        return Outcome(
            student,
            assignment,
            Status(record["status"]),
            record["reason"],
            digest,
            record["seconds"],
            flags=record.get("flags", []),
            grade_again=record.get("grade_again", []),
        )
    return Task(config, student, assignment, notebooks, "", digest, submission, files)


def _submission_id(gb: Gradebook, student: str, assignment: str) -> str | None:
    """The id of the gradebook's submission of this student for this assignment, if any."""
    try:
        return gb.find_submission(assignment, student).id
    except MissingEntry:
        return None


def inspect_submission(
    course: CourseDirectory, limits: GradingLimits, student: str, assignment: str
) -> Submission | None:
    """What a student submitted, found without parsing or following anything; None: nothing."""
    try:
        with course_folder(course, course.submitted_directory, student, assignment) as folder:
            survey = folder.survey(limits.submission_files)
            found = Submission(survey.files, {**exchange.read_refusals(folder), **survey.refused})
            collected = found.refused.pop(".", "")
            if collected:
                found.problem = f"nbgrader collect refused {folder.label}: {collected}"
            elif survey.truncated:
                found.problem = (
                    f"{folder.label} holds more than {limits.submission_files} files and folders, "
                    f"the limit ({setting('submission_files')}); nothing in it was read"
                )
            elif survey.size > limits.submission_bytes:
                found.problem = (
                    f"{folder.label} holds {survey.size:,} bytes, over the limit of "
                    f"{limits.submission_bytes:,} ({setting('submission_bytes')})"
                )
            else:
                try:
                    found.timestamp = exchange.check_exchange_files(folder)
                except Refused as error:
                    found.problem = str(error)  # says what to do itself
                found.digest = _digest(folder, found, course, assignment, limits)
    except FileNotFoundError:
        return None
    except Refused as error:
        found = Submission(problem=f"{error}. {NOT_READ}")
    found.digest = found.digest or hashlib.sha256(found.problem.encode()).hexdigest()
    return found


def _digest(
    folder: Folder,
    submission: Submission,
    course: CourseDirectory,
    assignment: str,
    limits: GradingLimits,
) -> str:
    """A fingerprint of a submission's files and the assignment's source: a change means regrade."""
    digest = hashlib.sha256()
    for relative in sorted(submission.files):
        if not _ignored(Path(relative), course):
            digest.update(relative.encode() + b"\0")
            folder.update_hash(relative, digest, limits.submission_bytes)
            digest.update(b"\0")
    digest.update(json.dumps(sorted(submission.refused.items())).encode())
    source = Path(course.format_path(course.source_directory, ".", assignment))
    for path in sorted(p for p in source.rglob("*") if p.is_file() and not _ignored(p, course)):
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _ignored(path: Path, course: CourseDirectory) -> bool:
    """Whether nbgrader's CourseDirectory.ignore patterns exclude this file."""
    return any(fnmatch.fnmatch(part, pattern) for part in path.parts for pattern in course.ignore)


def assignment_files(
    course: CourseDirectory, assignment: str, notebooks: list[str]
) -> AssignmentFiles:
    """Read what grading needs of an assignment's release and source, for every task of it."""
    release = Path(course.format_path(course.release_directory, ".", assignment))
    source = Path(course.format_path(course.source_directory, ".", assignment))
    released = {str(p.relative_to(release)): p for p in release.rglob("*") if p.is_file()}
    return AssignmentFiles(
        release_notebooks={
            notebook: released[f"{notebook}.ipynb"].read_text()
            for notebook in notebooks
            if f"{notebook}.ipynb" in released
        },
        release_files=sorted(released),
        kernel_files={
            str(path.relative_to(source)): path.read_bytes()
            for path in sorted(source.rglob("*"))
            if path.is_file()
            and path.suffix != ".ipynb"
            and not _ignored(path.relative_to(source), course)
        },
    )
