"""Grade exports: nbgrader's grades.csv, and one row per student and grade cell.

Every text cell that a spreadsheet would read as a formula (student ids, failure messages, ...)
starts with a quote, so opening the file runs nothing a student wrote.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
from pathlib import Path

import nbformat
from nbgrader import utils
from nbgrader.api import Grade, Gradebook, MissingEntry
from nbgrader.coursedir import CourseDirectory

from nncourse.feedback import student_message
from nncourse.grade import waiting_for_a_person
from nncourse.inert import csv_cell
from nncourse.results import AUTO, BY_HAND, NEEDS_MANUAL, CellResult, Status, StudentResult

# The columns of `nbgrader export` (nbgrader.plugins.CsvExportPlugin), in its order.
GRADES_COLUMNS = [
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
    # Ours: written answers no person has graded yet, and their points, left out of the score.
    "needs_manual_grading",
    "points_not_yet_awarded",
]


def write_grades_csv(course: CourseDirectory, target: Path) -> Path:
    """Write grades.csv with the rows and values of `nbgrader export`, quoted as CSV needs."""
    # nbgrader's own plugin joins the fields with commas, unquoted and as they are.
    rows = []
    with Gradebook(course.db_url, course.course_id) as gb:
        for assignment in gb.assignments:
            for student in gb.students:
                to_grade: dict[str, float] = {}
                try:
                    submission = gb.find_submission(assignment.name, student.id)
                    timestamp, raw = submission.timestamp, submission.score
                    penalty = submission.late_submission_penalty
                    to_grade = waiting_for_a_person(submission)
                except MissingEntry:
                    timestamp, raw, penalty = "", 0.0, 0.0
                row = [assignment.name, assignment.duedate, timestamp, student.id]
                row += [student.last_name, student.first_name, student.email, raw, penalty]
                row += [max(0.0, raw - penalty), assignment.max_score]
                row += [" ".join(to_grade), sum(to_grade.values())]
                rows.append(["" if value is None else str(value) for value in row])
    return _write_csv(target, GRADES_COLUMNS, rows)


def cell_results(course: CourseDirectory, results: list[StudentResult]) -> list[CellResult]:
    """Every student's score and failure message in every grade cell."""
    rows = []
    with Gradebook(course.db_url, course.course_id) as gb:
        for result in results:
            assignment = gb.find_assignment(result.assignment)
            for notebook in assignment.notebooks:
                messages = _failure_messages(course, result, notebook.name)
                for cell in notebook.grade_cells:
                    score, grading = 0.0, AUTO
                    # An id the planner refused has no submission in the gradebook.
                    with contextlib.suppress(MissingEntry):
                        if result.status != Status.MISSING:
                            grade = gb.find_grade(
                                cell.name, notebook.name, result.assignment, result.student
                            )
                            score, grading = grade.score, _grading(grade)
                    message = messages.get(cell.name, "") if score < cell.max_score else ""
                    if (
                        result.status in (Status.MISSING, Status.UNGRADABLE)
                        and score < cell.max_score
                    ):
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
                            grading,
                        )
                    )
    return rows


def _grading(grade: Grade) -> str:
    """Who scored a grade: the grader, a person, or nobody yet."""
    if grade.needs_manual_grade:
        return NEEDS_MANUAL
    return BY_HAND if grade.manual_score is not None else AUTO


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
    columns = [field.name for field in dataclasses.fields(CellResult)]
    return _write_csv(target, columns, [dataclasses.astuple(row) for row in rows])


def _write_csv(target: Path, columns: list[str], rows: list) -> Path:
    """Write a header and rows, every cell that could start a formula neutralised."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([csv_cell(value) for value in row] for row in rows)
    return target
