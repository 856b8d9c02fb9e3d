"""The whole nbgrader exchange lifecycle with real, separate Linux accounts.

An instructor and three students are created as system users (unique prefix, removed
afterwards), with a temporary exchange set up the way nbgrader's docs say (a world-writable
root; nbgrader creates the course's inbound/outbound/feedback folders itself). Every step runs
as the account it belongs to, through ``runuser`` with that account's HOME and its own
``~/.jupyter/nbgrader_config.py``:

instructor generate_assignment, release_assignment → students fetch_assignment → students
work (nncourse.submissions) → ann submits a blank notebook, bob a partly wrong one, the due
date passes, ann submits a correct one; cat submits nothing → instructor collect →
``nncourse grade`` as the instructor, with the bubblewrap sandbox (cgroups delegated to the
instructor) → release_feedback → students fetch_feedback.

Runs in about a minute on two cores.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import tempfile
import textwrap
from pathlib import Path

import hub_accounts as ha
import nbformat
import pytest
from nbgrader.api import Gradebook, MissingEntry

from nncourse import submissions
from nncourse.course import MISTAKES

ROOT = Path(__file__).resolve().parent.parent
COURSE_ID = "nn-fundamentals"
ASSIGNMENT = "simple_nn"
NOTEBOOK = "simple_neural_network"
MISTAKE = MISTAKES / "fails_backprop_one_hidden_sums_gradients.py"
NBGRADER = str(ha.VENV_BIN / "nbgrader")
NNCOURSE = str(ha.VENV_BIN / "nncourse")
PYTHON = str(ha.VENV_BIN / "python")

pytestmark = [pytest.mark.kernels, pytest.mark.sandbox, pytest.mark.root]


def _utc_now() -> str:
    return submissions.timestamp(datetime.datetime.now(datetime.UTC))


# A probe run as one student: each attempt on another student's files prints its outcome.
PROBE = textwrap.dedent(
    """
    import json, os, sys
    out = {}
    def attempt(name, fn):
        try:
            fn()
            out[name] = "allowed"
        except PermissionError:
            out[name] = "PermissionError"
        except OSError as err:
            out[name] = type(err).__name__
    targets = json.loads(sys.argv[1])
    attempt("list inbound", lambda: os.listdir(targets["inbound"]))
    attempt("list feedback", lambda: os.listdir(targets["feedback"]))
    attempt("append to other's submitted notebook",
            lambda: open(targets["other_notebook"], "a").close())
    attempt("write other's submission timestamp",
            lambda: open(targets["other_timestamp"], "w").close())
    attempt("overwrite released feedback",
            lambda: open(targets["other_feedback"], "w").close())
    attempt("change the release",
            lambda: open(os.path.join(targets["outbound"], "x.txt"), "w").close())
    attempt("read other's home", lambda: os.listdir(targets["other_home"]))
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def lifecycle():
    """Run the whole lifecycle once; yield what each step produced. Cleans up on failure too."""
    accounts = ha.Accounts(ha.unique_prefix("nx"))
    base = Path(tempfile.mkdtemp(prefix="nbx-", dir="/tmp"))
    cgroups = traversal = None
    try:
        os.chmod(base, 0o755)
        exchange = base / "exchange"
        exchange.mkdir()
        # nbgrader's documented set-up: `mkdir -p <root>; chmod ugo+rw <root>` (0777).
        os.chmod(exchange, 0o777)

        everyone = accounts.group("course")
        instructor = accounts.add("inst", groups=[everyone])
        students = {name: accounts.add(name, groups=[everyone]) for name in ("ann", "bob", "cat")}
        traversal = ha.Traversal.grant(everyone, ha.closed_ancestors())
        user_config = textwrap.dedent(
            f"""
            c = get_config()
            c.CourseDirectory.course_id = {COURSE_ID!r}
            c.Exchange.root = {str(exchange)!r}
            c.Exchange.path_includes_course = True
            """
        )
        for account in (instructor, *students.values()):
            ha.write_user_config(account, user_config)

        # The course root, as an instructor keeps it: the course's sources and config.
        course = base / "course"
        course.mkdir()
        shutil.copytree(ROOT / "source", course / "source")
        shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
        ha.chown_tree(course, instructor)

        def nbgrader(account, *args, **kw):
            return ha.run_as(account, [NBGRADER, *args], **kw)

        # Roster: the gradebook knows all three students, so cat shows up as missing.
        roster = base / "roster.csv"
        roster.write_text(
            "id,first_name,last_name\n"
            + "".join(f"{s.name},{key.title()},Student\n" for key, s in students.items())
        )
        os.chmod(roster, 0o644)
        nbgrader(instructor, "generate_assignment", ASSIGNMENT, "--force", cwd=course)
        nbgrader(instructor, "db", "student", "import", str(roster), cwd=course)
        nbgrader(instructor, "release_assignment", ASSIGNMENT, cwd=course)

        fetched = {}
        for key, s in students.items():
            nbgrader(s, "fetch_assignment", ASSIGNMENT)
            fetched[key] = s.home / COURSE_ID / ASSIGNMENT / f"{NOTEBOOK}.ipynb"

        release_nb = nbformat.read(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
        mistake = submissions.parse_fixture(MISTAKE)
        correct = submissions.fill(release_nb, submissions.correct_cells(ASSIGNMENT))
        wrong = submissions.fill(release_nb, submissions.student_cells(ASSIGNMENT, mistake))

        def work(key, nb):
            """The student saves a notebook over the fetched one (written as the student)."""
            ha.run_as(students[key], ["/usr/bin/tee", str(fetched[key])], input=nbformat.writes(nb))

        def submit(key):
            nbgrader(students[key], "submit", ASSIGNMENT)
            cache = students[key].home / ".local/share/jupyter/nbgrader_cache" / COURSE_ID
            stamps = sorted(p.read_text() for p in cache.glob(f"*+{ASSIGNMENT}+*/timestamp.txt"))
            return stamps[-1]

        stamps = {}
        stamps["ann first"] = submit("ann")  # the untouched release: would score 0
        work("bob", wrong)
        stamps["bob"] = submit("bob")
        # The due date passes: ann's second, correct submission is late.
        duedate = _utc_now()
        nbgrader(
            instructor, "db", "assignment", "add", ASSIGNMENT, f"--duedate={duedate}", cwd=course
        )
        work("ann", correct)
        stamps["ann second"] = submit("ann")

        inbound = exchange / COURSE_ID / "inbound"
        inbound_names = sorted(p.name for p in inbound.iterdir())

        nbgrader(instructor, "collect", ASSIGNMENT, cwd=course)

        # Grading as the (non-root) instructor in the sandbox: the sandbox needs a pids
        # cgroup it may write, so the instructor gets one delegated, as systemd's
        # Delegate=yes would give a grading service.
        cgroups = ha.DelegatedCgroups.create(f"{accounts.prefix}-grader", instructor)
        graded = ha.run_as(
            instructor,
            [NNCOURSE, "grade", ASSIGNMENT, "--jobs", "2"],
            cwd=course,
            wrap=cgroups.wrap(),
            check=False,
            timeout=170,
        )
        assert graded.returncode in (0, 3), graded.stdout[-3000:] + graded.stderr[-3000:]
        # The same instructor without a delegated cgroup: the sandbox refuses, saying why.
        undelegated = ha.run_as(
            instructor,
            [PYTHON, "-c", "from nncourse.sandbox import check_sandbox; check_sandbox()"],
            cwd=course,
            check=False,
        )

        released_first = nbgrader(
            instructor, "release_feedback", ASSIGNMENT, cwd=course, check=False
        )
        released = released_first
        fetched_feedback = {
            key: nbgrader(s, "fetch_feedback", ASSIGNMENT, check=False)
            for key, s in students.items()
        }

        feedback_folder = exchange / COURSE_ID / "feedback"
        feedback_files = sorted(feedback_folder.glob("*.html")) if released.returncode == 0 else []
        submitted_ann = [p for p in inbound.iterdir() if p.name.startswith(students["ann"].name)]
        probe_targets = {
            "inbound": str(inbound),
            "feedback": str(feedback_folder),
            "other_notebook": str(sorted(submitted_ann)[0] / f"{NOTEBOOK}.ipynb"),
            "other_timestamp": str(sorted(submitted_ann)[0] / "timestamp.txt"),
            "other_feedback": str(feedback_files[0]) if feedback_files else "/nonexistent",
            "outbound": str(exchange / COURSE_ID / "outbound" / ASSIGNMENT),
            "other_home": str(students["ann"].home),
        }
        probe = ha.run_as(students["bob"], [PYTHON, "-c", PROBE, json.dumps(probe_targets)])

        yield {
            "accounts": accounts,
            "instructor": instructor,
            "students": students,
            "exchange": exchange,
            "course": course,
            "mistake": mistake,
            "stamps": stamps,
            "duedate": duedate,
            "inbound_names": inbound_names,
            "graded": graded,
            "undelegated": undelegated,
            "released": released,
            "released_first": released_first,
            "fetched_feedback": fetched_feedback,
            "probe": json.loads(probe.stdout),
        }
    finally:
        if cgroups is not None:
            cgroups.remove()
        if traversal is not None:
            traversal.revoke()
        problems = accounts.remove()
        shutil.rmtree(base, ignore_errors=True)
        assert not problems, problems


def _gradebook(course: Path) -> Gradebook:
    return Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id=COURSE_ID)


def test_submissions_reach_the_exchange_with_unguessable_names(lifecycle):
    """ann submits twice, bob once, cat never; each name ends in a random string."""
    names = lifecycle["inbound_names"]
    students = lifecycle["students"]
    owners = sorted(name.split("+")[0] for name in names)
    assert owners == sorted([students["ann"].name] * 2 + [students["bob"].name])
    for name in names:
        user, assignment, stamp, random_part = name.split("+")
        assert assignment == ASSIGNMENT
        assert len(random_part) == 12  # base64 of 9 random bytes (ExchangeSubmit.add_random_string)


def test_collect_takes_the_latest_submission(lifecycle):
    """nbgrader collect keeps each student's most recent submission; cat has none."""
    submitted = lifecycle["course"] / "submitted"
    students = lifecycle["students"]
    assert sorted(p.name for p in submitted.iterdir()) == sorted(
        [students["ann"].name, students["bob"].name]
    )
    ann = submitted / students["ann"].name / ASSIGNMENT
    assert (ann / "timestamp.txt").read_text() == lifecycle["stamps"]["ann second"]
    assert lifecycle["stamps"]["ann first"] < lifecycle["stamps"]["ann second"]


def test_each_student_gets_their_own_grade(lifecycle):
    """ann (latest: correct) full automatic marks, late without penalty; bob loses the mistake's
    cells. Neither answers the written question, a markdown cell that only a person scores."""
    students = lifecycle["students"]
    with _gradebook(lifecycle["course"]) as gb:
        cells = gb.find_notebook(NOTEBOOK, ASSIGNMENT).grade_cells
        maximum = sum(cell.max_score for cell in cells if cell.cell_type == "code")
        assert maximum < gb.find_assignment(ASSIGNMENT).max_score
        lost = sum(
            gb.find_grade_cell(cell, NOTEBOOK, ASSIGNMENT).max_score
            for cell in lifecycle["mistake"].loses
        )
        ann = gb.find_submission(ASSIGNMENT, students["ann"].name)
        bob = gb.find_submission(ASSIGNMENT, students["bob"].name)
        assert ann.score == pytest.approx(maximum)
        assert bob.score == pytest.approx(maximum - lost)
        assert lost > 0
        # nbgrader's lateness: the submission's timestamp against the due date; the default
        # LateSubmissionPlugin (penalty_method "none") takes no points off.
        assert ann.total_seconds_late > 0
        assert ann.late_submission_penalty == 0
        assert bob.total_seconds_late == 0
        with pytest.raises(MissingEntry):  # cat never submitted
            gb.find_submission(ASSIGNMENT, students["cat"].name)
    summary = lifecycle["graded"].stdout
    assert students["cat"].name in summary or "missing" in summary


def test_grading_runs_sandboxed_as_the_instructor(lifecycle):
    """nncourse grade, as a non-root instructor with a delegated cgroup, grades both students."""
    out = lifecycle["graded"].stdout
    assert "graded: 2" in out, out  # ann and bob; cat is missing
    for status in ("crashed", "timed out", "ungradable"):
        assert status not in out, out


def test_sandbox_without_a_delegated_cgroup_says_why(lifecycle):
    """Without a cgroup of their own, a non-root grader's sandbox refuses to start, and says why."""
    done = lifecycle["undelegated"]
    assert done.returncode != 0
    assert "SandboxUnavailable" in done.stderr
    assert "no writable cgroup with a pids controller" in done.stderr


def test_grading_flags_nothing_that_nbgrader_put_there(lifecycle):
    """Files the release shipped and nbgrader submit adds are not 'extra files' of the student."""
    assert lifecycle["graded"].returncode == 0
    assert "submitted an extra file" not in lifecycle["graded"].stdout


def test_feedback_is_released_as_graded(lifecycle):
    """nbgrader release_feedback publishes the feedback nncourse grade wrote, as it wrote it."""
    released = lifecycle["released_first"]
    assert released.returncode == 0, released.stderr[-3000:]


def test_feedback_is_released_with_the_secret(lifecycle):
    """With submission_secret.txt beside the feedback, release_feedback publishes both pages."""
    released = lifecycle["released"]
    assert released.returncode == 0, released.stderr[-3000:]
    assert len(list((lifecycle["exchange"] / COURSE_ID / "feedback").glob("*.html"))) == 2


def test_each_student_fetches_exactly_their_own_feedback(lifecycle):
    """ann and bob each fetch one page, of their own latest submission; cat gets none."""
    students = lifecycle["students"]
    course = lifecycle["course"]
    pages = {}
    for key, s in students.items():
        folder = s.home / COURSE_ID / ASSIGNMENT / "feedback"
        pages[key] = sorted(folder.glob("*/*.html")) if folder.exists() else []
    assert pages["cat"] == []
    for key in ("ann", "bob"):
        assert len(pages[key]) == 1, (key, lifecycle["fetched_feedback"][key].stderr[-2000:])
        page = pages[key][0]
        own = course / "feedback" / students[key].name / ASSIGNMENT / f"{NOTEBOOK}.html"
        assert page.read_bytes() == own.read_bytes()
    assert pages["ann"][0].parent.name == lifecycle["stamps"]["ann second"]
    assert pages["bob"][0].parent.name == lifecycle["stamps"]["bob"]
    assert pages["ann"][0].read_bytes() != pages["bob"][0].read_bytes()


def test_no_student_can_reach_another_students_work(lifecycle):
    """As bob: listing the inbox or the feedback folder, or changing ann's files, is refused."""
    probe = lifecycle["probe"]
    assert probe == {
        "list inbound": "PermissionError",
        "list feedback": "PermissionError",
        "append to other's submitted notebook": "PermissionError",
        "write other's submission timestamp": "PermissionError",
        "overwrite released feedback": "PermissionError",
        "change the release": "PermissionError",
        "read other's home": "PermissionError",
    }


def test_exchange_permissions_are_nbgraders(lifecycle):
    """The course folders nbgrader made: inbound write-only for others (setgid), feedback x-only."""
    course = lifecycle["exchange"] / COURSE_ID
    modes = {
        name: stat.S_IMODE((course / name).stat().st_mode)
        for name in ("inbound", "outbound", "feedback")
    }
    assert modes["inbound"] == 0o2733
    assert modes["outbound"] == 0o755
    assert modes["feedback"] & 0o077 == 0o011
    owner = lifecycle["instructor"].uid
    assert all((course / name).stat().st_uid == owner for name in modes)
