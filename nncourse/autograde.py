"""Parallel autograding: submissions run side by side in fresh kernels; one process saves grades."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import nbformat
from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.converters import Autograde
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import SaveAutoGrades
from traitlets.config import Config

from nncourse import calls, checks, inert, tamper, verdicts
from nncourse.sandbox import KernelTimeLimitExceeded, SandboxedKernelManager, check_sandbox

GRADED, MISSING, UNGRADABLE, CRASHED, TIMED_OUT = (
    "graded",
    "missing",
    "ungradable",
    "crashed",
    "timed out",
)
NEEDS_ATTENTION = (UNGRADABLE, CRASHED, TIMED_OUT)
RECORD_FILE = ".nncourse-grading.json"  # kept in each autograded submission folder
TIMEOUT_ERRORS = ("CellTimeoutError", "TimeoutError")
# What nbgrader's exchange puts beside a submission; release_feedback needs the secret.
EXCHANGE_FILES = ("timestamp.txt", "submission_secret.txt")


@dataclasses.dataclass
class Task:
    """One submission to execute: everything a worker process needs, nothing it must share."""

    config: Config
    student: str
    assignment: str
    notebooks: list[str]
    read_db_url: str
    digest: str


@dataclasses.dataclass
class Outcome:
    """What became of one student's submission."""

    student: str
    assignment: str
    status: str
    reason: str = ""
    digest: str = ""
    seconds: float = 0.0
    executed: dict[str, str] = dataclasses.field(
        default_factory=dict
    )  # notebook -> autograded path
    retry: bool = False  # the grading system failed, not the submission: grade it again next run
    flags: list[str] = dataclasses.field(default_factory=list)  # for a human to look at

    def to_record(self) -> dict[str, Any]:
        """The part worth keeping beside the autograded notebooks."""
        return {
            "status": self.status,
            "reason": self.reason,
            "digest": self.digest,
            "seconds": self.seconds,
            "retry": self.retry,
            "flags": self.flags,
        }


class SubmissionError(Exception):
    """A submission that cannot be graded as it stands; the message says why."""


def load_config(course_root: Path) -> Config:
    """The configuration nbgrader itself would load in course_root (nbgrader_config.py and all)."""
    from nbgrader.apps.nbgraderapp import NbGraderApp

    # traitlets configures logging with dictConfig, which disables every logger that exists
    # already (ours included); give them back their voice afterwards.
    enabled = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.disabled
    ]
    with _chdir(course_root):
        app = NbGraderApp()
        app.initialize([])
        config = app.config
    for logger in enabled:
        logger.disabled = False
    config.CourseDirectory.root = str(course_root)
    return config


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    """Run a block in another working directory."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _preprocessor_lists(config: Config) -> tuple[list, list, list]:
    """nbgrader's sanitise and autograde steps, the latter split where it starts writing grades."""
    autograde = Autograde(config=config)
    steps = list(autograde.autograde_preprocessors)
    split = steps.index(SaveAutoGrades)
    return list(autograde.sanitize_preprocessors), steps[:split], steps[split:]


def _run(steps: Iterable[type], config: Config, nb: NotebookNode, resources: dict) -> NotebookNode:
    """Apply nbgrader preprocessors the way its exporter does (respecting each one's `enabled`)."""
    for step in steps:
        nb, resources = step(config=config)(nb, resources)
    return nb


def _resources(
    student: str, assignment: str, notebook: str, db_url: str, path: Path
) -> dict[str, Any]:
    """The resources dict nbgrader's converters hand to their preprocessors."""
    return {
        "unique_key": notebook,
        "output_files_dir": f"{notebook}_files",
        "metadata": {"path": str(path), "name": notebook},
        "nbgrader": {
            "student": student,
            "assignment": assignment,
            "notebook": notebook,
            "db_url": db_url,
        },
    }


def submission_digest(folder: Path, course: CourseDirectory, assignment: str) -> str:
    """A fingerprint of a submission's files and the assignment's source: a change means regrade."""
    digest = hashlib.sha256()
    source = Path(course.format_path(course.source_directory, ".", assignment))
    for base in (folder, source):
        for path in sorted(p for p in base.rglob("*") if p.is_file() and not _ignored(p, course)):
            digest.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _ignored(path: Path, course: CourseDirectory) -> bool:
    """Whether nbgrader's CourseDirectory.ignore patterns exclude this file."""
    return any(fnmatch.fnmatch(part, pattern) for part in path.parts for pattern in course.ignore)


# ---------------------------------------------------------------------------------------------
# In a worker process: sanitise and execute, never write the gradebook


def execute_submission(task: Task) -> Outcome:
    """Copy one submission to autograded/, sanitise and execute its notebooks in fresh kernels."""
    started = time.monotonic()
    course = CourseDirectory(config=task.config)
    submitted = Path(course.format_path(course.submitted_directory, task.student, task.assignment))
    dest = Path(course.format_path(course.autograded_directory, task.student, task.assignment))
    outcome = Outcome(task.student, task.assignment, GRADED, digest=task.digest)
    sanitise, execute, _ = _preprocessor_lists(task.config)
    try:
        _lay_out(submitted, dest, course, task.assignment)
        for notebook in task.notebooks:
            path = submitted / f"{notebook}.ipynb"
            if not path.exists():
                continue  # the writer scores a missing notebook 0, as nbgrader does
            nb = _read_notebook(path)
            release = _release_notebook(course, task.assignment, notebook)
            expected = _expected_files(course, task)
            outcome.flags += tamper.scan(nb, release, tamper.submitted_files(submitted), expected)
            nb = tamper.repair(nb, release)
            resources = _resources(
                task.student, task.assignment, notebook, task.read_db_url, submitted
            )
            try:
                nb = _run(sanitise, task.config, nb, resources)
            except Exception as error:  # noqa: BLE001 - nbgrader raises plain exceptions for bad metadata
                raise SubmissionError(
                    f"{path.name}: its nbgrader cell metadata is damaged ({type(error).__name__}: "
                    f"{str(error)[:200]}). Ask the student to paste their answers into a fresh "
                    "copy of the assignment and resubmit."
                ) from error
            resources["metadata"]["path"] = str(dest)
            status = _execute(nb, execute, task.config, resources)
            outcome.flags += verdicts.flags(nb)
            if status != GRADED and outcome.status == GRADED:
                outcome.status, outcome.reason = (
                    status,
                    f"{path.name}: "
                    + (
                        "the kernel died (a crash, os._exit or running out of memory)"
                        if status == CRASHED
                        else "a cell ran past the time limit"
                    ),
                )
            target = dest / f"{notebook}.ipynb"
            # The formgrader may show this file before the record steps make it inert again.
            nbformat.write(inert.inert_notebook(nb), target)
            outcome.executed[notebook] = str(target)
    except SubmissionError as error:
        outcome.status, outcome.reason, outcome.executed = UNGRADABLE, str(error), {}
    outcome.seconds = round(time.monotonic() - started, 3)
    return outcome


def _lay_out(submitted: Path, dest: Path, course: CourseDirectory, assignment: str) -> None:
    """Start dest afresh with the source's files and the exchange's files, nothing else.

    nbgrader copies every file a student submits next to the notebook; a submitted
    numpy.py or ipykernel_launcher.py would then be imported by the grading kernel. Only
    the files the assignment itself ships are laid out here; the notebooks come later.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    source = Path(course.format_path(course.source_directory, ".", assignment))
    for path in source.rglob("*"):
        relative = path.relative_to(source)
        if path.is_file() and path.suffix != ".ipynb" and not _ignored(relative, course):
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / relative)
    for name in EXCHANGE_FILES:
        if (submitted / name).is_file():
            shutil.copyfile(submitted / name, dest / name)


def _expected_files(course: CourseDirectory, task: Task) -> set[str]:
    """What a submission may hold: the notebooks, the release's files and the exchange's."""
    release = Path(course.format_path(course.release_directory, ".", task.assignment))
    shipped = {str(p.relative_to(release)) for p in release.rglob("*") if p.is_file()}
    return shipped | {f"{name}.ipynb" for name in task.notebooks} | set(EXCHANGE_FILES)


def _release_notebook(course: CourseDirectory, assignment: str, notebook: str) -> NotebookNode:
    """The notebook students received (an empty one when the release is not built here)."""
    path = Path(course.format_path(course.release_directory, ".", assignment)) / f"{notebook}.ipynb"
    return nbformat.read(path, as_version=4) if path.is_file() else nbformat.v4.new_notebook()


def _read_notebook(path: Path) -> NotebookNode:
    """Read a submitted notebook, or say in plain words why it cannot be read."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:  # noqa: BLE001 - nbformat raises many kinds for unreadable files
        raise SubmissionError(
            f"{path.name} is not a readable notebook ({type(error).__name__}: {str(error)[:200]}). "
            "Ask the student to resubmit the .ipynb file saved by Jupyter."
        ) from error
    if not isinstance(nb.get("cells"), list):
        raise SubmissionError(f"{path.name} has no list of cells; it is not a Jupyter notebook")
    return nb


def _execute(nb: NotebookNode, steps: list[type], config: Config, resources: dict) -> str:
    """Run the execute steps; a dead kernel or a timeout keeps the cells that finished."""
    status = GRADED
    with utils.setenv(NBGRADER_EXECUTION="autograde"):
        try:
            _run(steps, config, nb, resources)
        except KernelTimeLimitExceeded:
            status = TIMED_OUT
        except DeadKernelError:
            status = CRASHED
        except TimeoutError:
            status = TIMED_OUT
        except Exception:  # noqa: BLE001 - a kernel that garbles its messages: keep what finished
            status = CRASHED
    if any(o.get("ename") in TIMEOUT_ERRORS for cell in nb.cells for o in cell.get("outputs", [])):
        status = TIMED_OUT if status == GRADED else status
    _fail_cells_not_run(nb)
    return status


def _fail_cells_not_run(nb: NotebookNode) -> None:
    """Give every grade cell that never ran an error, so that it cannot score as passed."""
    for cell in nb.cells:
        if (
            cell.cell_type == "code"
            and utils.is_grade(cell)
            and cell.get("execution_count") is None
        ):
            cell.outputs = [
                nbformat.v4.new_output(
                    "error",
                    ename="NotRun",
                    evalue="this cell did not run: the kernel stopped before it",
                    traceback=["NotRun: this cell did not run: the kernel stopped before it"],
                )
            ]


# ---------------------------------------------------------------------------------------------
# In the main process: the only writer of the gradebook


def prepare_submission(
    gb: Gradebook, course: CourseDirectory, student: str, assignment: str
) -> None:
    """Start a submission from scratch in the gradebook: no score of an earlier grading survives."""
    gb.update_or_create_student(student)
    try:
        gb.remove_submission(assignment, student)
    except MissingEntry:
        pass
    folder = course.format_path(course.submitted_directory, student, assignment)
    timestamp = course.get_existing_timestamp(folder)
    if timestamp:
        gb.update_or_create_submission(assignment, student, timestamp=timestamp)
    else:
        gb.update_or_create_submission(assignment, student)


def record_outcome(gb_url: str, config: Config, outcome: Outcome, notebooks: list[str]) -> None:
    """Save an executed submission's scores with nbgrader's own steps; zero what could not run."""
    *_, record = _preprocessor_lists(config)
    with Gradebook(gb_url) as gb:
        for notebook in notebooks:
            if notebook not in outcome.executed:
                submission = gb.find_submission_notebook(
                    notebook, outcome.assignment, outcome.student
                )
                for grade in submission.grades:
                    grade.auto_score = 0
                    grade.needs_manual_grade = False
                gb.db.commit()
    for notebook, path in outcome.executed.items():
        nb = nbformat.read(path, as_version=4)
        resources = _resources(
            outcome.student, outcome.assignment, notebook, gb_url, Path(path).parent
        )
        nb = _run(record, config, nb, resources)
        nbformat.write(nb, path)
    write_record(config, outcome)


def write_record(config: Config, outcome: Outcome) -> None:
    """Keep the outcome beside the autograded notebooks, for the summary and for regrading."""
    course = CourseDirectory(config=config)
    dest = Path(
        course.format_path(course.autograded_directory, outcome.student, outcome.assignment)
    )
    dest.mkdir(parents=True, exist_ok=True)
    (dest / RECORD_FILE).write_text(json.dumps(outcome.to_record(), indent=1) + "\n")


def read_record(course: CourseDirectory, student: str, assignment: str) -> dict[str, Any] | None:
    """The outcome kept by the last grading of this submission, if any."""
    path = Path(course.format_path(course.autograded_directory, student, assignment)) / RECORD_FILE
    return json.loads(path.read_text()) if path.exists() else None


def preflight(config: Config) -> None:
    """Refuse to grade when the sandbox is switched on but cannot run here; say why."""
    manager = SandboxedKernelManager(config=config)
    if manager.enabled:
        check_sandbox(manager)


@contextlib.contextmanager
def read_only_copy(db_url: str) -> Iterator[str]:
    """A database URL the workers may read while the main process writes.

    SQLite allows one writer and blocks readers while it commits, so the workers read a
    snapshot taken after every submission was prepared. A server database (PostgreSQL)
    serves readers and the writer side by side, so its URL is used as it is.
    """
    prefix = "sqlite:///"
    if not db_url.startswith(prefix):
        yield db_url
        return
    with tempfile.TemporaryDirectory(prefix="nncourse-gradebook-") as folder:
        snapshot = Path(folder) / "gradebook.db"
        with (
            contextlib.closing(sqlite3.connect(db_url[len(prefix) :])) as live,
            contextlib.closing(sqlite3.connect(snapshot)) as copy,
        ):
            live.backup(copy)
        yield prefix + str(snapshot)


def _worker_init() -> None:
    """Keep each grading kernel to one thread (the workers share the cores) and the log quiet."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    # nbgrader warns for every restored grade cell that its checksum changed: it stores the
    # checksum with the hidden tests, so every submission differs. Only errors are news here.
    logging.getLogger("traitlets").setLevel(logging.ERROR)


def run_parallel(tasks: list[Task], jobs: int, on_done: Callable[[Outcome], None]) -> None:
    """Execute the tasks on `jobs` worker processes; hand each outcome to on_done when it is ready.

    A worker process that dies (killed for memory, say) breaks the whole pool; the tasks it
    took down with it are run again in a fresh pool, and a task that breaks a pool on its
    own is reported as crashed.
    """
    # Forked workers start at once with nbgrader already imported (spawning costs each one
    # ~2.5 s of imports); they share nothing with the grader but what the task carries.
    context = multiprocessing.get_context("fork")
    # Every worker judges with the same plans: record them once, here, and fork them along.
    for grade_id in checks.CHECKS:
        calls.plan(grade_id)
    pending, alone = list(tasks), False
    while pending:
        broken = []
        with concurrent.futures.ProcessPoolExecutor(
            1 if alone else jobs, mp_context=context, initializer=_worker_init
        ) as pool:
            futures = {pool.submit(execute_submission, task): task for task in pending}
            for future in concurrent.futures.as_completed(futures):
                task = futures[future]
                try:
                    on_done(future.result())
                except concurrent.futures.process.BrokenProcessPool:
                    broken.append(task)
                except Exception as error:  # noqa: BLE001 - one failure must not stop the batch
                    on_done(_grading_failed(task, error))
        if alone:
            for task in broken:
                on_done(_grading_failed(task, RuntimeError("its grading process died")))
            return
        pending, alone = broken, True


def _grading_failed(task: Task, error: BaseException) -> Outcome:
    """The outcome of a submission whose grading itself failed: crashed, and retried next time."""
    return Outcome(
        task.student,
        task.assignment,
        CRASHED,
        digest=task.digest,
        retry=True,
        reason=f"grading failed: {type(error).__name__}: {error}",
    )
