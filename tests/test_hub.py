"""A whole term on a real JupyterHub, installed by deploy/install and driven through a real browser.

deploy/install runs as root, exactly as deploy/README.md says, with only folder roots
(/opt/nncourse, /srv/..., the systemd folder), ports and account names changed: it makes the
groups, the grader account, both environments (Debian's python3.11), the configuration, the
delegated cgroups and the systemd unit; the hub is started as that unit says. Accounts are real
Linux accounts made with the guide's `useradd`, logging in through PAM.

The term: the instructor generates and releases from the formgrader; the roster service has
enrolled the students; a student logs in, fetches, types the solutions into the notebook's
cells, runs them, validates and submits; the instructor collects, autogrades with the button,
sees the score, generates and releases feedback; the student fetches the feedback and opens it.
Then, as the students: the formgrader is refused, the grader's files are closed, and a search of
everything a student can read on the machine finds no line of the answers. Grading and
enrolment also run from a root shell with the guide's commands. Screenshots go to
tests/artifacts/hub/.
"""

from __future__ import annotations

import json
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import hub_accounts as ha
import hub_browser as hb
import nbformat
import pytest

from nncourse import references, submissions

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts" / "hub"
COURSE_ID = "nn-fundamentals"
ASSIGNMENT = "simple_nn"
NOTEBOOK = "simple_neural_network"
WRITTEN = "written_gradient_of_W1"
WRITTEN_ANSWER = "dC/dW1 is X^T delta_1 / m: the mean of the examples' gradients."
AUTOMATIC_POINTS = 30  # what the reference solution earns before a person grades the written answer

pytestmark = [
    # One worker runs the whole term, in order, on one installation.
    pytest.mark.xdist_group("hub"),
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


def _wait_for(what: str, check, timeout: float = 60) -> None:
    """Poll check() until it is true; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(1)


@pytest.fixture(scope="module")
def deployment():
    """deploy/install into temporary roots, the guide's accounts, and the hub of its unit."""
    accounts = ha.Accounts(ha.unique_prefix("hb"))
    base = Path(tempfile.mkdtemp(prefix="nbhub-", dir="/tmp"))
    base.chmod(0o755)
    hub = None
    try:
        bind_port, api_port, proxy_port, service_port = hb.free_ports(4)
        settings = {
            "GRADER": f"{accounts.prefix}-grader",
            "STUDENTS_GROUP": f"{accounts.prefix}-students",
            "INSTRUCTORS_GROUP": f"{accounts.prefix}-instructors",
            "PREFIX": str(base / "opt"),
            "EXCHANGE": str(base / "srv" / "nbgrader" / "exchange"),
            "HUB_STATE": str(base / "srv" / "jupyterhub"),
            "SYSTEMD_DIR": str(base / "systemd"),
            "HUB_PORT": str(bind_port),
            "HUB_API_PORT": str(api_port),
            "PROXY_API_PORT": str(proxy_port),
            "SERVICE_PORT": str(service_port),
            "ROSTER_EVERY": "3",
        }
        accounts.groups += [settings["STUDENTS_GROUP"], settings["INSTRUCTORS_GROUP"]]
        # Copies of the answers already on the machine, readable by an account of no course
        # (the checkout these tests run from, say): the deployment must add none.
        nobody = pwd.getpwnam("nobody")
        before = _scan_as(ha.Account("nobody", Path("/"), nobody.pw_uid, nobody.pw_gid))
        # Install twice: the second run must change nothing that matters and still succeed.
        hb.install(settings, ARTIFACTS.parent / "hub-install.log")
        grader = accounts.adopt(settings["GRADER"])
        hb.install(settings, ARTIFACTS.parent / "hub-install-again.log")

        # The guide's "Add students (and instructors)", before the hub starts: the roster
        # enrols these students before they ever log in.
        password = {name: secrets.token_urlsafe(12) for name in ("stu", "classmate", "inst")}
        student = accounts.add(
            "stu", [settings["STUDENTS_GROUP"]], password["stu"], full_name="Stu Dent"
        )
        classmate = accounts.add(
            "classmate", [settings["STUDENTS_GROUP"]], password["classmate"], "Class Mate"
        )
        instructor = accounts.add("inst", [settings["INSTRUCTORS_GROUP"]], password["inst"])

        unit = base / "systemd" / f"jupyterhub-{COURSE_ID}.service"
        hub = hb.Hub.from_unit(unit, Path(settings["HUB_STATE"]), bind_port, api_port)
        yield {
            "hub": hub,
            "settings": settings,
            "prefix": Path(settings["PREFIX"]),
            "exchange": Path(settings["EXCHANGE"]),
            "grader": grader,
            "course": grader.home / COURSE_ID,
            "student": student,
            "classmate": classmate,
            "instructor": instructor,
            "password": password,
            "readable_before": before,
        }
    finally:
        if hub is not None:
            hub.stop()
            print("---- hub log (tail)\n" + hub.log(5000))
        hb.kill_pids(hb.pids_of_uids({a.uid for a in accounts.made}))
        problems = accounts.remove()
        for controller in ("pids", "memory"):
            cgroup = Path("/sys/fs/cgroup", controller, f"nncourse-{accounts.prefix}-grader")
            for leftover in sorted(cgroup.glob("**/"), key=lambda p: -len(p.parts)):
                leftover.rmdir()
        shutil.rmtree(base, ignore_errors=True)
        assert not problems, problems


def _hub_api(d, method: str, path: str) -> dict:
    """Call the hub's API with the roster's token (root may read it)."""
    token = (d["prefix"] / "etc" / "roster-token").read_text().strip()
    req = urllib.request.Request(
        d["hub"].api_url + path, method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _enrolled(d) -> set[str]:
    return set(_hub_api(d, "GET", f"/groups/nbgrader-{COURSE_ID}")["users"])


def _as_grader(d, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """The guide's root-shell command: <prefix>/bin/as-grader COMMAND."""
    done = subprocess.run(
        [str(d["prefix"] / "bin" / "as-grader"), *command],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"as-grader {command} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def test_the_install_keeps_the_answers_with_the_grader(deployment):
    """Only root and the grader can enter the grader's environment, home and token."""
    d = deployment
    for path in (d["prefix"] / "grader", d["grader"].home):
        assert path.stat().st_mode & 0o007 == 0, f"{path} is open to others"
    assert (d["prefix"] / "etc" / "roster-token").stat().st_mode & 0o007 == 0
    # The students' environment holds no nncourse and no course files.
    student_env = d["prefix"] / "student"
    site = student_env / "lib" / "python3.11" / "site-packages"
    assert not [p.name for p in site.iterdir() if "nncourse" in p.name]
    assert not list(student_env.rglob("simple_neural_network*"))
    # nncourse build writes only under the course root (editable install from it).
    exported = d["course"] / "nncourse" / "course" / "reference_solutions" / f"{ASSIGNMENT}.json"
    before = exported.stat().st_mtime_ns if exported.exists() else None
    _as_grader(d, "nncourse", "build")
    assert exported.stat().st_mtime_ns != before
    assert exported.stat().st_uid == d["grader"].uid


def test_enrolment_follows_the_linux_group(deployment):
    """Members are enrolled before their first login; leaving the group takes them out."""
    d = deployment
    students = {d["student"].name, d["classmate"].name}
    _wait_for("the roster service enrols both students", lambda: students <= _enrolled(d))
    # The gradebook, through the guide's root-shell command (which also syncs at once).
    done = _as_grader(d, "nncourse", "roster")
    assert done.returncode == 0
    listing = _as_grader(d, "nbgrader", "db", "student", "list").stdout
    assert "Dent" in listing, listing
    assert "Mate" in listing, listing
    # Out and back in: gpasswd -d, then usermod -aG, as the guide says.
    group = d["settings"]["STUDENTS_GROUP"]
    name = d["classmate"].name
    subprocess.run(["gpasswd", "-d", name, group], check=True, capture_output=True)
    _wait_for("the roster takes the classmate out", lambda: name not in _enrolled(d))
    subprocess.run(["usermod", "-aG", group, name], check=True)
    _as_grader(d, "nncourse", "roster")
    assert name in _enrolled(d)


def test_a_term_in_the_browser(deployment):
    from playwright.sync_api import expect, sync_playwright

    d = deployment
    h = d["hub"]
    student, instructor = d["student"], d["instructor"]
    shots = Shots()
    formgrader = f"{h.url}services/{COURSE_ID}/formgrader"
    notebook_file = student.home / COURSE_ID / ASSIGNMENT / f"{NOTEBOOK}.ipynb"

    with sync_playwright() as p:
        browser = hb.launch(p)
        try:
            # --- The instructor generates and releases from the formgrader --------------------
            inst = _new_page(browser)
            inst.goto(f"{h.url}hub/login?next=/services/{COURSE_ID}/formgrader/")
            inst.locator("#username_input").fill(instructor.name)
            inst.locator("#password_input").fill(d["password"]["inst"])
            inst.locator("#login_submit").click()
            inst.wait_for_url(re.compile(rf"/services/{COURSE_ID}/formgrader"), timeout=90_000)
            assert inst.request.get(formgrader).status == 200
            expect(inst.locator("body")).to_contain_text("Manage Assignments")
            row = inst.locator("tr", has_text=ASSIGNMENT).first
            expect(row).to_be_visible()
            shots(inst, "instructor-formgrader")
            _formgrader_action(inst, row.locator("td.assign a"), "Successfully created")
            _formgrader_action(inst, row.locator("td.release a"), "Successfully released")
            shots(inst, "instructor-released")

            # --- The student: wrong password, then in; no formgrader ----------------------------
            page = _new_page(browser)
            hb.hub_login(page, h.url, student.name, "not-the-password")
            expect(page.locator("p.login_error, #login_main .login_error")).to_contain_text(
                "Invalid username or password"
            )
            hb.hub_login(page, h.url, student.name, d["password"]["stu"])
            hb.wait_for_lab(page)
            hb.dismiss_news(page)
            assert page.request.get(formgrader).status == 403
            assert page.request.get(f"{h.url}user/{student.name}/formgrader").status == 404
            expect(page.locator(".jp-SideBar").get_by_text("Create Assignment")).to_have_count(0)

            # Fetch from the Assignment List.
            hb.lab_menu(page, "Nbgrader", "Assignment List")
            released = page.locator("#released_assignments_list")
            released.locator(".list_item", has_text=ASSIGNMENT).get_by_role(
                "button", name="Fetch"
            ).click()
            fetched = page.locator("#fetched_assignments_list")
            expect(fetched.locator(".list_item", has_text=ASSIGNMENT).first).to_be_visible()
            shots(page, "student-fetched")
            assert notebook_file.stat().st_uid == student.uid

            # Open it, type every solution and the written answer, run everything, save.
            # The downloaded assignment's name opens its list of notebooks.
            fetched.locator(".list_item", has_text=ASSIGNMENT).first.locator("a").first.click()
            fetched.get_by_role("link", name=NOTEBOOK).first.click()
            tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=f"{NOTEBOOK}.ipynb")
            expect(tab).to_be_visible()
            expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=90_000)
            panel = page.locator(".jp-NotebookPanel:visible")
            typed = _type_solutions(page, panel, nbformat.read(notebook_file, 4))
            shots(page, "student-typed")
            hb.lab_menu(page, "Run", "Run All Cells")
            _wait_for_run_all(page, tab, notebook_file)
            ran = nbformat.read(notebook_file, 4)
            for grade_id, source in typed.items():
                assert _source_of(ran, grade_id) == source, f"{grade_id} was not typed as intended"
            errors = [
                o for c in ran.cells for o in c.get("outputs", []) if o.output_type == "error"
            ]
            assert not errors, errors
            hb.scroll_to_output(page, panel)
            shots(page, "student-notebook-ran")

            panel.get_by_role("button", name="Validate").click()
            dialog = page.locator(".jp-Dialog")
            expect(dialog).to_contain_text("passes all the tests", timeout=120_000)
            shots(page, "student-validate-success")
            dialog.get_by_role("button", name=re.compile("OK|Ok|ok")).first.click()

            page.locator(
                ".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="Assignments"
            ).first.click()
            fetched.locator(".list_item", has_text=ASSIGNMENT).first.get_by_role(
                "button", name="Submit"
            ).click()
            submitted = page.locator("#submitted_assignments_list")
            expect(submitted.locator(".list_item", has_text=ASSIGNMENT).first).to_be_visible()
            shots(page, "student-submitted")

            # --- The instructor collects, autogrades with the button, hands out feedback -------
            inst.goto(f"{formgrader}/")
            row = inst.locator("tr", has_text=ASSIGNMENT).first
            _formgrader_action(inst, row.locator("td.collect a"), "Successfully collected")
            inst.goto(f"{formgrader}/manage_submissions/{ASSIGNMENT}")
            sub = inst.locator("tr", has_text=student.name).first
            expect(sub).to_contain_text("needs autograding")
            sub.locator("td.autograde a").click()
            modal = inst.locator(".modal:visible")
            expect(modal).to_contain_text("Successfully autograded", timeout=300_000)
            shots(inst, "instructor-autograded")
            modal.get_by_role("button", name=re.compile("Close|OK", re.I)).first.click()
            expect(inst.locator(".modal-backdrop")).to_have_count(0)
            sub = inst.locator("tr", has_text=student.name).first
            expect(sub.locator("td.score")).to_have_text(f"{AUTOMATIC_POINTS} / 32")
            shots(inst, "instructor-score")
            for action, done in (
                ("td.generate-feedback a", "Successfully generated feedback"),
                ("td.release-feedback a", "Successfully released feedback"),
            ):
                _formgrader_action(inst, sub.locator(action), done)
                sub = inst.locator("tr", has_text=student.name).first
            reports = d["course"] / "reports"
            assert (reports / f"{ASSIGNMENT}_report.html").is_file()
            assert (reports / "grades.csv").is_file()

            # --- The student fetches the feedback and opens it ----------------------------------
            page.locator(
                ".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="Assignments"
            ).first.click()
            page.locator("#refresh_assignments_list").click()
            item = submitted.locator(".list_item", has_text=ASSIGNMENT).first
            item.get_by_role("button", name="Fetch Feedback").click()
            item.get_by_text("(view feedback)").click()
            browser_file = page.locator(".jp-DirListing-item", has_text=f"{NOTEBOOK}.html")
            browser_file.dblclick()
            expect(
                page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=f"{NOTEBOOK}.html")
            ).to_be_visible()
            frame = page.frame_locator("iframe").last
            expect(frame.locator("body")).to_contain_text(
                f"{NOTEBOOK} (Score: {AUTOMATIC_POINTS:.1f} / 32.0)", timeout=30_000
            )
            shots(page, "student-feedback")
        except BaseException:
            for pg in [pg for c in browser.contexts for pg in c.pages]:
                shots(pg, "failure")
            raise
        finally:
            browser.close()
    for path in shots.paths:
        assert path.stat().st_size > 5000, path


def test_grading_from_the_root_shell(deployment):
    """The guide's root-shell steps: collect, grade (in the sandbox, every output), release."""
    d = deployment
    _as_grader(d, "nbgrader", "collect", ASSIGNMENT)
    done = _as_grader(d, "nncourse", "grade", ASSIGNMENT, "--force", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # Two enrolled students: the one who submitted, regraded now, and the classmate, missing.
    assert "regraded now 1" in done.stdout, done.stdout
    assert "graded: 1   missing: 1" in done.stdout, done.stdout
    reports = d["course"] / "reports"
    assert reports.joinpath(f"{ASSIGNMENT}_report.html").stat().st_uid == d["grader"].uid
    assert list((d["course"] / "feedback" / d["student"].name / ASSIGNMENT).glob("*.html"))
    released = _as_grader(d, "nbgrader", "release_feedback", ASSIGNMENT)
    assert d["student"].name in released.stdout + released.stderr


def test_students_cannot_read_the_answers(deployment):
    """As each student: the grader's files are closed, and no line of the answers is readable."""
    d = deployment
    course, exchange = d["course"], d["exchange"]
    closed = [
        ["ls", str(course)],
        ["cat", str(course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb")],
        ["cat", str(course / "gradebook.db")],
        ["ls", str(exchange / COURSE_ID / "inbound")],
        ["ls", str(d["grader"].home)],
        ["ls", str(d["prefix"] / "grader")],
        ["cat", str(d["prefix"] / "etc" / "roster-token")],
        ["ls", str(d["classmate"].home)],
        [str(d["prefix"] / "student" / "bin" / "python"), "-c", "import nncourse"],
    ]
    for command in closed:
        done = ha.run_as(d["student"], command, check=False)
        assert done.returncode != 0, f"the student could run {command}: {done.stdout[:300]}"
    # The scan finds what it looks for: as the grader, the course root's copies of the answers.
    control = _scan_as(d["grader"], roots=[str(course)])
    assert str(course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb") in control, control
    found = _scan_as(d["classmate"])
    print("readable before the install:", sorted(d["readable_before"]))
    added = sorted(set(found) - set(d["readable_before"]))
    assert not added, f"{d['classmate'].name} can read lines of the answers in: {added}"


def test_the_roster_command_fails_loudly_without_the_hub(deployment):
    """With the hub stopped, `as-grader nncourse roster` says so and exits non-zero."""
    d = deployment
    d["hub"].stop()
    done = _as_grader(d, "nncourse", "roster", check=False)
    assert done.returncode == 1
    assert "cannot reach the hub" in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------


def _new_page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(60_000)
    return ctx.new_page()


def _formgrader_action(page, link, success: str) -> None:
    """Click a formgrader action and close its result dialog, which must report success."""
    from playwright.sync_api import expect

    link.click()
    modal = page.locator(".modal:visible")
    expect(modal).to_contain_text(success, timeout=300_000)
    page.wait_for_timeout(500)  # the modal's fade-in
    modal.get_by_role("button", name=re.compile("Close|OK", re.I)).first.click()
    expect(page.locator(".modal-backdrop")).to_have_count(0)


def _cell_index(nb, grade_id: str) -> int:
    for index, cell in enumerate(nb.cells):
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return index
    raise KeyError(grade_id)


def _source_of(nb, grade_id: str) -> str:
    return nb.cells[_cell_index(nb, grade_id)].source


def _type_solutions(page, panel, release) -> dict[str, str]:
    """Type every solution and the written answer into their cells; return what was typed."""
    cells = panel.locator(".jp-Notebook .jp-Cell")
    typed = dict(submissions.correct_cells(ASSIGNMENT))
    for grade_id, source in typed.items():
        hb.type_into_cell(page, cells.nth(_cell_index(release, grade_id)), source)
    written = cells.nth(_cell_index(release, WRITTEN))
    written.scroll_into_view_if_needed()
    written.dblclick()
    hb.type_into_cell(page, written, WRITTEN_ANSWER)
    page.keyboard.press("Shift+Enter")
    typed[WRITTEN] = WRITTEN_ANSWER
    return typed


def _wait_for_run_all(page, tab, notebook_file: Path) -> None:
    """Save until the file shows every code cell executed (Run All has finished)."""

    def finished() -> bool:
        tab.click()
        page.keyboard.press("Control+s")
        page.wait_for_timeout(1500)
        code = [c for c in nbformat.read(notebook_file, 4).cells if c.cell_type == "code"]
        return bool(code) and all(c.get("execution_count") for c in code)

    _wait_for("Run All Cells finishes", finished, timeout=180)


def _answer_lines() -> set[str]:
    """Distinctive lines of the master's solutions, hidden tests and model answer, and of the
    exported reference solutions: none appears in what students are given."""
    master = nbformat.read(ROOT / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    given = nbformat.read(ROOT / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    shown = {line.strip() for cell in given.cells for line in cell.source.splitlines()}
    lines = set()
    for cell in master.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") or meta.get("grade"):
            lines |= {line.strip() for line in cell.source.splitlines()}
    for cell in references.exported(ASSIGNMENT)["solutions"]:
        lines |= {line.strip() for line in cell["source"].splitlines()}
    return {line for line in lines - shown if len(line) >= 24 and "###" not in line}


def _scan_as(account: ha.Account, roots: list[str] = ("/",)) -> list[str]:
    """Files under roots (but /proc, /sys) the account can read that hold a line of the answers."""
    lines = _answer_lines()
    assert len(lines) > 50, len(lines)
    with tempfile.TemporaryDirectory(prefix="nbscan-") as folder:
        patterns = Path(folder) / "patterns"
        patterns.write_text("\n".join(sorted(lines)) + "\n")
        Path(folder).chmod(0o755)
        patterns.chmod(0o644)
        script = (
            f"find {' '.join(map(repr, roots))}"
            f" \\( -path /proc -o -path /sys -o -path {str(patterns)!r} \\) -prune"
            " -o -type f -readable -print0 2>/dev/null"
            f" | xargs -0 -r grep -FIls -f {str(patterns)!r} --"
        )
        done = ha.run_as(
            account, ["/bin/sh", "-c", script], cwd=Path("/"), check=False, timeout=900
        )
    return done.stdout.split()
