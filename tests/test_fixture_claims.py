"""What a fixture's header claims, checked without nbgrader: its visible tests and its verdicts.

The visible tests of a grade cell (the asserts after its hidden block) run here on the
fixture's function, with the reference solution for everything else; the first one that fails
must be the one the fixture's ``# visible:`` line names. The hidden checks run through
``check_here``, the same plan, call and judge as in grading.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest

from nncourse import references, submissions
from nncourse.calls import check_here
from nncourse.checks import HiddenTestFailure

ASSIGNMENT = "simple_nn"
SOURCE = references.COURSE_ROOT / "source" / ASSIGNMENT / "simple_neural_network.ipynb"
FIXTURES = submissions.load_fixtures(Path(__file__).parent / "fixtures" / "mistakes")
HIDDEN_END = "### END HIDDEN TESTS"
#: Locked cells whose definitions the visible tests use (the data, the gradient checker).
HELPERS = ("data_generation", "gradient_check_helper")


def _grade_cells(solution_id: str) -> list[nbformat.NotebookNode]:
    """The grade cells that follow a solution cell, up to the next solution cell."""
    found, cells = False, []
    for cell in nbformat.read(SOURCE, as_version=4).cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if nbgrader.get("solution"):
            if found:
                break
            found = nbgrader["grade_id"] == solution_id
        elif found and nbgrader.get("grade"):
            cells.append(cell)
    return cells


def _namespace(fixture: submissions.Fixture) -> dict[str, Any]:
    """The reference functions up to the fixture's cell, the helpers, then the fixture's code."""
    names = dict(references.namespace(ASSIGNMENT, fixture.cell))
    names["copy"] = copy
    cells = nbformat.read(SOURCE, as_version=4).cells
    for cell in cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in HELPERS:
            exec(cell.source, names)  # noqa: S102 - the master's own locked cells
    exec(fixture.source, names)  # noqa: S102 - a fixture of this repository
    return names


def _first_visible_failure(fixture: submissions.Fixture) -> tuple[str, ...]:
    """(grade id, message) of the first visible test that fails on the fixture, or ()."""
    names = _namespace(fixture)
    for cell in _grade_cells(fixture.cell):
        visible = cell.source.split(HIDDEN_END, 1)[1]
        try:
            exec(visible, names)  # noqa: S102 - the master's own visible tests
        except AssertionError as failure:
            return cell.metadata.nbgrader["grade_id"], str(failure)
    return ()


STATED = [fixture for fixture in FIXTURES if fixture.visible is not None]


@pytest.mark.parametrize("fixture", STATED, ids=[fixture.name for fixture in STATED])
def test_first_visible_failure_is_the_one_the_fixture_states(fixture) -> None:
    found = _first_visible_failure(fixture)
    if not fixture.visible:
        assert found == (), f"{fixture.name}: a visible test fails: {found}"
        return
    assert found, f"{fixture.name}: no visible test fails"
    cell, text = fixture.visible
    assert found[0] == cell, f"{fixture.name}: {found}"
    assert found[1].startswith(text), f"{fixture.name}: {found}"


@pytest.mark.parametrize("fixture", STATED, ids=[fixture.name for fixture in STATED])
def test_hidden_checks_decide_as_the_fixture_says(fixture) -> None:
    """Each grade cell of the fixture's function fails exactly when the fixture loses it."""
    names = _namespace(fixture)
    shows = dict(fixture.shows)
    for cell in _grade_cells(fixture.cell):
        grade_id = cell.metadata.nbgrader["grade_id"]
        if grade_id not in fixture.loses:
            check_here(names, grade_id)
            continue
        with pytest.raises(HiddenTestFailure) as failure:
            check_here(names, grade_id)
        assert shows[grade_id] in str(failure.value)


def test_init_params_fixtures_state_their_visible_failure() -> None:
    """The fixtures of the newest function all say what their student sees first."""
    init = [fixture for fixture in FIXTURES if fixture.cell == "init_params"]
    assert sum(fixture.name.startswith("fails_") for fixture in init) >= 2
    assert any(fixture.name.startswith("passes_") for fixture in init)
    assert all(fixture.visible is not None for fixture in init)


CROSS_ENTROPY_CELLS = ("cross_entropy_value", "cross_entropy_derivative")
STABLE = ["passes_cross_entropy_clipped", "passes_cross_entropy_from_logits"]


@pytest.mark.parametrize("name", [None, *STABLE], ids=["plain reference", *STABLE])
def test_plain_and_stable_cross_entropy_pass_the_hidden_checks(name) -> None:
    """The plain reference and both stable forms pass every cross-entropy check."""
    if name is None:
        names = dict(references.namespace(ASSIGNMENT, "cross_entropy"))
    else:
        (fixture,) = [fixture for fixture in FIXTURES if fixture.name == name]
        names = _namespace(fixture)
    for grade_id in CROSS_ENTROPY_CELLS:
        check_here(names, grade_id)


def test_stable_cross_entropy_survives_predictions_rounded_to_one() -> None:
    """The point of the stable forms: a finite cost where the plain formula takes log(0)."""
    (fixture,) = [fixture for fixture in FIXTURES if fixture.name == STABLE[0]]
    cost = _namespace(fixture)["cross_entropy"](np.array([1.0, 0.5]), np.array([0.0, 1.0]))
    assert np.isfinite(cost)


def test_check_here_fails_a_wrong_cross_entropy() -> None:
    """The hidden check above can fail: a summed cost is refused."""
    names = dict(references.namespace(ASSIGNMENT, "cross_entropy"))
    plain = names["cross_entropy"]
    names["cross_entropy"] = lambda y_preds, y, deriv=False: (
        plain(y_preds, y, deriv) if deriv else plain(y_preds, y) * len(y)
    )
    with pytest.raises(HiddenTestFailure, match="sum over the examples"):
        check_here(names, "cross_entropy_value")
