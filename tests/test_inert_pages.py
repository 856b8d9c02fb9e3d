"""Student payloads through the real pipeline, opened in headless Chromium: nothing runs.

A class is graded with `nncourse grade`. Mallory's notebook holds every payload of
tests/fixtures/active_content.json (markdown cells, and code cells whose outputs her kernel
makes), a cell of her own marked read-only, and files named with HTML and terminal escapes;
another student's id is HTML. A browser then opens what an instructor and a student open:
the grading page of nbgrader's formgrader, served by a real Jupyter server with the formgrader
extension (logged in with the token its configuration sets), mallory's feedback page, a
feedback page that plain `nbgrader generate_feedback` makes of a notebook not made inert, and
the class report. Every payload requests a page of the test's web server and sets window.__pwned;
a control page (the same payloads in nbconvert's HTML, not made inert) shows that they run in
this browser. A screenshot of the grading page goes to tests/artifacts/inert/.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import nbgrader
import pytest
from active_content import PAYLOADS, active_parts, cell
from hub_browser import CHROMIUM, free_ports, launch
from nbconvert import HTMLExporter
from nbgrader.api import Gradebook
from test_pipeline import ASSIGNMENT, correct, make_course

from nncourse import submissions

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
)

BIN = Path(sys.executable).parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "inert"
NOTEBOOK = "simple_neural_network"
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


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[http.server.ThreadingHTTPServer]:
    """A web server of the test on 127.0.0.1: serves its folder, records payloads that ran."""
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


def payload_js(site, name: str) -> str:
    """What each payload runs: a request the site records, and a mark on the window."""
    # Split, so that no URL in the page is the request unless a script builds it, and so that
    # markdown does not turn the URL into a link.
    # It ends in void(0): the string a javascript: URL ends with would replace its frame's page,
    # cancelling the request.
    url = site.url.removeprefix("http:")
    request = f"fetch('http:'+'{url}p'+'wned/{name}',{{mode:'no-cors'}})"
    return f"{request};window.{MARK}='{name}';void(0)"


@pytest.fixture(scope="module")
def graded(site):
    """The class, graded by `nncourse grade`: (course, its completed process)."""
    course = make_course(site.folder / "course", f"\nc.HTMLExporter.jquery_url = {site.jquery!r}\n")
    release = submissions.read_release(course, ASSIGNMENT)
    nb = submissions.fill(release, correct())
    nb.cells += [cell(name, payload_js(site, name)) for name in PAYLOADS]
    own = nbformat.v4.new_code_cell("import subprocess", metadata={"nbgrader": {"locked": True}})
    nb.cells.append(own)
    path = submissions.write_submission(course, "mallory", ASSIGNMENT, nb)
    for name in (HTML_FILE, ESCAPES_FILE):
        (path.parent / name).write_text("")
    submissions.write_submission(course, HTML_ID, ASSIGNMENT, release)
    submissions.write_submission(course, "trent", ASSIGNMENT, release)  # for plain nbgrader
    run = subprocess.run(
        [str(BIN / "nncourse"), "grade", "--jobs", "1"],
        cwd=course,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 3, run.stdout + run.stderr  # some students need attention
    return course, run


@contextlib.contextmanager
def formgrader(course: Path, folder: Path) -> Iterator[tuple[str, str]]:
    """A Jupyter server on the course with nbgrader's formgrader: (its URL, its token)."""
    port, token = free_ports(1)[0], secrets.token_hex(16)
    config = folder / "config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(
        f"c.ServerApp.ip = '127.0.0.1'\n"
        f"c.ServerApp.port = {port}\n"
        f"c.ServerApp.port_retries = 0\n"
        f"c.ServerApp.open_browser = False\n"
        f"c.ServerApp.root_dir = {str(course)!r}\n"
        f"c.ServerApp.jpserver_extensions = {{'nbgrader.server_extensions.formgrader': True}}\n"
        f"c.IdentityProvider.token = {token!r}\n"
        f"c.ServerApp.allow_root = True\n"  # CI runs the tests as root
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(folder / "data"),
        "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
        "JUPYTER_PREFER_ENV_PATH": "0",  # this config outranks the environment's
    }
    log = folder / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(BIN / "jupyter-server")],
            cwd=course,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url + "login", server, log)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Wait until the server answers url."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(url, timeout=2):
                return
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout} s\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):
    """A fresh page that records the dialogs it opens; the site forgets earlier payloads."""
    site.ran.clear()
    context = browser.new_context()
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def open_and_settle(page, url: str) -> None:
    """Open a page and give its scripts, handlers and frames time to run."""
    page.goto(url, wait_until="load")
    page.wait_for_timeout(2000)


def nothing_ran(page, site) -> None:
    """No payload sent its request, marked the window, opened a dialog or is in the page live."""
    assert site.ran == []
    assert page.evaluate(f"() => window.{MARK} === undefined")
    assert page.dialogs == []
    assert active_parts(page.content(), MARK) == []


def test_the_payloads_run_in_this_browser_without_makeinert(site, page):
    nb = nbformat.v4.new_notebook(cells=[cell(name, payload_js(site, name)) for name in PAYLOADS])
    (site.folder / "control.html").write_text(
        HTMLExporter(template_name="classic", jquery_url=site.jquery).from_notebook_node(nb)[0]
    )
    open_and_settle(page, site.url + "control.html")
    on_load = {name for name, payload in PAYLOADS.items() if payload["runs"] == "load"}
    assert on_load <= set(site.ran), f"did not run: {sorted(on_load - set(site.ran))}"
    content = page.content()
    for name, payload in PAYLOADS.items():
        if payload["runs"] == "click":
            assert active_parts(content, f"wned/{name}"), f"{name} is not a live link"


def test_the_summary_shows_flags_with_escapes_visible(graded):
    _, run = graded
    assert "\x1b" not in run.stdout + run.stderr
    assert "flagged: submitted an extra file \\x1b[2K\\x1b[1Aall_fine.txt" in run.stdout
    assert f"flagged: submitted an extra file {HTML_FILE}" in run.stdout
    assert "flagged: an unnamed cell: starts processes" in run.stdout
    assert f"{HTML_ID} " in run.stdout.split("needs attention:")[1]


def test_an_html_student_id_never_reaches_the_gradebook(graded):
    course, _ = graded
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert [s.id for s in gb.students] == ["mallory", "trent"]
        assert gb.find_submission(ASSIGNMENT, "mallory").score == 28


def test_formgrader_grading_page_runs_no_student_code(graded, site, page, tmp_path):
    course, _ = graded
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        submission = gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, "mallory").id
    with formgrader(course, tmp_path) as (url, token):
        page.goto(url + "login")
        page.locator("#password_input").fill(token)
        page.locator("#login_submit").click()
        page.wait_for_url(lambda to: "/login" not in to)
        open_and_settle(page, f"{url}formgrader/submissions/{submission}/")
        shown = page.inner_text("body")
        assert "def relu(" in shown  # the grading page, not an error or login page
        assert 'onerror="fetch(' in shown.replace("\u200b", "")  # her markdown, as text
        nothing_ran(page, site)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.get_by_text("my derivation").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "formgrader-payloads.png"))


def test_feedback_page_runs_no_student_code(graded, site, page):
    course, _ = graded
    feedback = course / "feedback" / "mallory" / ASSIGNMENT / f"{NOTEBOOK}.html"
    open_and_settle(page, site.url + str(feedback.relative_to(site.folder)))
    assert "def relu(" in page.inner_text("body")
    nothing_ran(page, site)


def test_plain_nbgrader_feedback_of_a_notebook_not_made_inert_runs_nothing(graded, site, page):
    # As for a notebook graded before MakeInert was among the autograde steps: the payloads are
    # in the autograded notebook, and `nbgrader generate_feedback` alone must make them inert.
    course, _ = graded
    autograded = course / "autograded" / "trent" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    nb = nbformat.read(autograded, as_version=4)
    nb.cells += [cell(name, payload_js(site, name)) for name in PAYLOADS]
    nbformat.write(nb, autograded)
    subprocess.run(
        [str(BIN / "nbgrader"), "generate_feedback", ASSIGNMENT, "--student=trent", "--force"],
        cwd=course,
        check=True,
        capture_output=True,
    )
    feedback = course / "feedback" / "trent" / ASSIGNMENT / f"{NOTEBOOK}.html"
    open_and_settle(page, site.url + str(feedback.relative_to(site.folder)))
    assert "my derivation" in page.inner_text("body")  # the payload cells are there
    nothing_ran(page, site)


def test_class_report_runs_nothing_and_shows_ids_and_files_as_text(graded, site, page):
    course, _ = graded
    open_and_settle(page, f"{site.url}course/reports/{ASSIGNMENT}_report.html")
    shown = page.inner_text("body")
    assert HTML_ID in shown
    assert HTML_FILE in shown
    nothing_ran(page, site)
