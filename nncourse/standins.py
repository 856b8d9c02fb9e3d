"""Stand-ins for the functions a graded function calls, shipped into the kernel for its calls.

A student's backprop calls their own activations, costs and forward pass. The grade cells of
backprop test it with these stand-ins in their place, so that a mistake in an activation costs
points in the activation's cells only. Each stand-in goes into the kernel only with the calls
of a function graded after the stand-in's own cells (nncourse/verdicts.py refuses a notebook
whose cells come in another order), so it cannot earn the points of its own cells. They are
written apart from the reference solutions; tests/test_math.py checks that they agree.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

Array = np.ndarray


def logistic(x: Array, deriv: bool = False) -> Array:
    """The logistic function, or its derivative at x."""
    value = 0.5 * (1.0 + np.tanh(0.5 * x))
    return value * (1.0 - value) if deriv else value


def tanh(x: Array, deriv: bool = False) -> Array:
    """The hyperbolic tangent, or its derivative at x."""
    return 1.0 / np.cosh(x) ** 2 if deriv else np.tanh(x)


def relu(x: Array, deriv: bool = False) -> Array:
    """max(0, x), or its derivative at x (0 at x = 0)."""
    return np.where(x > 0, 1.0, 0.0) if deriv else np.where(x > 0, x, 0.0)


def cross_entropy(y_preds: Array, y: Array, deriv: bool = False) -> Any:
    """The mean cross-entropy, or each example's derivative with respect to its prediction."""
    if deriv:
        return -y / y_preds + (1.0 - y) / (1.0 - y_preds)
    return float(-np.mean(np.where(y == 1, np.log(y_preds), np.log(1.0 - y_preds))))


def mean_squared_error(y_preds: Array, y: Array, deriv: bool = False) -> Any:
    """The mean squared error, or each example's derivative with respect to its prediction."""
    difference = y_preds - y
    return 2.0 * difference if deriv else float(np.mean(difference * difference))


def forward_pass_one_hidden(x: Array, ws: list, bs: list, act_fs: list) -> tuple:
    """Z1, A1, Z2, A2 of a network with exactly one hidden layer."""
    hidden_in = x @ ws[0] + bs[0]
    hidden = act_fs[0](hidden_in)
    out_in = hidden @ ws[1] + bs[1]
    return hidden_in, hidden, out_in, act_fs[1](out_in)


def forward_pass_any_depth(x: Array, ws: list, bs: list, act_fs: list) -> tuple[list, list]:
    """The lists Zs and As of a network of any depth, one entry per layer."""
    pre, post = [], [x]
    for layer, act_f in enumerate(act_fs):
        pre.append(post[-1] @ ws[layer] + bs[layer])
        post.append(act_f(pre[-1]))
    return pre, post[1:]


STANDINS = {
    "logistic": logistic,
    "tanh": tanh,
    "relu": relu,
    "cross_entropy": cross_entropy,
    "mean_squared_error": mean_squared_error,
    "forward_pass_one_hidden": forward_pass_one_hidden,
    "forward_pass_any_depth": forward_pass_any_depth,
}


def source(names: dict[str, str]) -> str:
    """Python source defining each stand-in under the name the notebook uses: {name: stand-in}."""
    parts = [inspect.getsource(STANDINS[standin]) for standin in dict.fromkeys(names.values())]
    parts += [f"{name} = {standin}" for name, standin in names.items() if name != standin]
    return "\n\n".join(parts) + "\n"
