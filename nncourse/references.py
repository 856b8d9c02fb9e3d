"""Reference solutions, exported from the master notebook: grading keeps no copy of its own."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from nncourse.course import REFERENCE_SOLUTIONS

COURSE_ROOT = Path(__file__).resolve().parent.parent


def solution_cells(notebook: Any) -> list[dict[str, str]]:
    """Return the graded solution cells of a master notebook, in order, as {grade_id, source}."""
    cells = []
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and not meta.get("grade"):
            cells.append({"grade_id": meta["grade_id"], "source": cell.source})
    return cells


def export(source_notebook: Path, course_root: Path) -> Path:
    """Write the solution cells of source_notebook to the package, keyed by its assignment."""
    import nbformat  # here: the instructor's kernels import this module, and nbformat is slow

    assignment = source_notebook.parent.name
    notebook = nbformat.read(source_notebook, as_version=4)
    solutions = {
        "notebook": source_notebook.relative_to(course_root).as_posix(),
        "solutions": solution_cells(notebook),
    }
    REFERENCE_SOLUTIONS.mkdir(exist_ok=True)
    target = REFERENCE_SOLUTIONS / f"{assignment}.json"
    target.write_text(json.dumps(solutions, indent=1) + "\n")
    return target


def exported(assignment: str) -> dict[str, Any]:
    """The exported reference solutions of an assignment."""
    return json.loads((REFERENCE_SOLUTIONS / f"{assignment}.json").read_text())


@functools.cache
def namespace(assignment: str, upto: str) -> dict[str, Any]:
    """Run the reference solution cells in order up to grade id `upto`; return their globals.

    Running them in order, in one namespace, resolves every name the way the notebook does:
    the one-hidden-layer `backprop` calls the one-hidden-layer `forward_pass`, because the
    general one is defined only later.
    """
    names: dict[str, Any] = {"np": np, "report_cost": _silent_report_cost}
    for cell in exported(assignment)["solutions"]:
        exec(compile(cell["source"], f"<reference {cell['grade_id']}>", "exec"), names)
        if cell["grade_id"] == upto:
            return names
    raise KeyError(f"no solution cell {upto!r} in the reference solutions of {assignment!r}")


def _silent_report_cost(epoch: int, epochs: int, cost: float) -> None:
    """Stand in for the notebook's cost printer: the references train without printing."""
