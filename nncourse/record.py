"""Recording, the single writer: each outcome's scores go into the gradebook and its staged
folder replaces autograded/<student>/<assignment>/, as one change; the outcome's record is
kept beside the notebooks, for the summary and the next run's plan."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

from nncourse import compat, crashpoints
from nncourse.exchange import EXCHANGE_FILES
from nncourse.files import Refused, course_folder, refusal
from nncourse.results import ManualGrade, Outcome, Status

log = logging.getLogger(__name__)

RECORD_FILE = ".nncourse-grading.json"  # kept in each autograded submission folder

RECORD_BYTES = 1024**2


def prepare_submission(
    gb: Gradebook, student: str, assignment: str, timestamp: datetime.datetime | None
) -> None:
    """Start a submission from scratch in the gradebook: no score of an earlier grading survives."""
    gb.update_or_create_student(student)
    try:
        gb.remove_submission(assignment, student)
    except MissingEntry:
        pass
    if timestamp:
        gb.update_or_create_submission(assignment, student, timestamp=timestamp)
    else:
        gb.update_or_create_submission(assignment, student)


def save_outcome(
    gb: Gradebook,
    config: Config,
    outcome: Outcome,
    notebooks: list[str],
    timestamp: datetime.datetime | None,
    staging: Path,
) -> None:
    """Replace a submission's scores and autograded folder with the new ones, as one change.

    The gradebook changes commit together; the staged folder, record included, is complete
    before they do and replaces the old one after, so a run stopped anywhere can be resumed.
    """
    *_, record = compat.autograde_steps(config)
    course = CourseDirectory(config=config)
    staging.mkdir(parents=True, exist_ok=True)
    graded_before = read_record(course, outcome.student, outcome.assignment) or {}
    with compat.gradebook_transaction(gb):
        by_hand = manual_grades(gb, outcome.student, outcome.assignment)
        prepare_submission(gb, outcome.student, outcome.assignment, timestamp)
        crashpoints.reached("writer-old-removed")
        for notebook in notebooks:
            if notebook not in outcome.executed:
                submission = gb.find_submission_notebook(
                    notebook, outcome.assignment, outcome.student
                )
                for grade in submission.grades:
                    grade.auto_score = 0
                    grade.needs_manual_grade = False
        for notebook, path in outcome.executed.items():
            nb = nbformat.read(path, as_version=4)
            resources = compat.converter_resources(
                outcome.student, outcome.assignment, notebook, course.db_url, Path(path).parent
            )
            nb = compat.run_steps(record, config, nb, resources)
            nbformat.write(nb, path)
            outcome.answers.update(written_answers(nb, notebook))
        _keep_manual_grades(gb, outcome, by_hand, graded_before.get("answers"))
        outcome.submission_id = gb.find_submission(outcome.assignment, outcome.student).id
        write_record(staging, outcome.to_record())
        crashpoints.reached("writer-before-commit")
    crashpoints.reached("writer-after-commit")
    dest = Path(
        course.format_path(course.autograded_directory, outcome.student, outcome.assignment)
    )
    _swap(staging, dest)
    crashpoints.reached("writer-saved")


def manual_grades(gb: Gradebook, student: str, assignment: str) -> dict[str, ManualGrade]:
    """The scores and comments a person gave a submission: "notebook/grade_id" -> ManualGrade."""
    try:
        submission = gb.find_submission(assignment, student)
    except MissingEntry:
        return {}
    found = {}
    for notebook in submission.notebooks:
        comments = {c.name: c.manual_comment for c in notebook.comments}
        for grade in notebook.grades:
            comment = comments.get(grade.name)
            if grade.manual_score is not None or grade.extra_credit or comment:
                found[f"{notebook.name}/{grade.name}"] = ManualGrade(
                    grade.manual_score, grade.extra_credit, comment
                )
    return found


def written_answers(nb: NotebookNode, notebook: str) -> dict[str, str]:
    """The hash of each written answer of a graded notebook: "notebook/grade_id" -> sha256."""
    return {
        f"{notebook}/{cell.metadata.nbgrader['grade_id']}": hashlib.sha256(
            f"{cell.metadata.nbgrader.get('points')}\0{cell.source}".encode()
        ).hexdigest()
        for cell in nb.cells
        if utils.is_grade(cell) and utils.is_solution(cell)
    }


def _keep_manual_grades(
    gb: Gradebook, outcome: Outcome, by_hand: dict[str, ManualGrade], before: Any
) -> None:
    """Give written answers that did not change since a person graded them that person's grade.

    A regrading starts the submission afresh (prepare_submission); the grader's verdicts
    decide every autograded cell again, but a written answer's score is a person's, and only
    a new answer calls for a new one. A changed answer is listed in outcome.grade_again.
    """
    before = before if isinstance(before, dict) else {}  # a record of an older grader: none
    for key, answer in outcome.answers.items():
        kept = by_hand.get(key)
        if kept is None:
            continue
        if before.get(key) != answer:
            outcome.grade_again.append(key.partition("/")[2])
            continue
        notebook, _, grade_id = key.partition("/")
        grade = gb.find_grade(grade_id, notebook, outcome.assignment, outcome.student)
        grade.manual_score, grade.extra_credit = kept.manual_score, kept.extra_credit
        # As the formgrader's grade handler decides it.
        grade.needs_manual_grade = grade.manual_score is None and grade.auto_score is None
        comment = gb.find_comment(grade_id, notebook, outcome.assignment, outcome.student)
        comment.manual_comment = kept.manual_comment
    gb.db.commit()


def _swap(staging: Path, dest: Path) -> None:
    """Put the staged folder at dest by renames; the old one goes, links and all, unfollowed."""
    old = staging.with_name(staging.name + ".old")
    if dest.is_symlink() or dest.exists():
        os.rename(dest, old)
    crashpoints.reached("writer-between-renames")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, dest)
    if old.is_symlink() or old.is_file():
        old.unlink()
    elif old.exists():
        shutil.rmtree(old)


def write_record(dest: Path, record: dict[str, Any]) -> None:
    """Keep an outcome's record in an autograded folder, for the summary and for regrading."""
    # A new file renamed into place: whatever stood at that name is replaced, never written through.
    fd, temporary = tempfile.mkstemp(dir=dest, prefix=".nncourse-")
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(record, indent=1) + "\n")
    os.replace(temporary, dest / RECORD_FILE)


def mark_feedback(course: CourseDirectory, student: str, assignment: str, by_hand: str) -> None:
    """Note in the record that this grading's feedback is written, with a person's grades then."""
    record = read_record(course, student, assignment)
    if record is not None:
        record["feedback"] = True
        record["feedback_by_hand"] = by_hand
        dest = Path(course.format_path(course.autograded_directory, student, assignment))
        write_record(dest, record)


def read_record(course: CourseDirectory, student: str, assignment: str) -> dict[str, Any] | None:
    """The outcome kept by the last grading of this submission, if any (and readable)."""
    try:
        with course_folder(course, course.autograded_directory, student, assignment) as folder:
            record = json.loads(folder.read(RECORD_FILE, RECORD_BYTES))
    except (OSError, Refused, ValueError):
        return None  # graded again
    # A record of another grader version, or a damaged one: graded again.
    valid = isinstance(record, dict) and record.get("status") in set(Status)
    return record if valid else None


def prune_autograded(assignment: str, student: str, notebooks: list[str]) -> None:
    """Leave only the notebooks, the exchange's files and the record in autograded folders.

    The course's GenerateFeedback.pre_convert_hook: nbgrader's generate_feedback then copies
    every other file of autograded/<student>/<assignment>/ into feedback/, following links
    (to the gradebook, /dev/zero, a FIFO) with a glob per file. nncourse grade leaves nothing
    else there; this keeps plain `nbgrader generate_feedback` safe after other tools.
    """
    del assignment, student  # nbgrader passes its command-line patterns; the paths say more
    keep = {*EXCHANGE_FILES, RECORD_FILE, *(os.path.basename(n) for n in notebooks)}
    for folder in sorted({os.path.dirname(n) for n in notebooks}):
        with os.scandir(folder) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if entry.name in keep and stat.S_ISREG(st.st_mode) and not refusal(st):
                    continue
                log.warning(
                    "%s: removed before feedback is written (%s)",
                    entry.path,
                    refusal(st) or "not the notebook or an exchange file",
                )
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)


@contextlib.contextmanager
def master_cells(db_url: str, course_id: str) -> Iterator[str]:
    """A throwaway SQLite gradebook with the assignments' cells alone; its URL, for the workers.

    Executing a submission reads from the gradebook only what the master holds: each notebook's
    kernelspec and its cells, which nbgrader's sanitise steps restore. Workers get that copy,
    never the gradebook itself: no student's grades, no server credentials, no lock held
    while the writer commits.
    """
    with tempfile.TemporaryDirectory(prefix="nncourse-gradebook-") as folder:
        url = f"sqlite:///{Path(folder) / 'gradebook.db'}"
        with Gradebook(db_url, course_id) as live:
            compat.new_gradebook(url, live)
            # One transaction: nbgrader commits each cell, and a commit waits for the disk.
            with Gradebook(url, course_id) as copy, compat.gradebook_transaction(copy):
                _copy_cells(live, copy)
            live.db.rollback()  # read only
        # nbgrader's steps open it under its default course id, which a Gradebook creates when
        # missing: created here, once, not by two workers at the same moment (one would fail).
        Gradebook(url).close()
        yield url


def _copy_cells(live: Gradebook, copy: Gradebook) -> None:
    """Every assignment's notebooks and cells, as the master holds them, from live to copy."""
    for assignment in live.assignments:
        copy.update_or_create_assignment(assignment.name, duedate=assignment.duedate)
        for nb in assignment.notebooks:
            where = (nb.name, assignment.name)
            copy.update_or_create_notebook(*where, kernelspec=nb.kernelspec)
            for cell in nb.source_cells:
                copy.update_or_create_source_cell(
                    cell.name,
                    *where,
                    cell_type=cell.cell_type,
                    locked=cell.locked,
                    source=cell.source,
                    checksum=cell.checksum,
                )
            for cell in nb.grade_cells:
                copy.update_or_create_grade_cell(
                    cell.name, *where, max_score=cell.max_score, cell_type=cell.cell_type
                )
            for cell in nb.task_cells:
                copy.update_or_create_task_cell(
                    cell.name, *where, max_score=cell.max_score, cell_type=cell.cell_type
                )
            for cell in nb.solution_cells:
                copy.update_or_create_solution_cell(cell.name, *where)
