"""A grading run killed anywhere, stopped by Ctrl-C or losing a kernel ends, once rerun, as if
it had never been stopped: same gradebook, grades.csv, statuses and feedback.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from crash_class import (  # noqa: F401 - the *_fixture names are fixtures
    environment,
    finish,
    gone,
    grade_command,
    graded_fixture,
    kernels,
    parent,
    processes,
    reference_fixture,
    run_grade,
    state,
    ungraded_fixture,
    wait_for,
)

pytestmark = [pytest.mark.kernels, pytest.mark.sandbox]

# Spread over a run; ":N" is the Nth pass, so that some students are saved before the kill.
KILL_POINTS = [
    "planning:2",
    "backup-done",
    "pool-started",
    "writer-old-removed:2",
    "writer-before-commit:2",
    "writer-after-commit:2",
    "writer-between-renames:2",
    "writer-saved:3",
    "feedback-written:2",
    "before-reports",
    "between-grades-and-report",
]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(ungraded, reference, point):
    mark = os.urandom(8).hex()
    killed = run_grade(ungraded, NNCOURSE_CRASH_AT=point, NNCOURSE_TEST_RUN=mark)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert gone(mark), "the workers or kernels of a killed grader kept running"
    resumed = run_grade(ungraded)
    assert resumed.returncode == 3, resumed.stderr[-2000:]
    assert state(ungraded) == reference


@pytest.mark.parametrize("point", ["writer-after-commit:2", "writer-between-renames:3"])
def test_a_killed_force_regrade_resumes_to_the_same_grades(graded, reference, point):
    killed = run_grade(graded, "--force", NNCOURSE_CRASH_AT=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert run_grade(graded).returncode == 3
    assert state(graded) == reference


def _ignore_sigint() -> None:
    """Start as a shell without job control starts a background command: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_cleanly_and_a_rerun_resumes(ungraded, reference, how):
    """Even a grader started with SIGINT ignored (`make grade &` in a script) stops on it."""
    env = environment()
    with subprocess.Popen(
        grade_command(ungraded),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint,
    ) as grader:
        wait_for(lambda: kernels(env["NNCOURSE_TEST_RUN"]))
        grader.send_signal(how)
        out, err = finish(grader, 60)
    assert grader.returncode == 130, err[-2000:]
    said = [line for line in out.splitlines() if "interrupted" in line]
    assert len(said) == 1
    assert "saved" in said[0]
    assert "Rerun `make grade` to resume" in said[0]
    assert gone(env["NNCOURSE_TEST_RUN"]), "a kernel or worker outlived the stopped grader"
    assert run_grade(ungraded).returncode == 3
    assert state(ungraded) == reference


def test_a_killed_kernel_fails_one_student_and_the_batch_finishes(ungraded, reference):
    env = environment()
    with subprocess.Popen(
        grade_command(ungraded), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as grader:
        victim = wait_for(lambda: kernels(env["NNCOURSE_TEST_RUN"]))[-1]
        os.kill(victim, signal.SIGKILL)
        out, err = finish(grader, 300)
    assert grader.returncode == 3, err[-2000:]
    records = state(ungraded)["records"]
    crashed = [student for student, (status, *_) in records.items() if status == "crashed"]
    assert len(crashed) == 1, records
    others = {s: r for s, r in records.items() if s not in crashed}
    assert others == {s: r for s, r in reference["records"].items() if s not in crashed}


def test_a_killed_worker_process_is_retried_and_nobody_else_is_affected(ungraded, reference):
    env = environment()
    with subprocess.Popen(
        grade_command(ungraded), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as grader:
        # A worker busy with a submission: the parent of a kernel's process chain, below the grader.
        def busy_workers() -> list[int]:
            chains = [_ancestors(pid) for pid in kernels(env["NNCOURSE_TEST_RUN"])]
            return [chain[chain.index(grader.pid) - 1] for chain in chains if grader.pid in chain]

        os.kill(wait_for(busy_workers)[0], signal.SIGKILL)
        out, err = finish(grader, 300)
    assert grader.returncode == 3, err[-2000:]
    assert gone(env["NNCOURSE_TEST_RUN"])
    assert state(ungraded) == reference


def _ancestors(pid: int) -> list[int]:
    """A process and its ancestors, nearest first."""
    chain = [pid]
    while chain[-1] > 1:
        chain.append(parent(chain[-1]))
    return chain


def test_processes_finds_only_the_marked_run():
    assert processes("no run has this mark") == []
