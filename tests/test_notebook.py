"""The master notebook runs end to end, and its results bear out the exercise's claims."""

import json
import re

import pytest
from course_copy import execute_in_copy

from nncourse import references

SOURCE = references.COURSE_ROOT / "source" / "simple_nn" / "simple_neural_network.ipynb"

# Run by an extra cell after the whole notebook ran: every training run's recorded costs, and
# its cost and mistakes recomputed here from its final parameters with a fresh forward pass.
REPORT = """
import json


def final(costs, y_pred, labels):
    return {"costs": [float(c) for c in costs], "cost": float(cross_entropy(y_pred, labels)),
            "misclassified": int(np.sum((y_pred > 0.5) != labels))}


print(json.dumps({
    "logistic_regression": final(costs_lr, logistic(X @ ws_lr + b_lr), y),
    "one_hidden_layer": final(costs_h, forward_pass(X, ws_h, bs_h, act_fs_h)[1][-1], y_col),
    "deep_network": final(costs_d, forward_pass(X, ws_d, bs_d, act_fs_d)[1][-1], y_col),
}))
"""

#: Each reference training run: its training cell and the figure its plot cell makes.
RUNS = {
    "logistic_regression": "train_logistic_regression",
    "one_hidden_layer": "train_one_hidden",
    "deep_network": "train_any_depth",
}
#: The last line a training cell prints, and the end of its reference figure's alt text.
RESULT = re.compile(r"after (\d+) epochs: cost (\d+\.\d+), misclassified (\d+) of (\d+)")


pytestmark = pytest.mark.kernels


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The master notebook, executed with its solutions and hidden tests in a copy of its folder."""
    return execute_in_copy(SOURCE, tmp_path_factory.mktemp("master"), extra=REPORT)


@pytest.fixture(scope="module")
def runs(executed):
    """Every reference run's recorded costs, final cost and mistakes, from its final parameters."""
    return json.loads(executed.cells[-1].outputs[0].text)


def _cell(nb, grade_id):
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return cell


def _printed(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def test_no_cell_fails_or_writes_to_stderr(executed):
    for index, cell in enumerate(executed.cells):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"cell {index} raised {output.get('ename')}"
            assert output.get("name") != "stderr", f"cell {index} wrote to stderr: {output.text}"


def test_logistic_regression_misclassifies_several_sine_points(runs):
    assert runs["logistic_regression"]["misclassified"] >= 5


def test_two_hidden_neurons_nearly_separate_the_classes(runs):
    one_hidden = runs["one_hidden_layer"]["misclassified"]
    assert 0 < one_hidden < runs["logistic_regression"]["misclassified"]
    assert one_hidden <= 4


def test_deep_network_misclassifies_none(runs):
    assert runs["deep_network"]["misclassified"] == 0


def test_training_prints_a_handful_of_lines(executed):
    for cell in executed.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id", "").startswith("train_"):
            printed = _printed(cell)
            assert printed.count("epoch ") <= 6, printed


@pytest.mark.parametrize("run", RUNS)
def test_printed_result_and_figure_caption_describe_the_final_parameters(executed, runs, run):
    """The training cell's last line and the figure's alt text: same cost and mistakes as the
    final parameters give, not the forward pass made before the last update."""
    final = runs[run]
    expected = (len(final["costs"]), f"{final['cost']:.5f}", final["misclassified"], 25)
    printed = RESULT.findall(_printed(_cell(executed, RUNS[run])))
    assert printed, f"{RUNS[run]} prints no 'after N epochs: cost C, misclassified K of M'"
    assert tuple(int(v) if v.isdigit() else v for v in printed[-1]) == expected

    image = re.compile(r"!\[([^\]]*)\]\(figures/" + run + r"\.png\)")
    captions = [
        m.group(1)
        for c in executed.cells
        if c.cell_type == "markdown"
        for m in image.finditer(c.source)
    ]
    assert len(captions) == 1, f"figures/{run}.png should be shown once, with alt text"
    in_caption = RESULT.findall(captions[0])
    assert in_caption, f"the alt text of figures/{run}.png does not state the result"
    assert tuple(int(v) if v.isdigit() else v for v in in_caption[-1]) == expected


@pytest.mark.parametrize("run", RUNS)
def test_reference_run_converges(runs, run):
    """The cost after training is not above the cost 100 epochs earlier, and the last
    100 epochs never raise it: no oscillation at the end of a run."""
    costs, final = runs[run]["costs"], runs[run]["cost"]
    assert final <= costs[-100]
    tail = [*costs[-100:], final]
    assert all(later <= earlier for earlier, later in zip(tail, tail[1:], strict=False)), run
