"""Every figure of the master notebook is labelled, keeps its legend off the data, tells the
classes apart without relying on colour alone, and is described in words for those who
cannot see it."""

import json
import re

import pytest
from course_copy import execute_in_copy

from nncourse import references

SOURCE = references.COURSE_ROOT / "source" / "simple_nn" / "simple_neural_network.ipynb"
FIGURES = SOURCE.parent / "figures"

#: The class colours the plots use (Okabe-Ito blue and vermillion), as matplotlib writes them.
CLASS_COLOURS = {"#0072b2", "#d55e00"}
#: An image in markdown: its alt text and the figure it shows.
IMAGE = re.compile(r"!\[([^\]]*)\]\(figures/([^)]+)\.png\)")
#: Fewer words than this do not describe a plot to someone who cannot see it.
MIN_ALT_WORDS = 20

# Measures a figure the way a reader sees it: after a draw, in display coordinates.
INSPECT = '''
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D


def along(xy, step=2.0):
    """Return the points of a polyline every step pixels, so that its segments count as data."""
    xy = xy[np.isfinite(xy).all(axis=1)]
    pieces = [xy[:1]]
    for start, end in zip(xy[:-1], xy[1:], strict=True):
        count = max(1, int(np.ceil(np.hypot(*(end - start)) / step)))
        pieces.append(start + np.outer(np.arange(1, count + 1) / count, end - start))
    return np.concatenate(pieces)


def inspect_figure(fig):
    """Return each panel's labels, its points' colours and markers, and what each legend covers."""
    fig.canvas.draw()
    panels, markers, points = [], {}, [np.empty((0, 2))]
    for ax in fig.axes:
        panels.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(),
                       "ylabel": ax.get_ylabel(), "axes_shown": ax.axison})
        for artist in ax.get_children():
            if isinstance(artist, Line2D):
                xy = artist.get_transform().transform(artist.get_xydata())
                if artist.get_linestyle() != "None":
                    xy = along(xy)
            elif isinstance(artist, PathCollection):
                xy = artist.get_offset_transform().transform(artist.get_offsets())
                for colour in artist.get_facecolors():
                    # A marker is known by its outline: the vertices of its path.
                    shape = repr(np.round(artist.get_paths()[0].vertices, 2).tolist())
                    markers.setdefault(to_hex(colour), set()).add(shape)
            else:
                continue  # shaded regions fill the panel on purpose: they are not data points
            box = ax.bbox
            shown = (np.isfinite(xy).all(axis=1) & (xy[:, 0] >= box.x0) & (xy[:, 0] <= box.x1)
                     & (xy[:, 1] >= box.y0) & (xy[:, 1] <= box.y1))
            points.append(xy[shown])
    points = np.concatenate(points)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    covered = []
    for legend in legends:
        box = legend.get_window_extent(fig.canvas.get_renderer())
        covered.append(int(np.sum((points[:, 0] >= box.x0) & (points[:, 0] <= box.x1)
                                  & (points[:, 1] >= box.y0) & (points[:, 1] <= box.y1))))
    return {"panels": panels, "markers": {colour: sorted(m) for colour, m in markers.items()},
            "points": len(points),
            "legends_cover": covered}
'''

# Run before the notebook's own cells: every figure is inspected just before it is shown.
WRAP_SHOW = '''
import json

figure_checks = []
running = {}
_show = plt.show


def note_cell(info):
    """Remember which cell runs, by its source, so that each figure is checked against its cell."""
    running["source"] = info.raw_cell


def show(*args, **kwargs):
    """Inspect every open figure, then show it as plt.show would."""
    for number in plt.get_fignums():
        figure_checks.append({"source": running["source"], **inspect_figure(plt.figure(number))})
    return _show(*args, **kwargs)


get_ipython().events.register("pre_run_cell", note_cell)
plt.show = show
'''


def _master_cells() -> list[dict]:
    return json.loads(SOURCE.read_text(encoding="utf-8"))["cells"]


def _figure_name(cell) -> str | None:
    marker = cell["metadata"].get("nncourse", {})
    return marker.get("figure") if isinstance(marker, dict) else None


#: The figures the master's cells generate, in notebook order.
GENERATED = [name for cell in _master_cells() if (name := _figure_name(cell))]
#: Figures that draw a picture, not data: no axes, hence no axis labels, points or legend.
DIAGRAMS = {"network_diagram"}
PLOTS = [name for name in GENERATED if name not in DIAGRAMS]


def _images() -> list[tuple[str, str]]:
    """Every (alt text, figure name) the master's markdown shows from figures/."""
    return [
        (match.group(1), match.group(2))
        for cell in _master_cells()
        if cell["cell_type"] == "markdown"
        for match in IMAGE.finditer("".join(cell["source"]))
    ]


def test_every_generated_figure_is_shown_once_and_every_shown_figure_is_generated() -> None:
    shown = [name for _, name in _images()]
    assert sorted(shown) == sorted(GENERATED)
    assert sorted(path.stem for path in FIGURES.glob("*.png")) == sorted(GENERATED)


@pytest.mark.parametrize(("alt", "name"), _images(), ids=[name for _, name in _images()])
def test_alt_text_describes_the_figure(alt: str, name: str) -> None:
    words = re.findall(r"[\w.$'-]+", alt)
    assert len(words) >= MIN_ALT_WORDS, f"figures/{name}.png: alt text too short to describe it"
    assert [text for text, _ in _images()].count(alt) == 1, f"figures/{name}.png: alt text reused"


def _inspect_here(build) -> dict:
    """Run INSPECT in this process on the figure build(fig) draws."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    namespace: dict = {}
    exec(INSPECT, namespace)
    fig = Figure(layout="constrained")
    FigureCanvasAgg(fig)
    build(fig)
    return namespace["inspect_figure"](fig)


def test_inspection_sees_a_legend_on_the_data_and_a_missing_label() -> None:
    def legend_on_data(fig) -> None:
        ax = fig.add_subplot()
        ax.scatter([0.0, 1.0, 0.5], [0.0, 1.0, 0.5], color="#0072B2", label="class 0")
        ax.set_xlabel("$x_1$")
        ax.legend(loc="center")

    found = _inspect_here(legend_on_data)
    assert found["legends_cover"] == [1]
    assert found["panels"][0]["ylabel"] == ""
    assert list(found["markers"]) == ["#0072b2"]


def test_inspection_tells_markers_apart() -> None:
    def three_markers(fig) -> None:
        ax = fig.add_subplot()
        ax.scatter([0.0], [0.0], color="#0072B2", marker="o")
        ax.scatter([1.0], [1.0], color="#D55E00", marker="o")
        ax.scatter([2.0], [2.0], color="#D55E00", marker="^")

    markers = _inspect_here(three_markers)["markers"]
    assert markers["#0072b2"][0] in markers["#d55e00"]
    assert len(markers["#d55e00"]) == 2


def test_inspection_sees_a_legend_on_a_line_between_its_points() -> None:
    def legend_on_line(fig) -> None:
        ax = fig.add_subplot()
        ax.plot([0.0, 1.0], [0.5, 0.5], label="cost")
        ax.legend(loc="center")

    assert _inspect_here(legend_on_line)["legends_cover"][0] > 0


def test_inspection_passes_a_legend_below_the_panels() -> None:
    def legend_below(fig) -> None:
        ax = fig.add_subplot()
        ax.plot([0.0, 1.0], [0.0, 1.0], label="cost")
        fig.legend(loc="outside lower center")

    found = _inspect_here(legend_below)
    assert found["legends_cover"] == [0]
    assert found["points"] > 2


@pytest.fixture(scope="module")
def inspected(tmp_path_factory) -> dict[str, list[dict]]:
    """{figure name: the inspection of every figure its cell showed}, from running the master."""
    nb = execute_in_copy(
        SOURCE,
        tmp_path_factory.mktemp("figures"),
        first=INSPECT + WRAP_SHOW,
        extra="print(json.dumps(figure_checks))",
    )
    names = {cell.source: _figure_name(cell) for cell in nb.cells}
    found: dict[str, list[dict]] = {}
    for check in json.loads(nb.cells[-1].outputs[0].text):
        name = names[check["source"]]
        assert name, f"a cell shows a figure but has no figure name:\n{check['source']}"
        found.setdefault(name, []).append(check)
    return found


@pytest.mark.kernels
@pytest.mark.parametrize("name", sorted(DIAGRAMS))
def test_a_diagram_draws_no_axes(inspected, name: str) -> None:
    """A diagram is exempt from the rules of data plots below because it has no axes at all."""
    assert inspected.get(name), f"the cell of figure {name!r} showed no figure"
    for check in inspected[name]:
        assert not any(panel["axes_shown"] for panel in check["panels"])


@pytest.mark.kernels
@pytest.mark.parametrize("name", PLOTS)
def test_every_panel_has_axis_labels(inspected, name: str) -> None:
    assert inspected.get(name), f"the cell of figure {name!r} showed no figure"
    for check in inspected[name]:
        for panel in check["panels"]:
            assert panel["xlabel"].strip(), f"{name}: panel {panel['title']!r} has no x label"
            assert panel["ylabel"].strip(), f"{name}: panel {panel['title']!r} has no y label"


@pytest.mark.kernels
@pytest.mark.parametrize("name", PLOTS)
def test_legend_covers_no_data(inspected, name: str) -> None:
    for check in inspected[name]:
        assert check["points"] > 0, f"{name}: no data point found to check the legend against"
        assert check["legends_cover"], f"{name}: no legend says what the colours and marks mean"
        assert check["legends_cover"] == [0] * len(check["legends_cover"]), (
            f"{name}: a legend covers data points: {check['legends_cover']}"
        )


@pytest.mark.kernels
@pytest.mark.parametrize("name", PLOTS)
def test_points_show_their_class_by_colour_and_marker(inspected, name: str) -> None:
    for check in inspected[name]:
        markers = check["markers"]
        assert set(markers) <= CLASS_COLOURS, f"{name}: points in {sorted(markers)}"
        if len(markers) == 2:
            blue, vermillion = (set(markers[colour]) for colour in sorted(CLASS_COLOURS))
            assert not blue & vermillion, f"{name}: both classes drawn with the same marker"
