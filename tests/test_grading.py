"""Real autograding of the reference, a blank release and every catalogued mistake.

One session-wide run (the ``graded`` fixture) builds a course in a tmp dir, runs
``nbgrader generate_assignment``, lays out one submission per student and runs the real
``nbgrader autograde`` (one batch per CPU, at most two, each in its own course copy with its
own SQLite gradebook, since nbgrader has no parallel autograde). The tests then read each
grade cell's points from the gradebooks and the messages from the autograded notebooks.

Each file of ``nncourse/course/mistakes/`` is one student's code for one solution cell (see
``nncourse.submissions``): it must score 0 in exactly the grade cells its header lists under
``loses`` and full points everywhere else, so a mistake costs points once ("no double
jeopardy"), and the texts under ``shows`` must appear in the named cells' output.

Under pytest-xdist the first worker that needs the results builds them while holding a lock;
the other workers wait for it and read them from the session's shared tmp dir.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nncourse import references, submissions
from nncourse.course import MISTAKES, checks

ASSIGNMENT = "simple_nn"
ROOT = Path(__file__).resolve().parents[1]
SOURCE_NOTEBOOK = ROOT / "source" / ASSIGNMENT / "simple_neural_network.ipynb"
FIXTURES_DIR = MISTAKES
# The nbgrader of the interpreter running the tests (.venv/bin/nbgrader under `make test`).
BIN = Path(sys.executable).parent
NBGRADER = str(BIN / "nbgrader")

REFERENCE = "passes_reference"
BLANK = "blank"

#: Grade cell -> points, as the master notebook should define them.
EXPECTED_POINTS = {
    "logistic_values": 1,
    "logistic_derivative": 1,
    "tanh_values": 1,
    "tanh_derivative": 1,
    "relu_values": 1,
    "relu_derivative": 1,
    "cross_entropy_value": 1,
    "cross_entropy_derivative": 1,
    "mean_squared_error_value": 1,
    "mean_squared_error_derivative": 1,
    "gradient_descent_step": 2,
    "gradient_descent_training": 2,
    "forward_pass_one_hidden_values": 2,
    "backprop_one_hidden_step": 3,
    "backprop_one_hidden_training": 2,
    "forward_pass_any_depth_values": 2,
    "backprop_any_depth_step": 3,
    "backprop_any_depth_training": 2,
    "init_params_breaks_symmetry": 2,
    "written_gradient_of_W1": 2,
}
TOTAL_POINTS = sum(EXPECTED_POINTS.values())  # 32
#: Written answers: a person scores them in the formgrader; autograding never does.
WRITTEN = {"written_gradient_of_W1"}
AUTO_POINTS = TOTAL_POINTS - sum(EXPECTED_POINTS[cell] for cell in WRITTEN)  # 30
#: The reference student's written answer, which waits for a person.
REFERENCE_ANSWER = r"The gradient is $\frac{1}{m} X^\top \delta_1$, averaged because C is a mean."

SOLUTION_CELLS = (
    "logistic",
    "tanh",
    "relu",
    "cross_entropy",
    "mean_squared_error",
    "gradient_descent",
    "forward_pass_one_hidden",
    "backprop_one_hidden",
    "forward_pass_any_depth",
    "backprop_any_depth",
    "init_params",
)

FIXTURES = submissions.load_fixtures(FIXTURES_DIR)
FIXTURE_IDS = [fixture.name for fixture in FIXTURES]

#: A student who makes one mistake in every function at once, chosen among those that would
#: spread furthest without the hidden tests' isolation (wrong values, mutated inputs, ...).
#: It must lose exactly the union of their cells: the mistakes do not add up downstream.
MIXED = "fails_one_mistake_in_every_function"
MIXED_FIXTURES = (
    "fails_logistic_flipped_exponent_sign",
    "fails_tanh_rescaled_logistic_without_factor_2",
    "fails_relu_modifies_input_in_place",
    "fails_cross_entropy_derivative_y_pred_minus_y",
    "fails_mean_squared_error_leading_minus",
    "fails_gradient_descent_seed_recipe",
    "fails_forward_pass_one_hidden_activations_swapped",
    "fails_backprop_one_hidden_cross_entropy_shortcut",
    "fails_forward_pass_any_depth_includes_input",
    "fails_backprop_any_depth_forward_pass_after_update",
    "fails_init_params_same_weights_for_every_unit",
)

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Feedback shows a hidden test's message only up to this mark (see nncourse.comparisons).
DETAILS_MARK = getattr(checks, "DETAILS_MARK", "[details for the instructor]")


# ---------------------------------------------------------------------------------------------
# Building and grading the class


pytestmark = [pytest.mark.kernels, pytest.mark.sandbox]


def _environment(scratch: Path) -> dict[str, str]:
    """Environment for nbgrader: this venv first on PATH, no developer Jupyter/IPython config."""
    for name in ("jupyter-config", "ipython"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            # nbgrader runs `alembic` from PATH when it creates a gradebook.
            "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
            # A developer's ~/.jupyter/nbgrader_config.py must not change the grading.
            "JUPYTER_CONFIG_DIR": str(scratch / "jupyter-config"),
            "IPYTHONDIR": str(scratch / "ipython"),
            # debugpy in ipykernel warns about frozen modules on every kernel start.
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
    )
    return env


def _nbgrader_args(course: Path, *args: str) -> list[str]:
    """An nbgrader command line pinned to this course root and its own gradebook."""
    return [
        NBGRADER,
        *args,
        f"--CourseDirectory.root={course}",
        f"--CourseDirectory.db_url=sqlite:///{course / 'gradebook.db'}",
    ]


def run_nbgrader(course: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run nbgrader in the course root and return the finished process (output captured)."""
    return subprocess.run(
        _nbgrader_args(course, *args),
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )


def make_course(course: Path) -> None:
    """Lay out a course: this assignment's source and the course's nbgrader_config.py."""
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    shutil.copytree(ROOT / "source" / ASSIGNMENT, course / "source" / ASSIGNMENT, ignore=ignore)
    config = ROOT / "nbgrader_config.py"
    if config.is_file():
        shutil.copy2(config, course / "nbgrader_config.py")
    else:
        (course / "nbgrader_config.py").write_text(
            "c = get_config()  # noqa: F821\n"
            'c.CourseDirectory.course_id = "nn-fundamentals"\n'
            'c.CourseDirectory.solution_directory = "solutions"\n'
        )


def class_notebooks(release: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """Every student's submission: the reference, the untouched release and one per fixture."""
    reference = submissions.fill(release, submissions.correct_cells(ASSIGNMENT))
    for grade_id in WRITTEN:
        submissions.answer(reference, grade_id, REFERENCE_ANSWER)
    students = {REFERENCE: reference, BLANK: submissions.fill(release, {})}
    for fixture in FIXTURES:
        students[fixture.name] = submissions.fill(
            release, submissions.student_cells(ASSIGNMENT, fixture)
        )
    mixed = submissions.correct_cells(ASSIGNMENT)
    for fixture in _mixed_fixtures():
        mixed[fixture.cell] = fixture.source
    students[MIXED] = submissions.fill(release, mixed)
    return students


def _mixed_fixtures() -> list[submissions.Fixture]:
    """The fixtures that make up the MIXED student."""
    by_name = {fixture.name: fixture for fixture in FIXTURES}
    return [by_name[name] for name in MIXED_FIXTURES if name in by_name]


def _cell_text(cell: nbformat.NotebookNode, *, full: bool) -> str:
    """What a code cell showed as text: streams, results and errors.

    With full=False, only what a student reads as the message: an error's type and message
    up to the details meant for the instructor, without the traceback (whose code context
    would also quote the messages of asserts that did not fail).
    """
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue.split(DETAILS_MARK)[0]}")
            if full:
                parts.extend(output.traceback)
        elif "text/plain" in output.get("data", {}):
            parts.append(output.data["text/plain"])
    return _ANSI_RE.sub("", "\n".join(parts))


def _outputs(path: Path, *, full: bool) -> dict[str, str]:
    """{grade id: text output} of the nbgrader cells of an autograded notebook."""
    nb = nbformat.read(path, as_version=4)
    texts = {}
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id and cell.cell_type == "code":
            texts[grade_id] = _cell_text(cell, full=full)
    return texts


def _read_grades(course: Path, students: list[str]) -> dict[str, Any]:
    """{student: {"total", "cells": {grade id: [score, max, needs manual]}}} from the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    found: dict[str, Any] = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student in students:
            try:
                submission = gradebook.find_submission(ASSIGNMENT, student)
            except MissingEntry:
                continue
            cells = {}
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    cells[grade.name] = [grade.score, grade.max_score, grade.needs_manual_grade]
            found[student] = {
                "total": submission.score,
                "max": submission.max_score,
                "cells": cells,
            }
    return found


def build_graded_class(workdir: Path) -> dict[str, Any]:
    """Generate the assignment, submit every student, autograde in parallel batches."""
    started = time.monotonic()
    env = _environment(workdir / "scratch")
    # Build matplotlib's font cache now, so no kernel logs "building the font cache".
    import matplotlib.font_manager  # noqa: F401

    base = workdir / "base"
    make_course(base)
    generated = run_nbgrader(base, "generate_assignment", ASSIGNMENT, env=env)
    assert generated.returncode == 0, f"generate_assignment failed:\n{generated.stderr[-3000:]}"
    release = submissions.read_release(base, ASSIGNMENT)
    students = class_notebooks(release)

    jobs = max(1, min(2, len(os.sched_getaffinity(0))))
    names = sorted(students)
    batches = [names[index::jobs] for index in range(jobs)]
    processes = []
    for index, batch in enumerate(batches):
        course = workdir / f"batch{index}"
        # The release and the gradebook (with the grade cells' sources) come along.
        shutil.copytree(base, course)
        for student in batch:
            submissions.write_submission(course, student, ASSIGNMENT, students[student])
        log = (course / "autograde.log").open("w")
        process = subprocess.Popen(
            _nbgrader_args(course, "autograde", ASSIGNMENT),
            cwd=course,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append((course, batch, process, log))

    autograde_started = time.monotonic()
    results: dict[str, Any] = {
        "students": {},
        "outputs": {},
        "messages": {},
        "autograded": {},
        "errors": [],
    }
    try:
        returncodes = [process.wait(timeout=1800) for _, _, process, _ in processes]
    finally:
        for _, _, process, log in processes:
            if process.poll() is None:  # only after a timeout or an interrupt
                process.kill()
                process.wait()
            log.close()
    for (course, batch, _, _), returncode in zip(processes, returncodes, strict=True):
        if returncode != 0:
            tail = (course / "autograde.log").read_text()[-5000:]
            results["errors"].append(f"nbgrader autograde in {course} exited {returncode}:\n{tail}")
        results["students"].update(_read_grades(course, batch))
        for student in batch:
            folder = course / "autograded" / student / ASSIGNMENT
            notebooks = sorted(folder.glob("*.ipynb"))
            results["autograded"][student] = [str(path) for path in notebooks]
            if notebooks:
                results["outputs"][student] = _outputs(notebooks[0], full=True)
                results["messages"][student] = _outputs(notebooks[0], full=False)
    results["base"] = str(base)
    results["submitted"] = names
    results["seconds"] = {
        "setup": round(autograde_started - started, 1),
        "autograde": round(time.monotonic() - autograde_started, 1),
        "jobs": jobs,
        "students": len(names),
    }
    print(f"\nautograded {len(names)} students in {jobs} batches: {results['seconds']}")
    return results


@pytest.fixture(scope="session")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The autograde results of the whole class, computed once per test session."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build_graded_class(tmp_path_factory.mktemp("grading"))
    # pytest-xdist: every worker has its own basetemp under the session's shared one.
    shared = tmp_path_factory.getbasetemp().parent / "test_grading"
    shared.mkdir(exist_ok=True)
    with _locked(shared / ".lock"):
        done, failed = shared / "results.json", shared / "failed.txt"
        if done.exists():
            return json.loads(done.read_text())
        if failed.exists():
            pytest.fail(
                f"building the graded class failed in another worker:\n{failed.read_text()}"
            )
        try:
            results = build_graded_class(shared / "class")
        except BaseException as error:
            failed.write_text(f"{type(error).__name__}: {error}")
            raise
        done.write_text(json.dumps(results))
        return results


class _locked:
    """An exclusive fcntl lock on a file, held for the duration of a with block."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.file = self.path.open("w")
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _student(graded: dict[str, Any], student: str) -> dict[str, Any]:
    """The gradebook entry of a student; fail clearly if autograde produced none."""
    assert not graded["errors"], "\n\n".join(graded["errors"])
    assert student in graded["students"], f"{student} has no submission in the gradebook"
    return graded["students"][student]


def _describe(graded: dict[str, Any], student: str, cells: list[str]) -> str:
    """The autograded output of some cells of a student, for a failure message."""
    outputs = graded["outputs"].get(student, {})
    return "\n".join(f"--- {cell}:\n{outputs.get(cell, '(no output)')[-2500:]}" for cell in cells)


# ---------------------------------------------------------------------------------------------
# The catalogue itself (fast: no nbgrader run)


def _source_cells() -> tuple[list[str], dict[str, float]]:
    """The master notebook's solution cell ids and {grade cell id: points}."""
    nb = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    solutions = [cell["grade_id"] for cell in references.solution_cells(nb)]
    points = {
        cell.metadata.nbgrader["grade_id"]: cell.metadata.nbgrader["points"]
        for cell in nb.cells
        if cell.metadata.get("nbgrader", {}).get("grade")
    }
    return solutions, points


def test_master_notebook_defines_the_expected_cells_and_points() -> None:
    """The catalogue's expectations match the master notebook's cells and points."""
    solutions, points = _source_cells()
    assert tuple(solutions) == SOLUTION_CELLS
    assert points == EXPECTED_POINTS
    assert sum(points.values()) == TOTAL_POINTS


def test_reference_cells_match_the_master_notebook() -> None:
    """The exported reference solutions are those of the current master notebook."""
    nb = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    current = {
        cell["grade_id"]: submissions.strip_delimiters(cell["source"])
        for cell in references.solution_cells(nb)
    }
    assert submissions.correct_cells(ASSIGNMENT) == current, (
        "nncourse/course/reference_solutions/simple_nn.json is stale: re-export it (nncourse build)"
    )
    for source in current.values():
        assert "SOLUTION" not in source


def test_catalogue_covers_every_graded_function() -> None:
    """Every fixture parses, names real cells, and together they cover every solution cell."""
    solutions, points = _source_cells()
    failing = [fixture for fixture in FIXTURES if fixture.name.startswith("fails_")]
    assert len(failing) >= 22, f"only {len(failing)} fails_ fixtures"
    assert {fixture.cell for fixture in failing} == set(solutions)
    for function in ("gradient_descent", "backprop_one_hidden", "backprop_any_depth"):
        assert sum(fixture.cell == function for fixture in failing) >= 3, function
    for fixture in FIXTURES:
        assert fixture.name.startswith(("fails_", "passes_")), fixture.name
        assert fixture.cell in solutions, f"{fixture.name}: unknown cell {fixture.cell}"
        assert set(fixture.loses) <= set(points), f"{fixture.name}: unknown grade cells"
        assert bool(fixture.loses) == fixture.name.startswith("fails_"), (
            f"{fixture.name}: a fails_ fixture loses some cells, a passes_ fixture none"
        )
        shown = {cell for cell, _ in fixture.shows}
        assert shown <= set(points) | set(solutions), f"{fixture.name}: unknown shows cell"
        assert set(fixture.loses) <= shown, (
            f"{fixture.name}: say under '# shows:' what each lost cell shows the student"
        )
        assert "raise NotImplementedError" not in fixture.source
        compile(fixture.source, fixture.name, "exec")  # a syntax error is not a realistic mistake


def test_fill_replaces_only_the_named_solution_cells() -> None:
    """fill() swaps the named solution cells' sources and leaves everything else alone."""
    nb = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    filled = submissions.fill(nb, {"tanh": "def tanh(x, deriv=False):\n    return x"})
    pairs = enumerate(zip(nb.cells, filled.cells, strict=True))
    changed = [index for index, (old, new) in pairs if old.source != new.source]
    assert len(changed) == 1
    assert filled.cells[changed[0]].metadata.nbgrader["grade_id"] == "tanh"
    assert nb.cells[changed[0]].source != filled.cells[changed[0]].source  # the input is kept
    with pytest.raises(KeyError):
        submissions.fill(nb, {"tanh_values": "pass"})  # a grade cell is not a solution cell


def test_parse_fixture_reads_the_header(tmp_path: Path) -> None:
    """The header fields come out parsed and the code below it is the cell's source."""
    path = tmp_path / "fails_example.py"
    path.write_text(
        "# cell: relu\n# loses: relu_values, relu_derivative\n# why: one line\n#   and more\n"
        "# shows: relu_values: some: text\n# ruff: noqa\ndef relu(x, deriv=False):\n    return x\n"
    )
    fixture = submissions.parse_fixture(path)
    assert fixture.cell == "relu"
    assert fixture.loses == ("relu_values", "relu_derivative")
    assert fixture.why == "one line and more"
    assert fixture.shows == (("relu_values", "some: text"),)
    assert fixture.source == "def relu(x, deriv=False):\n    return x"
    path.write_text("# cell: relu\ndef relu(x):\n    return x\n")
    with pytest.raises(submissions.FixtureError):
        submissions.parse_fixture(path)


def test_parse_fixture_reads_what_the_visible_tests_show(tmp_path: Path) -> None:
    """'# visible:' names a grade cell and a message start, or says none; it may be left out."""
    path = tmp_path / "fails_example.py"
    head = "# cell: relu\n# loses: relu_values\n# why: w\n"
    body = "# ruff: noqa\ndef relu(x, deriv=False):\n    return x\n"
    path.write_text(head + "# visible: relu_values: relu(x): should\n#   be max\n" + body)
    fixture = submissions.parse_fixture(path)
    assert fixture.visible == ("relu_values", "relu(x): should be max")
    assert fixture.has_visible
    path.write_text(head + "# visible: none\n" + body)
    fixture = submissions.parse_fixture(path)
    assert fixture.visible is None
    assert fixture.has_visible
    path.write_text(head + body)
    assert not submissions.parse_fixture(path).has_visible
    for wrong in ["# visible: relu_values\n", "# visible: none\n# visible: none\n"]:
        path.write_text(head + wrong + body)
        with pytest.raises(submissions.FixtureError):
            submissions.parse_fixture(path)


# ---------------------------------------------------------------------------------------------
# Autograded results


def test_every_submission_is_graded_automatically(graded: dict[str, Any]) -> None:
    """autograde ran cleanly; only an answered written question is left for manual grading."""
    assert not graded["errors"], "\n\n".join(graded["errors"])
    assert sorted(graded["students"]) == sorted(graded["submitted"])
    for student, entry in graded["students"].items():
        assert set(entry["cells"]) == set(EXPECTED_POINTS), student
        manual = {cell for cell, (_, _, needs) in entry["cells"].items() if needs}
        assert manual == (WRITTEN if student == REFERENCE else set()), student
        assert graded["autograded"][student], f"{student}: no autograded notebook"


def test_reference_gets_full_points(graded: dict[str, Any]) -> None:
    """The reference solution scores every autograded point; its written answer waits, at 0."""
    entry = _student(graded, REFERENCE)
    lost = [
        cell
        for cell, (score, maximum, _) in entry["cells"].items()
        if score != (0 if cell in WRITTEN else maximum)
    ]
    assert not lost, _describe(graded, REFERENCE, lost)
    assert entry["max"] == TOTAL_POINTS
    assert entry["total"] == AUTO_POINTS


def test_blank_release_gets_zero(graded: dict[str, Any]) -> None:
    """The untouched release is graded (a gradebook row, an autograded notebook) and scores 0."""
    entry = _student(graded, BLANK)
    assert entry["max"] == TOTAL_POINTS
    scored = [cell for cell, (score, _, _) in entry["cells"].items() if score != 0]
    assert not scored, _describe(graded, BLANK, scored)
    assert entry["total"] == 0
    assert "NotImplementedError" in graded["messages"][BLANK]["logistic_values"]


def test_one_mistake_in_every_function_costs_each_once(graded: dict[str, Any]) -> None:
    """Mistakes in every function at once lose exactly the union of their own cells."""
    fixtures = _mixed_fixtures()
    assert [fixture.name for fixture in fixtures] == list(MIXED_FIXTURES), "a fixture was renamed"
    assert sorted(fixture.cell for fixture in fixtures) == sorted(SOLUTION_CELLS)
    lost = {cell for fixture in fixtures for cell in fixture.loses}
    entry = _student(graded, MIXED)
    wrong = [
        cell
        for cell, (score, maximum, _) in sorted(entry["cells"].items())
        if score != (0 if cell in lost | WRITTEN else maximum)
    ]
    assert not wrong, f"expected 0 exactly in {sorted(lost)}; wrong in {wrong}\n" + _describe(
        graded, MIXED, wrong
    )
    assert entry["total"] == AUTO_POINTS - sum(EXPECTED_POINTS[cell] for cell in lost)


@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_fixture_loses_exactly_its_cells(graded: dict[str, Any], fixture) -> None:
    """A mistake scores 0 in the cells it declares and full points in every other cell.

    Its written answer is left as released: unanswered, it scores 0 without a person.
    """
    entry = _student(graded, fixture.name)
    wrong = []
    for cell, (score, maximum, _) in sorted(entry["cells"].items()):
        expected = 0 if cell in set(fixture.loses) | WRITTEN else maximum
        if score != expected:
            wrong.append(cell)
    assert not wrong, (
        f"{fixture.name} ({fixture.why}): expected 0 in {list(fixture.loses)} and full points "
        f"elsewhere; wrong in {wrong}\n" + _describe(graded, fixture.name, wrong)
    )


def test_plain_and_stable_cross_entropy_earn_full_marks(graded: dict[str, Any]) -> None:
    """The plain reference, a clipped and a logit-based cross-entropy all pass both its cells."""
    students = [REFERENCE, "passes_cross_entropy_clipped", "passes_cross_entropy_from_logits"]
    for student in students:
        cells = _student(graded, student)["cells"]
        for cell in ("cross_entropy_value", "cross_entropy_derivative"):
            score, maximum, _ = cells[cell]
            assert score == maximum == EXPECTED_POINTS[cell], _describe(graded, student, [cell])


@pytest.mark.parametrize(
    "fixture", [f for f in FIXTURES if f.shows], ids=[f.name for f in FIXTURES if f.shows]
)
def test_fixture_shows_its_message(graded: dict[str, Any], fixture) -> None:
    """The autograded output names what went wrong, in the cell the fixture says."""
    _student(graded, fixture.name)
    messages = graded["messages"][fixture.name]
    missing = [(cell, text) for cell, text in fixture.shows if text not in messages.get(cell, "")]
    assert not missing, f"{fixture.name}: not shown: {missing}\n" + _describe(
        graded, fixture.name, [cell for cell, _ in missing]
    )


# ---------------------------------------------------------------------------------------------
# nbgrader validate


@pytest.fixture(scope="session")
def base_course(graded: dict[str, Any]) -> Path:
    """The generated course the class was built from (source/ and release/)."""
    return Path(graded["base"])


def test_validate_passes_on_the_source(base_course: Path, tmp_path: Path) -> None:
    """`nbgrader validate` runs the master notebook, hidden tests included, without a failure."""
    notebook = base_course / "source" / ASSIGNMENT / SOURCE_NOTEBOOK.name
    result = run_nbgrader(base_course, "validate", str(notebook), env=_environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    # validate exits 0 whatever it finds: the verdict is in what it prints.
    assert "Success! Your notebook passes all the tests." in result.stdout, result.stdout[-5000:]
    assert "VALIDATION FAILED" not in result.stdout
    assert "HAVE CHANGED" not in result.stdout


def test_validate_invert_fails_every_cell_of_the_release(base_course: Path, tmp_path: Path) -> None:
    """`nbgrader validate --invert` on the release finds no grade cell that passes."""
    notebook = base_course / "release" / ASSIGNMENT / SOURCE_NOTEBOOK.name
    result = run_nbgrader(
        base_course, "validate", "--invert", str(notebook), env=_environment(tmp_path)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # A changed checksum would be reported instead of the inverted verdict.
    assert "HAVE CHANGED" not in result.stdout, result.stdout[-5000:]
    assert "Success! The notebook does not pass any tests." in result.stdout, result.stdout[-5000:]
    assert "NOTEBOOK PASSED ON" not in result.stdout
    assert "The following cell passed" not in result.stdout
