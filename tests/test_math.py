"""The reference solutions' derivatives and gradient steps agree with finite differences."""

import copy

import numpy as np
import pytest

from nncourse import submissions
from nncourse.comparisons import numerical_gradient
from nncourse.course import MISTAKES, checks

EPS = 1e-6


def reference(function_id, name=None):
    """A reference function as the master notebook defines it at the cell function_id."""
    return checks.reference(function_id, name)


def test_numerical_gradient_of_a_known_function_and_params_restored():
    """The checks' finite differences, against the gradient of sum(a * w**2) + b @ w, 2aw + b."""
    rng = np.random.default_rng(3)
    a, b, w = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
    kept = w.copy()
    (grad,) = numerical_gradient(lambda: float(np.sum(a * w**2) + b @ w), [w])
    np.testing.assert_allclose(grad, 2 * a * w + b, rtol=1e-6, atol=1e-8)
    assert np.array_equal(w, kept)


@pytest.mark.parametrize("name", checks.ACTIVATIONS)
def test_activation_derivative_matches_finite_differences(name):
    f = reference(name)
    x = np.random.default_rng(0).normal(scale=3, size=50)
    x = x[np.abs(x) > 1e-3]  # away from relu's kink, where no derivative exists
    measured = (f(x + EPS) - f(x - EPS)) / (2 * EPS)
    np.testing.assert_allclose(f(x, deriv=True), measured, rtol=1e-6, atol=1e-9)


def test_relu_derivative_at_zero_is_zero():
    assert reference("relu")(np.array([0.0]), deriv=True)[0] == 0.0


@pytest.mark.parametrize("name", checks.COSTS)
@pytest.mark.parametrize("shape", [(8,), (8, 1)])
def test_cost_derivative_is_per_example_derivative_of_the_loss(name, shape):
    cost = reference(name)
    rng = np.random.default_rng(1)
    y_preds, y = rng.uniform(0.05, 0.95, size=shape), rng.integers(0, 2, size=shape).astype(float)
    # The mean cost weighs each example by 1/m, so m times its gradient is each example's own.
    (grad,) = numerical_gradient(lambda: cost(y_preds, y), [y_preds])
    np.testing.assert_allclose(cost(y_preds, y, deriv=True), len(y) * grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", checks.COSTS)
def test_cost_is_a_non_negative_mean(name):
    cost = reference(name)
    y_preds, y = np.array([0.2, 0.7, 0.9]), np.array([0.0, 1.0, 0.0])
    value = cost(y_preds, y)
    assert isinstance(value, float)
    assert value > 0
    assert np.isclose(cost(np.tile(y_preds, 3), np.tile(y, 3)), value)


def test_gradient_descent_step_is_minus_lrate_times_the_gradient():
    logistic, cross_entropy = (
        reference("gradient_descent", "logistic"),
        reference("gradient_descent", "cross_entropy"),
    )
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(9, 2)), rng.integers(0, 2, size=9).astype(float)
    ws, b = rng.normal(size=2), np.array(0.3)
    new_ws, new_b, y_pred = reference("gradient_descent")(x, y, ws.copy(), float(b), 0.4, 1)
    grad_ws, grad_b = numerical_gradient(lambda: cross_entropy(logistic(x @ ws + b), y), [ws, b])
    np.testing.assert_allclose(new_ws - ws, -0.4 * grad_ws, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(new_b - b, -0.4 * grad_b, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(y_pred, logistic(x @ ws + b))


@pytest.mark.parametrize(("sizes", "act_names", "cost"), checks.NETWORKS, ids=lambda v: str(v))
def test_backprop_step_is_minus_lrate_times_the_gradient(sizes, act_names, cost):
    function_id = "backprop_one_hidden" if len(sizes) == 3 else "backprop_any_depth"
    x, y, ws, bs, _ = checks._network(sizes, act_names, seed=5)
    act_fs = [reference(function_id, name) for name in act_names]
    cost_f = reference(function_id, cost)
    new_ws, new_bs = reference(function_id)(
        x, y, copy.deepcopy(ws), copy.deepcopy(bs), act_fs, cost_f, 0.2, 1
    )[:2]
    grads = numerical_gradient(
        lambda: cost_f(checks._forward(x, ws, bs, act_fs)[1][-1], y), ws + bs
    )
    for before, after, grad in zip(ws + bs, list(new_ws) + list(new_bs), grads, strict=True):
        np.testing.assert_allclose(after - before, -0.2 * grad, rtol=1e-5, atol=1e-9)


ONE_HIDDEN_NETWORKS = [network for network in checks.NETWORKS if len(network[0]) == 3]


@pytest.mark.parametrize(("sizes", "act_names", "cost"), ONE_HIDDEN_NETWORKS, ids=lambda v: str(v))
def test_general_backprop_agrees_with_one_hidden_where_both_apply(sizes, act_names, cost):
    x, y, ws, bs, _ = checks._network(sizes, act_names, seed=6)
    results = []
    for function_id in ["backprop_one_hidden", "backprop_any_depth"]:
        act_fs = [reference(function_id, name) for name in act_names]
        results.append(
            reference(function_id)(
                x,
                y,
                copy.deepcopy(ws),
                copy.deepcopy(bs),
                act_fs,
                reference(function_id, cost),
                0.3,
                15,
            )
        )
    (ws1, bs1, z1, a1, z2, a2), (ws_n, bs_n, zs, activations) = results
    for a, b in zip([*ws1, *bs1, z1, z2, a1, a2], [*ws_n, *bs_n, *zs, *activations], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize(
    "mistake",
    [
        "updated_weights",
        "derivative_of_activation",
        "derivative_of_hidden_activation",
        "missing_hidden_derivative",
        "double_logistic_derivative",
    ],
)
def test_known_wrong_gradients_really_are_wrong(mistake):
    """The mistakes the checks recognise differ from the true gradient: no false alarms."""
    sizes, act_names, cost = checks.NETWORKS[4]
    x, y, ws, bs, _ = checks._network(sizes, act_names, seed=8)
    act_fs = [reference("backprop_any_depth", name) for name in act_names]
    cost_f = reference("backprop_any_depth", cost)
    wrong = checks._known_wrong_gradients(x, y, ws, bs, act_fs, cost_f, 0.2, mistake)
    right = numerical_gradient(
        lambda: cost_f(checks._forward(x, ws, bs, act_fs)[1][-1], y), ws + bs
    )
    assert not all(np.allclose(w, r, rtol=1e-4) for w, r in zip(wrong, right, strict=True))


def test_clipped_cross_entropy_is_finite_where_the_plain_one_takes_log_0():
    """The point of clipping: a finite cost for a prediction rounded to exactly 1."""
    fixture = submissions.parse_fixture(MISTAKES / "passes_cross_entropy_clipped.py")
    names = {"np": np}
    exec(fixture.source, names)  # noqa: S102 - a fixture of this repository
    y_preds, y = np.array([1.0, 0.5]), np.array([0.0, 1.0])
    assert np.isfinite(names["cross_entropy"](y_preds, y))
    with np.errstate(divide="ignore", invalid="ignore"):
        assert not np.isfinite(reference("cross_entropy")(y_preds, y))
