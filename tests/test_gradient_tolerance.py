"""One gradient-check tolerance: far above what correct code gives, far below what bugs give.

The notebook's ``GRADIENT_CHECK_TOLERANCE`` marks a parameter in ``gradient_check``'s output,
decides the visible tests of ``backprop`` and is stated in the text. Here the notebook's own
``gradient_check`` runs on the reference solution for every activation, cost and depth the
notebook checks and more, and on every wrong ``backprop`` of the fixtures that loses a step cell,
with the settings of the visible tests.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
from typing import Any

import numpy as np
import pytest

from nncourse import notebooks, references, submissions
from nncourse.course import MISTAKES

SOURCE = references.COURSE_ROOT / "source" / "simple_nn" / "simple_neural_network.ipynb"
FIXTURES_DIR = MISTAKES
#: What the text says correct code gives at most, and a bug at least.
CORRECT_AT_MOST, BUG_AT_LEAST = 3e-7, 1e-3
#: The checks of the visible tests: (layer sizes, activations, cost) for either backprop.
VISIBLE_CHECKS = {
    "backprop_one_hidden": [
        ((2, 3, 1), ("tanh", "logistic"), "cross_entropy"),
        ((2, 3, 1), ("relu", "tanh"), "mean_squared_error"),
    ],
    "backprop_any_depth": [
        ((2, 1), ("logistic",), "cross_entropy"),
        ((2, 3, 1), ("tanh", "logistic"), "mean_squared_error"),
        ((2, 4, 3, 1), ("relu", "tanh", "logistic"), "cross_entropy"),
    ],
}


def _cell_source(grade_id: str) -> str:
    nb = notebooks.read(SOURCE)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return cell.source


@pytest.fixture(scope="module")
def helper() -> dict[str, Any]:
    """The notebook's gradient-check cell, run: its tolerance and gradient_check."""
    names: dict[str, Any] = {"np": np, "copy": copy}
    exec(_cell_source("gradient_check_helper"), names)
    return names


def worst_error(
    helper: dict[str, Any], names: dict[str, Any], sizes, act_fs, cost, seed=0
) -> float:
    """gradient_check's worst relative error for the backprop and forward_pass in names."""
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        return helper["gradient_check"](
            names["backprop"],
            names["forward_pass"],
            [names[f] for f in act_fs],
            names[cost],
            layer_sizes=sizes,
            seed=seed,
        )


def _every_network() -> list[tuple[tuple[int, ...], tuple[str, ...], str]]:
    """Every depth the notebook checks, every hidden activation, every output that fits a cost."""
    networks = []
    for sizes in [(2, 1), (2, 3, 1), (2, 4, 3, 1)]:
        for hidden in ["logistic", "tanh", "relu"]:
            for output, cost in [
                ("logistic", "cross_entropy"),
                ("logistic", "mean_squared_error"),
                ("tanh", "mean_squared_error"),
            ]:
                networks.append((sizes, (hidden,) * (len(sizes) - 2) + (output,), cost))
    return sorted(set(networks))


def test_the_tolerance_is_one_constant_the_tests_and_text_use(helper) -> None:
    tolerance = helper["GRADIENT_CHECK_TOLERANCE"]
    exponent = round(np.log10(tolerance))
    assert tolerance == 10.0**exponent
    assert CORRECT_AT_MOST * 10 <= tolerance <= BUG_AT_LEAST / 10, "no margin on either side"
    nb = notebooks.read(SOURCE)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    stated = set(re.findall(r"10\^\{(-\d+)\}", text))
    assert str(exponent) in stated, f"the text never states 10^{{{exponent}}}"
    assert "GRADIENT_CHECK_TOLERANCE" in text
    for grade_id in VISIBLE_CHECKS:
        source = _cell_source(f"{grade_id}_step")
        assert "error < GRADIENT_CHECK_TOLERANCE" in source, grade_id
        assert not re.search(r"\d+e-\d+", source.partition("### END HIDDEN TESTS")[2]), grade_id


@pytest.mark.parametrize("version", ["backprop_one_hidden", "backprop_any_depth"])
def test_correct_code_stays_far_below_the_tolerance(helper, version: str) -> None:
    names = references.namespace("simple_nn", version)
    one_hidden = version == "backprop_one_hidden"
    networks = {n for n in _every_network() if len(n[0]) == 3 or not one_hidden}
    networks |= set(VISIBLE_CHECKS[version])  # the mixed activations of the visible tests
    errors = [
        worst_error(helper, names, *network, seed=seed) for network in networks for seed in range(5)
    ]
    assert max(errors) <= CORRECT_AT_MOST
    assert min(errors) > 0, "finite differences are never exact"


def _step_bugs() -> list[submissions.Fixture]:
    return [
        f
        for f in submissions.load_fixtures(FIXTURES_DIR)
        if f.cell in VISIBLE_CHECKS and f"{f.cell}_step" in f.loses
    ]


@pytest.mark.parametrize("fixture", _step_bugs(), ids=lambda f: f.name)
def test_a_bug_that_loses_a_step_cell_gives_far_more(helper, fixture) -> None:
    # A copy: the cached reference namespace must keep the reference's own backprop.
    names = dict(references.namespace("simple_nn", fixture.cell))
    exec(compile(fixture.source, fixture.name, "exec"), names)
    errors = []
    for network in VISIBLE_CHECKS[fixture.cell]:
        try:
            errors.append(worst_error(helper, names, *network))
        except Exception:  # noqa: BLE001 - a crash is a failed check too, not an error size
            errors.append(np.inf)
    assert max(errors) >= BUG_AT_LEAST, f"{fixture.name}: worst relative error {max(errors):.1e}"


def test_known_fixtures_cover_step_bugs() -> None:
    assert len(_step_bugs()) >= 10
