"""The hidden tests' checks: compare a student's function with the reference; name mistakes.

They run in the grader only, never in a student's kernel: nncourse/calls.py records the calls
a check makes, has the kernel make them on the student's function and replays the results here.
How values are compared and failures worded is nncourse/comparisons.py.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nncourse import references
from nncourse.comparisons import (
    Array,
    HiddenTestFailure,
    as_array,
    as_number,
    call,
    close,
    mismatch,
    numerical_gradient,
    show,
    unpack,
)
from nncourse.in_kernel import quiet

ASSIGNMENT = "simple_nn"
ACTIVATIONS = ("logistic", "tanh", "relu")
COSTS = ("cross_entropy", "mean_squared_error")

# What each graded function may call. While a function is tested, stand-ins take these names
# (nncourse/standins.py), so that a mistake costs points only in its own cells.
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "logistic": (),
    "tanh": (),
    "relu": (),
    "cross_entropy": (),
    "mean_squared_error": (),
    "gradient_descent": ACTIVATIONS + COSTS,
    "forward_pass_one_hidden": ACTIVATIONS,
    "backprop_one_hidden": (*ACTIVATIONS, *COSTS, "forward_pass"),
    "forward_pass_any_depth": ACTIVATIONS,
    "backprop_any_depth": (*ACTIVATIONS, *COSTS, "forward_pass"),
    "init_params": (),
}


def notebook_name(function_id: str) -> str:
    """The name a solution cell's function has in the notebook (both backprops are `backprop`)."""
    return re.sub(r"_(one_hidden|any_depth)$", "", function_id)


def reference(function_id: str, name: str | None = None) -> Any:
    """Return the reference function `name` as the notebook defines it at the cell `function_id`."""
    return references.namespace(ASSIGNMENT, function_id)[name or notebook_name(function_id)]


# ---------------------------------------------------------------------------------------------
# Activations and costs


def _activation_inputs() -> list[Array]:
    """Inputs the students have not seen, the kink of relu included."""
    rng = np.random.default_rng(7)
    return [
        np.array([0.0, 1e-3, -1e-3, 4.0]),
        rng.normal(scale=3, size=7),
        rng.normal(scale=2, size=(4, 3)),
    ]


def activation_values(function: Callable[..., Any], name: str) -> None:
    """The activation `name` matches the reference elementwise and leaves its input unchanged."""
    ref = reference(name)
    for x in _activation_inputs():
        given = x.copy()
        got = as_array(
            f"{name}(x) for x of shape {x.shape}", call(f"{name}(x)", function, given), x.shape
        )
        if not np.array_equal(given, x):
            raise HiddenTestFailure(
                f"{name}(x) changed its input array x: compute a new array instead"
            )
        if not close(got, ref(x)):
            hint = None
            if name == "logistic" and close(got, 1 / (1 + np.exp(x))):
                hint = "That is 1 / (1 + e^x): check the sign of the exponent"
            raise mismatch(f"{name}(x) for x of shape {x.shape}", got, ref(x), hint, given=x)


# Derivatives written in terms of the activation s, which students then apply to x itself.
OUTPUT_FORMULAS: dict[str, Callable[[Array], Array]] = {
    "logistic": lambda s: s * (1 - s),
    "tanh": lambda s: 1 - s**2,
}


def activation_derivative(function: Callable[..., Any], name: str) -> None:
    """The derivative of activation `name`, at the pre-activation x, matches the reference."""
    ref = reference(name)
    for x in _activation_inputs():
        label = f"{name}(x, deriv=True) for x of shape {x.shape}"
        got = as_array(label, call(label, function, x.copy(), True), x.shape)
        want = ref(x, True)
        if close(got, want):
            continue
        if close(got, ref(ref(x), True)):
            hint = (
                f"You evaluated the derivative at the activation {name}(x) instead of at x: "
                "the derivative takes the pre-activation"
            )
        elif close(got, ref(x)):
            hint = "deriv=True returned the function's value, not its derivative"
        elif name in OUTPUT_FORMULAS and close(got, OUTPUT_FORMULAS[name](x)):
            hint = (
                "You applied the formula written in terms of the activation to x itself: "
                f"deriv=True receives the pre-activation x, so compute {name}(x) first"
            )
        elif name == "relu" and close(got[x != 0], want[x != 0]):
            hint = "By the course's convention, relu'(0) = 0"
        else:
            hint = None
        raise mismatch(label, got, want, hint, given=x)


def _cost_inputs() -> list[tuple[Array, Array]]:
    """Predictions and labels, as flat vectors and as columns."""
    rng = np.random.default_rng(13)
    cases = []
    for shape in [(6,), (9, 1)]:
        cases.append(
            (rng.uniform(0.05, 0.95, size=shape), rng.integers(0, 2, size=shape).astype(float))
        )
    return cases


def cost_value(function: Callable[..., Any], name: str) -> None:
    """The cost `name` is the mean of the per-example losses, one number."""
    ref = reference(name)
    for y_preds, y in _cost_inputs():
        label = f"{name}(y_preds, y) for {len(y)} examples of shape {y.shape}"
        got = as_number(label, call(label, function, y_preds.copy(), y.copy()))
        want = ref(y_preds, y)
        if np.isclose(got, want, rtol=1e-6):
            continue
        if np.isclose(got, want * len(y), rtol=1e-6):
            hint = "That is the sum over the examples: the cost is their mean"
        elif np.isclose(got, -want, rtol=1e-6):
            hint = "The sign is flipped: a cost is never negative"
        else:
            hint = None
        raise mismatch(label, got, want, hint)


def cost_derivative(function: Callable[..., Any], name: str) -> None:
    """The derivative of cost `name` is each example's loss derivative w.r.t. its prediction."""
    ref = reference(name)
    for y_preds, y in _cost_inputs():
        label = f"{name}(y_preds, y, deriv=True) for y of shape {y.shape}"
        got = as_array(label, call(label, function, y_preds.copy(), y.copy(), True), y.shape)
        want = ref(y_preds, y, True)
        if close(got, want):
            continue
        if close(got, want / len(y)):
            hint = (
                "You divided by the number of examples: deriv=True gives each example's own "
                "derivative; the averaging happens when you compute the gradient"
            )
        elif close(got, -want):
            hint = "The sign is flipped"
        elif name == "cross_entropy" and close(got, y_preds - y):
            hint = (
                "y_pred - y is the derivative with respect to the logistic unit's input z, "
                "after multiplying by the logistic derivative; here we need the derivative "
                "with respect to y_pred itself"
            )
        elif name == "mean_squared_error" and close(got, y_preds - y):
            hint = "The derivative of (y_pred - y)^2 has a factor 2"
        else:
            hint = None
        raise mismatch(label, got, want, hint)


# ---------------------------------------------------------------------------------------------
# Gradient steps

MISTAKES = {
    "sum": "the step is m times too large: you summed the gradient over the examples instead of "
    "averaging it",
    "sign": "the step goes up the gradient instead of down: check the sign of the update",
    "frozen": "the parameters did not change: return the updated parameters",
    "double_logistic_derivative": "you multiplied y_pred - y by the logistic derivative: "
    "y_pred - y "
    "already is the derivative with respect to z; chain "
    "cost_f(A, y, deriv=True) with the activation derivative instead",
    "updated_weights": "the error was propagated through weights already updated in this epoch: "
    "compute every layer's delta before changing any weight",
    "derivative_of_activation": "the activation derivative was evaluated at the activations A "
    "instead of the pre-activations Z",
    "derivative_of_hidden_activation": "the hidden layers' activation derivatives were evaluated "
    "at the activations A instead of the pre-activations Z",
    "missing_hidden_derivative": "the hidden layers' deltas miss the activation derivative f'(Z)",
}


def _check_step(
    label: str,
    names: Sequence[str],
    before: Sequence[Array],
    after: Sequence[Any],
    grads: Sequence[Array],
    lrate: float,
    m: int,
    variants: dict[str, Sequence[Array]],
) -> None:
    """Check that after - before is -lrate * grads for every parameter; name the mistake if not."""
    steps = [
        as_array(f"{label}: {name} after one epoch", new, old.shape) - old
        for name, old, new in zip(names, before, after, strict=True)
    ]

    def matches(candidate: Sequence[Array]) -> bool:
        pairs = zip(steps, candidate, strict=True)
        return all(close(s, -lrate * g, rtol=1e-5, atol=1e-8) for s, g in pairs)

    if matches(grads):
        return
    candidates = {
        "sum": [m * g for g in grads],
        "sign": [-g for g in grads],
        **variants,
        "frozen": [np.zeros_like(g) for g in grads],
    }
    for mistake, candidate in candidates.items():
        if matches(candidate):
            raise HiddenTestFailure(f"{label}: {MISTAKES[mistake]}")
    wrong = [
        name
        for name, s, g in zip(names, steps, grads, strict=True)
        if not close(s, -lrate * g, 1e-5, 1e-8)
    ]
    first = names.index(wrong[0])
    raise HiddenTestFailure(
        f"{label}: one epoch should move every parameter by -lrate times the gradient of the mean "
        f"cost (measured by finite differences). Off: {', '.join(wrong)}",
        f"for {wrong[0]}: expected step {show(-lrate * grads[first])}, got {show(steps[first])}",
    )


def gradient_descent_step(function: Callable[..., Any]) -> None:
    """One epoch of gradient_descent is a step of -lrate times the finite-difference gradient."""
    logistic, cross_entropy = (
        reference("gradient_descent", "logistic"),
        reference("gradient_descent", "cross_entropy"),
    )
    rng = np.random.default_rng(11)
    for m, lrate in [(8, 0.3), (5, 1.5)]:
        x, y = rng.normal(size=(m, 2)), rng.integers(0, 2, size=m).astype(float)
        ws, b = rng.normal(size=2), np.array(rng.normal())
        label = f"gradient_descent with {m} examples, lrate={lrate}, epochs=1"
        got_ws, got_b, got_pred = unpack(
            label, call(label, function, x.copy(), y.copy(), ws.copy(), float(b), lrate, 1), 3
        )
        # The lambdas here and below are called at once, inside this iteration.
        grads = numerical_gradient(lambda: cross_entropy(logistic(x @ ws + b), y), [ws, b])  # noqa: B023
        z = x @ ws + b
        delta_seed = (logistic(z) - y) * logistic(z, True)
        variants = {"double_logistic_derivative": [x.T @ delta_seed / m, np.mean(delta_seed)]}
        _check_step(label, ["ws", "b"], [ws, b], [got_ws, got_b], grads, lrate, m, variants)
        pred = as_array(f"{label}: y_pred", got_pred, (m,))
        if not close(pred, logistic(z)):
            raise mismatch(
                f"{label}: y_pred",
                pred,
                logistic(z),
                "y_pred should be the prediction of the forward pass before the update",
            )


def _flat(values: Any) -> list[Any]:
    """The arrays of (ws, b) or (ws, bs) in one list, lists of layers unpacked."""
    return [a for v in values for a in (v if isinstance(v, (list, tuple)) else [v])]


def _require_first_epoch(
    function: Callable[..., Any], ref: Callable[..., Any], args: tuple, label: str
) -> None:
    """Fail pointing at the gradient-step cell when one epoch already ends elsewhere."""
    one_epoch = (*args[:-1], 1)
    with quiet():
        want = ref(*copy.deepcopy(one_epoch))
    try:
        got = call(label, function, *copy.deepcopy(one_epoch))
        got_params, want_params = _flat(got[:2]), _flat(want[:2])
        same = len(got_params) == len(want_params) and all(
            close(g, w, rtol=1e-5, atol=1e-8) for g, w in zip(got_params, want_params, strict=True)
        )
    except (AssertionError, TypeError, ValueError, IndexError):
        same = False
    if not same:
        raise HiddenTestFailure(
            f"{label}: the parameters differ from the reference's after the first epoch already; "
            "the gradient-step cell above says what is wrong with one step"
        )


def gradient_descent_training(function: Callable[..., Any]) -> None:
    """Many epochs of gradient_descent end where the reference ends."""
    ref = reference("gradient_descent")
    rng = np.random.default_rng(17)
    x, y = rng.normal(size=(12, 2)), rng.integers(0, 2, size=12).astype(float)
    ws, b = rng.normal(size=2), float(rng.normal())
    label = "gradient_descent with lrate=0.5, epochs=25"
    _require_first_epoch(function, ref, (x, y, ws, b, 0.5, 25), label)
    got = unpack(label, call(label, function, x.copy(), y.copy(), ws.copy(), b, 0.5, 25), 3)
    with quiet():
        want = ref(x, y, ws.copy(), b, 0.5, 25)
    for name, g, w in zip(["ws", "b", "y_pred"], got, want, strict=True):
        g = as_array(f"{label}: {name}", g, np.shape(w))
        if not close(g, w, rtol=1e-5, atol=1e-8):
            hint = None
            if name == "y_pred" and close(
                g, reference("gradient_descent", "logistic")(x @ want[0] + want[1])
            ):
                hint = "That is the prediction after the last update; return the one made before it"
            raise mismatch(f"{label}: {name}", g, w, hint)


# ---------------------------------------------------------------------------------------------
# Networks


def _network(sizes: Sequence[int], act_names: Sequence[str], seed: int, m: int = 7):
    """Random inputs, labels, weights and biases for a network with the given layer sizes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, sizes[0]))
    y = rng.integers(0, 2, size=(m, sizes[-1])).astype(float)
    ws = [rng.normal(size=shape) for shape in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [rng.normal(scale=0.3, size=(1, size)) for size in sizes[1:]]
    return x, y, ws, bs, list(act_names)


# (layer sizes, activations, cost): the hidden depth of each is len(sizes) - 2
NETWORKS = [
    ((3, 1), ("logistic",), "cross_entropy"),
    ((2, 2, 1), ("tanh", "logistic"), "cross_entropy"),
    ((3, 4, 1), ("relu", "logistic"), "mean_squared_error"),
    ((2, 3, 1), ("logistic", "logistic"), "mean_squared_error"),
    ((2, 4, 3, 1), ("tanh", "relu", "logistic"), "cross_entropy"),
    ((3, 5, 4, 2, 1), ("tanh", "tanh", "relu", "logistic"), "mean_squared_error"),
]


def _forward(
    x: Array, ws: Sequence[Array], bs: Sequence[Array], act_fs: Sequence[Callable]
) -> tuple[list, list]:
    """The checks' own forward pass, independent of the reference solution."""
    zs, activations = [], [x]
    for w, b, act_f in zip(ws, bs, act_fs, strict=True):
        zs.append(activations[-1] @ w + b)
        activations.append(act_f(zs[-1]))
    return zs, activations


def _known_wrong_gradients(x, y, ws, bs, act_fs, cost_f, lrate, mistake: str) -> list[Array]:
    """Gradients as a well-known wrong backprop computes them, to recognise that mistake."""
    zs, activations = _forward(x, ws, bs, act_fs)
    m = len(x)

    def slope(layer: int) -> Any:
        """f'(Z) of a layer (0-based), or what the mistake puts in its place."""
        at_activation = mistake == "derivative_of_activation" or (
            mistake == "derivative_of_hidden_activation" and layer < len(ws) - 1
        )
        if mistake == "missing_hidden_derivative" and layer < len(ws) - 1:
            return 1.0
        return act_fs[layer](activations[layer + 1] if at_activation else zs[layer], True)

    if mistake == "double_logistic_derivative":
        delta = (activations[-1] - y) * act_fs[-1](zs[-1], True)
    else:
        delta = cost_f(activations[-1], y, True) * slope(len(ws) - 1)
    grads_w, grads_b = [None] * len(ws), [None] * len(ws)
    for layer in reversed(range(len(ws))):
        grads_w[layer] = activations[layer].T @ delta / m
        grads_b[layer] = delta.mean(axis=0, keepdims=True)
        if layer == 0:
            break
        w = ws[layer] - lrate * grads_w[layer] if mistake == "updated_weights" else ws[layer]
        delta = (delta @ w.T) * slope(layer - 1)
    return grads_w + grads_b


def _backprop_label(sizes: Sequence[int], act_names: Sequence[str], cost: str, epochs: int) -> str:
    acts = ", ".join(act_names)
    return f"backprop with layer sizes {tuple(sizes)}, act_fs [{acts}], {cost}, epochs={epochs}"


def backprop_step(function: Callable[..., Any], depths: Sequence[int]) -> None:
    """One epoch of backprop steps by -lrate times the finite-difference gradient of the cost."""
    function_id = "backprop_one_hidden" if tuple(depths) == (1,) else "backprop_any_depth"
    returned = 6 if function_id == "backprop_one_hidden" else 4
    lrate = 0.2
    for seed, (sizes, act_names, cost) in enumerate(NETWORKS):
        if len(sizes) - 2 not in depths:
            continue
        x, y, ws, bs, _ = _network(sizes, act_names, seed)
        act_fs = [reference(function_id, name) for name in act_names]
        cost_f = reference(function_id, cost)
        label = _backprop_label(sizes, act_names, cost, 1)
        result = unpack(
            label,
            call(
                label,
                function,
                x.copy(),
                y.copy(),
                copy.deepcopy(ws),
                copy.deepcopy(bs),
                act_fs,
                cost_f,
                lrate,
                1,
            ),
            returned,
        )
        new_ws, new_bs = (
            unpack(f"{label}: the returned {what}", value, len(ws))
            for what, value in [("ws", result[0]), ("bs", result[1])]
        )

        def mean_cost() -> float:
            return cost_f(_forward(x, ws, bs, act_fs)[1][-1], y)  # noqa: B023 - called at once

        grads = numerical_gradient(mean_cost, ws + bs)
        variants = {
            mistake: _known_wrong_gradients(x, y, ws, bs, act_fs, cost_f, lrate, mistake)
            for mistake in [
                "updated_weights",
                "derivative_of_activation",
                "derivative_of_hidden_activation",
                "missing_hidden_derivative",
            ]
        }
        if act_names[-1] == "logistic" and cost == "cross_entropy":
            variants["double_logistic_derivative"] = _known_wrong_gradients(
                x, y, ws, bs, act_fs, cost_f, lrate, "double_logistic_derivative"
            )
        names = [f"W{i + 1}" for i in range(len(ws))] + [f"b{i + 1}" for i in range(len(bs))]
        _check_step(
            label, names, ws + bs, list(new_ws) + list(new_bs), grads, lrate, len(x), variants
        )


def backprop_training(function: Callable[..., Any], depth: int) -> None:
    """Several epochs of backprop end where the reference ends and return the last forward pass."""
    function_id = "backprop_one_hidden" if depth == 1 else "backprop_any_depth"
    ref = reference(function_id)
    sizes, act_names = (
        ((2, 3, 1), ("tanh", "logistic"))
        if depth == 1
        else ((2, 5, 4, 2, 1), ("tanh", "relu", "tanh", "logistic"))
    )
    x, y, ws, bs, _ = _network(sizes, act_names, seed=23, m=10)
    act_fs = [reference(function_id, name) for name in act_names]
    cost_f = reference(function_id, "cross_entropy")
    epochs = 25
    label = _backprop_label(sizes, act_names, "cross_entropy", epochs)
    args = (x, y, ws, bs, act_fs, cost_f, 0.3, epochs)
    _require_first_epoch(function, ref, args, label)
    with quiet():
        want = ref(*copy.deepcopy(args))
    got = unpack(label, call(label, function, *copy.deepcopy(args)), len(want))
    layers = len(ws)
    names = ["ws", "bs", "Z1", "A1", "Z2", "A2"] if depth == 1 else ["ws", "bs", "Zs", "As"]
    for name, g, w in zip(names, got, want, strict=True):
        if isinstance(w, list):
            g = unpack(f"{label}: the returned {name}", g, layers)
            for i, (gi, wi) in enumerate(zip(g, w, strict=True)):
                _expect_trained(f"{label}: {name}[{i}]", gi, wi, name, x, want, ws, act_fs)
        else:
            _expect_trained(f"{label}: {name}", g, w, name, x, want, ws, act_fs)


def _expect_trained(
    label: str, got: Any, want: Array, name: str, x: Array, want_all, ws, act_fs
) -> None:
    """Compare one returned value of a training run with the reference; hint at stale values."""
    got = as_array(label, got, want.shape)
    if close(got, want, rtol=1e-5, atol=1e-8):
        return
    hint = None
    if name[0] in "ZA":
        # The values of a forward pass with the final parameters: returned after the update.
        after = _forward(x, want_all[0], want_all[1], act_fs)
        candidates = after[0] + after[1][1:]
        if any(close(got, c, rtol=1e-5, atol=1e-8) for c in candidates):
            hint = (
                "That comes from a forward pass after the last update; "
                "return the one made before it"
            )
    else:
        hint = (
            "The first epoch may be right while later ones drift: each epoch must start from "
            "the parameters the previous epoch produced"
        )
    raise mismatch(label, got, want, hint)


def forward_pass_one_hidden(function: Callable[..., Any]) -> None:
    """forward_pass of the one-hidden-layer network matches the reference."""
    _check_forward(function, "forward_pass_one_hidden", [n for n in NETWORKS if len(n[0]) == 3])


def forward_pass_any_depth(function: Callable[..., Any]) -> None:
    """forward_pass of a network of any depth matches the reference."""
    _check_forward(function, "forward_pass_any_depth", NETWORKS)


def _check_forward(function: Callable[..., Any], function_id: str, networks) -> None:
    """Compare every Z and A of the student's forward pass with the reference."""
    ref = reference(function_id)
    for seed, (sizes, act_names, _) in enumerate(networks):
        x, _, ws, bs, _ = _network(sizes, act_names, seed + 100)
        act_fs = [reference(function_id, name) for name in act_names]
        label = f"forward_pass with layer sizes {tuple(sizes)} and act_fs [{', '.join(act_names)}]"
        want = ref(x, ws, bs, act_fs)
        result = call(label, function, x.copy(), copy.deepcopy(ws), copy.deepcopy(bs), act_fs)
        if function_id == "forward_pass_one_hidden":
            got = unpack(label, result, 4)
            # (name, layer index, returned, expected)
            entries = [
                (name, int(name[1]) - 1, g, w)
                for name, g, w in zip(["Z1", "A1", "Z2", "A2"], got, want, strict=True)
            ]
        else:
            zs, activations = unpack(label, result, 2)
            layers = len(ws)
            for what, values in [("Zs", zs), ("As", activations)]:
                if isinstance(values, (list, tuple)) and len(values) == layers + 1:
                    raise HiddenTestFailure(
                        f"{label}: {what} has {layers + 1} entries for {layers} layers. "
                        "Zs and As hold one entry per layer; the input x is not included"
                    )
                unpack(f"{label}: {what}", values, layers)
            entries = [
                (f"{what}[{i}]", i, values[i], want[k][i])
                for i in range(layers)
                for k, (what, values) in enumerate([("Zs", zs), ("As", activations)])
            ]
        layer_inputs = _forward(x, ws, bs, act_fs)[1]
        for name, layer, g, w in entries:
            g = as_array(f"{label}: {name}", g, w.shape)
            if close(g, w):
                continue
            hint = None
            if name.startswith("Z") and close(g, layer_inputs[layer] @ ws[layer]):
                hint = "The bias is missing"
            raise mismatch(f"{label}: {name}", g, w, hint)


# ---------------------------------------------------------------------------------------------
# Initialisation

# (layer sizes, scale, seed); the last has enough weights per layer to measure their spread.
INIT_CASES = [((2, 3, 1), 0.1, 0), ((3, 5, 4, 2), 0.5, 7), ((30, 40, 20), 0.2, 3)]


def _init_call(function: Callable[..., Any], sizes: Sequence[int], scale: float, seed: int):
    """Call init_params and return its ws and bs as arrays of the conventions' shapes."""
    label = f"init_params({tuple(sizes)}, scale={scale}, seed={seed})"
    ws, bs = unpack(label, call(label, function, tuple(sizes), scale, seed), 2)
    layers = len(sizes) - 1
    ws, bs = (
        unpack(f"{label}: the returned {name}", v, layers) for name, v in [("ws", ws), ("bs", bs)]
    )
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    ws = [
        as_array(f"{label}: ws[{i}]", w, (k, j))
        for i, (w, (k, j)) in enumerate(zip(ws, pairs, strict=True))
    ]
    bs = [
        as_array(f"{label}: bs[{i}]", b, (1, j))
        for i, (b, (_, j)) in enumerate(zip(bs, pairs, strict=True))
    ]
    return label, ws, bs


def init_params(function: Callable[..., Any]) -> None:
    """init_params draws reproducible random weights of spread scale, distinct units, zero bias."""
    for sizes, scale, seed in INIT_CASES:
        label, ws, bs = _init_call(function, sizes, scale, seed)
        if any(np.any(b != 0) for b in bs):
            raise HiddenTestFailure(f"{label}: the biases should start at zero")
        if all(not np.any(w) for w in ws):
            raise HiddenTestFailure(
                f"{label}: every weight is zero. Then every unit of a layer computes the same "
                "value and gets the same gradient, so they stay identical (symmetry): draw the "
                "weights at random"
            )
        for i, w in enumerate(ws):
            for a, b in zip(*np.triu_indices(w.shape[1], 1), strict=True):
                if np.allclose(w[:, a], w[:, b]):
                    raise HiddenTestFailure(
                        f"{label}: units {a} and {b} of layer {i + 1} start with the same weights "
                        f"(columns {a} and {b} of ws[{i}]), so they get the same gradient and stay "
                        "identical forever: draw every weight on its own"
                    )
        if min(w.size for w in ws) >= 500:
            for i, w in enumerate(ws):
                spread, centre = float(np.std(w)), float(np.mean(w))
                if abs(spread - scale) > 0.15 * scale or abs(centre) > 0.15 * scale:
                    hint = (
                        "The weights ignore scale: multiply the standard normal draws by it"
                        if abs(spread - 1) < 0.15
                        else "Draw the weights from a normal distribution with mean 0 and "
                        "standard deviation scale"
                    )
                    raise HiddenTestFailure(
                        f"{label}: ws[{i}] has mean {centre:.3f} and standard deviation "
                        f"{spread:.3f}. {hint}"
                    )
    sizes, scale, seed = INIT_CASES[0]
    label, first, _ = _init_call(function, sizes, scale, seed)
    _, again, _ = _init_call(function, sizes, scale, seed)
    if not all(close(a, b) for a, b in zip(first, again, strict=True)):
        raise HiddenTestFailure(
            f"{label}: two calls with the same seed should give the same weights"
        )
    _, other, _ = _init_call(function, sizes, scale, seed + 1)
    if all(close(a, b) for a, b in zip(first, other, strict=True)):
        raise HiddenTestFailure(f"{label}: another seed should give other weights")


# ---------------------------------------------------------------------------------------------
# The grade cells


@dataclasses.dataclass(frozen=True)
class Check:
    """What decides one grade cell: the function it tests and the check to run on it."""

    function_id: str  # the solution cell that defines the function
    run: Callable[[Callable[..., Any]], None]  # raises HiddenTestFailure when the function fails


# grade_id -> its check. Every grade cell of the master has one; `nncourse build` refuses a
# master with a grade cell missing here, and grading fails such a cell.
CHECKS: dict[str, Check] = {
    **{
        f"{name}_values": Check(name, functools.partial(activation_values, name=name))
        for name in ACTIVATIONS
    },
    **{
        f"{name}_derivative": Check(name, functools.partial(activation_derivative, name=name))
        for name in ACTIVATIONS
    },
    **{f"{name}_value": Check(name, functools.partial(cost_value, name=name)) for name in COSTS},
    **{
        f"{name}_derivative": Check(name, functools.partial(cost_derivative, name=name))
        for name in COSTS
    },
    "gradient_descent_step": Check("gradient_descent", gradient_descent_step),
    "gradient_descent_training": Check("gradient_descent", gradient_descent_training),
    "forward_pass_one_hidden_values": Check("forward_pass_one_hidden", forward_pass_one_hidden),
    "backprop_one_hidden_step": Check(
        "backprop_one_hidden", functools.partial(backprop_step, depths=(1,))
    ),
    "backprop_one_hidden_training": Check(
        "backprop_one_hidden", functools.partial(backprop_training, depth=1)
    ),
    "forward_pass_any_depth_values": Check("forward_pass_any_depth", forward_pass_any_depth),
    "backprop_any_depth_step": Check(
        "backprop_any_depth", functools.partial(backprop_step, depths=(0, 1, 2, 3))
    ),
    "backprop_any_depth_training": Check(
        "backprop_any_depth", functools.partial(backprop_training, depth=3)
    ),
    "init_params_breaks_symmetry": Check("init_params", init_params),
}
