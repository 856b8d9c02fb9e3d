"""Grade cells scored by the grader's verdict, whatever the kernel printed, raised or cleared.

nbgrader scores a grade cell by its outputs, which the student's kernel writes: code in the
kernel can hide a failure, clear an error or print a passing cell. :class:`GradedExecute` runs
in nbgrader's autograde steps in place of ``Execute``. For each grade cell it

1. has the kernel call the student's function on the check's inputs (a silent request whose
   answer comes back as a user expression; nothing enters the kernel's history),
2. runs the cell's visible tests, without its hidden block, for the student to read,
3. judges the answer in this process (nncourse/calls.py) and writes the outputs so that
   nbgrader's own scoring gives exactly the verdict: an error output when the cell failed, none
   when it passed.
"""

from __future__ import annotations

import ast
from typing import Any

from nbformat.notebooknode import NotebookNode
from nbformat.v4 import new_output
from nbgrader import utils

from nncourse import calls, compat
from nncourse.course import checks
from nncourse.sandbox import SandboxedExecute

FAILED = "HiddenTestFailure"
TIMED_OUT = "CellTimeoutError"  # nbgrader's own name: the submission is reported as timed out
# Failures that also flag the submission for a human, with what the flag says.
FLAGGED = {
    calls.HAND_OVER_BROKEN: "broke the hand-over of results to the grader",
    calls.REORDERED: "reordered the grade cells",
}


def visible_part(source: str) -> str:
    """A grade cell's source without its hidden block, as the student's kernel runs it."""
    cell = NotebookNode(source=source)
    compat.remove_hidden_tests(cell)
    return cell.source


# What the student's function may raise past the runner (it catches every Exception): the
# call left the kernel's code, but nothing of the grader's was tampered with.
LEAVING = ("SystemExit", "KeyboardInterrupt", "GeneratorExit")


def _answer(reply: dict[str, Any]) -> str | calls.Verdict:
    """The kernel's answer from its reply to the calls, or the verdict when there is none."""
    expression = reply.get("content", {}).get("user_expressions", {}).get("answer", {})
    if expression.get("status") != "ok":
        raised = f"{expression.get('ename', 'an error')}: {expression.get('evalue', '')}"[:300]
        if expression.get("ename") in LEAVING:
            return calls.Verdict(False, f"the calls of this cell's check stopped with {raised}")
        # The runner itself failed: only code that changed the kernel's names or modules does so.
        return calls.Verdict(
            False,
            str(calls.HiddenTestFailure(calls.MALFORMED_MESSAGE, f"the runner raised {raised}")),
            calls.HAND_OVER_BROKEN,
        )
    text = expression.get("data", {}).get("text/plain", "")
    answer: Any = ""
    if isinstance(text, str) and len(text) <= 2 * calls.MAX_ANSWER:
        try:
            answer = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            answer = ""
    return answer if isinstance(answer, str) else ""


def settle(cell: NotebookNode, verdict: calls.Verdict) -> None:
    """Rewrite a grade cell's outputs so that nbgrader scores it by the verdict alone."""
    kept = []
    for output in cell.outputs:
        kind = output.get("output_type")
        if kind == "execute_result":
            continue  # a number here would be taken as partial credit
        if kind == "error":
            text = f"The visible test stopped: {output.get('ename')}: {output.get('evalue')}\n"
            output = new_output("stream", name="stdout", text=text)
        elif kind == "stream" and output.get("name") == "stderr":
            output = new_output("stream", name="stdout", text=output.get("text", ""))
        kept.append(output)
    if not verdict.passed:
        ename = verdict.kind or FAILED
        kept.append(
            new_output(
                "error",
                ename=ename,
                evalue=verdict.message,
                traceback=[f"{ename}: {verdict.message}"],
            )
        )
    cell.outputs = kept


def flags(nb: NotebookNode) -> list[str]:
    """What the verdicts of an executed notebook flag for a human, each kind once."""
    found = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            kind = output.get("ename")
            if kind in FLAGGED and kind not in found:
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "?")
                found[kind] = f"{FLAGGED[kind]} (first in cell {grade_id})"
    return list(found.values())


class GradedExecute(SandboxedExecute):
    """nbgrader's Execute in the sandbox, with every grade cell decided by the grader."""

    def preprocess(self, nb: Any, resources: Any = None, km: Any = None) -> Any:
        """Execute nb from a kernel that has been handed no stand-in yet."""
        self.exposed: set[str] = set()
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell: Any, resources: Any, index: int) -> Any:
        """Run a cell; a grade cell is called, run without hidden tests, then judged."""
        if cell.cell_type != "code" or not utils.is_grade(cell):
            return super().preprocess_cell(cell, resources, index)
        # Cells nbgrader adds back (deleted grade cells) carry plain dicts as metadata.
        verdict = self.decide(cell.metadata.get("nbgrader", {}).get("grade_id", ""))
        source = cell.source
        cell.source = visible_part(source)
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except BaseException:
            settle(cell, calls.Verdict(False, "the kernel stopped while this cell ran"))
            raise
        finally:
            cell.source = source
        settle(cell, verdict)
        return cell, resources

    def decide(self, grade_id: str) -> calls.Verdict:
        """Have the kernel make the calls of this grade cell's check, and judge them here."""
        if grade_id not in checks.CHECKS:
            return calls.Verdict(
                False,
                f"no check decides the grade cell {grade_id!r} (nncourse/course/checks.py CHECKS)",
            )
        planned = calls.plan(grade_id)
        if planned.function_id in self.exposed:
            return calls.Verdict(
                False,
                f"this cell ran after cells that handed the kernel a stand-in for "
                f"{planned.function}: keep the grade cells in the order of the assignment",
                kind=calls.REORDERED,
            )
        self.exposed |= planned.exposes
        msg_id = self.kc.execute(
            "",
            silent=True,
            store_history=False,
            user_expressions={"answer": planned.kernel_expression()},
        )
        reply = self.wait_for_reply(msg_id)  # None: timed out, and the kernel was interrupted
        if reply is None:
            return calls.Verdict(
                False, "the calls of this cell's check ran past the time limit", kind=TIMED_OUT
            )
        answer = _answer(reply)
        return answer if isinstance(answer, calls.Verdict) else calls.judge(planned, answer)
