"""The master notebook runs end to end, and its results bear out the exercise's claims."""

import json
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from nncourse import references

SOURCE = references.COURSE_ROOT / "source" / "simple_nn" / "simple_neural_network.ipynb"

# Printed by an extra cell after the whole notebook ran: what the claims are about.
REPORT = """
import json
print(json.dumps({
    "logistic_regression": int(np.sum(classes_lr != y)),
    "one_hidden_layer": int(np.sum(classes_h != y_col)),
    "deep_network": int(np.sum(classes_d != y_col)),
}))
"""


pytestmark = pytest.mark.kernels


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The master notebook, executed with its solutions and hidden tests in a copy of its folder."""
    folder = tmp_path_factory.mktemp("master")
    shutil.copytree(SOURCE.parent, folder, dirs_exist_ok=True)
    nb = nbformat.read(SOURCE, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return nb


@pytest.fixture(scope="module")
def misclassified(executed):
    """Misclassified training examples of each model, as the notebook counted them."""
    return json.loads(executed.cells[-1].outputs[0].text)


def test_no_cell_fails_or_writes_to_stderr(executed):
    for index, cell in enumerate(executed.cells):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"cell {index} raised {output.get('ename')}"
            assert output.get("name") != "stderr", f"cell {index} wrote to stderr: {output.text}"


def test_logistic_regression_misclassifies_several_sine_points(misclassified):
    assert misclassified["logistic_regression"] >= 5


def test_two_hidden_neurons_nearly_separate_the_classes(misclassified):
    assert 0 < misclassified["one_hidden_layer"] < misclassified["logistic_regression"]
    assert misclassified["one_hidden_layer"] <= 4


def test_deep_network_misclassifies_none(misclassified):
    assert misclassified["deep_network"] == 0


def test_training_prints_a_handful_of_lines(executed):
    for cell in executed.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id", "").startswith("train_"):
            printed = "".join(o.text for o in cell.outputs if o.output_type == "stream")
            assert printed.count("cost") <= 6, printed
