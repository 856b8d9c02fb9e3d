"""Student files the grader never trusts, and the limits it holds every submission to.

Links, pipes, devices and hard links in a submitted folder, in the exchange and in the kernel's
own folder; malformed exchange files; oversized notebooks, outputs and folders; a slow
submission. Most cases are students of one class graded in one batch through the real
pipeline (sandbox included), each with its expected status, score and flag.
"""

import copy
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from test_pipeline import ASSIGNMENT, NBGRADER, ROOT, correct, make_course, mistake, submit
from traitlets.config import Config

from nncourse import submissions, workflow
from nncourse.files import Folder, Refused, TooLarge
from nncourse.sandbox import KernelTimeLimitExceeded, SandboxedExecute

NOTEBOOK = "simple_neural_network.ipynb"
WRONG_RELU = "fails_relu_derivative_one_at_zero"  # loses relu_derivative, 1 point
# Short limits keep the slow cases short: 5 s a cell, 30 s a submission.
CONFIG = (
    "\nc.Execute.timeout = 5\nc.SandboxedKernelManager.time_limit = 60"
    "\nc.GradingLimits.time_budget = 30\n"
)
BUDGET = 30


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


# --- one class with every case, graded through the real pipeline ------------------------------

# Appended to a notebook as a cell of the student's own: it leaves, in the kernel's working
# folder, links to the gradebook and to the files the grader writes, a pipe and /dev/zero.
KERNEL_LINKS = """
import os
os.symlink("../../../gradebook.db", "gradebook.db")
os.symlink("../../../gradebook.db", ".nncourse-grading.json")
os.symlink("/dev/zero", "timestamp.txt")
os.symlink("../../../source/simple_nn/simple_neural_network.ipynb", "master.ipynb")
os.mkfifo("simple_neural_network.html")
with open("notes.txt", "w") as notes:
    notes.write("mine")
print("links made:", sorted(os.listdir(".")))
"""
MANY_FILES = """
import time
for index in range(100_000):
    open(f"f{index}", "w").close()
print("made them all")
time.sleep(2)  # the kernel is still alive when its folder is counted
"""
HUGE_OUTPUTS = """
from IPython.display import display
display({"image/png": "iVBORw0KGgo" + "A" * 30_000_000}, raw=True)
display({"text/html": "<p>" + "x" * 30_000_000 + "</p>"}, raw=True)
print("still running")
"""
# A payload travels in the cell's reply, which the kernel can make as large as it likes.
HUGE_REPLY = """
get_ipython().payload_manager.write_payload({"source": "page", "data": "x" * 30_000_000})
"""
SLOW = "import time\ntime.sleep(4.5)  # just under the cell timeout\n"

# student -> (status, score, flag or reason substring)
EXPECTED = {
    "alice": ("graded", 28, ""),
    "carol": ("graded", 27, ""),
    "links_notebook": ("ungradable", 0, "simple_neural_network.ipynb is a symbolic link"),
    "links_to_solutions": ("graded", 27, "refused solution.ipynb: a symbolic link"),
    "fifo": ("graded", 27, "refused data.csv: a named pipe (FIFO)"),
    "fifo_timestamp": ("ungradable", 0, "timestamp.txt is a named pipe (FIFO)"),
    "hard_link": ("graded", 27, "refused notes.ipynb: a hard link"),
    "hard_linked_notebook": ("ungradable", 0, "simple_neural_network.ipynb is a hard link"),
    "dev_zero": ("graded", 27, "refused big.bin: a symbolic link"),
    "dev_zero_secret": ("ungradable", 0, "submission_secret.txt is a symbolic link"),
    "folder_link": ("ungradable", 0, "submitted/folder_link/simple_nn is a symbolic link"),
    "kernel_links": ("graded", 27, ""),
    "bad_timestamp": ("ungradable", 0, "timestamp.txt holds 'yesterday, more or less'"),
    "oversized_notebook": ("ungradable", 0, "c.GradingLimits.notebook_bytes"),
    "oversized_folder": ("ungradable", 0, "c.GradingLimits.submission_bytes"),
    "too_many_cells": ("ungradable", 0, "c.GradingLimits.cells"),
    "huge_outputs": ("graded", 27, "printed or displayed more than the grader keeps"),
    "huge_reply": ("graded", 27, "printed or displayed more than the grader keeps"),
    "many_files": ("crashed", 27, "c.SandboxedKernelManager.max_files"),
    "slow": ("timed out", None, "c.GradingLimits.time_budget"),
}


def student_cell(nb, source: str):
    """The notebook with a code cell of the student's own appended."""
    nb = copy.deepcopy(nb)
    nb.cells.append(nbformat.v4.new_code_cell(source))
    return nb


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Every case as one student of one class, graded in one batch with two jobs."""
    course = make_course(tmp_path_factory.mktemp("files"), CONFIG)
    release = submissions.read_release(course, ASSIGNMENT)
    wrong = submissions.fill(release, mistake(WRONG_RELU))
    master = course / "source" / ASSIGNMENT / NOTEBOOK
    outside = course / "elsewhere.ipynb"
    outside.write_text(nbformat.writes(wrong))

    def folder(student: str, nb=wrong) -> Path:
        return submissions.write_submission(course, student, ASSIGNMENT, nb).parent

    submit(course, "alice", correct())
    folder("carol")
    (folder("links_notebook") / NOTEBOOK).unlink()
    (course / "submitted" / "links_notebook" / ASSIGNMENT / NOTEBOOK).symlink_to(master)
    (folder("links_to_solutions") / "solution.ipynb").symlink_to(master)
    os.mkfifo(folder("fifo") / "data.csv")
    (folder("fifo_timestamp") / "timestamp.txt").unlink()
    os.mkfifo(course / "submitted" / "fifo_timestamp" / ASSIGNMENT / "timestamp.txt")
    os.link(course / "release" / ASSIGNMENT / NOTEBOOK, folder("hard_link") / "notes.ipynb")
    (folder("hard_linked_notebook") / NOTEBOOK).unlink()
    os.link(outside, course / "submitted" / "hard_linked_notebook" / ASSIGNMENT / NOTEBOOK)
    (folder("dev_zero") / "big.bin").symlink_to("/dev/zero")
    (folder("dev_zero_secret") / "submission_secret.txt").symlink_to("/dev/zero")
    (course / "submitted" / "folder_link").mkdir()
    (course / "submitted" / "folder_link" / ASSIGNMENT).symlink_to(folder("alice_again"))
    folder("kernel_links", student_cell(wrong, KERNEL_LINKS))
    (folder("bad_timestamp") / "timestamp.txt").write_text("yesterday, more or less")
    # Sparse files: hundreds of megabytes that take no disk.
    os.truncate(folder("oversized_notebook") / NOTEBOOK, 30 * 1024**2)
    big = folder("oversized_folder") / "data.bin"
    big.touch()
    os.truncate(big, 300 * 1024**2)
    crowded = copy.deepcopy(wrong)
    crowded.cells += [nbformat.v4.new_markdown_cell("") for _ in range(2000)]
    folder("too_many_cells", crowded)
    folder("huge_outputs", student_cell(wrong, HUGE_OUTPUTS))
    folder("huge_reply", student_cell(wrong, HUGE_REPLY))
    folder("many_files", student_cell(wrong, MANY_FILES))
    slow = {grade_id: SLOW + source for grade_id, source in correct().items()}
    folder("slow", submissions.fill(release, slow))
    run = workflow.grade_and_report(course, jobs=2, progress=False)
    return course, {r.student: r for r in run.results}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_case_meets_its_expectation(batch, case):
    _, results = batch
    status, score, said = EXPECTED[case]
    result = results[case]
    assert result.status == status, (result.reason, result.flags)
    if score is not None:
        assert result.score == score, (result.reason, result.flags)
    assert said in " ".join([result.reason, *result.flags]), (result.reason, result.flags)


def test_a_submission_over_its_time_budget_frees_its_worker_in_time(batch):
    """Every solution cell sleeps just under the cell timeout; the budget stops it at 30 s."""
    slow = batch[1]["slow"]
    assert 0 < slow.score < 28  # the cells that finished count
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


def test_thousands_of_files_cost_seconds(batch):
    many = batch[1]["many_files"]
    assert many.seconds < 60, many.seconds


def test_the_gradebook_and_every_other_student_are_intact(batch):
    course, results = batch
    assert set(results) == {*EXPECTED, "alice_again"}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        stored = {s.student.id: s.score for s in gb.assignment_submissions(ASSIGNMENT)}
    assert stored == {student: r.score for student, r in results.items()}
    assert stored["alice_again"] == 27


def test_the_kernel_made_its_links_and_the_grader_never_saw_them(batch):
    course, _ = batch
    nb = nbformat.read(course / "autograded" / "kernel_links" / ASSIGNMENT / NOTEBOOK, 4)
    printed = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert "links made:" in printed
    assert "'master.ipynb'" in printed
    assert sorted(os.listdir(course / "autograded" / "kernel_links" / ASSIGNMENT)) == [
        ".nncourse-grading.json",
        NOTEBOOK,
        "timestamp.txt",
    ]


def test_autograded_holds_the_notebook_and_the_graders_files_alone(batch):
    course, results = batch
    for student, result in results.items():
        folder = course / "autograded" / student / ASSIGNMENT
        names = set(os.listdir(folder))
        assert names <= {NOTEBOOK, ".nncourse-grading.json", "timestamp.txt"}, student
        assert all(not (folder / name).is_symlink() for name in names), student
        assert (NOTEBOOK in names) == (result.status != "ungradable"), student


def test_feedback_holds_only_the_html_and_the_exchange_files(batch):
    course, results = batch
    pages = 0
    for folder in (course / "feedback").glob(f"*/{ASSIGNMENT}"):
        names = set(os.listdir(folder))
        assert names <= {"simple_neural_network.html", "timestamp.txt"}, folder
        assert all((folder / name).is_file() and not (folder / name).is_symlink() for name in names)
        pages += "simple_neural_network.html" in names
    assert pages == sum(r.status != "ungradable" for r in results.values())


def test_outputs_over_the_limit_never_reach_the_notebook(batch):
    course, _ = batch
    path = course / "autograded" / "huge_outputs" / ASSIGNMENT / NOTEBOOK
    assert path.stat().st_size < 3 * 1024**2
    nb = nbformat.read(path, 4)
    last = nb.cells[-1]
    assert [o.get("ename") for o in last.outputs if o.output_type == "error"] == ["OutputTooLarge"]
    assert "still running" in "".join(o.get("text", "") for o in last.outputs)


# --- the exchange: nbgrader collect with the course's configuration ----------------------------


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """Submissions placed in a real exchange's inbound folder, collected and graded."""
    base = tmp_path_factory.mktemp("exchange")
    secret = base / "instructor_secret.txt"
    secret.write_text("instructor-only: s3cret")
    exchange = base / "exchange"
    course = make_course(base / "course", CONFIG + f"c.Exchange.root = {str(exchange)!r}\n")
    inbound = exchange / "nn-fundamentals" / "inbound"
    inbound.mkdir(parents=True)
    release = submissions.read_release(course, ASSIGNMENT)
    now = submissions.timestamp()

    def submitted(student: str, cells: dict[str, str]) -> Path:
        folder = inbound / f"{student}+{ASSIGNMENT}+{now}+abcdef"
        folder.mkdir()
        nbformat.write(submissions.fill(release, cells), folder / NOTEBOOK)
        (folder / "timestamp.txt").write_text(now)
        return folder

    ann = submitted("ann", correct())
    (ann / "secret.txt").symlink_to(secret)
    (ann / "zero").symlink_to("/dev/zero")
    os.mkfifo(ann / "pipe")
    (ann / ".nncourse-refused.json").write_text('{"refused": {}}')
    ben = submitted("ben", correct())
    (ben / NOTEBOOK).unlink()
    (ben / NOTEBOOK).symlink_to(course / "source" / ASSIGNMENT / NOTEBOOK)
    (submitted("cid", correct()) / "timestamp.txt").write_text("whenever")
    (inbound / f"dee+{ASSIGNMENT}+not a time").mkdir()
    (inbound / f"eve+{ASSIGNMENT}+{now}+link").symlink_to(ann)

    def collect(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [NBGRADER, "collect", ASSIGNMENT, *args],
            cwd=course,
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = collect()
    again = collect("--update")
    run = workflow.grade_and_report(course, jobs=2, progress=False)
    return course, first, again, {r.student: r for r in run.results}


def test_collect_copies_no_link_and_survives_bad_names_and_times(collected):
    course, first, again, _ = collected
    assert first.returncode == 0, first.stderr[-3000:]
    assert again.returncode == 0, again.stderr[-3000:]
    ann = course / "submitted" / "ann" / ASSIGNMENT
    assert sorted(os.listdir(ann)) == [".nncourse-refused.json", NOTEBOOK, "timestamp.txt"]
    everything = b"".join(p.read_bytes() for p in (course / "submitted").rglob("*") if p.is_file())
    assert b"s3cret" not in everything
    assert not any(p.is_symlink() for p in (course / "submitted").rglob("*"))


def test_collected_links_are_flagged_and_a_linked_notebook_is_ungradable(collected):
    results = collected[3]
    ann, ben, cid, eve = (results[s] for s in ["ann", "ben", "cid", "eve"])
    assert (ann.status, ann.score) == ("graded", 28)
    assert {"refused pipe: a named pipe (FIFO)", "refused zero: a symbolic link"} <= {*ann.flags}
    assert "refused secret.txt: a symbolic link" in ann.flags
    assert (ben.status, ben.score) == ("ungradable", 0)
    assert "simple_neural_network.ipynb is a symbolic link" in ben.reason
    assert (cid.status, cid.score) == ("ungradable", 0)
    assert "timestamp.txt holds 'whenever'" in cid.reason
    assert (eve.status, eve.score) == ("ungradable", 0)
    assert "nbgrader collect refused" in eve.reason


def test_plain_generate_feedback_copies_nothing_but_the_exchange_files(collected):
    """nbgrader's own generate_feedback, with the course's configuration, follows no link."""
    course = collected[0]
    folder = course / "autograded" / "ann" / ASSIGNMENT
    (folder / "leak.txt").symlink_to(course.parent / "instructor_secret.txt")
    os.mkfifo(folder / "pipe")
    (folder / "more").mkdir()
    (folder / "more" / "notes.txt").write_text("kernel leftovers")
    done = subprocess.run(
        [NBGRADER, "generate_feedback", ASSIGNMENT, "--force"],
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
