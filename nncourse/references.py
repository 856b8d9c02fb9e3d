"""Reference solutions, exported from the master notebook: grading keeps no copy of its own."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

EXPORT_DIR = Path(__file__).with_name("reference_solutions")
# Inside the grading sandbox EXPORT_DIR is hidden: the grader hands the exports over in a
# file named by this variable, which this module reads and deletes on import, when the
# kernel starts and before any student code runs.
HANDOVER_ENV = "NNCOURSE_REFERENCES"
HANDOVER_NAME = "references.json"
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
    # nbformat is imported here, not at the top: grading kernels import this module for
    # every hidden test, and nbformat (with jsonschema) takes seconds to import.
    import nbformat

    assignment = source_notebook.parent.name
    notebook = nbformat.read(source_notebook, as_version=4)
    solutions = {
        "notebook": source_notebook.relative_to(course_root).as_posix(),
        "solutions": solution_cells(notebook),
    }
    EXPORT_DIR.mkdir(exist_ok=True)
    target = EXPORT_DIR / f"{assignment}.json"
    target.write_text(json.dumps(solutions, indent=1) + "\n")
    return target


def hand_over(target: Path) -> None:
    """Write every exported assignment's reference solutions to one file for a grading kernel."""
    exports = {
        path.stem: json.loads(path.read_text()) for path in sorted(EXPORT_DIR.glob("*.json"))
    }
    target.write_text(json.dumps(exports))


def _take_handover() -> dict[str, Any]:
    """The exports handed to this kernel, if any; the file is gone once read."""
    path = os.environ.get(HANDOVER_ENV)
    if not path or not os.path.exists(path):
        return {}
    with open(path) as handle:
        exports = json.load(handle)
    os.unlink(path)
    return exports


_HANDED_OVER = _take_handover()


def exported(assignment: str) -> dict[str, Any]:
    """The exported reference solutions of an assignment."""
    if assignment in _HANDED_OVER:
        return _HANDED_OVER[assignment]
    return json.loads((EXPORT_DIR / f"{assignment}.json").read_text())


def require_grading_caller(frame: Any) -> None:
    """In a grading kernel, serve the reference solutions to the hidden tests' checks only."""
    if _HANDED_OVER and frame.f_globals.get("__name__") != "nncourse.checks":
        raise PermissionError("the reference solutions are for the hidden tests only")


def namespace(assignment: str, upto: str) -> dict[str, Any]:
    """The reference solutions' globals after the cell `upto` (see _namespace)."""
    require_grading_caller(sys._getframe(1))
    return _namespace(assignment, upto)


@functools.cache
def _namespace(assignment: str, upto: str) -> dict[str, Any]:
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
