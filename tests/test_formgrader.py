"""The formgrader's Autograde button, routed to `nncourse grade` (nncourse/formgrader.py)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from test_pipeline import correct, make_course, submit

from nncourse import formgrader

pytestmark = [pytest.mark.kernels]


def _api(course: Path) -> types.SimpleNamespace:
    """What the button's handler hands over: an NbGraderAPI, of which only coursedir is used."""
    return types.SimpleNamespace(coursedir=types.SimpleNamespace(root=str(course)))


def test_without_a_sandbox_the_reason_comes_first_and_nothing_is_graded(tmp_path):
    """The page shows the log first: its first line is the one-line reason grading refused."""
    course = make_course(tmp_path, '\nc.SandboxedKernelManager.bwrap = "/nonexistent/bwrap"\n')
    submit(course, "ada", correct())
    answer = formgrader.autograde(_api(course), "simple_nn", "ada")
    assert answer["success"] is False
    first = answer["log"].splitlines()[0]
    assert first == answer["error"]
    assert first.startswith("nncourse grade: bubblewrap executable '/nonexistent/bwrap' not found")
    assert first.endswith("Nothing was changed.")
    assert not (course / "autograded").exists()
