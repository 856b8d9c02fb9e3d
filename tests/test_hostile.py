"""Hostile and broken submissions, graded in one batch inside the real sandbox.

Each case is a student who tries to read what they should not, forge a grade, escape, switch
the tests off or break the grader. Every case must end with its expected score and status,
flagged for a human where it tried something, and the batch must leave nothing behind.
"""

import copy
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from nncourse import grade, submissions, workflow

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "fixtures" / "hostile"
MISTAKES = ROOT / "tests" / "fixtures" / "mistakes"
ASSIGNMENT = "simple_nn"
NOTEBOOK = "simple_neural_network.ipynb"
NBGRADER = str(Path(sys.executable).parent / "nbgrader")
# Short limits keep the endless loops short: 5 s a cell, 40 s a kernel.
CONFIG = "\nc.Execute.timeout = 5\nc.SandboxedKernelManager.time_limit = 40\n"
WRONG_RELU = "fails_relu_derivative_one_at_zero"  # loses relu_derivative, 1 point


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


def cells_with(*fixtures: str, **replace: str) -> dict[str, str]:
    """The reference cells, with mistakes of the catalogue and some cells replaced."""
    cells = submissions.correct_cells(ASSIGNMENT)
    for name in fixtures:
        fixture = submissions.parse_fixture(MISTAKES / f"{name}.py")
        cells[fixture.cell] = fixture.source
    return {**cells, **replace}


def grade_cell(nb, grade_id: str):
    """The cell of a notebook with this grade id."""
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def structural_cases(release) -> dict:
    """Cases that change the notebook's structure rather than the code: name -> notebook."""
    wrong = submissions.fill(release, cells_with(WRONG_RELU))
    right = submissions.fill(release, cells_with())
    cases = {}

    nb = copy.deepcopy(wrong)
    grade_cell(nb, "relu_derivative").source = "pass"
    cases["edits_grade_cell"] = nb

    nb = copy.deepcopy(wrong)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.source = ""
    cases["blanks_every_grade_cell"] = nb

    nb = copy.deepcopy(wrong)
    nb.cells.remove(grade_cell(nb, "relu_derivative"))
    cases["deletes_grade_cell"] = nb

    nb = copy.deepcopy(wrong)
    grade_cell(nb, "relu_derivative").metadata.nbgrader.update(
        grade=False, locked=False, solution=True
    )
    cases["retypes_grade_cell"] = nb

    nb = copy.deepcopy(wrong)
    grade_cell(nb, "relu_derivative").metadata.nbgrader["grade_id"] = "relu_values"
    cases["repoints_grade_cell"] = nb

    nb = copy.deepcopy(right)
    nb.cells.append(copy.deepcopy(grade_cell(nb, "tanh_values")))
    cases["duplicates_grade_cell"] = nb

    nb = copy.deepcopy(wrong)
    grade_cell(nb, "relu_derivative").metadata.nbgrader["points"] = 100
    cases["raises_points"] = nb

    nb = copy.deepcopy(right)
    for cell in nb.cells:
        if "nbgrader" in cell.metadata:
            cell.metadata.nbgrader["schema_version"] = 99
    cases["unknown_schema_version"] = nb

    # Runs backprop's first grade cell before the activations' own, to keep the stand-ins it is
    # handed and answer the activations' cells with them.
    stolen = cells_with(
        logistic="def logistic(x, deriv=False):\n    return STOLEN['logistic'](x, deriv)\n",
        backprop_one_hidden="STOLEN = {}\n\n"
        + cells_with()["backprop_one_hidden"].replace(
            "    m = len(x)\n",
            "    for f in act_fs:\n        STOLEN.setdefault(f.__name__, f)\n    m = len(x)\n",
            1,
        ),
    )
    nb = submissions.fill(release, stolen)
    moved = [grade_cell(nb, "backprop_one_hidden"), grade_cell(nb, "backprop_one_hidden_step")]
    for cell in moved:
        nb.cells.remove(cell)
    nb.cells[2:2] = moved
    cases["reorders_grade_cells"] = nb

    # A cell of the student's own, marked locked as if it came from the release, so that a scan
    # that trusted the submission's metadata would skip it.
    nb = copy.deepcopy(wrong)
    hook = "get_ipython().events.register('pre_run_cell', lambda *a: get_ipython().displayhook(3))"
    locked = nbformat.v4.new_code_cell(hook, metadata={"nbgrader": {"locked": True}})
    nb.cells.insert(nb.cells.index(grade_cell(nb, "relu_values")), locked)
    cases["own_cell_marked_locked"] = nb

    nb = copy.deepcopy(wrong)
    markdown = nbformat.v4.new_markdown_cell(
        "all good", metadata=grade_cell(nb, "relu_derivative").metadata
    )
    nb.cells[nb.cells.index(grade_cell(nb, "relu_derivative"))] = markdown
    cases["grade_cell_turned_markdown"] = nb
    return cases


EXTRA_FILES = {
    # name -> (files beside the notebook, expected score, flag)
    "submits_numpy_py": (
        {"numpy.py": "allclose = lambda *a, **k: True\nprint('HIJACK')\n"},
        27,
        "submitted an extra file numpy.py",
    ),
    "submits_kernel_launcher": (
        {"ipykernel_launcher.py": "print('HIJACK')\n"},
        27,
        "submitted an extra file ipykernel_launcher.py",
    ),
    "submits_grading_package": (
        {"nncourse/__init__.py": "", "nncourse/checks.py": "print('HIJACK')\n"},
        27,
        "submitted an extra file nncourse/checks.py",
    ),
}


def expectations() -> dict[str, tuple[int, str, str]]:
    """Every case: (score, status, flag substring or '')."""
    found = {}
    for path in sorted(HOSTILE.glob("*.py")):
        fields = header(path)
        found[path.stem] = (int(fields["score"]), fields["status"], fields["flag"])
    for name, (_, score, flag) in EXTRA_FILES.items():
        found[name] = (score, "graded", flag)
    found["broken_json"] = (0, "ungradable", "")
    return found


STRUCTURAL_EXPECTED = {
    "edits_grade_cell": (27, "graded", "edited read-only cell relu_derivative"),
    "blanks_every_grade_cell": (27, "graded", "edited read-only cell relu_values"),
    "deletes_grade_cell": (27, "graded", "deleted cell relu_derivative"),
    "retypes_grade_cell": (27, "graded", "cell relu_derivative changed type"),
    "repoints_grade_cell": (27, "graded", "duplicated cell relu_values"),
    "duplicates_grade_cell": (28, "graded", "duplicated cell tanh_values"),
    "raises_points": (27, "graded", "claims 100 points instead of 1"),
    "unknown_schema_version": (28, "graded", "schema version 99"),
    "grade_cell_turned_markdown": (27, "graded", "cell relu_derivative changed type"),
    "reorders_grade_cells": (13, "graded", "reordered the grade cells"),
    "own_cell_marked_locked": (27, "graded", "uses IPython's shell"),
}
CASES = {**expectations(), **STRUCTURAL_EXPECTED}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Every hostile case as one student of one class, graded in one batch."""
    course = tmp_path_factory.mktemp("hostile")
    shutil.copytree(ROOT / "source", course / "source")
    (course / "nbgrader_config.py").write_text((ROOT / "nbgrader_config.py").read_text() + CONFIG)
    subprocess.run(
        [NBGRADER, "generate_assignment", ASSIGNMENT], cwd=course, check=True, capture_output=True
    )
    release = submissions.read_release(course, ASSIGNMENT)
    for path in sorted(HOSTILE.glob("*.py")):
        fields = header(path)
        also = [fields["also"]] if "also" in fields else []
        cells = cells_with(*also, **{fields["cell"]: path.read_text()})
        submissions.write_submission(
            course, path.stem, ASSIGNMENT, submissions.fill(release, cells)
        )
    for name, nb in structural_cases(release).items():
        nbformat.write(nb, _submission_path(course, name))
    for name, (files, *_) in EXTRA_FILES.items():
        submissions.write_submission(
            course, name, ASSIGNMENT, submissions.fill(release, cells_with(WRONG_RELU))
        )
        for relative, text in files.items():
            target = _submission_path(course, name).parent / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    _submission_path(course, "broken_json").write_text('{"cells": [')
    run = workflow.grade_and_report(course, jobs=2, progress=False)
    return course, {r.student: r for r in run.results}


def _submission_path(course: Path, student: str) -> Path:
    """Where a student's notebook goes in submitted/."""
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    return folder / NOTEBOOK


def test_the_suite_has_at_least_45_cases():
    assert len(CASES) >= 45


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_meets_its_expectation(batch, case):
    _, results = batch
    score, status, flag = CASES[case]
    result = results[case]
    assert (result.score, result.status) == (score, status), (result.reason, result.flags)
    if flag:
        assert any(flag in f for f in result.flags), result.flags


def test_no_wrong_solution_gains_a_point(batch):
    _, results = batch
    assert all(r.score <= 28 for r in results.values())
    for case, (score, _, _) in CASES.items():
        assert results[case].score <= score


def test_no_student_process_survives_the_batch(batch):
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"nncourse-hostile-marker" in cmdline or b"sleep 4242" in cmdline:
            left.append(cmdline.decode(errors="replace"))
    assert left == []


def test_gradebook_holds_exactly_the_expected_grades(batch):
    course, results = batch
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for submission in gb.assignment_submissions(ASSIGNMENT):
            assert submission.score == CASES[submission.student.id][0], submission.student.id
            for notebook in submission.notebooks:
                assert all(g.manual_score is None for g in notebook.grades), submission.student.id


def test_nothing_was_written_outside_the_sandbox(batch):
    course, _ = batch
    assert not (course / "hostile_was_here.txt").exists()
    assert not Path("/work/hostile_was_here.txt").exists()
    assert not Path("/root/hostile_was_here.txt").exists()


def test_reading_the_course_was_blocked(batch):
    course, _ = batch
    for case in ["reads_master_notebook", "reads_gradebook_and_solutions", "writes_gradebook"]:
        printed = outputs(course, case)
        assert "blocked:" in printed
        assert "BEGIN HIDDEN TESTS" not in printed
        assert "forged" not in printed
    assert "others: []" in outputs(course, "reads_other_students")


def outputs(course: Path, student: str) -> str:
    """Everything a student's autograded notebook printed."""
    nb = nbformat.read(course / "autograded" / student / ASSIGNMENT / NOTEBOOK, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def _region_lines(nb, region: str) -> set[str]:
    """The stripped lines between a notebook's BEGIN and END markers of region."""
    found = set()
    for cell in nb.cells:
        for block in re.findall(f"BEGIN {region}(.*?)END {region}", cell.source, re.S):
            found |= {line.strip() for line in block.splitlines() if line.strip()}
    return found


def _own_code(path: Path) -> str:
    """What a student submitted: the sources of their notebook's cells, or its raw text."""
    try:
        return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    except Exception:  # noqa: BLE001 - an unreadable notebook is compared as text
        return path.read_text(errors="replace")


def test_feedback_holds_no_hidden_test_or_solution_line(batch):
    """No feedback shows a line of a hidden block, or of a solution the student did not write."""
    course, _ = batch
    source = nbformat.read(ROOT / "source" / ASSIGNMENT / NOTEBOOK, as_version=4)
    hidden, solutions = _region_lines(source, "HIDDEN TESTS"), _region_lines(source, "SOLUTION")
    markers = [
        "BEGIN HIDDEN TESTS",
        "BEGIN SOLUTION",
        "END SOLUTION",
        "[details for the instructor]",
    ]
    pages = sorted((course / "feedback").glob(f"*/{ASSIGNMENT}/*.html"))
    assert len(pages) > 30
    for page in pages:
        student = page.parts[-3]
        own = _own_code(_submission_path(course, student))
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        secrets = [*markers, *hidden, *(line for line in solutions if line not in own)]
        leaked = [s for s in secrets if s in text]
        assert leaked == [], f"{student} shows {leaked[:2]}"


def test_summary_flags_every_tampering_case(batch):
    _, results = batch
    summary = grade.summary(list(results.values()))
    for case, (_, _, flag) in CASES.items():
        if flag:
            assert case in summary
