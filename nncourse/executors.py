"""Executors, where execute.py runs: this machine's process pool, or the workers of a Dask cluster.

The driver (nncourse/grade.py) plans, hands the tasks to an executor and saves each outcome as
it arrives (record.py): it stays the only writer of the gradebook and of autograded/. Executors
only run `execute.execute_submission(task)` somewhere and hand back its Outcome, in any order,
each exactly once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import multiprocessing
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from traitlets import Unicode
from traitlets.config import Config, Configurable

from nncourse import calls, compat, crashpoints, durable, execute
from nncourse.course import checks
from nncourse.results import AssignmentFiles, Outcome, Status, Task
from nncourse.sandbox import SandboxedKernelManager, SandboxUnavailable, check_sandbox

OnDone = Callable[[Outcome], None]
CONNECT_TIMEOUT = "20s"  # to reach a Dask scheduler before the run is refused


class ExecutorUnavailable(RuntimeError):
    """The chosen executor cannot grade (no scheduler, no worker, a worker without sandbox)."""


class GradingExecutor(Configurable):
    """Where `nncourse grade` executes submissions (c.GradingExecutor.* in nbgrader_config.py)."""

    scheduler = Unicode(
        "",
        help="Address of a Dask scheduler (tcp://HOST:PORT) whose workers execute the "
        "submissions; empty: a process pool on this machine. `nncourse grade --scheduler` wins.",
    ).tag(config=True)


class Executor(Protocol):
    """Runs tasks somewhere and hands each outcome to the driver, exactly once."""

    def preflight(self, config: Config) -> None:
        """Raise SandboxUnavailable or ExecutorUnavailable, saying why, if grading cannot run."""

    def run(self, tasks: list[Task], on_done: OnDone) -> None:
        """Execute the tasks; call on_done in this thread for each outcome as it is ready."""


def choose(config: Config, scheduler: str | None) -> None:
    """Let the command line's --scheduler (None: not given) win over c.GradingExecutor.scheduler."""
    if scheduler is not None:
        config.GradingExecutor.scheduler = scheduler


@contextlib.contextmanager
def chosen(config: Config, jobs: int) -> Iterator[Executor]:
    """The executor the config chooses; closed (disconnected) afterwards."""
    address = GradingExecutor(config=config).scheduler
    if not address:
        yield LocalPool(jobs)
        return
    cluster = DaskCluster(address)
    try:
        yield cluster
    finally:
        cluster.close()


def sandbox_problem(config: Config) -> str:
    """Why sandboxed kernels cannot run in this process's machine, or "" when they can."""
    manager = SandboxedKernelManager(config=config)
    try:
        if manager.enabled:
            check_sandbox(manager)
    except SandboxUnavailable as error:
        return str(error)
    return ""


def _quiet_worker() -> None:
    """Keep each kernel to one thread and a worker's log to what the outcome says."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    # nbgrader warns for every restored grade cell that its checksum changed (it stores the
    # checksum with the hidden tests, so every submission differs), and nbclient logs a dead
    # kernel as an error: what a worker meets becomes the submission's outcome, which the
    # summary states in the instructor's terms.
    logging.getLogger("traitlets").setLevel(logging.CRITICAL)


def _grading_failed(task: Task, error: BaseException) -> Outcome:
    """The outcome of a submission whose grading itself failed: crashed, and retried next time."""
    return Outcome(
        task.student,
        task.assignment,
        Status.CRASHED,
        digest=task.digest,
        retry=True,
        reason=f"grading failed: {type(error).__name__}: {error}",
    )


# ---------------------------------------------------------------------------------------------
# This machine: a process pool


@dataclasses.dataclass
class LocalPool:
    """Forked worker processes on this machine, `jobs` at a time (the default executor)."""

    jobs: int

    def preflight(self, config: Config) -> None:
        """Refuse when the sandbox is switched on but cannot run here; say why."""
        problem = sandbox_problem(config)
        if problem:
            raise SandboxUnavailable(problem)

    def run(self, tasks: list[Task], on_done: OnDone) -> None:
        """Execute the tasks on `jobs` worker processes; hand each outcome to on_done.

        A worker process that dies (killed for memory, say) breaks the whole pool; the tasks
        it took down with it are run again in a fresh pool, and a task that breaks a pool on
        its own is reported as crashed.
        """
        # Forked workers start at once with nbgrader already imported (spawning costs each one
        # ~2.5 s of imports); they share nothing with the grader but what the task carries.
        context = multiprocessing.get_context("fork")
        # Every worker judges with the same plans: record them once, here, and fork them along.
        for grade_id in checks.CHECKS:
            calls.plan(grade_id)
        durable.adopt_orphans()
        before = durable.children()  # a caller's own (a test's database server, say)
        try:
            self._run_pools(tasks, on_done, context)
        finally:
            # Every worker is gone by now: any other new child is an orphaned sandbox, adopted.
            durable.stop_children(spare=before)

    def _run_pools(
        self, tasks: list[Task], on_done: OnDone, context: multiprocessing.context.BaseContext
    ) -> None:
        """The pools of run: all tasks, then those of a broken pool one at a time."""
        pending, alone = list(tasks), False
        while pending:
            broken = []
            pool = concurrent.futures.ProcessPoolExecutor(
                1 if alone else self.jobs,
                mp_context=context,
                initializer=worker_init,
                initargs=(os.getpid(),),
            )
            try:
                futures = {pool.submit(execute.execute_submission, task): task for task in pending}
                crashpoints.reached("pool-started")
                for future in concurrent.futures.as_completed(futures):
                    task = futures[future]
                    try:
                        outcome = future.result()
                    except concurrent.futures.process.BrokenProcessPool:
                        broken.append(task)
                        continue
                    except Exception as error:  # noqa: BLE001 - one failure must not stop the batch
                        outcome = _grading_failed(task, error)
                    on_done(outcome)
            except BaseException:
                # Stopped (Ctrl-C, SIGTERM, a failed save): the workers and their kernels go
                # now. Not `with pool`: its exit waits for the pool's threads, which can hang
                # on the queues of killed workers.
                compat.kill_pool(pool)
                raise
            pool.shutdown()
            if alone:
                for task in broken:
                    on_done(_grading_failed(task, RuntimeError("its grading process died")))
                return
            pending, alone = broken, True


def worker_init(grader: int) -> None:
    """Tie a pool's worker to the grader's life; keep each kernel to one thread, the log quiet."""
    # Killed with the grader, whatever kills it: a worker's kernel sandbox dies with the worker
    # (bwrap --die-with-parent), so nothing of a stopped run keeps running.
    durable.die_with_parent(grader)
    # Ctrl-C at a terminal reaches the whole process group: the grader alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _quiet_worker()


# ---------------------------------------------------------------------------------------------
# A Dask cluster: `dask scheduler` and `dask worker`s, dask-jobqueue, dask-kubernetes, ...


class DaskCluster:
    """The workers of a Dask cluster, reached through its scheduler's address.

    Each worker runs execute_submission in a folder of its own and sends back the outcome
    and the files it staged (the executed notebooks, the exchange's files); the driver writes
    them. A worker reads from disk only what the Task's docstring says: the submitted folder,
    by its path. The assignment's files and the copy of the master's cells (never the
    gradebook) are shipped to every worker once per run. A task whose
    worker dies is run again on another by Dask; after `distributed.scheduler.allowed-failures`
    such deaths it is reported as crashed.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.client: Any = None

    def preflight(self, config: Config) -> None:
        """Connect; refuse when no worker is there, or one lacks the sandbox or our package."""
        from distributed import Client

        try:
            self.client = Client(self.address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise ExecutorUnavailable(
                f"cannot reach the Dask scheduler at {self.address} ({error})"
            ) from None
        if not self.client.scheduler_info()["workers"]:
            raise ExecutorUnavailable(f"the Dask scheduler at {self.address} has no workers")
        ours = package_digest()
        for worker, (problem, theirs) in sorted(self.client.run(_worker_check, config).items()):
            if problem:
                raise SandboxUnavailable(f"Dask worker {worker} cannot grade: {problem}")
            if theirs != ours:
                raise ExecutorUnavailable(
                    f"Dask worker {worker} has another version of nncourse installed than "
                    "this machine: install the same course version on every worker"
                )

    def run(self, tasks: list[Task], on_done: OnDone) -> None:
        """Submit every task to the cluster; hand each outcome to on_done as it arrives."""
        from distributed import as_completed

        cells = durable.sqlite_path(tasks[0].read_db_url).read_bytes()  # record.master_cells
        files = {task.assignment: task.files for task in tasks}
        # Scattered under keys of their own (a list, not a dict: its keys would be the names).
        shipped_cells, *shipped_files = self.client.scatter(
            [cells, *files.values()], broadcast=True, hash=False
        )
        shipped = dict(zip(files, shipped_files, strict=True))
        futures = {
            self.client.submit(
                _execute_on_worker,
                # The assignment's files travel once per worker, scattered, not in every task.
                dataclasses.replace(task, files=AssignmentFiles({}, [], {})),
                shipped[task.assignment],
                shipped_cells,
                pure=False,
            ): task
            for task in tasks
        }
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    outcome, staged = future.result()
                    _unpack(outcome, staged, Path(task.staging))
                except Exception as error:  # noqa: BLE001 - one failure must not stop the batch
                    outcome = _grading_failed(task, error)
                on_done(outcome)
        except BaseException:
            # Stopped (Ctrl-C, SIGTERM, a failed save): nothing of this run is left queued.
            self.client.cancel(list(futures))
            raise
        finally:
            self.client.run(_remove_cells, cells_name(cells), on_error="ignore")

    def close(self) -> None:
        """Disconnect from the scheduler (the cluster itself goes on)."""
        if self.client is not None:
            self.client.close()


def package_digest() -> str:
    """A fingerprint of the installed nncourse: its code, the course's checks and references."""
    package = Path(__file__).parent
    digest = hashlib.sha256()
    files = [*package.glob("*.py"), *package.glob("course/*.py")]
    files += package.glob("course/reference_solutions/*.json")
    for path in sorted(files):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _worker_check(config: Config) -> tuple[str, str]:
    """On a worker: why it cannot run the sandbox ("" when it can), and its package_digest."""
    return sandbox_problem(config), package_digest()


def _execute_on_worker(
    task: Task, files: AssignmentFiles, cells: bytes
) -> tuple[Outcome, dict[str, bytes]]:
    """On a Dask worker: execute a task in a folder of its own; the outcome and what it staged."""
    _quiet_worker()
    with tempfile.TemporaryDirectory(prefix="nncourse-worker-") as folder:
        staging = Path(folder) / "staged"
        task = dataclasses.replace(
            task,
            files=files,
            staging=str(staging),
            read_db_url=_local_cells(cells),
        )
        outcome = execute.execute_submission(task)
        staged = {path.name: path.read_bytes() for path in staging.iterdir() if path.is_file()}
    return outcome, staged


def cells_name(data: bytes) -> str:
    """The file name of the master's cells (a SQLite file) on a worker, by its content."""
    return f"nncourse-gradebook-{hashlib.sha256(data).hexdigest()}.db"


def _local_cells(data: bytes) -> str:
    """The master's cells, written once per worker machine and run; their SQLite URL."""
    path = Path(tempfile.gettempdir()) / cells_name(data)
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".nncourse-gradebook-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    return f"sqlite:///{path}"


def _remove_cells(name: str) -> None:
    """On a worker, after the run: remove its copy of the master's cells."""
    (Path(tempfile.gettempdir()) / name).unlink(missing_ok=True)


def _unpack(outcome: Outcome, staged: dict[str, bytes], staging: Path) -> None:
    """In the driver: write what a worker staged, and point the outcome at it."""
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in staged.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"a worker sent back a file named {name!r}")
        (staging / name).write_bytes(data)
    outcome.executed = {
        notebook: str(staging / Path(path).name) for notebook, path in outcome.executed.items()
    }
