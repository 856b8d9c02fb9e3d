"""Feedback that shows students their work and scores, never hidden tests or reference values."""

from __future__ import annotations

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor

from nncourse.checks import DETAILS_MARK


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
        ClearHiddenTests(enforce_metadata=False)._remove_hidden_test_region(cell)
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
