"""A small class graded by `nncourse grade` in a subprocess, to stop, break and resume it.

Four students with distinct scores (one of them ungradable), built once per session; each test
copies it. The reference is the class graded once, uninterrupted: every stopped and resumed
run must end exactly there.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_pipeline import ASSIGNMENT, break_file, correct, make_course, mistake, scores, submit

from nncourse.record import RECORD_FILE

STUDENTS = ["alice", "bob", "carol", "dan"]
# The test's own processes carry this variable: the grader, its workers and their kernels.
MARK = "NNCOURSE_TEST_RUN"
# The sandbox passes kernels only the variables it is told to: the mark among them.
CONFIG = f"""
import os
c.Execute.timeout = 10
c.SandboxedKernelManager.extra_env = {{"{MARK}": os.environ.get("{MARK}", "")}}
"""
_built: dict[str, Path] = {}  # the session's class, ungraded and graded: built once


def _class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The class, ungraded: alice 30, bob and carol lose different cells, dan is not a notebook."""
    if "class" not in _built:
        course = make_course(tmp_path_factory.mktemp("crash-class"), CONFIG)
        submit(course, "alice", correct())
        submit(course, "bob", mistake("fails_gradient_descent_wrong_sign"))
        submit(course, "carol", mistake("fails_relu_derivative_one_at_zero"))
        break_file(submit(course, "dan"), "{this is not json")
        _built["class"] = course
    return _built["class"]


def _graded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The class graded once, uninterrupted."""
    if "graded" not in _built:
        folder = tmp_path_factory.mktemp("reference")
        course = copy_course(_class(tmp_path_factory), folder / "course")
        assert run_grade(course).returncode == 3  # dan needs attention
        _built["graded"] = course
    return _built["graded"]


@pytest.fixture(name="ungraded")
def ungraded_fixture(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A fresh copy of the class, never graded."""
    return copy_course(_class(tmp_path_factory), tmp_path / "course")


@pytest.fixture(name="graded")
def graded_fixture(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A fresh copy of the class graded once."""
    return copy_course(_graded(tmp_path_factory), tmp_path / "course")


@pytest.fixture(name="reference")
def reference_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the uninterrupted run left: scores, grades.csv, statuses and feedback."""
    return state(_graded(tmp_path_factory))


def copy_course(source: Path, target: Path) -> Path:
    """A copy of a course folder, links kept as links."""
    shutil.copytree(source, target, symlinks=True)
    return target


def grade_command(course: Path, *args: str) -> list[str]:
    """`nncourse grade` for a course, run by this environment's Python."""
    return [sys.executable, "-m", "nncourse", "--root", str(course), "grade", "--jobs", "2", *args]


def environment(mark: str = "", **extra: str) -> dict[str, str]:
    """The environment of a grading subprocess, with the test's mark and the given variables."""
    env = {k: v for k, v in os.environ.items() if k != "NNCOURSE_CRASH_AT"}
    return {**env, MARK: mark or uuid.uuid4().hex, **extra}


def run_grade(course: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """Run `nncourse grade` to its end (or its death); output captured."""
    return subprocess.run(
        grade_command(course, *args),
        env=environment(**extra),
        capture_output=True,
        text=True,
        timeout=600,
    )


def state(course: Path) -> dict[str, Any]:
    """What a grading run leaves that matters: scores, grades.csv, statuses, feedback pages."""
    records = {}
    for student in STUDENTS:
        folder = course / "autograded" / student / ASSIGNMENT
        record = json.loads((folder / RECORD_FILE).read_text())
        feedback = course / "feedback" / student / ASSIGNMENT / "simple_neural_network.html"
        records[student] = (record["status"], record.get("feedback"), feedback.exists())
    with (course / "reports" / "grades.csv").open() as handle:
        grades = sorted(map(tuple, csv.reader(handle)))
    return {
        "scores": scores(f"sqlite:///{course / 'gradebook.db'}"),
        "grades.csv": grades,
        "records": records,
        "report": (course / "reports" / f"{ASSIGNMENT}_report.html").exists(),
        "staging left": (course / "autograded" / ".nncourse-staging").exists(),
    }


def finish(grader: subprocess.Popen, seconds: float) -> tuple[str, str]:
    """A running grader's output once it ends; killed, and the test failed, if it does not."""
    try:
        return grader.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        grader.kill()
        grader.wait()
        raise AssertionError(f"the grader did not finish within {seconds} s") from None


def processes(mark: str) -> list[int]:
    """Processes that carry the mark in their environment (read from /proc, as root)."""
    found = []
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone, or a zombie
    return found


def cmdline(pid: int) -> str:
    """A process's command line, or empty when it is gone."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def parent(pid: int) -> int:
    """A process's parent id (0 when it is gone)."""
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return 0


def wait_for(find: Callable[[], list[int]], seconds: float = 120) -> list[int]:
    """Poll until find() returns something; fail after the given time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("waited in vain")


def gone(mark: str, seconds: float = 10) -> bool:
    """Whether every process with the mark ends within the given time."""
    deadline = time.monotonic() + seconds
    while processes(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not processes(mark)


def kernels(mark: str) -> list[int]:
    """The grading kernels of a marked run (bwrap's and the kernel's processes alike)."""
    return [pid for pid in processes(mark) if "ipykernel" in cmdline(pid)]
