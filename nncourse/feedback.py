"""Feedback, the step after recording: each student's page, written in parallel by nbgrader's
generate_feedback, showing their work and scores, never hidden tests or reference values."""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import json
import logging
import multiprocessing
import os
from pathlib import Path

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from nbgrader.auth import Authenticator, NoAuthPlugin
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets.config import Config

from nncourse import compat, crashpoints, executors, record
from nncourse.comparisons import DETAILS_MARK
from nncourse.results import Status, StudentResult

log = logging.getLogger(__name__)
NO_PAGE = (Status.MISSING, Status.UNGRADABLE)  # nothing of theirs ran: no feedback page


class HideHiddenTests(NbGraderPreprocessor):
    """Strip hidden tests from grade cells and keep only their verdict.

    nbgrader's own feedback prints grade cells as they ran, hidden tests and their
    tracebacks included (jupyter/nbgrader#917, #1363). Here a grade cell keeps its visible
    tests and, if it failed, one line: the error's name and the part of its message meant for
    students. Tracebacks quote source lines around the failure, hidden ones included, and
    printed output can carry values computed on hidden inputs, so neither is shown.
    """

    def preprocess_cell(
        self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
    ) -> tuple[NotebookNode, ResourcesDict]:
        """Replace a grade cell's hidden tests and outputs by what a student may see."""
        if cell.cell_type != "code" or not utils.is_grade(cell):
            return cell, resources
        compat.remove_hidden_tests(cell)
        errors = [output for output in cell.outputs if output.output_type == "error"]
        cell.outputs = [_verdict(errors[0])] if errors else []
        return cell, resources


def student_message(error: NotebookNode) -> str:
    """An error output as a student may read it: name and message, without the instructor's part."""
    name = error.get("ename", "Error")
    message = str(error.get("evalue", "")).split(DETAILS_MARK)[0].strip()
    return f"{name}: {message}" if message else name


def _verdict(error: NotebookNode) -> NotebookNode:
    """One error output that says what failed, without traceback."""
    text = student_message(error)
    return NotebookNode(
        output_type="error",
        ename=error.get("ename", "Error"),
        evalue=text.partition(": ")[2],
        traceback=[text],
    )


def write_feedback(
    course: CourseDirectory, config: Config, results: list[StudentResult], jobs: int
) -> dict:
    """Feedback pages by nbgrader's generate_feedback (no hidden tests), for what was regraded.

    Each page is written by its own process, `jobs` at a time: nbconvert's page takes a second
    or two of CPU per student, and one after the other they made the tail of every run.
    """
    due = {}
    with Gradebook(course.db_url, course.course_id) as gb:
        for r in results:
            if r.status in NO_PAGE:
                continue
            folder = Path(course.format_path(course.feedback_directory, r.student, r.assignment))
            kept = record.read_record(course, r.student, r.assignment) or {}
            by_hand = _by_hand(gb, r)
            # The record says whether this grading's feedback was written: a run stopped
            # before that left the flag unset, and the next run writes it. A person's grading
            # since then (a written answer, a comment) changes the page too.
            if (
                r.regraded
                or not kept.get("feedback")
                or kept.get("feedback_by_hand", NO_MANUAL_GRADES) != by_hand
                or not folder.exists()
            ):
                due[(r.student, r.assignment)] = by_hand
    if due:
        pool = concurrent.futures.ProcessPoolExecutor(
            min(jobs, len(due)),
            mp_context=multiprocessing.get_context("fork"),
            initializer=executors.worker_init,
            initargs=(os.getpid(),),
        )
        try:
            futures = {
                pool.submit(_generate_feedback, config, student, assignment): (student, assignment)
                for student, assignment in due
            }
            for future in concurrent.futures.as_completed(futures):
                student, assignment = futures[future]
                error = future.result()
                if error is None:
                    record.mark_feedback(course, student, assignment, due[student, assignment])
                    crashpoints.reached("feedback-written")
                else:
                    log.warning("feedback for %s failed: %s", student, error)
        except BaseException:
            compat.kill_pool(pool)  # Ctrl-C or a failed record: the writers stop now
            raise
        pool.shutdown()
    pages = {}
    for r in results:
        folder = Path(course.format_path(course.feedback_directory, r.student, r.assignment))
        found = sorted(folder.glob("*.html")) if r.status not in NO_PAGE else []
        if found:
            pages[(r.student, r.assignment)] = found[0]
    return pages


def _generate_feedback(config: Config, student: str, assignment: str) -> str | None:
    """Write one student's feedback page with nbgrader's API; None, or the error's last lines."""
    # Creating the API checks the exchange, which the instructor's grading does not use: on a
    # machine without one it logs, as fatal, "Unwritable directory, please contact your
    # instructor". The API logs to a logger of ours, silent for that check; then only errors
    # pass (it logs every file it copies; our summary says what matters).
    api_log = logging.getLogger("nncourse.nbgrader")
    api_log.setLevel(logging.CRITICAL + 1)
    # Feedback is written into the course root only: no hub is asked which courses anyone
    # takes, so grading from a root shell (deploy/as-grader) works without a hub token even
    # where the config names nbgrader's JupyterHubAuthPlugin.
    authenticator = Authenticator(config=config, plugin_class=NoAuthPlugin)
    course = CourseDirectory(config=config)
    # The page nbgrader's exporter would write, rendered for a third of the CPU (compat.py).
    config = copy.deepcopy(config)
    config.GenerateFeedback.exporter_class = compat.page_exporter()
    api = NbGraderAPI(coursedir=course, authenticator=authenticator, config=config, log=api_log)
    api_log.setLevel(logging.ERROR)
    outcome = api.generate_feedback(assignment, student, force=True)
    return None if outcome["success"] else outcome.get("error", "")[-500:]


def _by_hand(gb: Gradebook, r: StudentResult) -> str:
    """What a person gave this submission in the formgrader, as text to compare."""
    given = record.manual_grades(gb, r.student, r.assignment)
    return json.dumps(
        {key: dataclasses.asdict(value) for key, value in given.items()}, sort_keys=True
    )


NO_MANUAL_GRADES = json.dumps({})
