"""A grade cell's check, split where the student's code runs: plan, call in the kernel, judge.

A check in nncourse/course/checks.py calls the function under test and compares what comes back with
the reference. Here it runs twice in the grader and never in the kernel:

1. plan: the check runs on the reference solution, and every call it makes is recorded (the
   inputs, and the stand-ins a call hands over as functions);
2. the kernel makes the same calls on the student's function (nncourse/in_kernel.py) and hands
   back the results as plain numbers;
3. judge: the check runs again on a replay of those results, and decides.

The reference, the comparisons and the named mistakes stay in the grader; the kernel sees only
the inputs its function is called with.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from nncourse import in_kernel, standins
from nncourse.comparisons import HiddenTestFailure
from nncourse.course import checks

IN_KERNEL_SOURCE = inspect.getsource(in_kernel)
# The hand-over of a correct answer is a few kilobytes; far more is not an answer.
MAX_ANSWER = 4 * 1024**2


class Malformed(BaseException):
    """The kernel's results do not fit the plan: its hand-over was broken or forged.

    A BaseException, so that the checks' own handling of a student's errors never swallows it.
    """


@dataclasses.dataclass(frozen=True)
class Plan:
    """The calls one grade cell's check makes, ready to ship to a kernel."""

    grade_id: str
    function_id: str
    function: str  # the function's name in the notebook
    install: dict[str, str]  # notebook name -> stand-in put there during the calls
    calls: list[list[Any]]  # the encoded arguments of each call
    exposes: frozenset[str]  # every stand-in the kernel receives with these calls

    def kernel_json(self) -> str:
        """The plan as the kernel's runner reads it."""
        return json.dumps(
            {
                "check": self.grade_id,
                "function": self.function,
                "install": list(self.install),
                "calls": self.calls,
            }
        )

    def standins_source(self) -> str:
        """The source of the stand-ins these calls need, under their notebook names."""
        return "from __future__ import annotations\n" + standins.source(
            {**{name: name for name in self.exposes}, **self.install}
        )

    def kernel_expression(self) -> str:
        """One expression that makes the calls in the kernel and evaluates to their JSON."""
        code = (
            IN_KERNEL_SOURCE
            + f"\n__answer__ = run(user_ns, {self.kernel_json()!r}, {self.standins_source()!r})\n"
        )
        return f"(lambda ns: exec({code!r}, ns) or ns['__answer__'])({{'user_ns': globals()}})"


# Kinds of failure that are a sign of tampering, not of a wrong answer (see verdicts.FLAGGED).
HAND_OVER_BROKEN, REORDERED = "HandOverBroken", "CellsReordered"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The grader's decision on one grade cell."""

    passed: bool
    message: str = ""  # what failed: the student's part, then comparisons.DETAILS_MARK and details
    kind: str = ""  # a failure that flags the submission: HAND_OVER_BROKEN or REORDERED


def _standin_for(name: str, function_id: str) -> str:
    """Which stand-in replaces the notebook's `name` while function_id is tested."""
    if name == "forward_pass":
        return (
            "forward_pass_any_depth"
            if function_id.endswith("any_depth")
            else ("forward_pass_one_hidden")
        )
    return name


class _Recorder:
    """The reference solution, recording every call a check makes to it."""

    def __init__(self, reference: Callable[..., Any], function_id: str) -> None:
        self.reference, self.function_id = reference, function_id
        self.calls: list[list[Any]] = []
        self.functions: set[str] = set()

    def standin(self, value: Any) -> dict[str, str]:
        """A function among the arguments, as the stand-in the kernel will call instead."""
        name = _standin_for(value.__name__, self.function_id)
        if name not in standins.STANDINS:
            raise ValueError(f"no stand-in for the argument {value.__name__!r}")
        self.functions.add(name)
        return {"function": name}

    def __call__(self, *args: Any) -> Any:
        self.calls.append([in_kernel.encode(arg, function=self.standin) for arg in args])
        return self.reference(*args)


@functools.cache
def plan(grade_id: str) -> Plan:
    """Record the calls of a grade cell's check by running it on the reference solution."""
    check = checks.CHECKS[grade_id]
    recorder = _Recorder(checks.reference(check.function_id), check.function_id)
    check.run(recorder)
    install = {
        name: _standin_for(name, check.function_id)
        for name in checks.DEPENDENCIES[check.function_id]
    }
    return Plan(
        grade_id,
        check.function_id,
        checks.notebook_name(check.function_id),
        install,
        recorder.calls,
        frozenset(recorder.functions | set(install.values())),
    )


def _identifier(value: Any) -> str:
    """A type name from the kernel, reduced to what a type name may hold."""
    name = re.sub(r"\W", "", str(value))[:60]
    return name if name and not name[0].isdigit() else "object"


def _decode(data: Any) -> Any:
    """A result handed over by the kernel, rebuilt; anything that does not fit is Malformed."""
    if isinstance(data, bool | int | float):
        return data
    if not isinstance(data, dict):
        raise Malformed(f"unexpected {type(data).__name__}")
    if "seq" in data and isinstance(data["seq"], list):
        items = [_decode(item) for item in data["seq"]]
        return tuple(items) if data.get("tuple") else items
    if "array" in data:
        shape, values = data.get("shape"), data["array"]
        if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise Malformed("an array without a valid shape")
        if not isinstance(values, list) or len(values) != int(np.prod(shape)):
            raise Malformed("an array whose values do not fill its shape")
        try:
            return np.array(values, dtype=float).reshape(shape)
        except (TypeError, ValueError) as error:
            raise Malformed(f"an array of non-numbers ({error})") from None
    if "object" in data:
        return type(_identifier(data["object"]), (), {})()
    if "too_large" in data:
        return type("array_too_large_to_hand_over", (), {})()
    raise Malformed("a value of no known kind")


class _Replay:
    """The student's function as the kernel ran it: each call answers with the recorded result."""

    def __init__(self, planned: Plan, results: list[Any]) -> None:
        self.planned, self.results, self.count = planned.calls, results, 0
        self.encoder = _Recorder(lambda *args: None, planned.function_id)

    def __call__(self, *args: Any) -> Any:
        index, self.count = self.count, self.count + 1
        if index >= len(self.planned) or index >= len(self.results):
            raise Malformed(f"no result for call {index + 1}")
        encoded = [in_kernel.encode(arg, function=self.encoder.standin) for arg in args]
        if encoded != self.planned[index]:
            raise Malformed(f"call {index + 1} differs from the plan")
        result = self.results[index]
        if not isinstance(result, dict):
            raise Malformed(f"result {index + 1} is not a record")
        _apply_arguments(args, result.get("args"))
        if "raised" in result:
            name, message = (list(result["raised"]) + ["", ""])[:2]
            raise type(_identifier(name), (Exception,), {})(str(message)[:300])
        if "value" not in result:
            raise Malformed(f"result {index + 1} holds no value")
        return _decode(result["value"])


def _apply_arguments(args: tuple[Any, ...], after: Any) -> None:
    """Leave array arguments as the student's call left them in the kernel (in-place changes)."""
    if not isinstance(after, list) or len(after) != len(args):
        return
    for arg, state in zip(args, after, strict=True):
        if state is None:
            continue
        value = _decode(state)
        targets = [(arg, value)]
        if isinstance(arg, list) and isinstance(value, list | tuple) and len(arg) == len(value):
            targets = list(zip(arg, value, strict=True))
        for target, new in targets:
            if isinstance(target, np.ndarray) and np.shape(new) == target.shape:
                np.copyto(target, np.asarray(new, dtype=float), casting="unsafe")


MALFORMED_MESSAGE = (
    "the grader received no usable results from this cell's calls: the kernel's hand-over "
    "was broken"
)


def judge(planned: Plan, answer: str) -> Verdict:
    """Replay the kernel's answer through the check and decide the grade cell."""
    try:
        if len(answer) > MAX_ANSWER:
            raise Malformed(f"{len(answer)} characters")
        try:
            data = json.loads(answer)
        except (ValueError, RecursionError) as error:
            raise Malformed(f"not JSON: {type(error).__name__}") from None
        if not isinstance(data, dict) or data.get("check") != planned.grade_id:
            raise Malformed("the answer belongs to another check")
        if not isinstance(data.get("results"), list):
            raise Malformed("no list of results")
        checks.CHECKS[planned.grade_id].run(_Replay(planned, data["results"]))
    except HiddenTestFailure as failure:
        return Verdict(False, str(failure))
    except Malformed as error:
        details = f"the results were malformed: {str(error)[:200]}"
        return Verdict(False, str(HiddenTestFailure(MALFORMED_MESSAGE, details)), HAND_OVER_BROKEN)
    return Verdict(True)


def check_here(user_ns: dict[str, Any], grade_id: str) -> None:
    """Plan, call and judge in this process: the master notebook's hidden tests, for instructors."""
    planned = plan(grade_id)
    answer = in_kernel.run(user_ns, planned.kernel_json(), planned.standins_source())
    verdict = judge(planned, answer)
    if not verdict.passed:
        raise HiddenTestFailure(verdict.message)
