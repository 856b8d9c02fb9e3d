"""Student notebooks made inert: the payload suite in nbconvert's HTML, and what must survive."""

import base64
import copy
import html
import re
from pathlib import Path

import nbformat
import pytest
from active_content import PAYLOADS, active_parts, cell
from nbconvert import HTMLExporter
from nbgrader import utils

from nncourse import inert

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
