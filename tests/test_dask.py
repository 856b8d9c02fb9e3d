"""Grading on a real Dask cluster on this machine: `dask scheduler` and two `dask worker`s.

The grades equal the local process pool's on the same class, and a worker killed mid-run
leaves every student graded exactly once, with the same grades.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client
from test_durable import snapshot
from test_pipeline import ASSIGNMENT, MISTAKES, make_course, scores

from nncourse import course_config, executors, grade, record, submissions
from nncourse.record import RECORD_FILE
from nncourse.results import Status, StudentResult
from nncourse.sandbox import find_bwrap

DASK = str(Path(sys.executable).parent / "dask")
NNCOURSE = str(Path(sys.executable).parent / "nncourse")
CLASS_SIZE = 16
WORKERS = 2
EMPTY_FILE = hashlib.sha256(b"").hexdigest()
STARTUP_SECONDS = 120  # the bound of a wait for the cluster, not a measured time


@contextlib.contextmanager
def dask_cluster(folder: Path, worker_paths: tuple[str, ...] = ("",) * WORKERS) -> Iterator[str]:
    """A scheduler and two one-thread workers on loopback, each `dask` command in its own session.

    Each worker's PATH starts with its entry of worker_paths. Yields the scheduler's address;
    everything is stopped afterwards.
    """
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    commands = [
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"],
        *[
            [DASK, "worker", "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1"]
            + ["--dashboard-address", ":0"]
            for _ in range(WORKERS)
        ],
    ]
    processes: list[subprocess.Popen] = []
    try:
        for index, (command, path) in enumerate(zip(commands, ["", *worker_paths], strict=True)):
            with (folder / f"dask-{index}.log").open("w") as log:
                processes.append(
                    subprocess.Popen(
                        [*command, "--scheduler-file", str(scheduler_file)],
                        cwd=folder,
                        env={**os.environ, "PATH": os.pathsep.join([path, os.environ["PATH"]])},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # so that a worker is killed with its nanny
                    )
                )
        with Client(scheduler_file=str(scheduler_file), timeout=STARTUP_SECONDS) as client:
            client.wait_for_workers(WORKERS, timeout=STARTUP_SECONDS)
            address = client.scheduler.address
        yield address
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def dask_course(folder: Path, address: str) -> Path:
    """The class of CLASS_SIZE students in a course whose config grades on the cluster."""
    course = make_course(folder, f'\nc.GradingExecutor.scheduler = "{address}"\n')
    submissions.write_class(course, ASSIGNMENT, CLASS_SIZE, MISTAKES)
    return course


def db_url(course: Path) -> str:
    """The course's SQLite gradebook."""
    return f"sqlite:///{course / 'gradebook.db'}"


@pytest.fixture(scope="module")
def local_scores(tmp_path_factory) -> dict[tuple[str, str], float]:
    """Every grade cell's score of the class graded by the local process pool."""
    course = make_course(tmp_path_factory.mktemp("local"))
    submissions.write_class(course, ASSIGNMENT, CLASS_SIZE, MISTAKES)
    results = grade.grade_class(course, jobs=WORKERS, progress=False)
    assert [r.status for r in results] == [Status.GRADED] * CLASS_SIZE
    return scores(db_url(course))


# xdist_group("dask"): the two gradings on a cluster share the local grading they are compared
# with, and run one after the other on one pytest worker.
@pytest.mark.kernels
@pytest.mark.sandbox
@pytest.mark.xdist_group("dask")
def test_a_dask_cluster_grades_as_the_local_pool(tmp_path, local_scores):
    with dask_cluster(tmp_path / "cluster") as address:
        course = dask_course(tmp_path / "class", address)
        results = grade.grade_class(course, progress=False)
    assert [r.status for r in results] == [Status.GRADED] * CLASS_SIZE
    assert scores(db_url(course)) == local_scores
    # The workers staged nothing in the course: autograded/ holds what the driver wrote.
    graded = sorted((course / "autograded").glob(f"*/{ASSIGNMENT}/{RECORD_FILE}"))
    assert len(graded) == CLASS_SIZE


@pytest.mark.kernels
@pytest.mark.sandbox
@pytest.mark.xdist_group("dask")
def test_a_worker_killed_mid_run_leaves_every_student_graded_once(
    tmp_path, local_scores, monkeypatch
):
    saved: Counter[str] = Counter()
    save = record.save_outcome

    def counting_save(gb, config, outcome, *args):
        saved[outcome.student] += 1
        return save(gb, config, outcome, *args)

    monkeypatch.setattr(record, "save_outcome", counting_save)
    with dask_cluster(tmp_path / "cluster") as address:
        course = dask_course(tmp_path / "class", address)
        results: list[StudentResult] = []
        run = threading.Thread(
            target=lambda: results.extend(grade.grade_class(course, progress=False))
        )
        run.start()
        while run.is_alive() and not any(
            (course / "autograded").glob(f"*/{ASSIGNMENT}/{RECORD_FILE}")
        ):
            time.sleep(0.2)  # until the first result is saved
        assert run.is_alive(), "the run ended before a worker could be killed mid-run"
        with Client(address) as client:
            busy = next(worker for worker, keys in client.processing().items() if keys)
            pid = client.run(os.getpid, workers=[busy])[busy]
        os.killpg(os.getpgid(pid), signal.SIGKILL)  # the worker, its nanny and its kernel
        run.join()
        with Client(address) as client:
            assert len(client.scheduler_info()["workers"]) == WORKERS - 1
    assert sorted(r.student for r in results) == sorted(saved) == sorted(set(saved))
    assert set(saved.values()) == {1}
    assert [r.status for r in results] == [Status.GRADED] * CLASS_SIZE
    assert scores(db_url(course)) == local_scores


def test_the_command_line_scheduler_wins_over_the_config():
    config = course_config.load(Path(__file__).resolve().parent.parent)
    config.GradingExecutor.scheduler = "tcp://127.0.0.1:1"
    with executors.chosen(config, 2) as executor:
        assert isinstance(executor, executors.DaskCluster)
        assert executor.address == "tcp://127.0.0.1:1"
    executors.choose(config, "")  # `nncourse grade --scheduler ''`
    with executors.chosen(config, 2) as executor:
        assert executor == executors.LocalPool(2)


@pytest.mark.sandbox
def test_a_worker_without_the_sandbox_refuses_the_run(tmp_path):
    """The sandbox's bwrap is found on one worker's PATH only: nothing is graded or written."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "course-bwrap").symlink_to(find_bwrap())
    with dask_cluster(tmp_path / "cluster", (str(tools), "")) as address:
        course = make_course(
            tmp_path / "class", '\nc.SandboxedKernelManager.bwrap = "course-bwrap"\n'
        )
        submissions.write_class(course, ASSIGNMENT, 2, MISTAKES)
        before = snapshot(course)
        refused = subprocess.run(
            [NNCOURSE, "--root", str(course), "grade", "--scheduler", address],
            capture_output=True,
            text=True,
            check=False,
        )
        with Client(address) as client:
            found = client.run(shutil.which, "course-bwrap")
    (lacking,) = [worker for worker, path in found.items() if path is None]
    assert refused.returncode == 1
    assert f"Dask worker {lacking} cannot grade" in refused.stderr
    assert "'course-bwrap' not found" in refused.stderr
    assert "Nothing was changed" in refused.stderr
    assert "Traceback" not in refused.stderr
    after = snapshot(course)
    assert after.pop("gradebook.db.lock") == EMPTY_FILE  # the run lock's file, kept by design
    assert after == before
