"""Student files the grader never trusts, and the limits it holds every submission to.

Links, pipes, devices and hard links in a submitted folder, in the exchange and in the kernel's
own folder; malformed exchange files; oversized notebooks, outputs and folders; a slow
submission. The safe reader is tested on its own; the cases are students of the class of
tests/hostile_class.py (their expectations are checked in tests/test_hostile.py), and these
tests look closer at what grading them left on disk.
"""

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import nbformat
import pytest
from hostile_class import ASSIGNMENT, BUDGET, EXCHANGE_CASES, NOTEBOOK, autograded
from test_pipeline import NBGRADER, ROOT
from traitlets.config import Config

from nncourse.files import Folder, Refused, TooLarge
from nncourse.sandbox import KernelTimeLimitExceeded, SandboxedExecute

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.sandbox,
    pytest.mark.xdist_group("hostile_class"),  # the worker that grades the class
]

# --- the safe reader on its own ---------------------------------------------------------------


@pytest.fixture
def tricky(tmp_path: Path) -> Path:
    """A folder holding one of everything a student can put in it, and a secret outside it."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the gradebook password")
    folder = tmp_path / "sub"
    (folder / "plots").mkdir(parents=True)
    (folder / "notebook.ipynb").write_text("{}")
    (folder / "plots" / "a.png").write_bytes(b"png")
    (folder / "link").symlink_to(secret)
    (folder / "plots" / "up").symlink_to(tmp_path)
    (folder / "zero").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe")
    os.link(secret, folder / "hard")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "sock"))
    return folder


def test_survey_sorts_regular_files_from_everything_else(tricky: Path) -> None:
    with Folder(tricky.parent, "sub", base_label="submitted") as folder:
        survey = folder.survey(100)
    assert survey.files == {"notebook.ipynb": 2, "plots/a.png": 3}
    assert survey.refused == {
        "link": "a symbolic link",
        "plots/up": "a symbolic link",
        "zero": "a symbolic link",
        "pipe": "a named pipe (FIFO)",
        "hard": "a hard link (one of 2 names of the same file)",
        "sock": "a socket",
    }
    assert not survey.truncated


def test_reading_refuses_every_link_and_special_file_at_once(tricky: Path) -> None:
    """No read follows a link, blocks on the pipe or reads /dev/zero: each one is refused."""
    refused = {}

    def read_all() -> None:
        with Folder(tricky.parent, "sub", base_label="submitted") as folder:
            for name in ["link", "zero", "pipe", "hard", "sock", "plots", "plots/up/secret.txt"]:
                try:
                    folder.read(name, 1024)
                except Refused as error:
                    refused[name] = str(error)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "a read blocked"
    assert refused == {
        "link": "submitted/sub/link is a symbolic link",
        "zero": "submitted/sub/zero is a symbolic link",
        "pipe": "submitted/sub/pipe is a named pipe (FIFO)",
        "hard": "submitted/sub/hard is a hard link (one of 2 names of the same file)",
        "sock": "submitted/sub/sock is a socket",
        "plots": "submitted/sub/plots is a folder",
        "plots/up/secret.txt": "submitted/sub/plots/up is a symbolic link",
    }


def test_a_regular_file_is_read_within_its_limit(tricky: Path) -> None:
    with Folder(tricky.parent, "sub") as folder:
        assert folder.read("plots/a.png", 3) == b"png"
        with pytest.raises(TooLarge, match="has 3 bytes, over the limit of 2 bytes"):
            folder.read("plots/a.png", 2)


def test_a_folder_that_is_a_link_is_refused(tricky: Path) -> None:
    (tricky.parent / "elsewhere").symlink_to(tricky)
    with pytest.raises(Refused, match="submitted/elsewhere is a symbolic link"):
        Folder(tricky.parent, "elsewhere", base_label="submitted")


def test_a_survey_stops_at_its_limit(tmp_path: Path) -> None:
    for index in range(5000):
        (tmp_path / f"f{index}").touch()
    started = time.monotonic()
    with Folder(tmp_path) as folder:
        survey = folder.survey(100)
    assert survey.truncated
    assert survey.entries == 100
    assert time.monotonic() - started < 1


# --- what the class of tests/hostile_class.py left on disk ------------------------------------


def test_a_submission_over_its_time_budget_frees_its_worker_in_time(hostile_class):
    """Its cells sleep under the cell timeout, 81 s in all; the budget stops it at 60 s."""
    slow = hostile_class.results["slow"]
    assert 0 < slow.score < 30  # the cells that finished count
    assert BUDGET <= slow.seconds < BUDGET + 15, slow.seconds


def test_the_wall_clock_limit_holds_without_the_sandbox(tmp_path):
    """The budget stops an unsandboxed kernel too: it is the kernel's wall-clock limit."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(60)")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    config = Config()
    config.SandboxedKernelManager.enabled = False
    config.SandboxedKernelManager.time_limit = 3
    started = time.monotonic()
    with pytest.raises(KernelTimeLimitExceeded):
        SandboxedExecute(config=config, timeout=30).preprocess(nb, {"metadata": {"path": "."}})
    assert time.monotonic() - started < 20


def test_thousands_of_files_cost_seconds(hostile_class):
    many = hostile_class.results["many_files"]
    assert many.seconds < 60, many.seconds


def test_the_kernel_made_its_links_and_the_grader_never_saw_them(hostile_class):
    path = autograded(hostile_class.course, "kernel_links")
    nb = nbformat.read(path, 4)
    printed = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert "links made:" in printed
    assert "'master.ipynb'" in printed
    assert sorted(os.listdir(path.parent)) == [".nncourse-grading.json", NOTEBOOK, "timestamp.txt"]


def test_autograded_holds_the_notebook_and_the_graders_files_alone(hostile_class):
    course = hostile_class.course
    for folder in (course / "autograded").glob(f"*/{ASSIGNMENT}"):
        student = folder.parent.name
        names = set(os.listdir(folder))
        assert names <= {NOTEBOOK, ".nncourse-grading.json", "timestamp.txt"}, student
        assert all(not (folder / name).is_symlink() for name in names), student
        result = hostile_class.results[student]
        executed = result.status != "ungradable" and f"submitted no {NOTEBOOK}" not in result.flags
        assert (NOTEBOOK in names) == executed, student


def test_feedback_holds_only_the_html_and_the_exchange_files(hostile_class):
    pages = 0
    for folder in (hostile_class.course / "feedback").glob(f"*/{ASSIGNMENT}"):
        names = set(os.listdir(folder))
        assert names <= {"simple_neural_network.html", "timestamp.txt"}, folder
        assert all((folder / name).is_file() and not (folder / name).is_symlink() for name in names)
        pages += "simple_neural_network.html" in names
    autograded = (hostile_class.course / "autograded").glob(f"*/{ASSIGNMENT}/{NOTEBOOK}")
    assert pages == len(list(autograded))


def test_outputs_over_the_limit_never_reach_the_notebook(hostile_class):
    path = autograded(hostile_class.course, "huge_outputs")
    assert path.stat().st_size < 3 * 1024**2
    nb = nbformat.read(path, 4)
    last = nb.cells[-1]
    assert [o.get("ename") for o in last.outputs if o.output_type == "error"] == ["OutputTooLarge"]
    assert "still running" in "".join(o.get("text", "") for o in last.outputs)


def test_collect_copies_no_link_and_survives_bad_names_and_times(hostile_class):
    first, again = hostile_class.collected
    assert first.returncode == 0, first.stderr[-3000:]
    assert again.returncode == 0, again.stderr[-3000:]
    submitted = hostile_class.course / "submitted"
    ann = submitted / "ann" / ASSIGNMENT
    assert sorted(os.listdir(ann)) == [".nncourse-refused.json", NOTEBOOK, "timestamp.txt"]
    collected = [submitted / name for name in EXCHANGE_CASES]
    everything = b"".join(
        p.read_bytes() for folder in collected for p in folder.rglob("*") if p.is_file()
    )
    assert b"s3cret" not in everything
    assert not any(p.is_symlink() for folder in collected for p in folder.rglob("*"))


def test_collected_links_and_pipes_are_all_flagged(hostile_class):
    flags = set(hostile_class.results["ann"].flags)
    assert {
        "refused pipe: a named pipe (FIFO)",
        "refused zero: a symbolic link",
        "refused secret.txt: a symbolic link",
    } <= flags


def test_plain_generate_feedback_copies_nothing_but_the_exchange_files(hostile_class):
    """nbgrader's own generate_feedback, with the course's configuration, follows no link."""
    course = hostile_class.course
    folder = course / "autograded" / "ann" / ASSIGNMENT
    (folder / "leak.txt").symlink_to(course.parent / "instructor_secret.txt")
    os.mkfifo(folder / "pipe")
    (folder / "more").mkdir()
    (folder / "more" / "notes.txt").write_text("kernel leftovers")
    done = subprocess.run(
        [NBGRADER, "generate_feedback", ASSIGNMENT, "--student=ann", "--force"],
        cwd=course,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    feedback = course / "feedback" / "ann" / ASSIGNMENT
    assert sorted(os.listdir(feedback)) == ["simple_neural_network.html", "timestamp.txt"]
    assert sorted(os.listdir(folder)) == [".nncourse-grading.json", NOTEBOOK, "timestamp.txt"]


def test_the_config_names_every_limit():
    """Each limit the grader enforces is set, with its reason, in the course's config."""
    text = (ROOT / "nbgrader_config.py").read_text()
    for setting in [
        "GradingLimits.notebook_bytes",
        "GradingLimits.cells",
        "GradingLimits.submission_bytes",
        "GradingLimits.submission_files",
        "GradingLimits.cell_output_bytes",
        "GradingLimits.notebook_output_bytes",
        "GradingLimits.time_budget",
        "SandboxedKernelManager.workdir_size",
        "SandboxedKernelManager.max_files",
    ]:
        assert f"c.{setting} = " in text, setting
