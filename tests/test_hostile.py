"""Every hostile and broken student of tests/hostile_class.py, graded in one batch.

Each case is a student who tries to read what they should not, forge a grade, escape, switch
the tests off, break the grader or hand in files the grader must not trust. Every case must end
with its expected score and status, flagged for a human where it tried something, and the batch
must leave nothing behind.
"""

import html
import re
from pathlib import Path

import nbformat
import pytest
from hostile_class import (
    ASSIGNMENT,
    EXCHANGE_CASES,
    EXPECTED,
    FILE_CASES,
    FIXTURE_CASES,
    PAGE_CASES,
    ROOT,
    STRUCTURAL_CASES,
    autograded,
)
from nbgrader.api import Gradebook

from nncourse import grade
from nncourse.inert import printable

# The tests of the class run in the pytest-xdist worker that grades it (`--dist loadgroup`).
pytestmark = [
    pytest.mark.kernels,
    pytest.mark.sandbox,
    pytest.mark.xdist_group("hostile_class"),
]


def test_the_suite_has_at_least_75_cases_and_no_name_twice():
    catalogues = [FIXTURE_CASES, STRUCTURAL_CASES, FILE_CASES, EXCHANGE_CASES, PAGE_CASES]
    assert len(EXPECTED) == sum(len(catalogue) for catalogue in catalogues)
    assert len(EXPECTED) >= 75


def test_every_student_has_a_result(hostile_class):
    assert set(hostile_class.results) == set(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_case_meets_its_expectation(hostile_class, case):
    expect = EXPECTED[case]
    result = hostile_class.results[case]
    said = " ".join([result.reason, *result.flags])
    assert result.status == expect.status, (result.reason, result.flags)
    if expect.score is not None:
        assert result.score == expect.score, (result.reason, result.flags)
    assert expect.said in said, said


def test_a_second_run_grades_nobody_again(hostile_class):
    assert hostile_class.regraded_again == []


def test_no_student_process_survives_the_batch(hostile_class):
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"nncourse-hostile-marker" in cmdline or b"sleep 4242" in cmdline:
            left.append(cmdline.decode(errors="replace"))
    assert left == []


def test_gradebook_holds_exactly_the_expected_grades(hostile_class):
    with Gradebook(f"sqlite:///{hostile_class.course / 'gradebook.db'}") as gb:
        stored = {s.student.id: s for s in gb.assignment_submissions(ASSIGNMENT)}
        assert set(stored) == {case for case, e in EXPECTED.items() if "student id" not in e.said}
        for student, submission in stored.items():
            assert submission.score == hostile_class.results[student].score, student
            for notebook in submission.notebooks:
                assert all(g.manual_score is None for g in notebook.grades), student


def test_nothing_was_written_outside_the_sandbox(hostile_class):
    assert not (hostile_class.course / "hostile_was_here.txt").exists()
    assert not Path("/work/hostile_was_here.txt").exists()
    assert not Path("/root/hostile_was_here.txt").exists()


def outputs(course: Path, student: str) -> str:
    """Everything a student's autograded notebook printed."""
    nb = nbformat.read(autograded(course, student), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_reading_the_course_was_blocked(hostile_class):
    course = hostile_class.course
    for case in ["reads_master_notebook", "reads_gradebook_and_solutions", "writes_gradebook"]:
        printed = outputs(course, case)
        assert "blocked:" in printed
        assert "BEGIN HIDDEN TESTS" not in printed
        assert "forged" not in printed
    assert "others: []" in outputs(course, "reads_other_students")


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


def test_feedback_holds_no_hidden_test_or_solution_line(hostile_class):
    """No feedback shows a line of a hidden block, or of a solution the student did not write."""
    course = hostile_class.course
    source = nbformat.read(ROOT / "source" / ASSIGNMENT / "simple_neural_network.ipynb", 4)
    hidden, solutions = _region_lines(source, "HIDDEN TESTS"), _region_lines(source, "SOLUTION")
    markers = [
        "BEGIN HIDDEN TESTS",
        "BEGIN SOLUTION",
        "END SOLUTION",
        "[details for the instructor]",
    ]
    pages = sorted((course / "feedback").glob(f"*/{ASSIGNMENT}/*.html"))
    executed = (c for c in EXPECTED.values() if "submitted no" not in c.said)
    assert len(pages) == sum(c.status != "ungradable" for c in executed)
    for page in pages:
        student = page.parts[-3]
        own = _own_code(course / "submitted" / student / ASSIGNMENT / f"{page.stem}.ipynb")
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        secrets = [*markers, *hidden, *(line for line in solutions if line not in own)]
        leaked = [s for s in secrets if s in text]
        assert leaked == [], f"{student} shows {leaked[:2]}"


def test_summary_flags_every_tampering_case(hostile_class):
    summary = grade.summary(list(hostile_class.results.values()))
    for case, expect in EXPECTED.items():
        if expect.said:
            assert printable(case) in summary, case
