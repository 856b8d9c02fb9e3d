"""Student payloads through the real pipeline, opened in headless Chromium: nothing runs.

The class of tests/hostile_class.py is graded with `nncourse grade`. Mallory's notebook holds
every payload of tests/fixtures/active_content.json (markdown cells, and code cells whose outputs
her kernel makes), a cell of her own marked read-only, and files named with HTML and terminal
escapes; another student's id is HTML. A browser then opens what an instructor and a student open:
the grading page of nbgrader's formgrader, served by a real Jupyter server with the formgrader
extension (logged in with the token its configuration sets), mallory's feedback page, a
feedback page that plain `nbgrader generate_feedback` makes of a notebook not made inert, and
the class report. Every payload requests a page of the test's web server and sets window.__pwned;
a control page (the same payloads in nbconvert's HTML, not made inert) shows that they run in
this browser. A screenshot of the grading page goes to tests/artifacts/inert/.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from active_content import PAYLOADS, active_parts, cell
from hostile_class import ASSIGNMENT, HTML_FILE, HTML_ID, MARK, payload_js
from hub_browser import free_ports, launch
from nbconvert import HTMLExporter
from nbgrader.api import Gradebook

from nncourse.inert import safe_student_id

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.sandbox,
    pytest.mark.browser,
    pytest.mark.xdist_group("hostile_class"),  # the worker that grades the class
]

BIN = Path(sys.executable).parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "inert"
NOTEBOOK = "simple_neural_network"


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
    nb = nbformat.v4.new_notebook(
        cells=[cell(name, payload_js(site.url, name)) for name in PAYLOADS]
    )
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


def test_the_summary_shows_flags_with_escapes_visible(hostile_class):
    run = hostile_class.graded
    assert "\x1b" not in run.stdout + run.stderr
    assert "flagged: submitted an extra file \\x1b[2K\\x1b[1Aall_fine.txt" in run.stdout
    assert f"flagged: submitted an extra file {HTML_FILE}" in run.stdout
    assert "flagged: an unnamed cell: starts processes" in run.stdout
    assert f"{HTML_ID} " in run.stdout.split("needs attention:")[1]


def test_an_html_student_id_never_reaches_the_gradebook(hostile_class):
    with Gradebook(f"sqlite:///{hostile_class.course / 'gradebook.db'}") as gb:
        ids = {s.id for s in gb.students}
    assert "mallory" in ids
    assert HTML_ID not in ids
    assert all(safe_student_id(student) for student in ids)


def test_formgrader_grading_page_runs_no_student_code(hostile_class, site, page, tmp_path):
    course = hostile_class.course
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


def test_feedback_page_runs_no_student_code(hostile_class, site, page):
    course = hostile_class.course
    feedback = course / "feedback" / "mallory" / ASSIGNMENT / f"{NOTEBOOK}.html"
    open_and_settle(page, site.url + str(feedback.relative_to(site.folder)))
    assert "def relu(" in page.inner_text("body")
    nothing_ran(page, site)


def test_plain_nbgrader_feedback_of_a_notebook_not_made_inert_runs_nothing(
    hostile_class, site, page
):
    # As for a notebook graded before MakeInert was among the autograde steps: the payloads are
    # in the autograded notebook, and `nbgrader generate_feedback` alone must make them inert.
    course = hostile_class.course
    autograded = course / "autograded" / "trent" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    nb = nbformat.read(autograded, as_version=4)
    nb.cells += [cell(name, payload_js(site.url, name)) for name in PAYLOADS]
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


def test_class_report_runs_nothing_and_shows_ids_and_files_as_text(hostile_class, site, page):
    assert hostile_class.course.parent == site.folder  # the site serves the class's report
    open_and_settle(page, f"{site.url}course/reports/{ASSIGNMENT}_report.html")
    shown = page.inner_text("body")
    assert HTML_ID in shown
    assert HTML_FILE in shown
    nothing_ran(page, site)
