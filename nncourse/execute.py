"""Executing one submission, in a worker process: its notebooks sanitised and run in fresh
sandboxed kernels, the executed notebooks staged for the writer. Nothing here writes the
gradebook or the course: an executor (executors.py) runs execute_submission anywhere."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

from nncourse import compat, inert, tamper, verdicts
from nncourse.exchange import EXCHANGE_FILE_BYTES, EXCHANGE_FILES, REFUSED_FILE
from nncourse.files import NOT_READ, Folder, Refused, TooLarge, course_folder
from nncourse.limits import OUTPUT_TOO_LARGE, GradingLimits, setting
from nncourse.results import AssignmentFiles, Outcome, Status, SubmissionError, Task
from nncourse.sandbox import KernelTimeLimitExceeded, SandboxedKernelManager

TIMEOUT_ERRORS = ("CellTimeoutError", "TimeoutError")

KERNEL_DIED = "the kernel died (a crash, os._exit or running out of memory)"

CELL_TIMED_OUT = "a cell ran past the time limit (c.Execute.timeout)"


def execute_submission(task: Task) -> Outcome:
    """Sanitise and execute a submission's notebooks in fresh kernels, in throwaway folders.

    autograded/<student>/<assignment>/ is then rebuilt from the executed notebooks and the
    exchange's files alone: nothing the kernel left behind is opened, followed or kept.
    """
    started = time.monotonic()
    course = CourseDirectory(config=task.config)
    limits = GradingLimits(config=task.config)
    dest = Path(task.staging)
    outcome = Outcome(task.student, task.assignment, Status.GRADED, digest=task.digest)
    submission = task.submission
    notebooks = {f"{notebook}.ipynb" for notebook in task.notebooks}  # refused: the reason says
    outcome.flags += [
        f"refused {path}: {why}"
        for path, why in sorted(submission.refused.items())
        if path not in notebooks
    ]
    sanitise, run, _ = compat.autograde_steps(task.config)
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
                    resources = compat.converter_resources(
                        task.student, task.assignment, notebook, task.read_db_url, work
                    )
                    try:
                        nb = compat.run_steps(sanitise, task.config, nb, resources)
                    except Exception as error:  # noqa: BLE001 - nbgrader raises plain exceptions for bad metadata
                        raise SubmissionError(
                            f"{path}: its nbgrader cell metadata is damaged "
                            f"({type(error).__name__}: {str(error)[:200]}). Ask the student to "
                            "paste their answers into a fresh copy of the assignment and resubmit."
                        ) from error
                    remaining = limits.time_budget - (time.monotonic() - started)
                    status, why = _run_cells(nb, run, task.config, resources, remaining, limits)
                outcome.flags += verdicts.flags(nb) + _output_flags(nb)
                if status != Status.GRADED and outcome.status == Status.GRADED:
                    outcome.status, outcome.reason = status, f"{path}: {why}"
                target = dest / path
                # The formgrader may show this file before the record steps make it inert again.
                nbformat.write(inert.inert_notebook(nb), target)
                outcome.executed[notebook] = str(target)
            _copy_exchange_files(folder, dest)
    except (SubmissionError, Refused) as error:
        outcome.status, outcome.reason, outcome.executed = Status.UNGRADABLE, str(error), {}
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


def _run_cells(
    nb: NotebookNode,
    steps: list[type],
    config: Config,
    resources: dict,
    remaining: float,
    limits: GradingLimits,
) -> tuple[Status, str]:
    """Run the execute steps in the time left; return the status and, if not graded, why.

    A dead kernel or a timeout keeps the cells that finished.
    """
    over_budget = (
        f"the submission ran past its time budget of {limits.time_budget:g} s "
        f"({setting('time_budget')}) and was stopped"
    )
    if limits.time_budget and remaining <= 0:
        _fail_cells_not_run(nb)
        return Status.TIMED_OUT, over_budget
    config, by_budget = _within_budget(config, remaining, limits)
    status, why = Status.GRADED, ""
    preprocessors = [step(config=config) for step in steps]
    with utils.setenv(NBGRADER_EXECUTION="autograde"):
        try:
            for preprocessor in preprocessors:
                nb, resources = preprocessor(nb, resources)
        except KernelTimeLimitExceeded as error:
            status, why = Status.TIMED_OUT, over_budget if by_budget else str(error)
        except DeadKernelError:
            status, why = Status.CRASHED, _stopped_because(preprocessors) or KERNEL_DIED
        except TimeoutError:
            status, why = Status.TIMED_OUT, CELL_TIMED_OUT
        except Exception:  # noqa: BLE001 - a kernel that garbles its messages: keep what finished
            status, why = Status.CRASHED, KERNEL_DIED
    timed_out = (o.get("ename") in TIMEOUT_ERRORS for c in nb.cells for o in c.get("outputs", []))
    if status == Status.GRADED and any(timed_out):
        status, why = Status.TIMED_OUT, CELL_TIMED_OUT
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
