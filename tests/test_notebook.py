"""The master notebook runs end to end, and its results bear out the exercise's claims."""

import json
import math
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


def error_rate(y_pred, labels):
    return float(np.mean((y_pred > 0.5) != labels))


def output(ws, bs, act_fs, points=X):
    return forward_pass(points, ws, bs, act_fs)[1][-1]


# The cost of every epoch of one width's run, trained again as the sweep trained it.
def sweep_costs(width):
    ws, bs = init_params((2, width, 1), 0.1, 5)
    with contextlib.redirect_stdout(io.StringIO()):
        backprop(X, y_col, ws, bs, [tanh, logistic], cross_entropy, 0.05, 3000)
    return costs_seen.copy()


def start(ws, bs):
    hidden = output(ws[:1], bs[:1], [tanh])
    return {**final([], output(ws, bs, [tanh, logistic]), y_col),
            "w1_zero": not np.any(ws[0]),
            "units_equal": bool(np.allclose(ws[0][:, 0], ws[0][:, 1], rtol=0, atol=1e-12)
                                and np.allclose(ws[1][0], ws[1][1], rtol=0, atol=1e-12)),
            "largest_difference": float(np.abs(hidden[:, 0] - hidden[:, 1]).max()),
            "one_class": len(np.unique(output(ws, bs, [tanh, logistic]) > 0.5)) == 1}


trained = {"logistic regression": (logistic(X @ ws_lr + b_lr).reshape(-1, 1),
                                   logistic(X_fresh @ ws_lr + b_lr).reshape(-1, 1)),
           "one hidden layer (reference)": (output(ws_h, bs_h, act_fs_h),
                                            output(ws_h, bs_h, act_fs_h, X_fresh)),
           **{f"width {w}": (output(*sweep[w], [tanh, logistic]),
                             output(*sweep[w], [tanh, logistic], X_fresh)) for w in sweep},
           "deep network": (output(ws_d, bs_d, act_fs_d), output(ws_d, bs_d, act_fs_d, X_fresh))}
print(json.dumps({
    "logistic_regression": final(costs_lr, logistic(X @ ws_lr + b_lr), y),
    "one_hidden_layer": final(costs_h, forward_pass(X, ws_h, bs_h, act_fs_h)[1][-1], y_col),
    "deep_network": final(costs_d, forward_pass(X, ws_d, bs_d, act_fs_d)[1][-1], y_col),
    "symmetry": {name: start(*params) for name, params in symmetry_runs.items()},
    "width_sweep": {str(w): final(sweep_costs(w), output(*sweep[w], [tanh, logistic]), y_col)
                    for w in sweep},
    "generalisation": {name: [error_rate(train, y_col), error_rate(fresh, y_fresh)]
                       for name, (train, fresh) in trained.items()},
    "fresh_points": [len(X_fresh), int(np.sum(y_fresh == 0))],
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


def _results(text: str) -> list[tuple]:
    """Every 'after N epochs: cost C, misclassified K of M' in a text, numbers as printed."""
    return [tuple(int(v) if v.isdigit() else v for v in found) for found in RESULT.findall(text)]


def _expected(result: dict, epochs: int) -> tuple:
    return (epochs, f"{result['cost']:.5f}", result["misclassified"], 25)


def _caption(nb, figure: str) -> str:
    image = re.compile(r"!\[([^\]]*)\]\(figures/" + figure + r"\.png\)")
    captions = [
        m.group(1) for c in nb.cells if c.cell_type == "markdown" for m in image.finditer(c.source)
    ]
    assert len(captions) == 1, f"figures/{figure}.png should be shown once, with alt text"
    return captions[0]


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
    expected = _expected(runs[run], len(runs[run]["costs"]))
    printed = _results(_printed(_cell(executed, RUNS[run])))
    assert printed, f"{RUNS[run]} prints no 'after N epochs: cost C, misclassified K of M'"
    assert printed[-1] == expected

    in_caption = _results(_caption(executed, run))
    assert in_caption, f"the alt text of figures/{run}.png does not state the result"
    assert in_caption[-1] == expected


def _converged(run: dict) -> bool:
    """The cost after training is not above the cost 100 epochs earlier, and the last 100
    epochs never raise it: no oscillation at the end of a run."""
    tail = [*run["costs"][-100:], run["cost"]]
    return len(tail) == 101 and all(b <= a for a, b in zip(tail, tail[1:], strict=False))


@pytest.mark.parametrize("run", RUNS)
def test_reference_run_converges(runs, run):
    assert _converged(runs[run]), run


def test_width_sweep_runs_converge(runs):
    assert {width: _converged(run) for width, run in runs["width_sweep"].items()} == {
        "1": True,
        "2": True,
        "3": True,
        "8": True,
    }


def test_initial_costs_are_the_first_recorded_costs_and_near_log_2(executed, runs):
    """The sanity-check cell prints each run's epoch-0 cost; small starting weights cost log 2."""
    text = _printed(_cell(executed, "initial_costs"))
    printed = dict(re.findall(r"^(.+): cost before training (\d+\.\d+)$", text, re.MULTILINE))
    names = {
        "logistic regression": "logistic_regression",
        "one hidden layer": "one_hidden_layer",
        "deep network": "deep_network",
    }
    assert set(printed) == set(names)
    for name, run in names.items():
        assert printed[name] == f"{runs[run]['costs'][0]:.5f}", name
    for run in ("one_hidden_layer", "deep_network"):
        assert abs(runs[run]["costs"][0] - math.log(2)) < 0.01, run
    # The text says logistic regression, which starts from w = (1, 2), starts elsewhere.
    assert abs(runs["logistic_regression"]["costs"][0] - math.log(2)) > 0.1


def test_symmetric_starts_keep_the_hidden_units_identical(executed, runs):
    """Zeros and equal weights leave both hidden units the same for ever; init_params does not."""
    starts = runs["symmetry"]
    zeros, equal = starts["every weight 0"], starts["every weight 0.1"]
    random = starts["init_params"]
    for symmetric in (zeros, equal):
        assert symmetric["units_equal"]
        assert symmetric["largest_difference"] < 1e-9
    assert zeros["w1_zero"]
    assert zeros["one_class"]  # only b2 learned: one class for every example,
    assert zeros["misclassified"] == 10  # the larger one: all 10 points of class 0 are wrong
    assert equal["misclassified"] >= runs["logistic_regression"]["misclassified"]
    assert not random["units_equal"]
    assert random["largest_difference"] > 0.5
    assert random["misclassified"] < min(zeros["misclassified"], equal["misclassified"])
    printed = _results(_printed(_cell(executed, "symmetry_experiment")))
    assert printed == [_expected(starts[name], 3000) for name in starts]


def test_width_sweep_prints_and_captions_the_final_parameters(executed, runs):
    """Each width's line and the figure's alt text match its final parameters."""
    sweep = runs["width_sweep"]
    assert list(sweep) == ["1", "2", "3", "8"]
    expected = [_expected(sweep[width], 3000) for width in sweep]
    assert _results(_printed(_cell(executed, "width_sweep"))) == expected
    assert _results(_caption(executed, "width_sweep")) == expected
    # What the text says: three and eight neurons put every training point on its side.
    assert sweep["3"]["misclassified"] == sweep["8"]["misclassified"] == 0


def test_generalisation_table_matches_the_models_on_fresh_points(executed, runs):
    """The printed error rates are the trained models' own, and bear out the text."""
    rates = runs["generalisation"]
    assert runs["fresh_points"] == [400, 200]
    text = _printed(_cell(executed, "generalisation"))
    rows = re.findall(r"^(.+?)\s+(\d+\.\d)%\s+(\d+\.\d)%$", text, re.MULTILINE)
    assert [name for name, *_ in rows] == list(rates)
    for name, train, fresh in rows:
        assert (train, fresh) == tuple(f"{100 * rate:.1f}" for rate in rates[name]), name
    for name in ("width 1", "logistic regression"):
        assert abs(rates[name][0] - rates[name][1]) < 0.1, name
    assert rates["one hidden layer (reference)"][1] > rates["one hidden layer (reference)"][0]
    for name in ("width 3", "deep network"):
        assert rates[name][0] == 0.0, name
        assert rates[name][1] < 0.02, name
    # Eight neurons separate every training point, yet err on some fresh ones.
    assert rates["width 8"][0] == 0.0
    assert rates["width 8"][1] > 0.0
