"""`nncourse grade`: a class graded in parallel, every student with a status, nbgrader's grades."""

import contextlib
import csv
import html
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from pg_server import postgres_server

from nncourse import export, grade, notebooks, record, submissions, workflow
from nncourse.comparisons import DETAILS_MARK
from nncourse.course import MISTAKES

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "simple_nn"
#: The master's grade cells, and the points autograding can award (a person scores the rest).
GRADE_CELLS = [
    cell.metadata.nbgrader
    for cell in notebooks.read(ROOT / "source" / ASSIGNMENT / "simple_neural_network.ipynb").cells
    if cell.metadata.get("nbgrader", {}).get("grade")
]
NBGRADER = str(Path(sys.executable).parent / "nbgrader")


pytestmark = [pytest.mark.kernels, pytest.mark.sandbox]


def make_course(folder: Path, extra_config: str = "") -> Path:
    """A course with the real source and config, its release generated, and no submissions yet."""
    shutil.copytree(ROOT / "source", folder / "source")
    config = (ROOT / "nbgrader_config.py").read_text() + extra_config
    (folder / "nbgrader_config.py").write_text(config)
    subprocess.run(
        [NBGRADER, "generate_assignment", ASSIGNMENT], cwd=folder, check=True, capture_output=True
    )
    return folder


def submit(course: Path, student: str, cells: dict[str, str] | None = None, **kwargs) -> Path:
    """Lay out a submission: the release with the given solution cells filled in."""
    release = submissions.read_release(course, ASSIGNMENT)
    return submissions.write_submission(
        course, student, ASSIGNMENT, submissions.fill(release, cells or {}), **kwargs
    )


def correct(**replace: str) -> dict[str, str]:
    """The reference solution cells, with some replaced by the given sources."""
    return {**submissions.correct_cells(ASSIGNMENT), **replace}


def mistake(name: str) -> dict[str, str]:
    """A correct submission but for one fixture of the mistakes catalogue."""
    fixture = submissions.parse_fixture(MISTAKES / f"{name}.py")
    return correct(**{fixture.cell: fixture.source})


def scores(db_url: str) -> dict[tuple[str, str], float]:
    """Every (student, grade cell) score in a gradebook."""
    found = {}
    with Gradebook(db_url) as gb:
        for student in gb.students:
            for grade_cell in gb.find_assignment(ASSIGNMENT).notebooks[0].grade_cells:
                try:
                    found[student.id, grade_cell.name] = gb.find_grade(
                        grade_cell.name, grade_cell.notebook.name, ASSIGNMENT, student.id
                    ).score
                except Exception:  # noqa: BLE001 - no submission: no grade
                    continue
    return found


def break_file(path: Path, text: str) -> None:
    """Overwrite a submitted notebook with something that is not a notebook."""
    path.write_text(text)


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """A class with one student of every status, graded once by `grade_and_report` with 2 jobs."""
    course = make_course(tmp_path_factory.mktemp("class"), "\nc.Execute.timeout = 20\n")
    submit(course, "alice", correct())
    submit(course, "bob")  # the untouched release
    submit(course, "carol", mistake("fails_relu_derivative_one_at_zero"))
    break_file(submit(course, "dan"), "{this is not json")
    break_file(submit(course, "erin"), "[1, 2, 3]")
    nb = submissions.fill(submissions.read_release(course, ASSIGNMENT), correct())
    nb.cells.append(
        nb.cells[
            [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells].index("tanh_values")
        ]
    )
    submissions.write_submission(course, "fred", ASSIGNMENT, nb)  # a duplicated grade cell
    crash = "import os\nos._exit(1)\n"
    submit(course, "gina", correct(tanh=crash))
    submit(course, "hank", correct(tanh="while True:\n    pass\n"))
    subprocess.run(
        [NBGRADER, "db", "student", "add", "ivy"], cwd=course, check=True, capture_output=True
    )
    run = workflow.grade_and_report(course, jobs=2, progress=False)
    return course, run, {r.student: r for r in run.results}


def test_every_student_on_the_roster_gets_a_result(graded_class):
    _, _, by_student = graded_class
    assert sorted(by_student) == [
        "alice",
        "bob",
        "carol",
        "dan",
        "erin",
        "fred",
        "gina",
        "hank",
        "ivy",
    ]


@pytest.mark.parametrize(
    ("student", "status", "score"),
    [
        ("alice", "graded", 30),
        ("bob", "graded", 0),
        ("carol", "graded", 29),
        ("dan", "ungradable", 0),
        ("erin", "ungradable", 0),
        ("fred", "graded", 30),  # the duplicate is dropped, and fred is flagged
        ("gina", "crashed", 2),  # the two logistic cells ran before the kernel died
        ("hank", "timed out", 28),  # only the tanh cell hung; every other cell counts
        ("ivy", "missing", 0),
    ],
)
def test_status_and_score(graded_class, student, status, score):
    result = graded_class[2][student]
    assert (result.status, result.score) == (status, score), result.reason


def test_reasons_name_the_file_and_the_problem(graded_class):
    by_student = graded_class[2]
    assert "not a readable notebook" in by_student["dan"].reason
    assert "simple_neural_network.ipynb" in by_student["dan"].reason
    assert "kernel died" in by_student["gina"].reason
    assert "time limit" in by_student["hank"].reason


def test_a_duplicated_grade_cell_is_graded_and_flagged(graded_class):
    fred = graded_class[2]["fred"]
    assert "duplicated cell tanh_values" in fred.flags


def test_exit_status_and_summary_point_at_students_needing_attention(graded_class):
    _, run, _ = graded_class
    assert run.exit_status == 3
    text = grade.summary(run.results)
    for student in ["dan", "erin", "fred", "gina", "hank"]:
        assert student in text.split("needs attention:")[1]
    assert "alice" not in text.split("needs attention:")[1]


def test_grades_csv_is_nbgraders_format_with_every_student(graded_class):
    _, run, _ = graded_class
    rows = list(csv.DictReader(run.grades_csv.open()))
    assert list(rows[0]) == export.GRADES_COLUMNS  # tests/test_inert.py: nbgrader's columns
    assert {r["student_id"]: float(r["score"]) for r in rows}["alice"] == 30.0
    assert len(rows) == 9


def test_cell_csv_has_a_row_per_student_and_grade_cell(graded_class):
    _, run, _ = graded_class
    rows = list(csv.DictReader(run.cells_csv.open()))
    assert len(rows) == 9 * len(GRADE_CELLS)
    carol = {r["grade_id"]: r for r in rows if r["student"] == "carol"}
    assert float(carol["relu_derivative"]["score"]) == 0
    assert "relu'(0) = 0" in carol["relu_derivative"]["message"]
    assert DETAILS_MARK not in carol["relu_derivative"]["message"]


def test_feedback_shows_work_and_scores_but_no_hidden_tests(graded_class):
    course, _, _ = graded_class
    pages = sorted((course / "feedback").glob("*/simple_nn/*.html"))
    assert {p.parts[-3] for p in pages} == {"alice", "bob", "carol", "fred", "gina", "hank"}
    for page in pages:
        text = page.read_text()
        for secret in ["BEGIN HIDDEN TESTS", "checks.", "nncourse", DETAILS_MARK]:
            assert secret not in text, f"{page} shows {secret!r}"
    page = (course / "feedback" / "carol" / "simple_nn" / "simple_neural_network.html").read_text()
    carol = html.unescape(re.sub(r"<[^>]+>", "", page))  # the text a browser shows
    assert "def relu(x, deriv=False):" in carol  # the student's own code
    assert 'with checking("relu", "relu(x, deriv=True)' in carol  # a visible test
    assert "relu'(0) = 0" in carol  # what failed, in words


def test_report_shows_distribution_cells_failures_and_attention(graded_class):
    _, run, _ = graded_class
    page = run.reports[0].read_text()
    assert page.count("data:image/png;base64,") == 2
    for grade_id in ["logistic_values", "backprop_any_depth_step"]:
        assert f"<code>{grade_id}</code>" in page
    assert "relu&#x27;(0) = 0" in page
    attention = page.split("Students who need attention")[1].split("All students")[0]
    assert "dan" in attention
    assert "alice" not in attention
    assert 'href="../feedback/hank/simple_nn/simple_neural_network.html"' in page


def test_parallel_grades_equal_sequential_nbgrader(tmp_path):
    students = {
        "alice": correct(),
        "bob": None,
        "carol": mistake("fails_cross_entropy_summed_not_averaged"),
        "dora": mistake("fails_backprop_any_depth_uses_updated_weights"),
    }
    courses = []
    for name in ["sequential", "parallel"]:
        course = make_course(tmp_path / name)
        for student, cells in students.items():
            submit(course, student, cells)
        courses.append(course)
    subprocess.run(
        [NBGRADER, "autograde", ASSIGNMENT], cwd=courses[0], check=True, capture_output=True
    )
    grade.grade_class(courses[1], jobs=2, progress=False)
    sequential, parallel = (scores(f"sqlite:///{c / 'gradebook.db'}") for c in courses)
    assert len(sequential) == 4 * len(GRADE_CELLS)
    assert parallel == sequential


@pytest.mark.postgres
def test_postgresql_gradebook(tmp_path):
    with postgres_server() as url:
        course = make_course(tmp_path, f"\nc.CourseDirectory.db_url = {url!r}\n")
        submit(course, "alice", correct())
        submit(course, "carol", mistake("fails_relu_derivative_one_at_zero"))
        results = {r.student: r for r in grade.grade_class(course, jobs=2, progress=False)}
        assert (results["alice"].score, results["carol"].score) == (30, 29), results
        assert scores(url)["carol", "relu_derivative"] == 0
        assert not (course / "gradebook.db").exists()
        # What the workers read instead of the server: the master's cells, no student's grades.
        with record.master_cells(url, "") as copy:
            assert copy.startswith("sqlite:///")
            with contextlib.closing(sqlite3.connect(copy.removeprefix("sqlite:///"))) as db:
                # Not left to the workers, two of which could create it at once: one fails.
                assert ("default_course",) in db.execute("select id from course").fetchall()
            with Gradebook(copy) as cells:
                assert cells.students == []
                notebook = cells.find_notebook("simple_neural_network", ASSIGNMENT)
                graded = {cell.name for cell in notebook.grade_cells}
                assert graded == {cell["grade_id"] for cell in GRADE_CELLS}


def test_regrade_recomputes_from_scratch_and_notices_changed_content(tmp_path):
    course = make_course(tmp_path)
    path = submit(course, "alice", correct())
    first = grade.grade_class(course, jobs=1, progress=False)
    assert first[0].score == 30
    # Unchanged: not regraded.
    assert not grade.grade_class(course, jobs=1, progress=False)[0].regraded
    # Resubmitted without a timestamp.txt: the content changed, so it is regraded.
    nb = submissions.fill(
        submissions.read_release(course, ASSIGNMENT),
        mistake("fails_tanh_derivative_in_terms_of_output"),
    )
    nbformat.write(nb, path)
    (path.parent / "timestamp.txt").unlink()
    again = grade.grade_class(course, jobs=1, progress=False)[0]
    assert again.regraded
    assert again.score == 29
    # A grade cell deleted from the submission is restored from the master, not kept from before.
    nb.cells = [
        c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "tanh_derivative"
    ]
    nbformat.write(nb, path)
    third = grade.grade_class(course, jobs=1, progress=False)[0]
    assert third.regraded
    assert third.score == 29
    assert scores(f"sqlite:///{course / 'gradebook.db'}")["alice", "tanh_derivative"] == 0
    record = json.loads(
        (course / "autograded" / "alice" / ASSIGNMENT / ".nncourse-grading.json").read_text()
    )
    assert record["status"] == "graded"
