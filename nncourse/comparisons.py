"""How a check compares a student's value with the reference, and words the failure.

A failure's message is for the student up to DETAILS_MARK; what follows it, the values on
hidden inputs, is for the instructor only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nncourse.in_kernel import quiet

Array = np.ndarray
# Feedback for students shows a hidden test's message only up to this mark: what follows
# holds the values on hidden inputs, which are for the instructor.
DETAILS_MARK = "[details for the instructor]"


class HiddenTestFailure(AssertionError):
    """A hidden test failed: what was checked, the likely mistake, then values for instructors."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary + (f"\n{DETAILS_MARK} {details}" if details else ""))


def call(label: str, function: Callable[..., Any], *args: Any) -> Any:
    """Call student code quietly; turn its exceptions into a failure that says which call raised."""
    with quiet():
        try:
            return function(*args)
        except Exception as error:  # noqa: BLE001 - any error of student code is a failed check
            raise HiddenTestFailure(f"{label} raised {type(error).__name__}: {error}") from None


def as_array(label: str, value: Any, shape: tuple[int, ...]) -> Array:
    """Return value as a float array of the given shape, or fail saying what came back."""
    try:
        result = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise HiddenTestFailure(f"{label} should be numbers, got {type(value).__name__}") from None
    if result.shape != tuple(shape):
        raise HiddenTestFailure(f"{label} should have shape {tuple(shape)}, got {result.shape}")
    return result


def as_number(label: str, value: Any) -> float:
    """Return value as one float, or fail: costs are a single number."""
    try:
        result = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise HiddenTestFailure(f"{label} should be a number, got {type(value).__name__}") from None
    if result.size != 1:
        raise HiddenTestFailure(
            f"{label} should be a single number (the mean over the examples), "
            f"got an array of shape {result.shape}"
        )
    return float(result.reshape(()))


def unpack(label: str, result: Any, count: int) -> tuple[Any, ...]:
    """Check that a function returned `count` values and return them."""
    if not isinstance(result, (tuple, list)) or len(result) != count:
        got = (
            f"{len(result)} values" if isinstance(result, (tuple, list)) else type(result).__name__
        )
        raise HiddenTestFailure(f"{label} should return {count} values, got {got}")
    return tuple(result)


def close(got: Any, want: Any, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    """Whether two arrays have the same shape and values within tolerance."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=atol))


def show(value: Any) -> str:
    """Format an array briefly for a failure message."""
    return np.array2string(np.asarray(value, dtype=float), precision=4, threshold=8, edgeitems=2)


def mismatch(
    label: str, got: Any, want: Any, hint: str | None = None, given: Any = None
) -> HiddenTestFailure:
    """The failure for a wrong value: what was checked and why, then the values after the mark."""
    summary = f"{label}: wrong values" + (f". {hint}" if hint else "")
    inputs = "" if given is None else f"for input {show(given)}: "
    return HiddenTestFailure(summary, f"{inputs}expected {show(want)}, got {show(got)}")


def numerical_gradient(cost: Callable[[], float], params: Sequence[Array]) -> list[Array]:
    """Central differences of cost() for every entry of params (changed in place, then restored)."""
    eps = 1e-6
    grads = []
    for param in params:
        grad = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            kept = param[index]
            param[index] = kept + eps
            up = cost()
            param[index] = kept - eps
            down = cost()
            param[index] = kept
            grad[index] = (up - down) / (2 * eps)
        grads.append(grad)
    return grads
