"""One class of every hostile or broken student, graded once, the way an instructor grades it.

The cases come from three catalogues: the fixtures in tests/fixtures/hostile/ (code that tries
to forge a grade, read a secret, escape or break the grader), changes to the notebook's
structure, and files: links, pipes, devices, hard links, oversized notebooks, outputs and
folders, malformed exchange files and a slow submission. Mallory adds every payload of
tests/fixtures/active_content.json; a student id is HTML. Some students arrive through a real
exchange and `nbgrader collect`. Then `nncourse grade` grades the whole class in one run with
two jobs, and writes feedback and the report.

tests/test_hostile.py checks every student's expectation; tests/test_files.py and
tests/test_inert_pages.py look closer at what the same run left on disk and in a browser.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import nbgrader
import pytest
from active_content import PAYLOADS, cell
from test_pipeline import ASSIGNMENT, ROOT, correct, make_course, mistake

from nncourse import grade, submissions
from nncourse.results import StudentResult

HOSTILE = ROOT / "tests" / "fixtures" / "hostile"
NOTEBOOK = "simple_neural_network.ipynb"
BIN = Path(sys.executable).parent
WRONG_RELU = "fails_relu_derivative_one_at_zero"  # loses relu_derivative, 1 point
COURSE_ID = "nn-fundamentals"
# Short limits keep the endless loops and the slow student short: 10 s a cell, 60 s a
# submission (ten times what an ordinary one takes here, so a busy machine times none out).
BUDGET = 60
CONFIG = (
    "\nc.Execute.timeout = 10\nc.SandboxedKernelManager.time_limit = 60"
    f"\nc.GradingLimits.time_budget = {BUDGET}\n"
)
# nbconvert's pages load jQuery from a CDN, unreachable here; without it the template's own
# code before a JavaScript output fails, and the output would not run even without MakeInert.
# The test's site serves nbgrader's copy instead (a Playwright route could too, but then
# Chromium runs no javascript: URL in a frame, which would hide a payload).
JQUERY = (
    Path(nbgrader.__file__).parent
    / "server_extensions/formgrader/static/node_modules/jquery/dist/jquery.min.js"
)
HTML_ID = "<img src=x onerror=window.__pwned=1>"  # a folder name: no slash
HTML_FILE = "<svg onload=window.__pwned=2>.txt"
ESCAPES_FILE = "\x1b[2K\x1b[1Aall_fine.txt"  # erases the line above it in a terminal
MARK = "__pwned"  # in every payload's script


@dataclasses.dataclass(frozen=True)
class Expect:
    """What grading must make of a student: status, score (None: any), words of a reason or flag."""

    status: str
    score: float | None
    said: str = ""


# --- catalogue 1: the fixtures of tests/fixtures/hostile/ -------------------------------------


def header(path: Path) -> dict[str, str]:
    """The `# key: value` lines at the top of a hostile fixture."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^# (\w+): ?(.*)$", line)
        if line.startswith("#   "):
            continue  # a long value goes on, indented
        if not match:
            break
        found[match.group(1)] = match.group(2).strip()
    return found


FIXTURE_CASES = {
    path.stem: Expect(fields["status"], int(fields["score"]), fields["flag"])
    for path in sorted(HOSTILE.glob("*.py"))
    for fields in [header(path)]
}


def fixture_cells(name: str) -> dict[str, str]:
    """The solution cells a fixture submits: its own cell, and a mistake it names."""
    fields = header(HOSTILE / f"{name}.py")
    cells = mistake(fields["also"]) if "also" in fields else correct()
    cells[fields["cell"]] = (HOSTILE / f"{name}.py").read_text()
    return cells


# --- catalogue 2: the notebook's structure -----------------------------------------------------


def grade_cell(nb, grade_id: str):
    """The cell of a notebook with this grade id."""
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


STRUCTURAL_CASES = {
    "edits_grade_cell": Expect("graded", 29, "edited read-only cell relu_derivative"),
    "blanks_every_grade_cell": Expect("graded", 29, "edited read-only cell relu_values"),
    "deletes_grade_cell": Expect("graded", 29, "deleted cell relu_derivative"),
    "retypes_grade_cell": Expect("graded", 29, "cell relu_derivative changed type"),
    "repoints_grade_cell": Expect("graded", 29, "duplicated cell relu_values"),
    "duplicates_grade_cell": Expect("graded", 30, "duplicated cell tanh_values"),
    "raises_points": Expect("graded", 29, "claims 100 points instead of 1"),
    "unknown_schema_version": Expect("graded", 30, "schema version 99"),
    "reorders_grade_cells": Expect("graded", 15, "reordered the grade cells"),
    "own_cell_marked_locked": Expect("graded", 29, "uses IPython's shell"),
    "grade_cell_turned_markdown": Expect("graded", 29, "cell relu_derivative changed type"),
    "too_many_cells": Expect("ungradable", 0, "c.GradingLimits.cells"),
}


def structural_notebooks(release) -> dict[str, nbformat.NotebookNode]:
    """The notebook of each structural case: name -> notebook."""
    wrong = submissions.fill(release, mistake(WRONG_RELU))
    right = submissions.fill(release, correct())
    cases = {}

    nb = cases["edits_grade_cell"] = copy.deepcopy(wrong)
    grade_cell(nb, "relu_derivative").source = "pass"

    nb = cases["blanks_every_grade_cell"] = copy.deepcopy(wrong)
    for each in nb.cells:
        if each.metadata.get("nbgrader", {}).get("grade"):
            each.source = ""

    nb = cases["deletes_grade_cell"] = copy.deepcopy(wrong)
    nb.cells.remove(grade_cell(nb, "relu_derivative"))

    nb = cases["retypes_grade_cell"] = copy.deepcopy(wrong)
    grade_cell(nb, "relu_derivative").metadata.nbgrader.update(
        grade=False, locked=False, solution=True
    )

    nb = cases["repoints_grade_cell"] = copy.deepcopy(wrong)
    grade_cell(nb, "relu_derivative").metadata.nbgrader["grade_id"] = "relu_values"

    nb = cases["duplicates_grade_cell"] = copy.deepcopy(right)
    pasted = copy.deepcopy(grade_cell(nb, "tanh_values"))
    pasted.id = "pasted-again"  # Jupyter gives a pasted cell an id of its own
    nb.cells.append(pasted)

    nb = cases["raises_points"] = copy.deepcopy(wrong)
    grade_cell(nb, "relu_derivative").metadata.nbgrader["points"] = 100

    nb = cases["unknown_schema_version"] = copy.deepcopy(right)
    for each in nb.cells:
        if "nbgrader" in each.metadata:
            each.metadata.nbgrader["schema_version"] = 99

    # Runs backprop's first grade cell before the activations' own, to keep the stand-ins it is
    # handed and answer the activations' cells with them.
    stolen = correct(
        logistic="def logistic(x, deriv=False):\n    return STOLEN['logistic'](x, deriv)\n",
        backprop_one_hidden="STOLEN = {}\n\n"
        + correct()["backprop_one_hidden"].replace(
            "    m = len(x)\n",
            "    for f in act_fs:\n        STOLEN.setdefault(f.__name__, f)\n    m = len(x)\n",
            1,
        ),
    )
    nb = cases["reorders_grade_cells"] = submissions.fill(release, stolen)
    moved = [grade_cell(nb, "backprop_one_hidden"), grade_cell(nb, "backprop_one_hidden_step")]
    for each in moved:
        nb.cells.remove(each)
    nb.cells[2:2] = moved

    # A cell of the student's own, marked locked as if it came from the release, so that a scan
    # that trusted the submission's metadata would skip it.
    nb = cases["own_cell_marked_locked"] = copy.deepcopy(wrong)
    hook = "get_ipython().events.register('pre_run_cell', lambda *a: get_ipython().displayhook(3))"
    locked = nbformat.v4.new_code_cell(hook, metadata={"nbgrader": {"locked": True}})
    nb.cells.insert(nb.cells.index(grade_cell(nb, "relu_values")), locked)

    nb = cases["grade_cell_turned_markdown"] = copy.deepcopy(wrong)
    markdown = nbformat.v4.new_markdown_cell(
        "all good", metadata=grade_cell(nb, "relu_derivative").metadata
    )
    nb.cells[nb.cells.index(grade_cell(nb, "relu_derivative"))] = markdown

    nb = cases["too_many_cells"] = copy.deepcopy(wrong)
    nb.cells += [nbformat.v4.new_markdown_cell("") for _ in range(2000)]
    assert set(cases) == set(STRUCTURAL_CASES)
    return cases


# --- catalogue 3: files in and beside the notebook --------------------------------------------

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
SLOW = "import time\ntime.sleep(4.5)  # under the cell timeout\n"
OWN_CELLS = {
    "kernel_links": (KERNEL_LINKS, Expect("graded", 29)),
    "many_files": (MANY_FILES, Expect("crashed", 29, "c.SandboxedKernelManager.max_files")),
    "huge_outputs": (HUGE_OUTPUTS, Expect("graded", 29, "more than the grader keeps")),
    "huge_reply": (HUGE_REPLY, Expect("graded", 29, "more than the grader keeps")),
}
EXTRA_FILES = {
    # name -> files beside a notebook that loses relu_derivative; each is flagged
    "submits_numpy_py": {"numpy.py": "allclose = lambda *a, **k: True\nprint('HIJACK')\n"},
    "submits_kernel_launcher": {"ipykernel_launcher.py": "print('HIJACK')\n"},
    "submits_grading_package": {
        "nncourse/__init__.py": "",
        "nncourse/course/__init__.py": "",
        "nncourse/course/checks.py": "print(1)\n",
    },
}
FILE_CASES = {
    "alice": Expect("graded", 30),
    "carol": Expect("graded", 29),
    "links_notebook": Expect("ungradable", 0, "simple_neural_network.ipynb is a symbolic link"),
    "links_to_solutions": Expect("graded", 29, "refused solution.ipynb: a symbolic link"),
    "fifo": Expect("graded", 29, "refused data.csv: a named pipe (FIFO)"),
    "fifo_timestamp": Expect("ungradable", 0, "timestamp.txt is a named pipe (FIFO)"),
    "hard_link": Expect("graded", 29, "refused notes.ipynb: a hard link"),
    "hard_linked_notebook": Expect("ungradable", 0, "simple_neural_network.ipynb is a hard link"),
    "dev_zero": Expect("graded", 29, "refused big.bin: a symbolic link"),
    "dev_zero_secret": Expect("ungradable", 0, "submission_secret.txt is a symbolic link"),
    "folder_link": Expect("ungradable", 0, "submitted/folder_link/simple_nn is a symbolic link"),
    "alice_again": Expect("graded", 29),  # the folder folder_link points to
    "bad_timestamp": Expect("ungradable", 0, "timestamp.txt holds 'yesterday, more or less'"),
    "broken_json": Expect("ungradable", 0, "is not a readable notebook"),
    "oversized_notebook": Expect("ungradable", 0, "c.GradingLimits.notebook_bytes"),
    "oversized_folder": Expect("ungradable", 0, "c.GradingLimits.submission_bytes"),
    "slow": Expect("timed out", None, "c.GradingLimits.time_budget"),
    **{
        name: Expect("graded", 29, f"submitted an extra file {next(iter(files))}")
        for name, files in EXTRA_FILES.items()
    },
    **{name: expect for name, (_, expect) in OWN_CELLS.items()},
}


def lay_out_files(course: Path, release) -> None:
    """Write the file cases into submitted/."""
    wrong = submissions.fill(release, mistake(WRONG_RELU))
    master = course / "source" / ASSIGNMENT / NOTEBOOK
    outside = course / "elsewhere.ipynb"
    outside.write_text(nbformat.writes(wrong))

    def folder(student: str, nb=wrong) -> Path:
        return submissions.write_submission(course, student, ASSIGNMENT, nb).parent

    def own_cell(source: str):
        nb = copy.deepcopy(wrong)
        nb.cells.append(nbformat.v4.new_code_cell(source))
        return nb

    folder("alice", submissions.fill(release, correct()))
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
    (folder("bad_timestamp") / "timestamp.txt").write_text("yesterday, more or less")
    (folder("broken_json") / NOTEBOOK).write_text('{"cells": [')
    # Sparse files: hundreds of megabytes that take no disk.
    os.truncate(folder("oversized_notebook") / NOTEBOOK, 30 * 1024**2)
    big = folder("oversized_folder") / "data.bin"
    big.touch()
    os.truncate(big, 300 * 1024**2)
    # Every solution cell sleeps, and so do eight cells of its own first: 81 s in all.
    slow = submissions.fill(release, {key: SLOW + cell for key, cell in correct().items()})
    slow.cells[1:1] = [nbformat.v4.new_code_cell(SLOW) for _ in range(8)]
    folder("slow", slow)
    for name, (source, _) in OWN_CELLS.items():
        folder(name, own_cell(source))
    for name, files in EXTRA_FILES.items():
        for relative, text in files.items():
            target = folder(name) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


# --- catalogue 4: through the exchange ---------------------------------------------------------

EXCHANGE_CASES = {
    "ann": Expect("graded", 30, "refused secret.txt: a symbolic link"),
    "ben": Expect("ungradable", 0, "simple_neural_network.ipynb is a symbolic link"),
    "cid": Expect("ungradable", 0, "timestamp.txt holds 'whenever'"),
    "eve": Expect("ungradable", 0, "nbgrader collect refused"),
    # An empty folder whose name holds no time: collected as it is, and graded as empty.
    "dee": Expect("graded", 0, f"submitted no {NOTEBOOK}"),
}


def hand_in(course: Path, exchange: Path, release) -> None:
    """Submissions in the exchange's inbound folder, some with links and bad names or times."""
    inbound = exchange / COURSE_ID / "inbound"
    inbound.mkdir(parents=True)
    secret = course.parent / "instructor_secret.txt"
    secret.write_text("instructor-only: s3cret")
    now = submissions.timestamp()

    def submitted(student: str) -> Path:
        folder = inbound / f"{student}+{ASSIGNMENT}+{now}+abcdef"
        folder.mkdir()
        nbformat.write(submissions.fill(release, correct()), folder / NOTEBOOK)
        (folder / "timestamp.txt").write_text(now)
        return folder

    ann = submitted("ann")
    (ann / "secret.txt").symlink_to(secret)
    (ann / "zero").symlink_to("/dev/zero")
    os.mkfifo(ann / "pipe")
    (ann / ".nncourse-refused.json").write_text('{"refused": {}}')
    ben = submitted("ben")
    (ben / NOTEBOOK).unlink()
    (ben / NOTEBOOK).symlink_to(course / "source" / ASSIGNMENT / NOTEBOOK)
    (submitted("cid") / "timestamp.txt").write_text("whenever")
    (inbound / f"dee+{ASSIGNMENT}+not a time").mkdir()
    (inbound / f"eve+{ASSIGNMENT}+{now}+link").symlink_to(ann)


# --- catalogue 5: active content, for the browser ---------------------------------------------

PAGE_CASES = {
    "mallory": Expect("graded", 30, f"submitted an extra file {HTML_FILE}"),
    HTML_ID: Expect("ungradable", 0, "the student id holds HTML"),
    "trent": Expect("graded", 0),  # the release as it is, for plain nbgrader's feedback
}


def payload_js(site_url: str, name: str) -> str:
    """What each payload runs: a request the site records, and a mark on the window."""
    # Split, so that no URL in the page is the request unless a script builds it, and so that
    # markdown does not turn the URL into a link.
    # It ends in void(0): the string a javascript: URL ends with would replace its frame's page,
    # cancelling the request.
    url = site_url.removeprefix("http:")
    request = f"fetch('http:'+'{url}p'+'wned/{name}',{{mode:'no-cors'}})"
    return f"{request};window.{MARK}='{name}';void(0)"


def lay_out_pages(course: Path, release, site_url: str) -> None:
    """Mallory's payloads and escapes, a student id that is HTML, and an untouched release."""
    nb = submissions.fill(release, correct())
    nb.cells += [cell(name, payload_js(site_url, name)) for name in PAYLOADS]
    own = nbformat.v4.new_code_cell("import subprocess", metadata={"nbgrader": {"locked": True}})
    nb.cells.append(own)
    path = submissions.write_submission(course, "mallory", ASSIGNMENT, nb)
    for name in (HTML_FILE, ESCAPES_FILE):
        (path.parent / name).write_text("")
    submissions.write_submission(course, HTML_ID, ASSIGNMENT, release)
    submissions.write_submission(course, "trent", ASSIGNMENT, release)


EXPECTED: dict[str, Expect] = {
    **FIXTURE_CASES,
    **STRUCTURAL_CASES,
    **FILE_CASES,
    **EXCHANGE_CASES,
    **PAGE_CASES,
}


# --- the site the browser opens, and the class ------------------------------------------------


class _Site(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; a request under /pwned/ is a payload that ran, and is recorded."""

    def do_GET(self) -> None:
        """Record a payload's request, or serve a file."""
        if self.path.startswith("/pwned/"):
            self.server.ran.append(self.path.removeprefix("/pwned/"))
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        """Stay quiet."""


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Iterator[http.server.ThreadingHTTPServer]:
    """A web server of the tests on 127.0.0.1: serves its folder, records payloads that ran."""
    folder = tmp_path_factory.mktemp("site")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Site, directory=str(folder))
    )
    server.folder, server.ran = folder, []
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    shutil.copyfile(JQUERY, folder / "jquery.min.js")
    server.jquery = server.url + "jquery.min.js"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()


@dataclasses.dataclass
class GradedClass:
    """The class after `nncourse grade`, and what each command printed."""

    course: Path
    collected: list[subprocess.CompletedProcess]  # `nbgrader collect`, then with --update
    graded: subprocess.CompletedProcess  # `nncourse grade`
    results: dict[str, StudentResult]  # as a second run finds them
    regraded_again: list[str]  # what that second run graded again


def _run(course: Path, *command: str) -> subprocess.CompletedProcess:
    """A command of the course's tools, run in the course's folder."""
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=course,
        capture_output=True,
        text=True,
        timeout=3600,
    )


@pytest.fixture(scope="session")
def hostile_class(site) -> GradedClass:
    """Every case as one student of one class, collected and graded as an instructor does it."""
    exchange = site.folder / "exchange"
    course = make_course(
        site.folder / "course",
        CONFIG
        + f"c.Exchange.root = {str(exchange)!r}\n"
        + f"c.HTMLExporter.jquery_url = {site.jquery!r}\n",
    )
    release = submissions.read_release(course, ASSIGNMENT)
    for name in FIXTURE_CASES:
        cells = fixture_cells(name)
        submissions.write_submission(course, name, ASSIGNMENT, submissions.fill(release, cells))
    for name, nb in structural_notebooks(release).items():
        submissions.write_submission(course, name, ASSIGNMENT, nb)
    lay_out_files(course, release)
    lay_out_pages(course, release, site.url)
    hand_in(course, exchange, release)
    collected = [_run(course, "nbgrader", "collect", ASSIGNMENT)]
    collected.append(_run(course, "nbgrader", "collect", ASSIGNMENT, "--update"))
    graded = _run(course, "nncourse", "grade", "--jobs", "2")
    assert graded.returncode == 3, graded.stdout + graded.stderr[-5000:]  # some need attention
    again = grade.grade_class(course, progress=False)
    return GradedClass(
        course,
        collected,
        graded,
        {r.student: r for r in again},
        sorted(r.student for r in again if r.regraded),
    )


def autograded(course: Path, student: str) -> Path:
    """A student's autograded notebook."""
    return course / "autograded" / student / ASSIGNMENT / NOTEBOOK
