"""`nncourse demo`: the instructor's whole flow on a bundled example class of thirty students."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path

from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

from nncourse import course_config, submissions, workflow
from nncourse.build import build
from nncourse.course import MISTAKES

ASSIGNMENT = "simple_nn"
# One fixed submission time: a rerun of the demo then finds every submission unchanged.
SUBMITTED_AT = datetime.datetime(2026, 11, 20, 17, 0, tzinfo=datetime.UTC)

# Who is in the example class and what each handed in: "correct", "blank", the name of a
# mistake of nncourse/course/mistakes/, or a broken file. Nothing is random, so every run of
# the demo shows the same class.
EXAMPLE_CLASS: dict[str, str] = {
    "ada": "correct",
    "alan": "correct",
    "grace": "correct",
    "edsger": "passes_logistic_stable_where_with_warnings",
    "barbara": "passes_gradient_descent_loop_over_examples",
    "john": "fails_logistic_derivative_in_terms_of_output",
    "margaret": "fails_tanh_derivative_in_terms_of_output",
    "donald": "fails_relu_derivative_one_at_zero",
    "frances": "fails_relu_derivative_one_at_zero",
    "ken": "fails_cross_entropy_derivative_y_pred_minus_y",
    "dennis": "fails_cross_entropy_derivative_y_pred_minus_y",
    "radia": "fails_cross_entropy_summed_not_averaged",
    "tim": "fails_mean_squared_error_leading_minus",
    "sophie": "fails_mean_squared_error_derivative_without_factor_2",
    "niklaus": "fails_gradient_descent_seed_recipe",
    "guido": "fails_gradient_descent_sums_gradient",
    "bjarne": "fails_gradient_descent_prediction_after_update",
    "leslie": "fails_forward_pass_one_hidden_activations_swapped",
    "shafi": "fails_backprop_one_hidden_uses_updated_W2",
    "yann": "fails_backprop_one_hidden_derivative_at_activation",
    "geoffrey": "fails_backprop_one_hidden_seed_recipe",
    "fei-fei": "fails_forward_pass_any_depth_includes_input",
    "yoshua": "fails_backprop_any_depth_uses_updated_weights",
    "jurgen": "fails_backprop_any_depth_only_two_layers",
    "katherine": "fails_backprop_any_depth_sums_gradients",
    "mary": "blank",
    "ida": "broken_json",
    "hedy": "duplicated_grade_cell",
    "claude": "kernel_crash",
    "alonzo": "missing",
}


def _notebook(course_root: Path, kind: str):
    """The notebook a student of the given kind handed in."""
    release = submissions.read_release(course_root, ASSIGNMENT)
    if kind == "blank":
        return release
    cells = submissions.correct_cells(ASSIGNMENT)
    if kind == "kernel_crash":
        cells["tanh"] = "import os\n\nos._exit(1)  # a student 'cleaning up' the kernel\n"
    elif kind not in ("correct", "broken_json", "duplicated_grade_cell"):
        fixture = submissions.parse_fixture(MISTAKES / f"{kind}.py")
        cells[fixture.cell] = fixture.source
    nb = submissions.fill(release, cells)
    if kind == "duplicated_grade_cell":
        # Pasted again at the end, as JupyterLab pastes: the same metadata under a new cell id
        # (a fixed one, so that every run of the demo lays out the same file).
        copied = copy.deepcopy(
            next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
        )
        copied.id = "pasted-grade-cell"
        nb.cells.append(copied)
    return nb


def lay_out_example_class(course_root: Path, config: Config) -> None:
    """Put the example class on the roster and its submissions in submitted/."""
    course = CourseDirectory(config=config)
    with Gradebook(course.db_url, course.course_id) as gb:
        for student in EXAMPLE_CLASS:
            gb.update_or_create_student(student, first_name=student.capitalize())
    for student, kind in EXAMPLE_CLASS.items():
        if kind == "missing":
            continue
        path = submissions.write_submission(
            course_root, student, ASSIGNMENT, _notebook(course_root, kind), when=SUBMITTED_AT
        )
        if kind == "broken_json":
            path.write_text(path.read_text()[: len(path.read_text()) // 2])  # cut off mid-upload


def run_demo(course_root: Path, jobs: int | None = None) -> int:
    """Build release and solutions, lay out the example class, grade it and report."""
    print("1/3 building release/, solutions/ and figures from source/ ...")
    build(course_root, [ASSIGNMENT])
    print(f"2/3 laying out the example class of {len(EXAMPLE_CLASS)} students in submitted/ ...")
    config = course_config.load_or_exit(course_root, "nncourse demo")
    lay_out_example_class(course_root, config)
    print("3/3 grading in parallel, writing feedback, exports and the class report ...")
    run = workflow.grade_and_report(course_root, [ASSIGNMENT], jobs=jobs, config=config)
    workflow.print_run(run, scores=True)
    # The demo class has broken submissions on purpose: that it flags them is the point.
    print(
        "The example class holds broken and mistaken submissions on purpose: the students "
        "listed under 'needs attention' show what the grader flags. Demo finished."
    )
    return 0
