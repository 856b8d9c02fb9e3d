"""Grade exports: nbgrader's grades.csv, and one row per student and grade cell."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import nbformat
from nbgrader import utils
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from nbgrader.plugins import CsvExportPlugin

from nncourse.feedback import student_message
from nncourse.grade import StudentResult


@dataclasses.dataclass
class CellResult:
    """One student's result in one grade cell."""

    assignment: str
    student: str
    status: str
    notebook: str
    grade_id: str
    score: float
    max_score: float
    message: str  # the failure as the student's feedback shows it; empty when the cell passed


def write_grades_csv(course: CourseDirectory, target: Path) -> Path:
    """Write grades.csv exactly as `nbgrader export` does."""
    with Gradebook(course.db_url, course.course_id) as gb:
        CsvExportPlugin(to=str(target)).export(gb)
    return target


def cell_results(course: CourseDirectory, results: list[StudentResult]) -> list[CellResult]:
    """Every student's score and failure message in every grade cell."""
    rows = []
    with Gradebook(course.db_url, course.course_id) as gb:
        for result in results:
            assignment = gb.find_assignment(result.assignment)
            for notebook in assignment.notebooks:
                messages = _failure_messages(course, result, notebook.name)
                for cell in notebook.grade_cells:
                    score = 0.0
                    if result.status != "missing":
                        score = gb.find_grade(
                            cell.name, notebook.name, result.assignment, result.student
                        ).score
                    message = messages.get(cell.name, "") if score < cell.max_score else ""
                    if result.status in ("missing", "ungradable") and score < cell.max_score:
                        message = message or result.status
                    rows.append(
                        CellResult(
                            result.assignment,
                            result.student,
                            result.status,
                            notebook.name,
                            cell.name,
                            score,
                            cell.max_score,
                            message,
                        )
                    )
    return rows


def _failure_messages(
    course: CourseDirectory, result: StudentResult, notebook: str
) -> dict[str, str]:
    """The student-visible error line of each failed grade cell in an autograded notebook."""
    path = Path(course.format_path(course.autograded_directory, result.student, result.assignment))
    path = path / f"{notebook}.ipynb"
    if not path.exists():
        return {}
    messages = {}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and utils.is_grade(cell):
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    messages[cell.metadata.nbgrader.grade_id] = student_message(output)
                    break
    return messages


def write_cell_csv(rows: list[CellResult], target: Path) -> Path:
    """Write one row per student and grade cell."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in dataclasses.fields(CellResult)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(row) for row in rows)
    return target
