"""The instructor's grading run: grade in parallel, then feedback, exports and the class report."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

from nncourse import course_config, crashpoints, durable, executors, export, feedback, grade, report
from nncourse.inert import printable
from nncourse.results import StudentResult

REPORTS_DIR = "reports"


@dataclasses.dataclass
class RunResult:
    """What a grading run produced and where."""

    results: list[StudentResult]
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
    config: Config | None = None,
) -> RunResult:
    """Grade, write feedback where a grading has none yet, export grades and write the report.

    The course's config is loaded here unless the caller loaded it already (the demo).
    """
    config = config or course_config.load_or_exit(course_root)
    executors.choose(config, scheduler)
    course = CourseDirectory(config=config)
    with grade.run_lock(course):
        results = grade.grade_locked(course, config, assignments, jobs, force, progress)
        try:
            return _write_outputs(course_root, course, config, results, jobs or os.cpu_count() or 1)
        except KeyboardInterrupt:
            raise grade.GradingInterrupted(
                "every grade was saved in the gradebook; feedback and reports are incomplete"
            ) from None


def _write_outputs(
    course_root: Path,
    course: CourseDirectory,
    config: Config,
    results: list[StudentResult],
    jobs: int,
) -> RunResult:
    """Feedback, grades.csv, grade_cells.csv and the reports, each file replaced atomically."""
    pages = feedback.write_feedback(course, config, results, jobs)
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
            r.student: pages[(r.student, assignment)]
            for r in rows
            if (r.student, assignment) in pages
        }
        target = out / f"{assignment}_report.html"
        with durable.replaced(target) as temporary:
            report.write_report(
                rows, [c for c in cells if c.assignment == assignment], pages, temporary
            )
        reports.append(target)
    return RunResult(results, grades_csv, cells_csv, reports, grade.exit_status(results))


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
