"""A written answer through the whole pipeline: graded by a person, kept across regradings."""

import csv
import html
import re

import pytest
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from test_pipeline import ASSIGNMENT, GRADE_CELLS, correct, make_course

from nncourse import grade, record, submissions, workflow
from nncourse.results import AUTO, BY_HAND, NEEDS_MANUAL

WRITTEN = "written_gradient_of_W1"
NOTEBOOK = "simple_neural_network"
#: The assignment's points: all of them, and those autograding awards (all but the written answer).
TOTAL = sum(cell.get("points", 0) for cell in GRADE_CELLS)
AUTO_POINTS = TOTAL - 2
ANSWER = r"Each entry is $\frac{1}{m}\sum_i x_{ij} (\delta_1)_{ik}$; averaged since C is a mean."

pytestmark = [pytest.mark.kernels, pytest.mark.sandbox]


def hand_in(course, student: str, answer: str | None) -> None:
    """A correct submission, with a written answer when one is given."""
    nb = submissions.fill(submissions.read_release(course, ASSIGNMENT), correct())
    if answer is not None:
        submissions.answer(nb, WRITTEN, answer)
    submissions.write_submission(course, student, ASSIGNMENT, nb)


def grade_by_hand(course, student: str, score: float, comment: str) -> None:
    """Score a written answer as the formgrader's grade and comment handlers do."""
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        grade_ = gb.find_grade(WRITTEN, NOTEBOOK, ASSIGNMENT, student)
        grade_.manual_score = score
        grade_.extra_credit = None
        grade_.needs_manual_grade = grade_.manual_score is None and grade_.auto_score is None
        gb.find_comment(WRITTEN, NOTEBOOK, ASSIGNMENT, student).manual_comment = comment
        gb.db.commit()


def written_grade(course, student: str) -> tuple[float, bool, str | None]:
    """The written answer's score, whether it needs manual grading, and a person's comment."""
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        found = gb.find_grade(WRITTEN, NOTEBOOK, ASSIGNMENT, student)
        comment = gb.find_comment(WRITTEN, NOTEBOOK, ASSIGNMENT, student).manual_comment
        return found.score, found.needs_manual_grade, comment


def read_csv(path) -> list[dict[str, str]]:
    """The rows of an exported CSV file."""
    with path.open() as handle:
        return list(csv.DictReader(handle))


def page_text(path) -> str:
    """The text a browser shows of an HTML page."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def seen(run: workflow.RunResult) -> dict:
    """What a run showed the instructor, kept before the next run replaces its files."""
    return {
        "results": {r.student: r for r in run.results},
        "exit": run.exit_status,
        "summary": grade.summary(run.results),
        "grades": {r["student_id"]: r for r in read_csv(run.grades_csv)},
        "written": {r["student"]: r for r in read_csv(run.cells_csv) if r["grade_id"] == WRITTEN},
        "report": page_text(run.reports[0]),
    }


@pytest.fixture(scope="module")
def manual_class(tmp_path_factory):
    """Three students graded, two answers graded by hand, graded again, then forced."""
    course = make_course(tmp_path_factory.mktemp("manual"))
    hand_in(course, "alice", ANSWER)
    hand_in(course, "bob", None)  # left the question unanswered
    hand_in(course, "carol", ANSWER)
    runs = {"first": seen(workflow.grade_and_report(course, jobs=2, progress=False))}
    grade_by_hand(course, "alice", 1.5, "Right, but say why W2 is transposed.")
    grade_by_hand(course, "carol", 2, "Complete.")
    runs["after grading"] = seen(workflow.grade_and_report(course, jobs=2, progress=False))
    runs["feedback"] = page_text(course / "feedback" / "alice" / ASSIGNMENT / f"{NOTEBOOK}.html")
    hand_in(course, "carol", ANSWER + " And W2 is transposed to send the error back.")
    forced = workflow.grade_and_report(course, jobs=2, progress=False, force=True)
    runs["forced"] = seen(forced)
    return course, runs


def test_an_answer_waits_for_a_person_without_failing_the_student(manual_class):
    _, runs = manual_class
    run = runs["first"]
    results = run["results"]
    for student in ("alice", "carol"):
        result = results[student]
        assert (result.status, result.score, result.max_score) == ("graded", AUTO_POINTS, TOTAL)
        assert result.to_grade == {WRITTEN: 2}
        assert not result.needs_attention
    assert results["bob"].to_grade == {}  # unanswered: 0 points, nothing to grade
    assert run["exit"] == 0
    summary = run["summary"]
    assert "needs manual grading: 2 students, 4 points not yet awarded" in summary
    assert "needs attention" not in summary


def test_exports_and_report_say_needs_manual_grading(manual_class):
    _, runs = manual_class
    run = runs["first"]
    grades = run["grades"]
    assert grades["alice"]["needs_manual_grading"] == WRITTEN
    assert float(grades["alice"]["points_not_yet_awarded"]) == 2
    assert float(grades["alice"]["score"]) == AUTO_POINTS
    assert grades["bob"]["needs_manual_grading"] == ""
    cells = run["written"]
    assert cells["alice"]["grading"] == NEEDS_MANUAL
    assert cells["alice"]["message"] == ""  # not a failure
    assert (cells["bob"]["grading"], float(cells["bob"]["score"])) == (AUTO, 0)
    report = run["report"]
    assert "Written answers of 2 of 3 students need manual grading" in report
    assert "4 points not yet awarded" in report
    assert f"needs manual grading: {WRITTEN} (2 points not yet awarded)" in report


def test_a_person_s_score_counts_once_given(manual_class):
    _, runs = manual_class
    run = runs["after grading"]
    results = run["results"]
    assert not any(r.regraded for r in results.values())
    assert (results["alice"].score, results["alice"].to_grade) == (AUTO_POINTS + 1.5, {})
    assert (results["carol"].score, results["carol"].to_grade) == (AUTO_POINTS + 2, {})
    assert "needs manual grading" not in run["summary"]
    grades = run["grades"]
    assert float(grades["alice"]["score"]) == AUTO_POINTS + 1.5
    assert grades["alice"]["needs_manual_grading"] == ""
    cells = run["written"]
    assert (cells["alice"]["grading"], float(cells["alice"]["score"])) == (BY_HAND, 1.5)
    report = run["report"]
    assert "need manual grading in the formgrader" not in report
    assert "needs manual grading:" not in report
    # The feedback page is written again with the person's score and comment.
    assert f"{AUTO_POINTS + 1.5:g}" in runs["feedback"]
    assert "Right, but say why W2 is transposed." in runs["feedback"]


def test_a_forced_regrade_keeps_the_score_of_an_unchanged_answer(manual_class):
    course, runs = manual_class
    results = runs["forced"]["results"]
    assert results["alice"].regraded
    assert (results["alice"].score, results["alice"].to_grade) == (AUTO_POINTS + 1.5, {})
    assert written_grade(course, "alice") == (1.5, False, "Right, but say why W2 is transposed.")
    assert results["bob"].score == AUTO_POINTS


def test_a_changed_answer_needs_grading_again_and_says_so(manual_class):
    course, runs = manual_class
    run = runs["forced"]
    carol = run["results"]["carol"]
    assert (carol.score, carol.to_grade) == (AUTO_POINTS, {WRITTEN: 2})
    assert carol.grade_again == [WRITTEN]
    assert written_grade(course, "carol") == (0, True, None)
    summary = run["summary"]
    assert "needs manual grading: 1 student, 2 points not yet awarded" in summary
    assert re.search(
        rf"carol +answer changed since it was graded, grade it again: {WRITTEN}", summary
    )
    assert "answer changed since graded" in run["report"]
    kept = record.read_record(CourseDirectory(root=str(course)), "carol", ASSIGNMENT)
    assert kept["grade_again"] == [WRITTEN]
