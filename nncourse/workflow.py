"""The instructor's grading run: grade in parallel, then feedback, exports and the class report."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory

from nncourse import autograde, export, grade, report
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
) -> RunResult:
    """Grade, write feedback for every regraded submission, export grades and write the report."""
    results = grade.grade_class(course_root, assignments, jobs=jobs, force=force, progress=progress)
    config = autograde.load_config(course_root)
    course = CourseDirectory(config=config)
    feedback = _write_feedback(course, config, results)
    out = course_root / REPORTS_DIR
    out.mkdir(exist_ok=True)
    grades_csv = export.write_grades_csv(course, out / "grades.csv")
    cells = export.cell_results(course, results)
    cells_csv = export.write_cell_csv(cells, out / "grade_cells.csv")
    reports = []
    for assignment in sorted({r.assignment for r in results}):
        rows = [r for r in results if r.assignment == assignment]
        pages = {
            r.student: feedback[(r.student, assignment)]
            for r in rows
            if (r.student, assignment) in feedback
        }
        reports.append(
            report.write_report(
                rows,
                [c for c in cells if c.assignment == assignment],
                pages,
                out / f"{assignment}_report.html",
            )
        )
    return RunResult(results, grades_csv, cells_csv, reports, grade.exit_status(results))


def _write_feedback(course: CourseDirectory, config, results: list[grade.StudentResult]) -> dict:
    """Feedback pages by nbgrader's generate_feedback (no hidden tests), for what was regraded."""
    # Creating the API checks the exchange, which the instructor's grading does not use: on a
    # machine without one it logs "Unwritable directory, please contact your instructor".
    logging.getLogger("traitlets").setLevel(logging.CRITICAL)
    api = NbGraderAPI(coursedir=course, config=config)
    api.log.setLevel(logging.ERROR)  # it logs every file it copies; our summary says what matters
    pages = {}
    for r in results:
        if r.status in (MISSING, UNGRADABLE):
            continue
        folder = Path(course.format_path(course.feedback_directory, r.student, r.assignment))
        if r.regraded or not folder.exists():
            outcome = api.generate_feedback(r.assignment, r.student, force=True)
            if not outcome["success"]:
                log.warning(
                    "feedback for %s failed: %s", r.student, outcome.get("error", "")[-500:]
                )
        found = sorted(folder.glob("*.html"))
        if found:
            pages[(r.student, r.assignment)] = found[0]
    return pages


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
    if run.exit_status:
        print("Some students need attention (see above); exit status", run.exit_status)
