"""Signs that a submission tried to get around grading: flags for a human, never a score."""

from __future__ import annotations

import ast
import copy
import re
from collections import Counter

from nbformat.notebooknode import NotebookNode

# Code in a student's cells that has no business in an exercise on neural networks, with the
# reason an instructor reads. Each entry is (regular expression on the source, reason).
SUSPICIOUS_CODE = [
    (r"\bget_ipython\b|\bInteractiveShell\b|\bIPython\b", "uses IPython's shell from its code"),
    (r"input_transformers|ast_transformers", "registers IPython input or AST transformers"),
    (r"set_custom_exc|showtraceback|excepthook", "replaces the exception handler or traceback"),
    (r"\bnncourse\b|\bchecks\.", "reaches for the grading code"),
    (r"os\._exit|sys\.exit|\bexit\(|\bquit\(", "exits the kernel"),
    (
        r"\bsubprocess\b|os\.system|os\.popen|os\.fork|\bmultiprocessing\b|\bpty\b",
        "starts processes",
    ),
    (r"\bsocket\b|urllib|http\.client|\brequests\b", "uses the network"),
    (r"\bsignal\.signal\b", "changes signal handling"),
    (
        r"\bctypes\b|\bsys\.modules\b|__builtins__|\bbuiltins\b|\bgc\.get_objects\b"
        r"|\bsys\._getframe\b|\binspect\b|\.f_back\b|\.f_locals\b",
        "reaches into the interpreter",
    ),
    (
        r"\bopen\(|\bPath\(|os\.(remove|unlink|rename|chmod|listdir|walk|scandir)|shutil\."
        r"|\bglob\b|\bsqlite3\b",
        "reads or writes files",
    ),
]
PATCHED_MODULES = {"np", "numpy", "math", "builtins", "__builtins__", "sys", "os", "time"}


def scan(
    submitted: NotebookNode, release: NotebookNode, files: list[str], expected: set[str]
) -> list[str]:
    """Every sign of tampering in a submitted notebook, compared with its release, and beside it."""
    flags = _grade_cell_flags(submitted, release)
    # Which cells are the student's is the release's word, never the submission's metadata: a
    # cell of the student's own marked read-only still runs.
    restored = {c["grade_id"] for c in _nbgrader_cells(release) if c.get("locked")}
    for cell in submitted.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if cell.get("cell_type") != "code" or grade_id in restored:
            continue  # nbgrader puts the master's source of a read-only cell back
        flags += _code_flags(cell.get("source", ""), grade_id or "an unnamed cell")
    flags += [f"submitted an extra file {name}" for name in sorted(set(files) - expected)]
    return list(dict.fromkeys(flags))


def _nbgrader_cells(nb: NotebookNode) -> list[dict]:
    """The nbgrader metadata and source of each nbgrader cell."""
    found = []
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader")
        if isinstance(meta, dict) and meta.get("grade_id"):
            found.append({**meta, "source": cell.get("source", ""), "type": cell.get("cell_type")})
    return found


def _grade_cell_flags(submitted: NotebookNode, release: NotebookNode) -> list[str]:
    """Grade and read-only cells deleted, edited, duplicated, invented or given other points."""
    master = {c["grade_id"]: c for c in _nbgrader_cells(release)}
    cells = _nbgrader_cells(submitted)
    flags = [
        f"duplicated cell {gid}"
        for gid, n in Counter(c["grade_id"] for c in cells).items()
        if n > 1
    ]
    for cell in cells:
        gid, original = cell["grade_id"], master.get(cell["grade_id"])
        if cell.get("schema_version") != 3:
            flags.append(f"cell {gid} has nbgrader schema version {cell.get('schema_version')!r}")
        if original is None:
            if cell.get("grade") or cell.get("locked"):
                flags.append(f"cell {gid} is not in the assignment (invented or renamed)")
            continue
        if (cell.get("grade"), cell.get("solution"), cell.get("locked"), cell["type"]) != (
            original.get("grade"),
            original.get("solution"),
            original.get("locked"),
            original["type"],
        ):
            flags.append(f"cell {gid} changed type (grade/solution/read-only flags)")
        if original.get("grade") and cell.get("points") != original.get("points"):
            flags.append(
                f"cell {gid} claims {cell.get('points')} points instead of {original['points']}"
            )
        # A written answer (a grade cell that is also a solution cell) is the student's to edit.
        read_only = original.get("locked") or (
            original.get("grade") and not original.get("solution")
        )
        if read_only and cell["source"] != original["source"]:
            flags.append(f"edited read-only cell {gid}")
    present = {c["grade_id"] for c in cells}
    flags += [
        f"deleted cell {gid}"
        for gid, c in master.items()
        if gid not in present and (c.get("grade") or c.get("locked"))
    ]
    return flags


def _code_flags(source: str, where: str) -> list[str]:
    """Suspicious code in one student cell."""
    flags = [
        f"{where}: {reason}" for pattern, reason in SUSPICIOUS_CODE if re.search(pattern, source)
    ]
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return flags  # IPython syntax (magics) or a plain mistake: the kernel will say
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and _root_name(target) in PATCHED_MODULES:
                flags.append(f"{where}: replaces {ast.unparse(target)}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and node.args:
            if _root_name(node.args[0]) in PATCHED_MODULES:
                flags.append(f"{where}: replaces an attribute of {ast.unparse(node.args[0])}")
        if isinstance(node, ast.FunctionDef) and node.name in (
            "__eq__",
            "__ne__",
            "__bool__",
            "__float__",
        ):
            flags.append(f"{where}: defines {node.name}, which can fool comparisons")
    return flags


def _root_name(node: ast.AST) -> str | None:
    """The name at the root of an attribute chain: np for np.testing.assert_allclose."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def repair(submitted: NotebookNode, release: NotebookNode) -> NotebookNode:
    """Give every nbgrader cell back the master's identity, so that grading can go on.

    Duplicated cells lose their copies, cells with invented ids or broken metadata become plain
    student cells, and every known cell gets the release's metadata (type, points, schema).
    nbgrader then restores read-only and grade cells from the gradebook by their id, and adds
    the deleted ones back, so the master's tests run whatever was done to them.
    """
    master = {}
    for cell in release.cells:
        meta = cell.metadata.get("nbgrader")
        if meta:
            master[meta["grade_id"]] = cell
    kept, seen = [], set()
    for cell in submitted.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if meta is not None and grade_id not in master:
            del cell.metadata["nbgrader"]
        elif grade_id in master:
            if grade_id in seen:
                continue
            seen.add(grade_id)
            original = master[grade_id]
            cell.metadata["nbgrader"] = copy.deepcopy(original.metadata["nbgrader"])
            if cell.cell_type != original.cell_type:
                cell = copy.deepcopy(original)
        kept.append(cell)
    submitted.cells = kept
    return submitted
