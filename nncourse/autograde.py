"""Autograding with nbgrader's own steps: a submission executed (in a worker), its grades saved."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
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

from nncourse import compat, crashpoints, exchange, inert, tamper, verdicts
from nncourse.exchange import EXCHANGE_FILE_BYTES, EXCHANGE_FILES, REFUSED_FILE
from nncourse.files import Folder, Refused, TooLarge, course_folder, refusal
from nncourse.limits import OUTPUT_TOO_LARGE, GradingLimits, setting
from nncourse.sandbox import KernelTimeLimitExceeded, SandboxedKernelManager

GRADED, MISSING, UNGRADABLE, CRASHED, TIMED_OUT = (
    "graded",
    "missing",
    "ungradable",
    "crashed",
    "timed out",
)
NEEDS_ATTENTION = (UNGRADABLE, CRASHED, TIMED_OUT)
log = logging.getLogger(__name__)
RECORD_FILE = ".nncourse-grading.json"  # kept in each autograded submission folder
TIMEOUT_ERRORS = ("CellTimeoutError", "TimeoutError")
RECORD_BYTES = 1024**2
KERNEL_DIED = "the kernel died (a crash, os._exit or running out of memory)"
CELL_TIMED_OUT = "a cell ran past the time limit (c.Execute.timeout)"
# Why a student's file is not read, said once in every message that refuses one.
NOT_READ = (
    "The grader reads no symbolic links, pipes, devices or hard links: put the student's own "
    "files there, or ask the student to submit again"
)


@dataclasses.dataclass
class Submission:
    """A submitted folder as the grader found it, before anything in it was parsed."""

    files: dict[str, int] = dataclasses.field(default_factory=dict)  # path -> bytes
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> why not read
    problem: str = ""  # why none of it can be graded
    timestamp: datetime.datetime | None = None
    digest: str = ""


@dataclasses.dataclass
class AssignmentFiles:
    """What grading a submission reads of the course beyond it: read once, shipped with tasks."""

    release_notebooks: dict[str, str]  # notebook -> the release's JSON ("" when not built here)
    release_files: list[str]  # every file of the release, relative to its folder
    kernel_files: dict[str, bytes]  # the source's other files, laid out beside every kernel


@dataclasses.dataclass
class Task:
    """One submission to execute: everything a worker process needs, nothing it must share.

    A worker reads from disk only the submitted folder (submitted/<student>/<assignment>/, by
    the safe reader) and the gradebook at read_db_url (cells to restore; a local snapshot for
    SQLite); everything else of the course comes in `files`. It writes only into `staging`.
    """

    config: Config
    student: str
    assignment: str
    notebooks: list[str]
    read_db_url: str
    digest: str
    submission: Submission
    files: AssignmentFiles
    staging: str = ""  # where the worker builds the new autograded folder


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
    submission_id: str = ""  # the gradebook's submission these scores were saved in
    # Written answers (grade cells a person scores): "notebook/grade_id" -> their text's hash,
    # so that a regrading keeps a person's score of an answer that did not change.
    answers: dict[str, str] = dataclasses.field(default_factory=dict)
    # Written answers a person had graded that changed since: to be graded again.
    grade_again: list[str] = dataclasses.field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """The part worth keeping beside the autograded notebooks."""
        return {
            "status": self.status,
            "reason": self.reason,
            "digest": self.digest,
            "seconds": self.seconds,
            "retry": self.retry,
            "flags": self.flags,
            # A record whose submission is no longer the gradebook's was left by a run that
            # stopped between its commit and its renames: the submission is graded again.
            "submission_id": self.submission_id,
            "answers": self.answers,
            "grade_again": self.grade_again,
            "feedback": False,  # set once feedback is written, so a crash before it is repaired
        }


class SubmissionError(Exception):
    """A submission that cannot be graded as it stands; the message says why."""


def load_config(course_root: Path) -> Config:
    """The configuration nbgrader itself would load in course_root; a broken file: ConfigError."""
    # traitlets configures logging with dictConfig, which disables every logger that exists
    # already (ours included); give them back their voice afterwards.
    enabled = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.disabled
    ]
    with _chdir(course_root):
        config = compat.load_app_config(course_root)
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


def inspect_submission(
    course: CourseDirectory, limits: GradingLimits, student: str, assignment: str
) -> Submission | None:
    """What a student submitted, found without parsing or following anything; None: nothing."""
    try:
        with course_folder(course, course.submitted_directory, student, assignment) as folder:
            survey = folder.survey(limits.submission_files)
            found = Submission(survey.files, {**exchange.read_refusals(folder), **survey.refused})
            collected = found.refused.pop(".", "")
            if collected:
                found.problem = f"nbgrader collect refused {folder.label}: {collected}"
            elif survey.truncated:
                found.problem = (
                    f"{folder.label} holds more than {limits.submission_files} files and folders, "
                    f"the limit ({setting('submission_files')}); nothing in it was read"
                )
            elif survey.size > limits.submission_bytes:
                found.problem = (
                    f"{folder.label} holds {survey.size:,} bytes, over the limit of "
                    f"{limits.submission_bytes:,} ({setting('submission_bytes')})"
                )
            else:
                try:
                    found.timestamp = exchange.check_exchange_files(folder)
                except Refused as error:
                    found.problem = str(error)  # says what to do itself
                found.digest = _digest(folder, found, course, assignment, limits)
    except FileNotFoundError:
        return None
    except Refused as error:
        found = Submission(problem=f"{error}. {NOT_READ}")
    found.digest = found.digest or hashlib.sha256(found.problem.encode()).hexdigest()
    return found


def _digest(
    folder: Folder,
    submission: Submission,
    course: CourseDirectory,
    assignment: str,
    limits: GradingLimits,
) -> str:
    """A fingerprint of a submission's files and the assignment's source: a change means regrade."""
    digest = hashlib.sha256()
    for relative in sorted(submission.files):
        if not _ignored(Path(relative), course):
            digest.update(relative.encode() + b"\0")
            folder.update_hash(relative, digest, limits.submission_bytes)
            digest.update(b"\0")
    digest.update(json.dumps(sorted(submission.refused.items())).encode())
    source = Path(course.format_path(course.source_directory, ".", assignment))
    for path in sorted(p for p in source.rglob("*") if p.is_file() and not _ignored(p, course)):
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _ignored(path: Path, course: CourseDirectory) -> bool:
    """Whether nbgrader's CourseDirectory.ignore patterns exclude this file."""
    return any(fnmatch.fnmatch(part, pattern) for part in path.parts for pattern in course.ignore)


# ---------------------------------------------------------------------------------------------
# In a worker process: sanitise and execute, never write the gradebook


def execute_submission(task: Task) -> Outcome:
    """Sanitise and execute a submission's notebooks in fresh kernels, in throwaway folders.

    autograded/<student>/<assignment>/ is then rebuilt from the executed notebooks and the
    exchange's files alone: nothing the kernel left behind is opened, followed or kept.
    """
    started = time.monotonic()
    course = CourseDirectory(config=task.config)
    limits = GradingLimits(config=task.config)
    dest = Path(task.staging)
    outcome = Outcome(task.student, task.assignment, GRADED, digest=task.digest)
    submission = task.submission
    notebooks = {f"{notebook}.ipynb" for notebook in task.notebooks}  # refused: the reason says
    outcome.flags += [
        f"refused {path}: {why}"
        for path, why in sorted(submission.refused.items())
        if path not in notebooks
    ]
    sanitise, execute, _ = _preprocessor_lists(task.config)
    try:
        _start_afresh(dest)
        if submission.problem:
            raise SubmissionError(submission.problem)
        with _open_for_grading(course, task) as folder:
            for notebook in task.notebooks:
                path = f"{notebook}.ipynb"
                if path in submission.refused:
                    raise SubmissionError(
                        f"{folder.label}/{path} is {submission.refused[path]}, not the notebook "
                        f"itself. {NOT_READ}"
                    )
                if path not in submission.files:
                    # The writer scores it 0, as nbgrader does; a human should know why.
                    outcome.flags.append(f"submitted no {path}")
                    continue
                nb = _read_notebook(folder, path, limits)
                release = _release_notebook(task.files, notebook)
                expected = _expected_files(task)
                outcome.flags += tamper.scan(nb, release, sorted(submission.files), expected)
                nb = tamper.repair(nb, release)
                with _kernel_folder(task.files) as work:
                    resources = _resources(
                        task.student, task.assignment, notebook, task.read_db_url, work
                    )
                    try:
                        nb = _run(sanitise, task.config, nb, resources)
                    except Exception as error:  # noqa: BLE001 - nbgrader raises plain exceptions for bad metadata
                        raise SubmissionError(
                            f"{path}: its nbgrader cell metadata is damaged "
                            f"({type(error).__name__}: {str(error)[:200]}). Ask the student to "
                            "paste their answers into a fresh copy of the assignment and resubmit."
                        ) from error
                    remaining = limits.time_budget - (time.monotonic() - started)
                    status, why = _execute(nb, execute, task.config, resources, remaining, limits)
                outcome.flags += verdicts.flags(nb) + _output_flags(nb)
                if status != GRADED and outcome.status == GRADED:
                    outcome.status, outcome.reason = status, f"{path}: {why}"
                target = dest / path
                # The formgrader may show this file before the record steps make it inert again.
                nbformat.write(inert.inert_notebook(nb), target)
                outcome.executed[notebook] = str(target)
            _copy_exchange_files(folder, dest)
    except (SubmissionError, Refused) as error:
        outcome.status, outcome.reason, outcome.executed = UNGRADABLE, str(error), {}
    outcome.seconds = round(time.monotonic() - started, 3)
    return outcome


def _start_afresh(dest: Path) -> None:
    """An empty autograded folder: nothing of an earlier grading survives."""
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)  # never follows a link inside
    dest.mkdir(parents=True)


def _open_for_grading(course: CourseDirectory, task: Task) -> Folder:
    """The submitted folder again, in the worker; gone or replaced since the survey: ungradable."""
    try:
        return course_folder(course, course.submitted_directory, task.student, task.assignment)
    except (Refused, FileNotFoundError) as error:
        raise SubmissionError(f"{error}: the submission changed while it was graded") from error


@contextlib.contextmanager
def _kernel_folder(files: AssignmentFiles) -> Iterator[Path]:
    """A fresh folder for one kernel with the assignment's own files; removed afterwards.

    nbgrader copies every file a student submits next to the notebook, where a submitted
    numpy.py or ipykernel_launcher.py would be imported by the grading kernel, and runs the
    kernel in autograded/, where whatever it leaves (links to the gradebook, pipes, 100,000
    files) is later opened by the grader. Here the kernel gets the files the assignment itself
    ships, in a folder of its own that nothing reads afterwards.
    """
    work = Path(tempfile.mkdtemp(prefix="nncourse-kernel-"))
    try:
        for relative, data in files.kernel_files.items():
            (work / relative).parent.mkdir(parents=True, exist_ok=True)
            (work / relative).write_bytes(data)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_exchange_files(folder: Folder, dest: Path) -> None:
    """Copy timestamp.txt and submission_secret.txt (checked when the submission was surveyed)."""
    for name in EXCHANGE_FILES:
        with contextlib.suppress(FileNotFoundError):
            folder.copy(name, dest / name, EXCHANGE_FILE_BYTES)


def _expected_files(task: Task) -> set[str]:
    """What a submission may hold: the notebooks, the release's files and the exchange's."""
    notebooks = {f"{name}.ipynb" for name in task.notebooks}
    return set(task.files.release_files) | notebooks | set(EXCHANGE_FILES) | {REFUSED_FILE}


def _release_notebook(files: AssignmentFiles, notebook: str) -> NotebookNode:
    """The notebook students received (an empty one when the release is not built here)."""
    text = files.release_notebooks.get(notebook, "")
    return nbformat.reads(text, as_version=4) if text else nbformat.v4.new_notebook()


def assignment_files(
    course: CourseDirectory, assignment: str, notebooks: list[str]
) -> AssignmentFiles:
    """Read what grading needs of an assignment's release and source, for every task of it."""
    release = Path(course.format_path(course.release_directory, ".", assignment))
    source = Path(course.format_path(course.source_directory, ".", assignment))
    released = {str(p.relative_to(release)): p for p in release.rglob("*") if p.is_file()}
    return AssignmentFiles(
        release_notebooks={
            notebook: released[f"{notebook}.ipynb"].read_text()
            for notebook in notebooks
            if f"{notebook}.ipynb" in released
        },
        release_files=sorted(released),
        kernel_files={
            str(path.relative_to(source)): path.read_bytes()
            for path in sorted(source.rglob("*"))
            if path.is_file()
            and path.suffix != ".ipynb"
            and not _ignored(path.relative_to(source), course)
        },
    )


def _read_notebook(folder: Folder, path: str, limits: GradingLimits) -> NotebookNode:
    """Read a submitted notebook within the limits, or say in plain words why it cannot be read."""
    shown = f"{folder.label}/{path}"
    try:
        data = folder.read(path, limits.notebook_bytes)
    except TooLarge as error:
        raise SubmissionError(
            f"{error} ({setting('notebook_bytes')}); the assignment's notebook is far smaller. "
            "Ask the student to clear large outputs and resubmit."
        ) from error
    except Refused as error:
        raise SubmissionError(f"{error}. {NOT_READ}") from error
    # Every cell has a "cell_type" key: counting them bounds the cells before parsing, and the
    # parsed count below catches keys spelled with escapes.
    if data.count(b'"cell_type"') > limits.cells:
        raise SubmissionError(_too_many_cells(shown, limits))
    try:
        cells = json.loads(data).get("cells")
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as error:  # noqa: BLE001 - nbformat raises many kinds for unreadable files
        raise SubmissionError(
            f"{shown} is not a readable notebook ({type(error).__name__}: {str(error)[:200]}). "
            "Ask the student to resubmit the .ipynb file saved by Jupyter."
        ) from error
    if not isinstance(cells, list) or not isinstance(nb.get("cells"), list):
        raise SubmissionError(f"{shown} has no list of cells; it is not a Jupyter notebook")
    if len(cells) > limits.cells:
        raise SubmissionError(_too_many_cells(shown, limits))
    return nb


def _too_many_cells(shown: str, limits: GradingLimits) -> str:
    """The reason for a notebook with more cells than the limit."""
    return (
        f"{shown} has more than {limits.cells} cells, the limit ({setting('cells')}); the "
        "assignment has far fewer. Ask the student to resubmit the assignment's notebook."
    )


def _execute(
    nb: NotebookNode,
    steps: list[type],
    config: Config,
    resources: dict,
    remaining: float,
    limits: GradingLimits,
) -> tuple[str, str]:
    """Run the execute steps in the time left; return the status and, if not graded, why.

    A dead kernel or a timeout keeps the cells that finished.
    """
    over_budget = (
        f"the submission ran past its time budget of {limits.time_budget:g} s "
        f"({setting('time_budget')}) and was stopped"
    )
    if limits.time_budget and remaining <= 0:
        _fail_cells_not_run(nb)
        return TIMED_OUT, over_budget
    config, by_budget = _within_budget(config, remaining, limits)
    status, why = GRADED, ""
    preprocessors = [step(config=config) for step in steps]
    with utils.setenv(NBGRADER_EXECUTION="autograde"):
        try:
            for preprocessor in preprocessors:
                nb, resources = preprocessor(nb, resources)
        except KernelTimeLimitExceeded as error:
            status, why = TIMED_OUT, over_budget if by_budget else str(error)
        except DeadKernelError:
            status, why = CRASHED, _stopped_because(preprocessors) or KERNEL_DIED
        except TimeoutError:
            status, why = TIMED_OUT, CELL_TIMED_OUT
        except Exception:  # noqa: BLE001 - a kernel that garbles its messages: keep what finished
            status, why = CRASHED, KERNEL_DIED
    timed_out = (o.get("ename") in TIMEOUT_ERRORS for c in nb.cells for o in c.get("outputs", []))
    if status == GRADED and any(timed_out):
        status, why = TIMED_OUT, CELL_TIMED_OUT
    _fail_cells_not_run(nb)
    return status, why


def _stopped_because(preprocessors: list) -> str:
    """Why the sandbox killed a kernel when one of its limits did (max_files), else empty."""
    managers = (getattr(p, "last_kernel_manager", None) for p in preprocessors)
    return next((m.stopped_because for m in managers if getattr(m, "stopped_because", "")), "")


def _within_budget(config: Config, remaining: float, limits: GradingLimits) -> tuple[Config, bool]:
    """The config with the kernel's wall-clock limit cut to what is left of the time budget."""
    if not limits.time_budget:
        return config, False
    own = config.get("SandboxedKernelManager", {}).get(
        "time_limit", SandboxedKernelManager.time_limit.default_value
    )
    if own and own <= remaining:
        return config, False
    config = copy.deepcopy(config)
    config.SandboxedKernelManager.time_limit = remaining
    return config, True


def _output_flags(nb: NotebookNode) -> list[str]:
    """Cells whose output went over the grader's limits and was cut as it arrived."""
    # In a grade cell the verdict turns the error into a line of text; either way it names it.
    said = (
        " ".join(f"{o.get('ename')} {o.get('text')}" for o in c.get("outputs", []))
        for c in nb.cells
    )
    cut = sum(OUTPUT_TOO_LARGE in text for text in said)
    return [f"printed or displayed more than the grader keeps, in {cut} cell(s)"] if cut else []


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
    gb: Gradebook, student: str, assignment: str, timestamp: datetime.datetime | None
) -> None:
    """Start a submission from scratch in the gradebook: no score of an earlier grading survives."""
    gb.update_or_create_student(student)
    try:
        gb.remove_submission(assignment, student)
    except MissingEntry:
        pass
    if timestamp:
        gb.update_or_create_submission(assignment, student, timestamp=timestamp)
    else:
        gb.update_or_create_submission(assignment, student)


def save_outcome(
    gb: Gradebook,
    config: Config,
    outcome: Outcome,
    notebooks: list[str],
    timestamp: datetime.datetime | None,
    staging: Path,
) -> None:
    """Replace a submission's scores and autograded folder with the new ones, as one change.

    The gradebook changes commit together; the staged folder, record included, is complete
    before they do and replaces the old one after, so a run stopped anywhere can be resumed.
    """
    *_, record = _preprocessor_lists(config)
    course = CourseDirectory(config=config)
    staging.mkdir(parents=True, exist_ok=True)
    graded_before = read_record(course, outcome.student, outcome.assignment) or {}
    with compat.gradebook_transaction(gb):
        by_hand = manual_grades(gb, outcome.student, outcome.assignment)
        prepare_submission(gb, outcome.student, outcome.assignment, timestamp)
        crashpoints.reached("writer-old-removed")
        for notebook in notebooks:
            if notebook not in outcome.executed:
                submission = gb.find_submission_notebook(
                    notebook, outcome.assignment, outcome.student
                )
                for grade in submission.grades:
                    grade.auto_score = 0
                    grade.needs_manual_grade = False
        for notebook, path in outcome.executed.items():
            nb = nbformat.read(path, as_version=4)
            resources = _resources(
                outcome.student, outcome.assignment, notebook, course.db_url, Path(path).parent
            )
            nb = _run(record, config, nb, resources)
            nbformat.write(nb, path)
            outcome.answers.update(written_answers(nb, notebook))
        _keep_manual_grades(gb, outcome, by_hand, graded_before.get("answers"))
        outcome.submission_id = gb.find_submission(outcome.assignment, outcome.student).id
        write_record(staging, outcome.to_record())
        crashpoints.reached("writer-before-commit")
    crashpoints.reached("writer-after-commit")
    dest = Path(
        course.format_path(course.autograded_directory, outcome.student, outcome.assignment)
    )
    _swap(staging, dest)
    crashpoints.reached("writer-saved")


@dataclasses.dataclass
class ManualGrade:
    """What a person gave one grade cell in the formgrader."""

    manual_score: float | None
    extra_credit: float | None
    manual_comment: str | None


def manual_grades(gb: Gradebook, student: str, assignment: str) -> dict[str, ManualGrade]:
    """The scores and comments a person gave a submission: "notebook/grade_id" -> ManualGrade."""
    try:
        submission = gb.find_submission(assignment, student)
    except MissingEntry:
        return {}
    found = {}
    for notebook in submission.notebooks:
        comments = {c.name: c.manual_comment for c in notebook.comments}
        for grade in notebook.grades:
            comment = comments.get(grade.name)
            if grade.manual_score is not None or grade.extra_credit or comment:
                found[f"{notebook.name}/{grade.name}"] = ManualGrade(
                    grade.manual_score, grade.extra_credit, comment
                )
    return found


def written_answers(nb: NotebookNode, notebook: str) -> dict[str, str]:
    """The hash of each written answer of a graded notebook: "notebook/grade_id" -> sha256."""
    return {
        f"{notebook}/{cell.metadata.nbgrader['grade_id']}": hashlib.sha256(
            f"{cell.metadata.nbgrader.get('points')}\0{cell.source}".encode()
        ).hexdigest()
        for cell in nb.cells
        if utils.is_grade(cell) and utils.is_solution(cell)
    }


def _keep_manual_grades(
    gb: Gradebook, outcome: Outcome, by_hand: dict[str, ManualGrade], before: Any
) -> None:
    """Give written answers that did not change since a person graded them that person's grade.

    A regrading starts the submission afresh (prepare_submission); the grader's verdicts
    decide every autograded cell again, but a written answer's score is a person's, and only
    a new answer calls for a new one. A changed answer is listed in outcome.grade_again.
    """
    before = before if isinstance(before, dict) else {}  # a record of an older grader: none
    for key, answer in outcome.answers.items():
        kept = by_hand.get(key)
        if kept is None:
            continue
        if before.get(key) != answer:
            outcome.grade_again.append(key.partition("/")[2])
            continue
        notebook, _, grade_id = key.partition("/")
        grade = gb.find_grade(grade_id, notebook, outcome.assignment, outcome.student)
        grade.manual_score, grade.extra_credit = kept.manual_score, kept.extra_credit
        # As the formgrader's grade handler decides it.
        grade.needs_manual_grade = grade.manual_score is None and grade.auto_score is None
        comment = gb.find_comment(grade_id, notebook, outcome.assignment, outcome.student)
        comment.manual_comment = kept.manual_comment
    gb.db.commit()


def _swap(staging: Path, dest: Path) -> None:
    """Put the staged folder at dest by renames; the old one goes, links and all, unfollowed."""
    old = staging.with_name(staging.name + ".old")
    if dest.is_symlink() or dest.exists():
        os.rename(dest, old)
    crashpoints.reached("writer-between-renames")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, dest)
    if old.is_symlink() or old.is_file():
        old.unlink()
    elif old.exists():
        shutil.rmtree(old)


def write_record(dest: Path, record: dict[str, Any]) -> None:
    """Keep an outcome's record in an autograded folder, for the summary and for regrading."""
    # A new file renamed into place: whatever stood at that name is replaced, never written through.
    fd, temporary = tempfile.mkstemp(dir=dest, prefix=".nncourse-")
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(record, indent=1) + "\n")
    os.replace(temporary, dest / RECORD_FILE)


def mark_feedback(course: CourseDirectory, student: str, assignment: str, by_hand: str) -> None:
    """Note in the record that this grading's feedback is written, with a person's grades then."""
    record = read_record(course, student, assignment)
    if record is not None:
        record["feedback"] = True
        record["feedback_by_hand"] = by_hand
        dest = Path(course.format_path(course.autograded_directory, student, assignment))
        write_record(dest, record)


def read_record(course: CourseDirectory, student: str, assignment: str) -> dict[str, Any] | None:
    """The outcome kept by the last grading of this submission, if any (and readable)."""
    try:
        with course_folder(course, course.autograded_directory, student, assignment) as folder:
            record = json.loads(folder.read(RECORD_FILE, RECORD_BYTES))
    except (OSError, Refused, ValueError):
        return None  # graded again
    return record if isinstance(record, dict) else None


def prune_autograded(assignment: str, student: str, notebooks: list[str]) -> None:
    """Leave only the notebooks, the exchange's files and the record in autograded folders.

    The course's GenerateFeedback.pre_convert_hook: nbgrader's generate_feedback then copies
    every other file of autograded/<student>/<assignment>/ into feedback/, following links
    (to the gradebook, /dev/zero, a FIFO) with a glob per file. nncourse grade leaves nothing
    else there; this keeps plain `nbgrader generate_feedback` safe after other tools.
    """
    del assignment, student  # nbgrader passes its command-line patterns; the paths say more
    keep = {*EXCHANGE_FILES, RECORD_FILE, *(os.path.basename(n) for n in notebooks)}
    for folder in sorted({os.path.dirname(n) for n in notebooks}):
        with os.scandir(folder) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if entry.name in keep and stat.S_ISREG(st.st_mode) and not refusal(st):
                    continue
                log.warning(
                    "%s: removed before feedback is written (%s)",
                    entry.path,
                    refusal(st) or "not the notebook or an exchange file",
                )
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)


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
