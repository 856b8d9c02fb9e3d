"""The untouched release runs top to bottom: only the students' functions fail, each by name."""

import re

import pytest
from course_copy import execute_in_copy

from nncourse import references

RELEASE = references.COURSE_ROOT / "release" / "simple_nn" / "simple_neural_network.ipynb"

#: What a read-only cell prints when a function it uses is not written yet (the needs helper).
WAITING = re.compile(r"implement `(\w+)` above to run this cell")
#: The message of a release stub, `raise NotImplementedError("implement logistic")`.
STUB = re.compile(r"implement (\w+)")
NEEDS_CALL = re.compile(r"^\s*if needs\(\"(\w+)\"", re.MULTILINE)

pytestmark = pytest.mark.kernels


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The release notebook, executed untouched with allow_errors, as a student's first Run All."""
    return execute_in_copy(RELEASE, tmp_path_factory.mktemp("release"), allow_errors=True)


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _functions(nb) -> set[str]:
    """Names of the functions the students write (defined in solution cells)."""
    return {
        name
        for cell in nb.cells
        if _nbgrader(cell).get("solution")
        for name in re.findall(r"^def (\w+)\(", cell.source, re.MULTILINE)
    }


def _errors(cell) -> list:
    return [out for out in cell.get("outputs", []) if out.output_type == "error"]


def test_stubs_name_their_function(executed) -> None:
    for cell in executed.cells:
        if _nbgrader(cell).get("solution") and cell.cell_type == "code":
            defined = re.findall(r"^def (\w+)\(", cell.source, re.MULTILINE)
            assert f'raise NotImplementedError("implement {defined[-1]}")' in cell.source


def test_only_test_cells_of_unwritten_functions_fail_naming_one(executed) -> None:
    functions = _functions(executed)
    failed = set()
    for index, cell in enumerate(executed.cells):
        if cell.cell_type != "code":
            continue
        errors = _errors(cell)
        grade_id = _nbgrader(cell).get("grade_id", cell.get("id"))
        if not errors:
            continue
        failed.add(grade_id)
        assert _nbgrader(cell).get("grade"), f"cell {index} ({grade_id}) is no test cell but raised"
        (error,) = errors
        assert error.ename == "NotImplementedError", f"{grade_id}: {error.ename}: {error.evalue}"
        match = STUB.fullmatch(error.evalue)
        assert match, f"{grade_id}: {error.evalue!r} names no function"
        assert match.group(1) in functions, f"{grade_id}: {error.evalue!r}"
    # Every function is unwritten, so every test cell must fail (and say why); a written
    # answer (a markdown grade cell) waits for a person instead.
    grade_cells = {
        _nbgrader(c)["grade_id"]
        for c in executed.cells
        if _nbgrader(c).get("grade") and c.cell_type == "code"
    }
    assert failed == grade_cells


def test_cells_waiting_for_functions_print_one_line_and_draw_nothing(executed) -> None:
    waiting = [cell for cell in executed.cells if NEEDS_CALL.search(cell.source)]
    assert len(waiting) >= 8, "the training and plot cells should wait with needs(...)"
    for cell in waiting:
        name = cell.get("id")
        assert not _errors(cell), name
        kinds = {out.output_type for out in cell.outputs}
        # No figure (empty axes) and no result before the functions it shows exist.
        assert kinds == {"stream"}, f"{name}: {kinds}"
        text = "".join(out.text for out in cell.outputs)
        lines = text.splitlines()
        assert len(lines) == 1, f"{name} printed {lines}"
        match = WAITING.fullmatch(lines[0])
        assert match, f"{name} printed {lines[0]!r}"
        # Nothing is written yet, so the first function the cell needs is the one to name.
        assert match.group(1) == NEEDS_CALL.search(cell.source).group(1), name


def test_no_other_cell_prints_an_error_or_to_stderr(executed) -> None:
    for cell in executed.cells:
        if _nbgrader(cell).get("grade"):
            continue
        for out in cell.get("outputs", []):
            assert out.output_type != "error", cell.get("id")
            assert out.get("name") != "stderr", f"{cell.get('id')}: {out.text}"
