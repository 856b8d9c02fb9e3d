"""A copy of the course in a temporary folder, for the tests that build, grade or demo it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

COURSE_ROOT = Path(__file__).resolve().parents[1]
# Folders the build writes to: source/ too (it normalises notebooks and writes figures),
# and nncourse.references.export() writes the reference solutions into the package.
GENERATED_DIRS = ("source", "release", "solutions", "nncourse/course/reference_solutions")
# Editor and interpreter droppings are nobody's output; never copy or compare them.
IGNORED_PATTERNS = ("__pycache__", ".ipynb_checkpoints", "*.pyc")


def copy_course(dest: Path, extra: tuple[str, ...] = ()) -> None:
    """Copy what the build reads and writes (no gradebook, no student work) into ``dest``."""
    for top in ("nncourse", *GENERATED_DIRS, *extra):
        if (COURSE_ROOT / top).is_dir() and not (dest / top).exists():
            shutil.copytree(
                COURSE_ROOT / top, dest / top, ignore=shutil.ignore_patterns(*IGNORED_PATTERNS)
            )
    shutil.copy2(COURSE_ROOT / "nbgrader_config.py", dest / "nbgrader_config.py")


def execute_in_copy(
    notebook: Path, folder: Path, *, allow_errors: bool = False, extra: str = "", first: str = ""
):
    """Execute a course notebook in a copy of its folder (so its figures resolve); return it.

    ``extra`` is the source of a cell appended after the notebook's own: it runs last;
    ``first`` is the source of a cell put before them: it runs first.
    """
    import nbformat
    from nbclient import NotebookClient

    shutil.copytree(notebook.parent, folder, dirs_exist_ok=True)
    nb = nbformat.read(notebook, as_version=4)
    if extra:
        nb.cells.append(nbformat.v4.new_code_cell(extra))
    if first:
        nb.cells.insert(0, nbformat.v4.new_code_cell(first))
    from nncourse.build import X86_64_NUMERICS

    # The numerics the build pins (AVX2 code for numpy and OpenBLAS): on a CPU with AVX-512 a
    # network trained twice in one kernel can end a few per cent apart, as the arrays' memory
    # alignment changes the order of the vectorised sums, and training amplifies the last bit.
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(folder)}},
    ).execute(env={**os.environ, **X86_64_NUMERICS})
    return nb
