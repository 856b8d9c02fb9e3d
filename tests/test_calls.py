"""The split of every check: planned on the reference, called with plain data, judged outside.

No kernel here: the kernel's half (nncourse/in_kernel.py) runs in this process on namespaces
built from the reference solutions, exactly as the grader ships it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from nncourse import calls, comparisons, in_kernel, references, standins
from nncourse.course import checks

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "source" / "simple_nn" / "simple_neural_network.ipynb"


def reference_ns(grade_id: str) -> dict:
    """A notebook namespace holding the reference solutions up to the tested function."""
    return dict(references.namespace("simple_nn", checks.CHECKS[grade_id].function_id))


def answer(grade_id: str, user_ns: dict) -> str:
    """What the kernel hands back for a grade cell, given the notebook's namespace."""
    planned = calls.plan(grade_id)
    return in_kernel.run(user_ns, planned.kernel_json(), planned.standins_source())


def master_lines(region: str) -> set[str]:
    """Distinctive lines between the master's BEGIN and END markers of region."""
    lines, inside = set(), False
    for cell in nbformat.read(SOURCE, as_version=4).cells:
        for line in cell.source.splitlines():
            if f"BEGIN {region}" in line or f"END {region}" in line:
                inside = f"BEGIN {region}" in line
            elif inside and len(line.strip()) > 12:
                lines.add(line.strip())
    return lines


def test_every_grade_cell_of_the_master_has_a_check():
    nb = nbformat.read(SOURCE, as_version=4)
    grade_ids = [
        cell.metadata.nbgrader["grade_id"]
        for cell in nb.cells
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade")
    ]
    assert sorted(grade_ids) == sorted(checks.CHECKS)


@pytest.mark.parametrize("grade_id", sorted(checks.CHECKS))
def test_the_reference_passes_through_the_kernel_half(grade_id):
    assert calls.judge(calls.plan(grade_id), answer(grade_id, reference_ns(grade_id))).passed


@pytest.mark.parametrize("grade_id", sorted(checks.CHECKS))
def test_nothing_secret_is_shipped_to_the_kernel(grade_id):
    """The kernel gets inputs and stand-ins: no solution line, hidden test or check code."""
    shipped = calls.plan(grade_id).kernel_expression()
    secrets = master_lines("SOLUTION") | master_lines("HIDDEN TESTS")
    secrets |= {"DETAILS_MARK", "HiddenTestFailure", "references", "MISTAKES"}
    assert [line for line in secrets if line in shipped] == []


def test_an_empty_namespace_fails_every_cell_without_a_flag():
    for grade_id, check in checks.CHECKS.items():
        verdict = calls.judge(calls.plan(grade_id), answer(grade_id, {}))
        assert not verdict.passed
        assert verdict.kind == ""
        if check.function_id in (*checks.ACTIVATIONS, *checks.COSTS):
            assert "raised NameError" in verdict.message


def test_a_named_mistake_is_judged_outside_the_kernel():
    user = reference_ns("relu_derivative")
    user["relu"] = lambda x, deriv=False: (x >= 0) * 1.0 if deriv else np.maximum(0, x)
    verdict = calls.judge(calls.plan("relu_derivative"), answer("relu_derivative", user))
    assert not verdict.passed
    assert "relu'(0) = 0" in verdict.message.split(comparisons.DETAILS_MARK)[0]


def test_changing_the_input_in_place_is_seen_through_the_replay():
    def relu(x, deriv=False):
        np.maximum(x, 0, out=x)
        return x

    user = {**reference_ns("relu_values"), "relu": relu}
    verdict = calls.judge(calls.plan("relu_values"), answer("relu_values", user))
    assert "changed its input array" in verdict.message


def test_the_stand_ins_are_restored_after_the_calls():
    user = reference_ns("backprop_one_hidden_step")
    mine = user["logistic"] = lambda x, deriv=False: 0 * x
    answer("backprop_one_hidden_step", user)
    assert user["logistic"] is mine


@pytest.mark.parametrize(
    ("name", "forged"),
    [
        ("not JSON", "{"),
        ("another check's answer", json.dumps({"check": "tanh_values", "results": []})),
        ("no results", json.dumps({"check": "relu_values"})),
        ("too few results", json.dumps({"check": "relu_values", "results": []})),
        (
            "an array that does not fill its shape",
            json.dumps(
                {
                    "check": "relu_values",
                    "results": [{"value": {"array": [1.0], "shape": [4]}, "args": []}] * 3,
                }
            ),
        ),
        ("a result of no known kind", json.dumps({"check": "relu_values", "results": [[1]]})),
        ("far too long", json.dumps({"check": "relu_values", "pad": "x" * calls.MAX_ANSWER})),
    ],
)
def test_a_malformed_hand_over_fails_and_flags(name, forged):
    verdict = calls.judge(calls.plan("relu_values"), forged)
    assert not verdict.passed, name
    assert verdict.kind == calls.HAND_OVER_BROKEN, name


def test_forged_values_without_the_solution_still_fail():
    """A hand-over can claim anything, but only right values pass: forging means solving."""
    planned = calls.plan("tanh_values")
    honest = json.loads(answer("tanh_values", {"tanh": lambda x, deriv=False: x}))
    verdict = calls.judge(planned, json.dumps(honest))
    assert not verdict.passed
    assert "wrong values" in verdict.message


@pytest.mark.parametrize("name", [*checks.ACTIVATIONS, *checks.COSTS])
def test_the_stand_ins_agree_with_the_references(name):
    rng = np.random.default_rng(3)
    ref = checks.reference(name)
    standin = standins.STANDINS[name]
    if name in checks.ACTIVATIONS:
        x = np.concatenate([rng.normal(scale=3, size=20), [0.0]])
        args = [(x,), (x, True)]
    else:
        preds, y = rng.uniform(0.05, 0.95, size=(9, 1)), rng.integers(0, 2, (9, 1)) * 1.0
        args = [(preds, y), (preds, y, True)]
    for arguments in args:
        np.testing.assert_allclose(standin(*arguments), ref(*arguments), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sizes", [(2, 3, 1), (3, 5, 4, 2, 1)])
def test_the_stand_in_forward_passes_agree_with_the_references(sizes):
    x, _, ws, bs, names = checks._network(sizes, ["tanh"] * (len(sizes) - 2) + ["logistic"], 4)
    act_fs = [standins.STANDINS[n] for n in names]
    depth = "one_hidden" if len(sizes) == 3 else "any_depth"
    got = standins.STANDINS[f"forward_pass_{depth}"](x, ws, bs, act_fs)
    want = checks.reference(f"forward_pass_{depth}")(x, ws, bs, act_fs)
    flat = [
        [a for part in result for a in (part if depth == "any_depth" else [part])]
        for result in (got, want)
    ]
    assert len(flat[0]) == len(flat[1]) == (4 if depth == "one_hidden" else 2 * len(ws))
    for g, w in zip(*flat, strict=True):
        np.testing.assert_allclose(g, w)


def test_the_hidden_block_calls_the_check_of_its_own_cell():
    for cell in nbformat.read(SOURCE, as_version=4).cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in checks.CHECKS:
            assert re.findall(r'check_here\(globals\(\), "(\w+)"\)', cell.source) == [grade_id]
