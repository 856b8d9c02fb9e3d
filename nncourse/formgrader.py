"""The formgrader's Autograde button runs `nncourse grade`: sandboxed, with feedback and reports.

A server extension of the grader's own Jupyter server (the hub's formgrader service), switched
on by the grader environment's jupyter_server_config.d/nncourse-grader.json (deploy/install).
nbgrader's own button would run nbgrader's autograde in the server's process: scores only, no
feedback, no class report, and a missing sandbox buried at the end of a long log.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from nncourse import compat

# `nncourse grade` exits 3 when it graded everything and some students need attention.
GRADED = (0, 3)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Jupyter Server's entry point: this module is the extension."""
    return [{"module": "nncourse.formgrader"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Route the formgrader's Autograde button to `autograde` below."""
    compat.route_formgrader_autograde(autograde)
    serverapp.log.info("nncourse: the formgrader's Autograde button runs `nncourse grade`")


def autograde(api: Any, assignment_id: str, student_id: str) -> dict[str, Any]:
    """Grade the assignment's new and changed submissions; the reason first if grading cannot run.

    Grading is decided by content: the clicked student's submission is graded if it is new or
    changed since its last grading, with every other such submission of the assignment, and
    the class report is rewritten. The answer is the dict the formgrader's page shows.
    """
    done = subprocess.run(
        [sys.executable, "-m", "nncourse", "--root", api.coursedir.root, "grade", assignment_id],
        capture_output=True,
        text=True,
    )
    output = (done.stdout + done.stderr).strip()
    if done.returncode in GRADED:
        return {"success": True, "log": output}
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    reason = lines[-1] if lines else f"nncourse grade exited with status {done.returncode}"
    return {"success": False, "log": f"{reason}\n\n{output}", "error": reason}
