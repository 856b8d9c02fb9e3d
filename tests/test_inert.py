"""Student content made inert: payloads in nbconvert's HTML, terminal text, CSV cells, the class
report, and the static scan's view of which cells are the student's."""

import base64
import copy
import csv
import html
import re
from pathlib import Path

import nbformat
import pytest
from active_content import PAYLOADS, active_parts, cell
from nbconvert import HTMLExporter
from nbgrader import utils
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from nbgrader.plugins import CsvExportPlugin

from nncourse import export, grade, inert, report, submissions, tamper
from nncourse.results import CellResult, StudentResult

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "simple_nn"
RELEASE = ROOT / "release" / ASSIGNMENT / "simple_neural_network.ipynb"


@pytest.fixture(scope="module")
def exporter() -> HTMLExporter:
    """nbconvert's classic HTML: the template nbgrader's formgrader and feedback pages extend."""
    return HTMLExporter(template_name="classic")


def page(exporter: HTMLExporter, nb) -> str:
    """A notebook as an HTML page."""
    return exporter.from_notebook_node(copy.deepcopy(nb))[0]


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_is_active_in_nbconvert_html_until_made_inert(exporter, name):
    marker = f"PWNED_{name}"
    nb = nbformat.v4.new_notebook(cells=[cell(name, f"alert('{marker}')")])
    assert active_parts(page(exporter, nb), marker), "the payload should run without MakeInert"
    assert active_parts(page(exporter, inert.inert_notebook(nb)), marker) == []


def test_making_inert_twice_changes_nothing_more():
    nb = nbformat.v4.new_notebook(cells=[cell(name, "alert(1)") for name in PAYLOADS])
    once = inert.inert_notebook(nb)
    assert inert.inert_notebook(copy.deepcopy(once)) == once


def test_the_course_markdown_is_left_as_written():
    release = nbformat.read(RELEASE, as_version=4)
    inert_release = inert.inert_notebook(copy.deepcopy(release))
    assert [c.source for c in inert_release.cells] == [c.source for c in release.cells]


def test_student_markdown_html_shows_as_text(exporter):
    source = "My answer: <b>tanh</b> & <script>alert(1)</script>, `x<y`, a < b"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(source)])
    shown = html.unescape(re.sub(r"<[^>]+>", "", page(exporter, inert.inert_notebook(nb))))
    expected = "My answer: <b>tanh</b> & <script>alert(1)</script>, x<y, a < b"
    assert expected in shown.replace(inert.ZERO_WIDTH_SPACE, "")


def test_text_tables_and_pictures_survive_scripts_do_not():
    svg = '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="4"/></svg>'
    data = {
        "text/plain": "array([1., 2.])",
        "image/png": "iVBORw0KGgo=",
        "text/html": '<table border="1"><tr><td onclick="alert(1)">1.0</td></tr></table>',
        "application/javascript": "alert(1)",
        "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
    }
    kept = inert.inert_bundle(data)
    assert kept == {
        "text/plain": "array([1., 2.])",
        "image/png": "iVBORw0KGgo=",
        "text/html": "<table><tbody><tr><td>1.0</td></tr></tbody></table>",
    }
    picture = inert.inert_bundle({"image/svg+xml": svg, "text/plain": "<SVG>"})
    encoded = re.fullmatch(r'<img src="data:image/svg\+xml;base64,([^"]+)">', picture["text/html"])
    assert base64.b64decode(encoded.group(1)).decode() == svg  # shown only as an image
    assert "image/svg+xml" not in picture


def test_a_bundle_value_that_is_not_text_is_dropped():
    # A kernel can send any JSON; nbconvert would print a dict's repr into the page unescaped.
    kept = inert.inert_bundle(
        {"text/html": {"x": "<img src=x onerror=alert(1)>"}, "text/plain": "x"}
    )
    assert kept == {"text/plain": "x"}


def test_what_nbgrader_scores_is_untouched():
    release = nbformat.read(RELEASE, as_version=4)
    graded = next(c for c in release.cells if utils.is_grade(c) and c.cell_type == "code")
    outputs = [
        nbformat.v4.new_output("display_data", data={"application/javascript": "alert(1)"}),
        nbformat.v4.new_output("execute_result", data={"text/plain": "0.5"}, execution_count=1),
        nbformat.v4.new_output("stream", name="stderr", text="warning"),
        nbformat.v4.new_output("error", ename="AssertionError", evalue="no", traceback=["no"]),
    ]
    for first in range(len(outputs)):
        cells = copy.deepcopy(graded)
        cells.outputs = copy.deepcopy(outputs[first:])
        nb = nbformat.v4.new_notebook(cells=[cells])
        before = utils.determine_grade(nb.cells[0])
        assert utils.determine_grade(inert.inert_notebook(nb).cells[0]) == before


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("alice", "alice"),
        ("Müller → 28/28", "Müller → 28/28"),
        ("\x1b[2K\x1b[1Aall_fine.txt", "\\x1b[2K\\x1b[1Aall_fine.txt"),
        ("one\nflagged: forged", "one\\nflagged: forged"),
        ("\u202eexe.txt", "\\u202eexe.txt"),
        ("bell\x07 and CR\r", "bell\\x07 and CR\\r"),
    ],
)
def test_terminal_text_shows_control_characters_escaped(text, shown):
    assert inert.printable(text) == shown


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x","click")', '\'=HYPERLINK("http://x","click")'),
        ("+1+cmd", "'+1+cmd"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-1.5", "-1.5"),
        ("AssertionError: relu(0) = 0", "AssertionError: relu(0) = 0"),
        (28.0, 28.0),
    ],
)
def test_csv_cells_cannot_start_a_formula(value, cell):
    assert inert.csv_cell(value) == cell


def test_exported_csv_files_neutralise_formulas(tmp_path):
    course = CourseDirectory(root=str(tmp_path))
    with Gradebook(course.db_url, course.course_id) as gb:
        gb.add_assignment(ASSIGNMENT)
        for student in ["alice", "=1+1", "@SUM(A1)"]:
            gb.add_student(student, last_name="-2+3" if student != "alice" else "Smith")
        CsvExportPlugin(to=str(tmp_path / "nbgrader.csv")).export(gb)
    ours = export.write_grades_csv(course, tmp_path / "grades.csv").read_text().splitlines()
    nbgraders = (tmp_path / "nbgrader.csv").read_text().splitlines()
    # nbgrader's columns, then ours on what waits for manual grading (nothing here).
    assert ours[0] == nbgraders[0] + ",needs_manual_grading,points_not_yet_awarded"
    assert [line for line in ours if "alice" in line] == [
        line + ",,0" for line in nbgraders if "alice" in line
    ]  # what `nbgrader export` writes, where no cell could start a formula
    rows = list(csv.DictReader(ours))
    assert [(r["student_id"], r["last_name"]) for r in rows if r["student_id"] != "alice"] == [
        ("'=1+1", "'-2+3"),
        ("'@SUM(A1)", "'-2+3"),
    ]
    message = '=HYPERLINK("http://x","click")'
    result = CellResult(ASSIGNMENT, "bob", "graded", "nb", "relu", 0.0, 1.0, message)
    cells = list(csv.DictReader(export.write_cell_csv([result], tmp_path / "cells.csv").open()))
    assert cells[0]["message"] == "'" + message
    assert float(cells[0]["score"]) == 0.0


def results_with_hostile_names() -> list[StudentResult]:
    """Two students: one graded and flagged for files with odd names, one with an HTML id."""
    flags = [
        "submitted an extra file \x1b[2K\x1b[1Aall_fine.txt",
        "submitted an extra file <svg onload=alert('PWNED')>.txt",
    ]
    return [
        StudentResult("mallory", ASSIGNMENT, "graded", 28.0, 28.0, flags=flags),
        StudentResult(
            "<img src=x onerror=alert('PWNED')>", ASSIGNMENT, "ungradable", 0.0, 28.0, "refused"
        ),
    ]


def test_summary_shows_control_characters_escaped():
    text = grade.summary(results_with_hostile_names())
    assert "\x1b" not in text
    assert "flagged: submitted an extra file \\x1b[2K\\x1b[1Aall_fine.txt" in text


def test_report_shows_ids_and_file_names_as_text(tmp_path):
    results = results_with_hostile_names()
    cells = [
        CellResult(ASSIGNMENT, r.student, r.status, "nb", "relu", 0.0, 1.0, "<b>x</b>")
        for r in results
    ]
    feedback = tmp_path / "feedback" / results[1].student / "index.html"
    feedback.parent.mkdir(parents=True)
    feedback.touch()
    page = report.write_report(
        results, cells, {results[1].student: feedback}, tmp_path / "reports" / "report.html"
    ).read_text()
    assert active_parts(page, "PWNED") == []
    shown = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "<img src=x onerror=alert('PWNED')>" in shown
    assert "<svg onload=alert('PWNED')>.txt" in shown
    assert 'href="../feedback/%3Cimg%20src%3Dx%20onerror%3Dalert%28%27PWNED' in page


def test_static_scan_takes_the_students_cells_from_the_release():
    release = nbformat.read(RELEASE, as_version=4)
    correct = submissions.fill(release, submissions.correct_cells(ASSIGNMENT))
    assert tamper.scan(correct, release, [], set()) == []
    forged = copy.deepcopy(correct)
    own = nbformat.v4.new_code_cell("import subprocess", metadata={"nbgrader": {"locked": True}})
    forged.cells.append(own)  # marked read-only, yet no master cell takes its place
    relu = next(c for c in forged.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "relu")
    relu.source += "\nimport socket"
    relu.metadata.nbgrader.update(locked=True, grade=True, points=0)
    flags = tamper.scan(forged, release, [], set())
    assert "an unnamed cell: starts processes" in flags
    assert "relu: uses the network" in flags
    assert "cell relu changed type (grade/solution/read-only flags)" in flags


@pytest.mark.parametrize(
    ("student", "safe"),
    [
        ("alice", True),
        ("jörg.müller-2", True),
        ("=1+1", True),  # no HTML: the CSV export neutralises it
        ("<img src=x onerror=alert(1)>", False),
        ('bob" onmouseover="alert(1)', False),
        ("carol&amp;", False),
        ("dan\x1b[2K", False),
        ("erin\n", False),
    ],
)
def test_student_ids_the_formgrader_would_run_are_refused(student, safe):
    assert inert.safe_student_id(student) is safe
