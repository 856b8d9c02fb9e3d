"""What a grading kernel runs for a grade cell: the student's function on given inputs, no more.

The grader ships this module's source into the kernel with each grade cell's calls (see
nncourse/verdicts.py). It holds no reference solution and decides nothing: it calls the
student's function on the inputs the grader chose, with stand-ins for the functions it
depends on, and hands back what came out as plain numbers. The grader compares them with the
reference. Only numpy and the standard library are used: the kernel imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

# A correct answer of any check has a few hundred numbers; anything far larger is not one and
# would only cost the grader memory.
MAX_ELEMENTS = 100_000
MAX_TEXT = 300
MAX_ITEMS = 64
MAX_DEPTH = 4
_MISSING = object()


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """str(value), shortened; a value whose str() fails is described by that."""
    try:
        return str(value)[:limit]
    except Exception:  # noqa: BLE001 - a student's __str__ may raise anything
        return "?"


def encode(value: Any, depth: int = 0, function: Callable[[Any], Any] | None = None) -> Any:
    """A returned value as JSON data: numbers, arrays, lists and tuples of them, or a type name.

    The grader, encoding a check's inputs, passes `function` to name the functions among them.
    """
    if type(value) in (bool, int, float):
        return value
    if function and callable(value):
        return function(value)
    if isinstance(value, list | tuple) and depth < MAX_DEPTH and len(value) <= MAX_ITEMS:
        items = [encode(v, depth + 1, function) for v in value]
        return {"seq": items, "tuple": isinstance(value, tuple)}
    try:
        array = np.asarray(value, dtype=float)
    except Exception:  # noqa: BLE001 - whatever does not convert is reported by its type
        return {"object": _text(type(value).__name__, 40)}
    if array.size > MAX_ELEMENTS:
        return {"too_large": list(array.shape)}
    return {"array": array.ravel().tolist(), "shape": list(array.shape)}


def decode(data: Any, functions: dict[str, Any]) -> Any:
    """The inverse of encode for the grader's inputs; {"function": name} is a stand-in."""
    if not isinstance(data, dict):
        return data
    if "function" in data:
        return functions[data["function"]]
    if "seq" in data:
        items = [decode(item, functions) for item in data["seq"]]
        return tuple(items) if data["tuple"] else items
    return np.array(data["array"], dtype=float).reshape(data["shape"])


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep what student code prints or warns out of the notebook (nbgrader fails on stderr)."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
        np.errstate(all="ignore"),
    ):
        warnings.simplefilter("ignore")
        yield


def _call(function: Any, args: list[Any]) -> dict[str, Any]:
    """Call the function; keep its result, or the exception it raised, and the arguments after."""
    try:
        with quiet():
            result: dict[str, Any] = {"value": encode(function(*args))}
    except Exception as error:  # noqa: BLE001 - any error of student code is part of its answer
        result = {"raised": [_text(type(error).__name__, 60), _text(error)]}
    # The arguments as the call left them: a function may not change its inputs in place.
    result["args"] = [encode(arg) if not callable(arg) else None for arg in args]
    return result


def run(user_ns: dict[str, Any], plan_json: str, standins: str) -> str:
    """Make the planned calls of one grade cell in the notebook's namespace; return them as JSON."""
    plan = json.loads(plan_json)
    functions: dict[str, Any] = {"np": np}
    exec(standins, functions)  # noqa: S102 - the grader's own stand-ins, shipped with the plan
    # The function under test calls what it depends on by name: put the stand-ins in their place
    # for the calls, so that a mistake in another function costs points only in its own cells.
    saved = {name: user_ns.get(name, _MISSING) for name in plan["install"]}
    target = user_ns.get(plan["function"], _MISSING)
    results = []
    try:
        user_ns.update({name: functions[name] for name in plan["install"]})
        for call in plan["calls"]:
            if target is _MISSING:
                missing = f"name '{plan['function']}' is not defined"
                results.append({"raised": ["NameError", missing], "args": []})
                continue
            results.append(_call(target, [decode(arg, functions) for arg in call]))
    finally:
        for name, value in saved.items():
            if user_ns.get(name) is not functions[name]:
                continue  # the student's code redefined it meanwhile: keep theirs
            if value is _MISSING:
                del user_ns[name]
            else:
                user_ns[name] = value
    return json.dumps({"check": plan["check"], "results": results})
