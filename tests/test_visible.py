"""The visible tests as a student sees them, for every wrong (and right) solution we know of.

Each fixture of ``nncourse/course/mistakes/`` says in its header which visible test fails first
for that student and how its message starts (``# visible: <grade id>: <text>``), or that none
fails (``# visible: none``). Here every fixture's code replaces its cell in the generated
solutions notebook, which holds the visible tests only, and the notebook runs in a real kernel
as far as the visible tests need: training and plot cells are left out, so the whole catalogue
takes a few minutes. A test that passes must print exactly one line, starting with "passed".
A wrong function that later ones build on fails their tests too, each saying to fix it first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from nncourse import notebooks, references, submissions
from nncourse.course import MISTAKES

FIXTURES_DIR = MISTAKES
FIXTURES = submissions.load_fixtures(FIXTURES_DIR)
SOLUTIONS = references.COURSE_ROOT / "solutions" / "simple_nn" / "simple_neural_network.ipynb"
#: A cell that trains or plots with the students' functions waits for them with needs(...).
NEEDS_CALL = re.compile(r"^\s*if needs\(", re.MULTILINE)
TIMEOUT = 60  # seconds per cell; the slowest visible test takes about one

pytestmark = pytest.mark.kernels


@dataclass(frozen=True)
class Ran:
    """What one grade cell printed, and the error it stopped with ("" if it passed)."""

    grade_id: str
    printed: str
    error: str


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def needed_cells(nb) -> list:
    """The code cells the visible tests need: all but the training and plotting ones."""
    return [
        cell
        for cell in nb.cells
        if cell.cell_type == "code"
        and not NEEDS_CALL.search(cell.source)
        and "figure" not in cell.metadata.get("nncourse", {})
    ]


class Kernel:
    """One kernel for the whole catalogue, its names cleared before each student."""

    def __init__(self, folder: Path) -> None:
        self.manager, self.client = start_new_kernel(kernel_name="python3", cwd=str(folder))

    def run(self, source: str) -> tuple[str, str]:
        """Execute source; return what it printed and its error ("" when none)."""
        printed, errors = [], []

        def collect(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                printed.append(content["text"])
            elif kind == "error":
                message = content["evalue"]
                if content["ename"] != "AssertionError":
                    message = f"{content['ename']}: {message}"
                errors.append(message)

        self.client.execute_interactive(source, timeout=TIMEOUT, output_hook=collect)
        return "".join(printed), "".join(errors)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernel in an empty folder: the visible tests read no file."""
    running = Kernel(tmp_path_factory.mktemp("student"))
    yield running
    running.close()


@pytest.fixture(scope="module")
def cells():
    return needed_cells(notebooks.read(SOLUTIONS))


def run_as_student(
    kernel: Kernel, cells: list, fixture: submissions.Fixture, *, to_the_end: bool = False
) -> list[Ran]:
    """Run the cells with the fixture's code in its cell; stop at the first failing test
    unless to_the_end."""
    kernel.run("%reset -f")
    ran = []
    for cell in cells:
        meta = _meta(cell)
        mine = meta.get("solution") and meta.get("grade_id") == fixture.cell
        printed, error = kernel.run(fixture.source if mine else cell.source)
        if meta.get("grade"):
            ran.append(Ran(meta["grade_id"], printed, error))
            if error and not to_the_end:
                break
        else:
            name = meta.get("grade_id", cell.get("id"))
            assert not error, f"{fixture.name}: cell {name}: {error}"
    return ran


def test_every_fixture_says_what_its_visible_tests_show() -> None:
    missing = [fixture.name for fixture in FIXTURES if not fixture.has_visible]
    assert not missing, f"add '# visible: <grade id>: <text>' or '# visible: none' to {missing}"


def test_needed_cells_leave_out_training_and_plots_but_keep_every_test(cells) -> None:
    nb = notebooks.read(SOLUTIONS)
    # Test cells only: a written answer (a markdown grade cell) has no test to run.
    grade_cells = [
        _meta(c)["grade_id"] for c in nb.cells if _meta(c).get("grade") and c.cell_type == "code"
    ]
    assert [_meta(c)["grade_id"] for c in cells if _meta(c).get("grade")] == grade_cells
    assert len(cells) < len([c for c in nb.cells if c.cell_type == "code"])


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_first_failing_visible_test_and_its_message(kernel, cells, fixture) -> None:
    ran = run_as_student(kernel, cells, fixture)
    failed = [(r.grade_id, r.error) for r in ran if r.error]
    if fixture.visible is None:
        assert not failed, f"{fixture.name} ({fixture.why}): expected no visible test to fail"
    else:
        assert failed, f"{fixture.name} ({fixture.why}): no visible test failed"
        (grade_id, message), expected = failed[0], fixture.visible
        assert grade_id == expected[0], f"{fixture.name}: first failed {grade_id}: {message}"
        assert message.startswith(expected[1]), f"{fixture.name}: {grade_id} said {message!r}"
    for result in ran:
        if not result.error:
            lines = result.printed.splitlines()
            said = f"{fixture.name}: {result.grade_id} passed but printed {lines}"
            assert len(lines) == 1, said
            assert lines[0].startswith("passed"), said


#: The fixtures of functions that later functions build on (their tests re-check them); no
#: graded function calls the training functions or init_params.
BUILT_ON = [
    f
    for f in FIXTURES
    if f.name.startswith("fails_")
    and not f.cell.startswith(("gradient_descent", "backprop", "init_params"))
]


@pytest.mark.parametrize("fixture", BUILT_ON, ids=[f.name for f in BUILT_ON])
def test_later_tests_name_the_wrong_function_to_fix_first(kernel, cells, fixture) -> None:
    """Each later test passes or says which function to fix, with that function's own message."""
    ran = run_as_student(kernel, cells, fixture, to_the_end=True)
    wrong = re.search(r"^def (\w+)\(", fixture.source, re.MULTILINE).group(1)
    own = [r for r in ran if r.grade_id.startswith(fixture.cell) and r.error]
    assert own, f"{fixture.name}: its own visible tests all passed"
    later = [r for r in ran if r.error and not r.grade_id.startswith(fixture.cell)]
    assert later, f"{fixture.name}: no later test noticed that `{wrong}` is wrong"
    for result in later:
        tested = result.error.partition("`")[2].partition("`")[0]
        assert result.error == (
            f"`{tested}` cannot be checked yet: `{wrong}` fails its own test ({own[0].error}). "
            f"Fix `{wrong}` first."
        ), f"{fixture.name}: {result.grade_id} said {result.error!r}"
