"""The instructor's grading run: grade in parallel, then feedback, exports and the class report."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
from pathlib import Path

from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from nbgrader.auth import Authenticator, NoAuthPlugin
from nbgrader.coursedir import CourseDirectory

from nncourse import autograde, compat, crashpoints, durable, execute, export, grade, report
from nncourse.autograde import MISSING, UNGRADABLE
from nncourse.inert import printable

log = logging.getLogger(__name__)
REPORTS_DIR = "reports"


@dataclasses.dataclass
class RunResult:
    """What a grading run produced and where."""

    results: list[grade.StudentResult]
    grades_csv: Path
    cells_csv: Path
    reports: list[Path]
    exit_status: int


def grade_and_report(
    course_root: Path,
    assignments: list[str] | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
) -> RunResult:
    """Grade, write feedback where a grading has none yet, export grades and write the report."""
    config = grade.load_config(course_root)
    execute.choose(config, scheduler)
    course = CourseDirectory(config=config)
    with grade.run_lock(course):
        results = grade.grade_locked(course, config, assignments, jobs, force, progress)
        try:
            return _write_outputs(
                course_root, course, config, results, jobs or os.cpu_count() or 1
            )
        except KeyboardInterrupt:
            raise grade.GradingInterrupted(
                "every grade was saved in the gradebook; feedback and reports are incomplete"
            ) from None


def _write_outputs(
    course_root: Path,
    course: CourseDirectory,
    config,
    results: list[grade.StudentResult],
    jobs: int,
) -> RunResult:
    """Feedback, grades.csv, grade_cells.csv and the reports, each file replaced atomically."""
    feedback = _write_feedback(course, config, results, jobs)
    out = course_root / REPORTS_DIR
    crashpoints.reached("before-reports")
    with durable.replaced(out / "grades.csv") as temporary:
        export.write_grades_csv(course, temporary)
    grades_csv = out / "grades.csv"
    crashpoints.reached("between-grades-and-report")
    cells = export.cell_results(course, results)
    with durable.replaced(out / "grade_cells.csv") as temporary:
        export.write_cell_csv(cells, temporary)
    cells_csv = out / "grade_cells.csv"
    reports = []
    for assignment in sorted({r.assignment for r in results}):
        rows = [r for r in results if r.assignment == assignment]
        pages = {
            r.student: feedback[(r.student, assignment)]
            for r in rows
            if (r.student, assignment) in feedback
        }
        target = out / f"{assignment}_report.html"
        with durable.replaced(target) as temporary:
            report.write_report(
                rows, [c for c in cells if c.assignment == assignment], pages, temporary
            )
        reports.append(target)
    return RunResult(results, grades_csv, cells_csv, reports, grade.exit_status(results))


def _write_feedback(
    course: CourseDirectory, config, results: list[grade.StudentResult], jobs: int
) -> dict:
    """Feedback pages by nbgrader's generate_feedback (no hidden tests), for what was regraded.

    Each page is written by its own process, `jobs` at a time: nbconvert's page takes a second
    or two of CPU per student, and one after the other they made the tail of every run.
    """
    due = {}
    for r in results:
        if r.status in (MISSING, UNGRADABLE):
            continue
        folder = Path(course.format_path(course.feedback_directory, r.student, r.assignment))
        record = autograde.read_record(course, r.student, r.assignment) or {}
        by_hand = _by_hand(course, r)
        # The record says whether this grading's feedback was written: a run stopped before
        # that left the flag unset, and the next run writes it. A person's grading since
        # then (a written answer, a comment) changes the page too.
        if (
            r.regraded
            or not record.get("feedback")
            or record.get("feedback_by_hand", NO_MANUAL_GRADES) != by_hand
            or not folder.exists()
        ):
            due[(r.student, r.assignment)] = by_hand
    if due:
        pool = concurrent.futures.ProcessPoolExecutor(
            min(jobs, len(due)),
            mp_context=multiprocessing.get_context("fork"),
            initializer=execute.worker_init,
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
                    autograde.mark_feedback(course, student, assignment, due[student, assignment])
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
        found = sorted(folder.glob("*.html")) if r.status not in (MISSING, UNGRADABLE) else []
        if found:
            pages[(r.student, r.assignment)] = found[0]
    return pages


def _generate_feedback(config, student: str, assignment: str) -> str | None:
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
    api = NbGraderAPI(coursedir=course, authenticator=authenticator, config=config, log=api_log)
    api_log.setLevel(logging.ERROR)
    outcome = api.generate_feedback(assignment, student, force=True)
    return None if outcome["success"] else outcome.get("error", "")[-500:]


def _by_hand(course: CourseDirectory, r: grade.StudentResult) -> str:
    """What a person gave this submission in the formgrader, as text to compare."""
    with Gradebook(course.db_url, course.course_id) as gb:
        given = autograde.manual_grades(gb, r.student, r.assignment)
    return json.dumps(
        {key: dataclasses.asdict(value) for key, value in given.items()}, sort_keys=True
    )


NO_MANUAL_GRADES = json.dumps({})


def print_run(run: RunResult, scores: bool = False) -> None:
    """The closing summary an instructor reads in the terminal, with every score if asked."""
    if scores:
        for r in run.results:
            print(
                f"{r.assignment}  {printable(r.student):<24} {r.score:5g} / {r.max_score:g}  "
                f"{r.status}"
            )
    print(grade.summary(run.results))
    print(f"grades:      {run.grades_csv}")
    print(f"grade cells: {run.cells_csv}")
    for path in run.reports:
        print(f"report:      {path}")
