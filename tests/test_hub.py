"""The course on a real JupyterHub, driven through a real browser.

A JupyterHub is started on 127.0.0.1 (free ports) with deploy/jupyterhub_config.py, loaded by
a test-only config that changes only ports, state folder, the test's Linux groups and grader
account (tests/hub_browser.py). Logins go through the deployment's PAM authenticator against
real Linux accounts (tests/hub_accounts.py): a student, an instructor and the grader account
that owns the course root and runs the formgrader service. The exchange is a temporary
0777 folder, configured through a stand-in for /etc/jupyter holding the deployment's
machine-wide nbgrader_config.py.

The grader generates and releases simple_nn; the student logs in, fetches it from
JupyterLab's nbgrader Assignment List, opens and runs the notebook, validates and submits;
the instructor logs in, opens the formgrader service in its own tab, collects and sees the
submission. Screenshots go to tests/artifacts/hub/.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import hub_accounts as ha
import hub_browser as hb
import nbformat
import pytest

from nncourse import submissions

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts" / "hub"
COURSE_ID = "nn-fundamentals"
ASSIGNMENT = "simple_nn"
NOTEBOOK = "simple_neural_network"
WRITTEN_ANSWER = r"$\frac{1}{m} X^\top \delta_1$: the mean of the examples' gradients."
NBGRADER = str(ha.VENV_BIN / "nbgrader")


pytestmark = [
    pytest.mark.kernels,
    pytest.mark.sandbox,
    pytest.mark.browser,
    pytest.mark.hub,
    pytest.mark.root,
]


class Shots:
    """Numbered screenshots: tests/artifacts/hub/NN-<what>.png."""

    def __init__(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob("*.png"):
            old.unlink()
        self.n = 0
        self.paths: list[Path] = []

    def __call__(self, page, what: str) -> Path:
        self.n += 1
        path = ARTIFACTS / f"{self.n:02d}-{what}.png"
        page.screenshot(path=str(path))
        self.paths.append(path)
        return path


@pytest.fixture(scope="module")
def hub():
    """Accounts, course root, exchange and a running hub; everything removed afterwards."""
    accounts = ha.Accounts(ha.unique_prefix("hb"))
    base = Path(tempfile.mkdtemp(prefix="nbhub-", dir="/tmp"))
    traversal = None
    running = None
    uids: set[int] = set()
    try:
        os.chmod(base, 0o755)
        exchange = base / "exchange"
        exchange.mkdir()
        os.chmod(exchange, 0o777)  # as deploy/README.md: install -d -m 0777
        state = base / "state"
        state.mkdir(mode=0o700)
        etc_jupyter = base / "etc-jupyter"
        etc_jupyter.mkdir()
        os.chmod(etc_jupyter, 0o755)
        # /etc/jupyter/nbgrader_config.py of the deployment, with the test's exchange root.
        (etc_jupyter / "nbgrader_config.py").write_text(
            f"load_subconfig({str(ROOT / 'deploy' / 'nbgrader_config.py')!r})\n"
            f"c.Exchange.root = {str(exchange)!r}\n"
        )
        os.chmod(etc_jupyter / "nbgrader_config.py", 0o644)
        # deploy/README.md turns the instructor-only extensions off with --sys-prefix; the
        # test cannot change the shared venv, so the same switches go into a second stand-in
        # folder that only users' servers (not the grader service) read. See hub_browser.
        switches = base / "sys-prefix-switches"
        hb.write_json(
            switches / "jupyter_server_config.d" / "nbgrader-instructor-only.json",
            {"ServerApp": {"jpserver_extensions": {hb.FORMGRADER_SERVER_EXT: False}}},
        )
        hb.write_json(
            switches / "labconfig" / "page_config.json",
            {"disabledExtensions": dict.fromkeys(hb.INSTRUCTOR_LAB_EXTS, True)},
        )

        everyone = accounts.group("course")
        students_group = accounts.group("students")
        instructors_group = accounts.group("instructors")
        password = {"stu": secrets.token_urlsafe(12), "inst": secrets.token_urlsafe(12)}
        grader = accounts.add("grader", groups=[everyone])
        student = accounts.add("stu", groups=[everyone, students_group], password=password["stu"])
        instructor = accounts.add(
            "inst", groups=[everyone, instructors_group], password=password["inst"]
        )
        uids = {a.uid for a in (grader, student, instructor)}
        # The venv's Python lives under /root here (pyenv): let the accounts traverse it.
        traversal = ha.Traversal.grant(everyone, ha.closed_ancestors())

        # The grader's own config (deploy/grader_nbgrader_config.py) and the course root.
        grader_cfg = (ROOT / "deploy" / "grader_nbgrader_config.py").read_text()
        grader_cfg = grader_cfg.replace("/home/grader-nn-fundamentals", str(grader.home))
        ha.write_user_config(grader, grader_cfg)
        course = grader.home / COURSE_ID
        course.mkdir()
        shutil.copytree(ROOT / "source", course / "source")
        shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
        ha.chown_tree(course, grader)
        genv = grader.env(JUPYTER_CONFIG_PATH=str(etc_jupyter))
        # ... and back on for the grader account alone, with the README's commands.
        jupyter = str(ha.VENV_BIN / "jupyter")
        for ext in hb.INSTRUCTOR_LAB_EXTS:
            ha.run_as(grader, [jupyter, "labextension", "enable", "--level=user", ext], env=genv)
        ha.run_as(
            grader,
            [jupyter, "server", "extension", "enable", "--user", hb.FORMGRADER_SERVER_EXT],
            env=genv,
        )

        def as_grader(*args, env=None, **kw):
            return ha.run_as(grader, [NBGRADER, *args], cwd=course, env=env or genv, **kw)

        # Step 1: the grader generates and releases the assignment (as the README says).
        as_grader("generate_assignment", ASSIGNMENT, "--force")
        as_grader("release_assignment", ASSIGNMENT)
        assert (exchange / COURSE_ID / "outbound" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").is_file()

        bind_port, hub_port, proxy_port, service_port = hb.free_ports(4)
        token = secrets.token_hex(32)
        config = base / "test_jupyterhub_config.py"
        config.write_text(
            hb.TEST_CONFIG.format(
                deploy_config=str(ROOT / "deploy" / "jupyterhub_config.py"),
                hub_port=hub_port,
                proxy_api_port=proxy_port,
                students_group=students_group,
                instructors_group=instructors_group,
                course=COURSE_ID,
                grader=grader.name,
                instructors=[instructor.name],
                config_dir=str(etc_jupyter),
                switches_dir=str(switches),
                service_port=service_port,
                grader_home=str(grader.home),
                service_token=token,
            )
        )
        running = hb.Hub.start(config, state, bind_port, hub_port)
        yield {
            "hub": running,
            "token": token,
            "grader": grader,
            "student": student,
            "instructor": instructor,
            "password": password,
            "course": course,
            "exchange": exchange,
            "as_grader": as_grader,
            "genv": genv,
        }
    finally:
        if running is not None:
            running.stop()
            print("---- hub log (tail)\n" + running.log(3000))
        # Anything the hub left running as a test account (servers, kernels).
        hb.kill_pids(hb.pids_of_uids(uids))
        if traversal is not None:
            traversal.revoke()
        problems = accounts.remove()
        shutil.rmtree(base, ignore_errors=True)
        assert not problems, problems


def _api(hub, token, path):
    req = urllib.request.Request(hub.api_url + path, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_student_submits_and_instructor_sees_it_in_the_formgrader(hub):
    from playwright.sync_api import expect, sync_playwright

    h = hub["hub"]
    student = hub["student"]
    instructor = hub["instructor"]
    shots = Shots()
    nb_rel = f"{COURSE_ID}/{ASSIGNMENT}/{NOTEBOOK}.ipynb"

    with sync_playwright() as p:
        browser = hb.launch(p)
        try:
            # --- The wrong password is refused by PAM -------------------------------------
            ctx = browser.new_context(viewport={"width": 1400, "height": 900})
            ctx.set_default_timeout(60_000)
            page = ctx.new_page()
            hb.hub_login(page, h.url, student.name, "not-the-password")
            expect(page.locator("#login_main .login_error, p.login_error")).to_contain_text(
                "Invalid username or password"
            )
            shots(page, "wrong-password-refused")

            # --- Step 2: the student logs in and lands in JupyterLab ----------------------
            hb.hub_login(
                page,
                h.url,
                student.name,
                hub["password"]["stu"],
                shot=lambda pg: shots(pg, "student-login"),
            )
            hb.wait_for_lab(page)
            assert f"/user/{student.name}/lab" in page.url
            hb.dismiss_news(page)
            # Students get neither the formgrader nor Create Assignment (README's switches).
            expect(page.locator(".jp-SideBar").get_by_text("Create Assignment")).to_have_count(0)
            response = page.request.get(f"{h.url}user/{student.name}/formgrader")
            assert response.status == 404, response.status

            # Enrol the student: `nbgrader db student add` as the grader adds them to the
            # hub group nbgrader-<course> (JupyterHubAuthPlugin, with the service's token).
            hub["as_grader"](
                "db",
                "student",
                "add",
                student.name,
                "--first-name=Stu",
                "--last-name=Dent",
                env={
                    **hub["genv"],
                    "JUPYTERHUB_API_TOKEN": hub["token"],
                    "JUPYTERHUB_API_URL": h.api_url,
                    "JUPYTERHUB_USER": hub["grader"].name,
                },
            )
            group = _api(h, hub["token"], f"/groups/nbgrader-{COURSE_ID}")
            assert student.name in group["users"], group

            # Nbgrader → Assignment List
            hb.lab_menu(page, "Nbgrader", "Assignment List")
            released = page.locator("#released_assignments_list")
            row = released.locator(".list_item", has_text=ASSIGNMENT)
            expect(row).to_contain_text(COURSE_ID)
            shots(page, "student-assignment-list-released")
            row.get_by_role("button", name="Fetch").click()
            fetched = page.locator("#fetched_assignments_list")
            expect(fetched.locator(".list_item", has_text=ASSIGNMENT).first).to_be_visible()
            notebook_file = student.home / nb_rel
            assert notebook_file.is_file()
            assert notebook_file.stat().st_uid == student.uid
            shots(page, "student-assignment-fetched")

            # The student "works": the correct answers and a written answer (Validate refuses
            # an unanswered one), saved as the student.
            release_nb = nbformat.read(notebook_file, 4)
            done = submissions.fill(release_nb, submissions.correct_cells(ASSIGNMENT))
            submissions.answer(done, "written_gradient_of_W1", WRITTEN_ANSWER)
            ha.run_as(student, ["/usr/bin/tee", str(notebook_file)], input=nbformat.writes(done))

            # Open the notebook from the fetched assignment's list.
            fetched_row = fetched.locator(".list_item", has_text=ASSIGNMENT).first
            link = fetched.get_by_role("link", name=NOTEBOOK)
            if not link.first.is_visible():
                fetched_row.locator("a, .collapse-toggle, [data-toggle]").first.click()
            link.first.click()
            tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=f"{NOTEBOOK}.ipynb")
            expect(tab).to_be_visible()
            nb_panel = page.locator(".jp-NotebookPanel:visible")
            expect(nb_panel.locator(".jp-Cell").first).to_be_visible()
            # Wait for the kernel, then Run → Run All Cells.
            expect(page.locator("#jp-main-statusbar")).to_contain_text(
                "Python 3 (ipykernel) | Idle", timeout=60_000
            )
            hb.lab_menu(page, "Run", "Run All Cells")
            # Run All has finished when the saved notebook has an execution count on every
            # code cell (JupyterLab renders only the cells in view, so ask the file).
            deadline = time.monotonic() + 120
            while True:
                tab.click()
                page.keyboard.press("Control+s")
                time.sleep(2)
                ran = nbformat.read(notebook_file, 4)
                code = [c for c in ran.cells if c.cell_type == "code"]
                if all(c.get("execution_count") for c in code) or time.monotonic() > deadline:
                    break
            assert code
            assert all(c.get("execution_count") for c in code), [
                c.get("execution_count") for c in code
            ]
            errors = [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
            assert not errors, errors
            hb.scroll_to_output(page, nb_panel)
            shots(page, "student-notebook-ran")

            # nbgrader's Validate button (notebook toolbar).
            nb_panel.get_by_role("button", name="Validate").click()
            dialog = page.locator(".jp-Dialog")
            expect(dialog).to_contain_text("passes all the tests", timeout=120_000)
            shots(page, "student-validate-success")
            dialog.get_by_role("button", name=re.compile("OK|Ok|ok")).first.click()
            expect(dialog).to_have_count(0)

            # Back to the Assignment List tab and submit.
            page.locator(
                ".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="Assignments"
            ).first.click()
            fetched_row = fetched.locator(".list_item", has_text=ASSIGNMENT).first
            fetched_row.get_by_role("button", name="Submit").click()
            submitted = page.locator("#submitted_assignments_list")
            expect(submitted.locator(".list_item", has_text=ASSIGNMENT).first).to_be_visible()
            inbound = hub["exchange"] / COURSE_ID / "inbound"
            names = [p.name for p in inbound.iterdir()]
            assert len(names) == 1, names
            assert names[0].startswith(f"{student.name}+{ASSIGNMENT}+"), names
            shots(page, "student-submitted")
            ctx.close()

            # --- Step 3: the instructor opens the formgrader service in its own tab --------
            ctx = browser.new_context(viewport={"width": 1400, "height": 900})
            ctx.set_default_timeout(60_000)
            page = ctx.new_page()
            formgrader = f"{h.url}services/{COURSE_ID}/formgrader"
            page.goto(f"{h.url}hub/login?next=/services/{COURSE_ID}/formgrader/")
            page.locator("#username_input").fill(instructor.name)
            page.locator("#password_input").fill(hub["password"]["inst"])
            page.locator("#login_submit").click()
            page.wait_for_url(re.compile(rf"/services/{COURSE_ID}/formgrader"), timeout=90_000)
            row = page.locator("tr", has_text=ASSIGNMENT).first
            expect(row).to_be_visible(timeout=60_000)
            expect(page.locator("body")).to_contain_text("Manage Assignments")
            shots(page, "instructor-formgrader-assignments")
            # Collect from the formgrader (runs `nbgrader collect` as the grader service).
            row.locator("td.collect a").click()
            modal = page.locator(".modal:visible")
            expect(modal).to_contain_text("Successfully collected", timeout=60_000)
            expect(modal).to_contain_text(f"Collecting submission: {student.name} {ASSIGNMENT}")
            page.wait_for_timeout(800)  # the modal's fade-in
            shots(page, "instructor-collected")
            modal.get_by_role("button", name=re.compile("Close|OK", re.I)).first.click()
            submitted_copy = hub["course"] / "submitted" / student.name / ASSIGNMENT
            assert (submitted_copy / f"{NOTEBOOK}.ipynb").is_file()

            page.goto(f"{formgrader}/manage_submissions/{ASSIGNMENT}")
            sub_row = page.locator("tr", has_text=student.name).first
            expect(sub_row).to_be_visible()
            expect(page.locator("body")).to_contain_text("Dent")
            shots(page, "instructor-submission-listed")
            ctx.close()
        except BaseException:
            for pg in [pg for c in browser.contexts for pg in c.pages]:
                shots(pg, "failure")
            raise
        finally:
            browser.close()
    for path in shots.paths:
        assert path.stat().st_size > 5000, path
