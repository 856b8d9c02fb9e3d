"""The build: committed generated files match a fresh build, and the release leaks nothing."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

import nbformat
import pytest
from course_copy import COURSE_ROOT, GENERATED_DIRS, IGNORED_PATTERNS, copy_course
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from traitlets.config.loader import PyFileConfigLoader

from nncourse import build as nnbuild
from nncourse import notebooks

pytestmark = pytest.mark.kernels


def _snapshot(root: Path, tops: Sequence[str] = GENERATED_DIRS) -> dict[str, bytes]:
    """Return {relative path: bytes} of every file under the folders ``tops`` of ``root``."""
    files: dict[str, bytes] = {}
    for top in tops:
        for path in sorted((root / top).rglob("*")):
            relative = path.relative_to(root)
            ignored = any(
                fnmatch(part, pattern) for part in relative.parts for pattern in IGNORED_PATTERNS
            )
            if path.is_file() and not ignored:
                files[relative.as_posix()] = path.read_bytes()
    return files


def _run_build(root: Path, *assignments: str) -> subprocess.CompletedProcess[str]:
    """Run ``nncourse build`` in ``root`` with a gradebook of its own, as make would."""
    gradebook = root / "test-gradebook.db"
    argv = [sys.executable, "-m", "nncourse", "build", f"--db-url=sqlite:///{gradebook}"]
    # Import the copy of nncourse in root, not the repository's (editable install): the
    # build and references.export() write next to the package, and a test must never
    # write into the repository.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [*argv, *assignments], cwd=root, env=env, capture_output=True, text=True, check=False
    )


def _drift(committed: dict[str, bytes], fresh: dict[str, bytes]) -> list[str]:
    """Describe every file that differs between the commit and a fresh build."""
    lines = [
        f"changed:  {name}"
        for name in sorted(committed.keys() & fresh.keys())
        if committed[name] != fresh[name]
    ]
    lines += [f"not committed: {name}" for name in sorted(fresh.keys() - committed.keys())]
    lines += [
        f"stale (no longer built): {name}" for name in sorted(committed.keys() - fresh.keys())
    ]
    return lines


def _cells(path: Path) -> list[dict]:
    """Return the raw JSON cells of a notebook file."""
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    """Join a raw JSON cell source, which Jupyter stores as a list of lines."""
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


# --- the committed course -----------------------------------------------------------


def test_course_has_assignments() -> None:
    assert nnbuild.discover_assignments(COURSE_ROOT), "source/ holds no assignment notebook"


def test_committed_generated_files_match_fresh_build(tmp_path: Path) -> None:
    committed = _snapshot(COURSE_ROOT)
    copy_course(tmp_path)
    result = _run_build(tmp_path)
    assert result.returncode == 0, f"build failed:\n{result.stdout}\n{result.stderr}"
    drift = _drift(committed, _snapshot(tmp_path))
    assert not drift, (
        "generated files differ from a fresh build; run `make build` and commit:\n"
        + "\n".join(drift)
    )


def test_every_generated_assignment_has_a_source() -> None:
    sources = set(nnbuild.discover_assignments(COURSE_ROOT))
    for top in ("release", "solutions"):
        folder = COURSE_ROOT / top
        built = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
        assert built <= sources, f"{top}/ holds assignments without a source: {built - sources}"


def test_release_holds_no_solutions_hidden_tests_or_outputs() -> None:
    release = sorted((COURSE_ROOT / "release").rglob("*.ipynb"))
    assert release, "release/ holds no notebook: run `make build`"
    for path in release:
        for index, cell in enumerate(_cells(path)):
            where = f"{path.relative_to(COURSE_ROOT)} cell {index}"
            assert nnbuild.SOLUTION_DELIMITER not in _source(cell), f"{where}: solution code"
            assert nnbuild.HIDDEN_TESTS_DELIMITER not in _source(cell), f"{where}: hidden test"
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [], f"{where}: has outputs"
                assert cell["execution_count"] is None, f"{where}: has an execution count"


def test_solutions_hold_no_hidden_tests() -> None:
    for path in sorted((COURSE_ROOT / "solutions").rglob("*.ipynb")):
        for index, cell in enumerate(_cells(path)):
            assert nnbuild.HIDDEN_TESTS_DELIMITER not in _source(cell), (
                f"{path.relative_to(COURSE_ROOT)} cell {index}: hidden test in a solution"
            )


def test_nbgrader_config_names_real_traits() -> None:
    import nbgrader.converters
    import nbgrader.coursedir
    import nbgrader.exchange
    import nbgrader.preprocessors

    from nncourse import executors, limits, sandbox

    config = PyFileConfigLoader("nbgrader_config.py", path=str(COURSE_ROOT)).load_config()
    classes = {
        name: obj
        for module in (
            nbgrader.converters,
            nbgrader.coursedir,
            nbgrader.exchange,
            nbgrader.preprocessors,
            executors,
            limits,
            sandbox,
        )
        for name, obj in vars(module).items()
        if isinstance(obj, type)
    }
    for section, traits in config.items():
        assert section in classes, f"neither nbgrader nor nncourse has a configurable {section}"
        known = classes[section].class_traits(config=True)
        for trait in traits:
            assert trait in known, f"{section} has no configurable trait {trait}"

    default = nbgrader.converters.GenerateSolution.class_traits()["preprocessors"].default()
    expected = list(default)
    expected.insert(
        default.index(nbgrader.preprocessors.Execute), nbgrader.preprocessors.ClearHiddenTests
    )
    assert config.GenerateSolution.preprocessors == expected

    # The release: nbgrader's own list, with a ClearSolutions whose stub names its function.
    from nncourse.stubs import NamedStubs

    default = nbgrader.converters.GenerateAssignment.class_traits()["preprocessors"].default()
    clear = nbgrader.preprocessors.ClearSolutions
    expected = [NamedStubs if step is clear else step for step in default]
    assert config.GenerateAssignment.preprocessors == expected


# --- the build itself, on a toy course made here --------------------------------------


def _grader(grade_id: str, **flags: object) -> dict:
    """nbgrader cell metadata (schema 3) with the given flags."""
    metadata = {
        "grade": False,
        "solution": False,
        "locked": False,
        "task": False,
        "grade_id": grade_id,
        "schema_version": 3,
    }
    metadata.update(flags)
    return {"nbgrader": metadata}


def _toy_course(root: Path, *, plot: str = "plt.plot([0, 1], [1, 0])\nplt.show()") -> None:
    """Write a one-notebook course: a solution, a grade cell with hidden tests, a figure."""
    cells = [
        new_markdown_cell("# Toy\n\n![line](figures/line.png)"),
        new_code_cell("import matplotlib.pyplot as plt\nprint({'a', 'b', 'c', 'd', 'e'})"),
        new_code_cell(
            "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
            metadata=_grader("double", solution=True),
        ),
        new_code_cell(
            "assert double(1) == 2\n### BEGIN HIDDEN TESTS\nassert double(-3) == -6\n"
            "### END HIDDEN TESTS",
            metadata=_grader("test_double", grade=True, locked=True, points=1),
        ),
        new_code_cell(plot, metadata={"nncourse": {"figure": "line"}, "scrolled": True}),
    ]
    nb = new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "version": "3.11.0"},
            "celltoolbar": "Create Assignment",
        },
    )
    (root / "source" / "toy").mkdir(parents=True)
    nbformat.write(nb, str(root / "source" / "toy" / "toy.ipynb"))
    shutil.copy2(COURSE_ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    shutil.copytree(
        COURSE_ROOT / "nncourse",
        root / "nncourse",
        ignore=shutil.ignore_patterns(*IGNORED_PATTERNS),
    )


def test_toy_build_is_complete_and_byte_identical_when_repeated(tmp_path: Path) -> None:
    _toy_course(tmp_path)
    first = _run_build(tmp_path, "toy")
    assert first.returncode == 0, f"build failed:\n{first.stdout}\n{first.stderr}"
    built = _snapshot(tmp_path, ("source", "release", "solutions"))
    assert set(built) == {
        "source/toy/toy.ipynb",
        "source/toy/figures/line.png",
        "release/toy/toy.ipynb",
        "release/toy/figures/line.png",
        "solutions/toy/toy.ipynb",
        "solutions/toy/figures/line.png",
    }
    assert built["source/toy/figures/line.png"].startswith(b"\x89PNG")
    release = "".join(_source(c) for c in _cells(tmp_path / "release/toy/toy.ipynb"))
    assert "return 2 * x" not in release
    assert "double(-3)" not in release
    solution = _cells(tmp_path / "solutions/toy/toy.ipynb")
    assert "return 2 * x" in _source(solution[2])
    assert "double(-3)" not in _source(solution[3])
    assert any("image/png" in out.get("data", {}) for out in solution[4]["outputs"])

    second = _run_build(tmp_path, "toy")
    assert second.returncode == 0, f"second build failed:\n{second.stdout}\n{second.stderr}"
    assert not _drift(built, _snapshot(tmp_path, ("source", "release", "solutions")))


def test_a_build_nbgrader_refuses_keeps_the_release_and_solutions(tmp_path: Path) -> None:
    """nbgrader fails after our checks passed: the last good release/ and solutions/ stay."""
    _toy_course(tmp_path)
    assert _run_build(tmp_path, "toy").returncode == 0
    before = _snapshot(tmp_path, ("release", "solutions"))
    source = tmp_path / "source/toy/toy.ipynb"
    nb = nbformat.read(str(source), as_version=4)
    # A solution region outside a solution cell: nbgrader's generate_assignment refuses it.
    nb.cells.append(new_markdown_cell("### BEGIN SOLUTION\nleaked\n### END SOLUTION"))
    nbformat.write(nb, str(source))

    result = _run_build(tmp_path, "toy")
    assert result.returncode == 1, result.stderr
    assert "nbgrader generate_assignment toy failed" in result.stderr
    assert _snapshot(tmp_path, ("release", "solutions")) == before


def test_figure_cell_without_image_fails_naming_the_cell(tmp_path: Path) -> None:
    _toy_course(tmp_path, plot="print('no plot here')")
    result = _run_build(tmp_path, "toy")
    assert result.returncode == 1
    assert "figure 'line'" in result.stderr
    assert "produced no image/png output" in result.stderr


def test_normalise_keeps_what_matters_and_drops_the_rest() -> None:
    cell = new_code_cell(
        "1 + 1", execution_count=3, outputs=[new_output("stream", name="stdout", text="x")]
    )
    cell.metadata = {
        "nbgrader": {"grade": False},
        "nncourse": {"figure": "f"},
        "tags": ["t"],
        "execution": {"iopub.status.busy": "now"},
        "collapsed": True,
    }
    nb = new_notebook(
        cells=[cell],
        metadata={
            "kernelspec": {"name": "python3", "language": "python", "display_name": "P"},
            "language_info": {"name": "python", "version": "3.11.7"},
            "widgets": {},
        },
    )
    # An nbformat 4.4 notebook, as old tools saved them: cells without ids.
    nb.nbformat_minor = 4
    del nb.cells[0]["id"]

    notebooks.normalise(nb)

    assert nb.nbformat_minor == 5
    assert nb.metadata == {
        "kernelspec": {"name": "python3", "language": "python", "display_name": "P"},
        "language_info": {"name": "python"},
    }
    only = nb.cells[0]
    assert only.id == "cell-0"
    assert set(only.metadata) == {"nbgrader", "nncourse", "tags"}
    assert only.outputs == []
    assert only.execution_count is None
    text = notebooks.dumps(nb)
    assert text.endswith("}\n")
    assert text.startswith('{\n "cells": [\n  {\n')


@pytest.mark.parametrize("keep_outputs", [False, True])
def test_normalise_is_idempotent(keep_outputs: bool) -> None:
    nb = new_notebook(
        cells=[new_code_cell("print(1)", outputs=[new_output("stream", name="stdout", text="1\n")])]
    )
    once = notebooks.dumps(notebooks.normalise(nb, keep_outputs=keep_outputs))
    twice = notebooks.dumps(
        notebooks.normalise(nbformat.reads(once, as_version=4), keep_outputs=keep_outputs)
    )
    assert once == twice
    outputs = json.loads(once)["cells"][0]["outputs"]
    assert outputs == (
        [{"name": "stdout", "output_type": "stream", "text": ["1\n"]}] if keep_outputs else []
    )


def test_normalise_merges_stream_chunks_however_the_kernel_flushed_them() -> None:
    chunks = [
        new_output("stream", name="stdout", text="epoch 0\n"),
        new_output("stream", name="stdout", text="epoch 1\nepoch 2\n"),
        new_output("stream", name="stderr", text="warning\n"),
        new_output("stream", name="stdout", text="done\n"),
    ]
    nb = new_notebook(cells=[new_code_cell("train()", outputs=chunks)])
    outputs = notebooks.normalise(nb, keep_outputs=True).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [
        ("stdout", "epoch 0\nepoch 1\nepoch 2\n"),
        ("stderr", "warning\n"),
        ("stdout", "done\n"),
    ]
