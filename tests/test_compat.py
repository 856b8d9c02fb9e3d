"""The nbgrader, traitlets and concurrent.futures behaviour nncourse/compat.py relies on."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import nbformat
import pytest
from bs4 import BeautifulSoup
from nbconvert.exporters import HTMLExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbgrader.api import Gradebook
from nbgrader.converters import Autograde, GenerateFeedback
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import AssignLatePenalties, SaveAutoGrades, saveautogrades
from traitlets.config import Application, Config

from nncourse import compat

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A gradebook with one assignment of one notebook with one grade cell, and s's submission."""
    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(url) as gb:
        gb.add_assignment("a")
        gb.add_notebook("n", "a")
        gb.add_grade_cell("g", "n", "a", max_score=2, cell_type="code")
        gb.add_student("s")
        gb.add_submission("a", "s")
    return url


def _rows(url: str, query: str) -> list[tuple]:
    """A query's rows as another connection sees the SQLite gradebook (committed only)."""
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as other:
        return other.execute(query).fetchall()


def _submission_ids(url: str) -> list[str]:
    """The submissions' ids as another connection sees them (committed only)."""
    return [row[0] for row in _rows(url, "SELECT id FROM submitted_assignment")]


def _graded_notebook() -> nbformat.NotebookNode:
    """A notebook whose one grade cell ran without an error (full points)."""
    cell = nbformat.v4.new_code_cell("assert True")
    cell.metadata["nbgrader"] = {
        "grade": True,
        "solution": False,
        "locked": True,
        "grade_id": "g",
        "points": 2,
        "schema_version": 3,
    }
    cell.execution_count = 1
    return nbformat.v4.new_notebook(cells=[cell])


def test_nbgrader_commits_inside_its_own_methods(db):
    # Why compat exists: each call is its own transaction, seen at once by other connections.
    before = _submission_ids(db)
    with Gradebook(db) as gb:
        gb.remove_submission("a", "s")
        assert _submission_ids(db) == []
    assert before


def test_a_transaction_commits_nothing_until_it_ends(db):
    before = _submission_ids(db)
    with Gradebook(db) as gb, compat.gradebook_transaction(gb):
        gb.remove_submission("a", "s")
        new = gb.add_submission("a", "s").id
        assert _submission_ids(db) == before
        assert gb.find_submission("a", "s").id == new  # the session sees its own changes
    assert _submission_ids(db) == [new]


def test_a_failed_transaction_changes_nothing_and_restores_nbgrader(db):
    before = _submission_ids(db)
    with Gradebook(db) as gb:
        with pytest.raises(RuntimeError, match="stopped"):
            _replace_then_fail(gb)
        assert "commit" not in vars(gb.db)
        assert gb.find_submission("a", "s").id == before[0]
    assert _submission_ids(db) == before
    assert saveautogrades.Gradebook is Gradebook


def _replace_then_fail(gb: Gradebook) -> None:
    """Replace s's submission inside a transaction, then fail before it ends."""
    with compat.gradebook_transaction(gb):
        gb.remove_submission("a", "s")
        gb.add_submission("a", "s")
        raise RuntimeError("stopped")


def test_nbgrader_record_steps_write_into_the_open_transaction(db):
    # SaveAutoGrades and AssignLatePenalties open Gradebook(db_url) by their module's name for
    # it: lent this one, they see the uncommitted new submission and save into it.
    resources = {"nbgrader": {"student": "s", "assignment": "a", "notebook": "n", "db_url": db}}
    with Gradebook(db) as gb:
        with compat.gradebook_transaction(gb):
            gb.remove_submission("a", "s")
            gb.add_submission("a", "s")
            nb = _graded_notebook()
            for step in (SaveAutoGrades, AssignLatePenalties):
                nb, resources = step()(nb, resources)
            assert gb.find_grade("g", "n", "a", "s").auto_score == 2
        assert gb.db.is_active
    with Gradebook(db) as gb:
        assert gb.find_submission("a", "s").score == 2


def test_traitlets_skips_a_broken_config_file_unless_asked_to_raise():
    # Why load_app_config turns raise_config_file_errors on.
    assert Application.raise_config_file_errors.default_value is False


def test_a_broken_config_file_is_refused_by_name(tmp_path, monkeypatch):
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.Exchange.root = (\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(compat.ConfigError, match=r"nbgrader_config\.py cannot be loaded: Syntax"):
        compat.load_app_config(tmp_path)


def test_kill_pool_stops_running_work_without_waiting():
    pool = concurrent.futures.ProcessPoolExecutor(1)
    future = pool.submit(time.sleep, 60)
    while not future.running():
        time.sleep(0.01)
    started = time.monotonic()
    compat.kill_pool(pool)
    with pytest.raises(concurrent.futures.process.BrokenProcessPool):
        future.result(timeout=10)
    assert time.monotonic() - started < 10


def test_the_formgrader_button_asks_the_api_and_shows_log_before_error():
    """What route_formgrader_autograde relies on: the handler calls api.autograde(a, s), and the
    page shows the answer's "log" panel above its "error" panel."""
    import inspect

    import nbgrader.server_extensions.formgrader as fg
    from nbgrader.server_extensions.formgrader.apihandlers import AutogradeHandler

    assert "self.api.autograde(assignment_id, student_id)" in inspect.getsource(
        AutogradeHandler.post
    )
    static = Path(fg.__file__).parent / "static" / "js"
    page = (static / "manage_submissions.js").read_text()
    assert 'response["log"],\n                response["error"]);' in page
    utils = (static / "utils.js").read_text()
    assert utils.index('text("Log Output")') < utils.index('text("Traceback")')


def test_route_formgrader_autograde_replaces_the_api_method():
    """After routing, every NbGraderAPI answers autograde with the given function."""
    from nbgrader.apps.api import NbGraderAPI

    original = NbGraderAPI.autograde
    try:
        compat.route_formgrader_autograde(lambda api, a, s: {"success": True, "log": f"{a}/{s}"})
        assert NbGraderAPI.autograde(object(), "a1", "s1") == {"success": True, "log": "a1/s1"}
    finally:
        NbGraderAPI.autograde = original


def test_autograde_steps_are_nbgraders_own_split_where_grades_are_written():
    """nbgrader 0.9.6's sanitise and autograde steps, which nncourse grade runs in this order."""
    sanitise, run, record = compat.autograde_steps(Config())
    assert [step.__name__ for step in sanitise] == [
        "ClearOutput",
        "DeduplicateIds",
        "OverwriteKernelspec",
        "OverwriteCells",
        "CheckCellMetadata",
    ]
    assert [step.__name__ for step in run] == [
        "Execute",
        "IgnorePattern",
        "ClearMetadataPreprocessor",
        "LimitOutput",
    ]
    assert [step.__name__ for step in record] == [
        "SaveAutoGrades",
        "AssignLatePenalties",
        "CheckCellMetadata",
    ]


def test_converter_resources_are_those_nbgraders_converter_builds(tmp_path):
    course = CourseDirectory(root=str(tmp_path))
    notebook = Path(course.format_path(course.submitted_directory, "s", "a")) / "n.ipynb"
    theirs = Autograde(coursedir=course).init_single_notebook_resources(str(notebook))
    ours = compat.converter_resources("s", "a", "n", course.db_url, notebook.parent)
    # nbconvert's exporter adds the notebook's path and name as it reads the file.
    assert ours.pop("metadata") == {"path": str(notebook.parent), "name": "n"}
    assert ours == theirs


def test_remove_hidden_tests_keeps_the_visible_part_as_nbgrader_does():
    visible = '"""Check x."""\nassert x == 1\n'
    hidden = "### BEGIN HIDDEN TESTS\nassert secret()\n### END HIDDEN TESTS\n"
    cell = nbformat.v4.new_code_cell(visible + hidden)
    compat.remove_hidden_tests(cell)
    assert cell.source == visible


class _Recorder(compat.HookedKernelManager):
    """A kernel manager that notes which hook ran, and can make its launch fail."""

    fail_launch = False

    def __init__(self, **kwargs) -> None:
        super().__init__(kernel_name="python3", **kwargs)
        self.calls: list[str] = []

    async def before_start(self) -> None:
        self.calls.append("before_start")

    async def launch(self, kernel_cmd, **kw) -> None:
        self.calls.append("launch")
        if self.fail_launch:
            raise FileNotFoundError("no such kernel")
        await self.start_process(kernel_cmd, **kw)
        self.calls.append(f"group={self.process_group() is not None}")
        self.calls.append(f"running={self.process_running()}")

    def start_failed(self) -> None:
        self.calls.append("start_failed")

    async def after_kill(self, restart: bool) -> None:
        self.calls.append(f"after_kill running={self.process_running()}")

    async def after_cleanup(self, restart: bool) -> None:
        self.calls.append("after_cleanup")


@pytest.mark.kernels
def test_a_kernel_runs_every_hook_in_order_through_the_public_names():
    """nbclient starts with start_kernel and stops with shutdown_kernel(now=True)."""
    import asyncio

    async def life() -> list[str]:
        manager = _Recorder()
        await manager.start_kernel()
        await manager.shutdown_kernel(now=True)
        await manager.cleanup_resources()  # the public name reaches the hook too
        return manager.calls

    assert asyncio.run(life()) == [
        "before_start",
        "launch",
        "group=True",
        "running=True",
        "after_kill running=False",
        "after_cleanup",
        "after_cleanup",
    ]


def test_a_failed_launch_calls_start_failed_and_raises():
    import asyncio

    manager = _Recorder()
    manager.fail_launch = True
    with pytest.raises(FileNotFoundError):
        asyncio.run(manager.start_kernel())
    assert manager.calls == ["before_start", "launch", "start_failed"]


def test_jupyter_client_binds_the_public_names_past_the_overridable_steps():
    """Why HookedKernelManager binds them again: AsyncKernelManager's skip subclasses."""
    from jupyter_client.manager import AsyncKernelManager, KernelManager

    assert AsyncKernelManager.pre_start_kernel is KernelManager._async_pre_start_kernel
    assert AsyncKernelManager.cleanup_resources is KernelManager._async_cleanup_resources
    assert compat.HookedKernelManager.cleanup_resources is not (
        AsyncKernelManager.cleanup_resources
    )


def test_collect_records_inbound_folders_through_the_hook(tmp_path):
    """ExchangeCollect.init_src records inbound folders through the hook; a bad time is oldest."""
    import datetime

    from nbgrader.exchange.default.collect import ExchangeCollect

    class Collect(compat.InboundRecordHook, ExchangeCollect):
        def unparsable_folder(self, path: str) -> dict:
            name = Path(path).name
            return {
                "username": name.split("+")[0],
                "filename": name,
                "timestamp": datetime.datetime.min,
            }

    inbound = tmp_path / "exchange" / "c" / "inbound"
    for name in ["ann+a+2026-12-01 10:00:00.000000 UTC+k1", "ann+a+garbled+k2", "bob+a+garbled+k3"]:
        (inbound / name).mkdir(parents=True)
    coursedir = CourseDirectory(
        root=str(tmp_path), course_id="c", assignment_id="a", db_url=f"sqlite:///{tmp_path}/gb.db"
    )
    collect = Collect(coursedir=coursedir, root=str(tmp_path / "exchange"))
    collect.init_src()
    assert sorted(r["filename"] for r in collect.src_records) == [
        "ann+a+2026-12-01 10:00:00.000000 UTC+k1",
        "bob+a+garbled+k3",
    ]


def test_clear_solutions_takes_each_cells_stub_from_the_hook():
    from nbgrader.preprocessors import ClearSolutions

    class Stubs(compat.SolutionStubHook, ClearSolutions):
        def stub_for(self, cell, stub: str) -> str:
            return stub.replace("raise NotImplementedError()", f"pass  # cell {cell.metadata.n}")

    cells = []
    for n in (1, 2):
        cell = nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION\n")
        cell.metadata.n = n
        cell.metadata.nbgrader = {"solution": True, "grade": False, "grade_id": f"s{n}"}
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "language": "python"}
    stubs = Stubs()
    configured = dict(stubs.code_stub)
    stubs.preprocess(nb, {})
    assert [c.source.splitlines()[-1] for c in nb.cells] == ["pass  # cell 1", "pass  # cell 2"]
    assert stubs.code_stub == configured


def _tables(url: str) -> list[tuple[str, str]]:
    """Each table's name and its CREATE statement as SQLite stores it, without the version."""
    rows = _rows(url, "SELECT name, sql FROM sqlite_master ORDER BY name")
    return [(name, " ".join(sql.split()).rstrip(";")) for name, sql in rows if sql]


def _version(url: str) -> str:
    """The schema version alembic_version holds."""
    return _rows(url, "SELECT version_num FROM alembic_version")[0][0]


def test_a_new_gradebook_is_nbgraders_own_without_running_alembic(db, tmp_path, monkeypatch):
    """new_gradebook makes the tables and version Gradebook() makes, and Gradebook() opens it as
    an existing database: nbgrader asks alembic only for a database without tables."""
    nbgraders = f"sqlite:///{tmp_path / 'nbgraders.db'}"
    Gradebook(nbgraders).close()  # nbgrader's own way, `alembic heads` included
    ours = f"sqlite:///{tmp_path / 'ours.db'}"
    with Gradebook(db) as live:
        compat.new_gradebook(ours, live)

    def no_alembic() -> str:
        raise AssertionError("Gradebook() ran `alembic heads` for an existing database")

    monkeypatch.setattr("nbgrader.api.get_alembic_version", no_alembic)
    with Gradebook(ours, "course") as gb:
        gb.add_assignment("a")
    assert _tables(ours) == _tables(nbgraders)
    assert _version(ours) == _version(nbgraders) == _version(db)


def _soup_pass(html: str) -> str:
    """HTMLExporter's own pass for alt text, the oracle with_alt_text must agree with."""
    soup = BeautifulSoup(html, features="html.parser")
    for element in soup.select("img:not([alt])"):
        element.attrs["alt"] = compat.NO_ALT_TEXT
    return str(soup)


@pytest.mark.parametrize(
    ("html", "missing"),
    [
        ('<p><img src="data:image/png;base64,iVBO+/=="></p>', 1),
        ('<img src="a.png" alt="a plot">', 0),
        ("<IMG SRC='a.png' ALT>", 0),
        ('<img src="a.png" alt="">', 0),
        ('<img src="a.png"/>', 1),
        ("<img src=a.png width=3>", 1),
        ('<img title="a > b" src="a.png">', 1),
        ('<a title="<img src=x>">link</a><img src="b.png">', 1),
        ("<!-- <img src=a.png> --><img src=b.png>", 1),
        ('<script>let s = "<img src=a.png>";</script><style>p{}</style><img src=b.png>', 1),
        ('<div data-alt="x"><img data-alt="y" src="a.png"></div>', 1),
        ('<img src="a.png" alt="one"><img src="b.png"><img src="c.png" >', 2),
    ],
)
def test_with_alt_text_gives_the_page_htmlexporters_pass_gives(html, missing):
    """Parsed, the page with_alt_text writes is the one HTMLExporter's BeautifulSoup pass writes."""
    ours, counted = compat.with_alt_text(html)
    assert counted == missing
    assert str(BeautifulSoup(ours, features="html.parser")) == _soup_pass(html)


def _feedback_config() -> Config:
    """The HTMLExporter settings nbgrader's GenerateFeedback gives its exporter."""
    return GenerateFeedback(coursedir=CourseDirectory(), config=Config()).config


SHELL_LINE = "cat $HOME/notes | grep -c done"


def test_a_cells_magic_language_changes_its_highlighting():
    """The cells _graded_solutions adds are highlighted apart by nbconvert, so the test below
    shows that the exporter's memory keeps them apart too."""
    highlight = Highlight2HTML(pygments_lexer="ipython3")
    assert highlight(SHELL_LINE) != highlight(SHELL_LINE, metadata={"magics_language": "bash"})


def _graded_solutions(score: int = 1) -> tuple[nbformat.NotebookNode, dict]:
    """The course's solutions (plots, markdown images, code), with scores and a magic's language."""
    nb = nbformat.read(ROOT / "solutions" / "simple_nn" / "simple_neural_network.ipynb", 4)
    for index, cell in enumerate(nb.cells):
        if "nbgrader" in cell.metadata:
            cell.metadata.nbgrader["score"] = score * index % 2  # differs per student
        cell.metadata["tags"] = [f"student-{score}"]
    # The same source twice, once as a cell magic's bash: highlighted apart, as in a notebook
    # that ipykernel ran.
    nb.metadata.language_info = {"name": "python", "pygments_lexer": "ipython3"}
    nb.cells += [nbformat.v4.new_code_cell(SHELL_LINE) for _ in range(2)]
    nb.cells[-1].metadata.magics_language = "bash"
    resources = {"nbgrader": {"notebook": "n", "score": 30, "max_score": 32, "late_penalty": 0}}
    return nb, resources


def test_the_feedback_exporter_writes_nbconverts_page_for_less(monkeypatch):
    """page_exporter's page, parsed, is HTMLExporter's page: same template, same alt text, and
    the same highlighting and templates when the cells come again with other metadata, from
    its memory."""
    config = _feedback_config()
    exporter = compat.page_exporter()
    compiled = []
    compile_template = jinja2.Environment.compile
    monkeypatch.setattr(
        jinja2.Environment,
        "compile",
        lambda self, *args, **kw: compiled.append(args) or compile_template(self, *args, **kw),
    )
    for score in (1, 2):  # the second student: every template and cell is remembered
        nb, resources = _graded_solutions(score)
        theirs, _ = HTMLExporter(config=config).from_notebook_node(nb, dict(resources))
        assert compat.NO_ALT_TEXT in theirs
        compiled.clear()
        ours, _ = exporter(config=config).from_notebook_node(nb, dict(resources))
        assert score == 1 or compiled == []
        assert "jp-Notebook" not in ours
        assert str(BeautifulSoup(ours, features="html.parser")) == theirs


def test_the_feedback_exporter_leaves_the_lab_template_to_htmlexporter():
    """With JupyterLab's template the page needs HTMLExporter's tabindex pass: it is its page."""
    nb, resources = _graded_solutions()
    config = _feedback_config()
    config.HTMLExporter.template_name = "lab"
    theirs, _ = HTMLExporter(config=config).from_notebook_node(nb, dict(resources))
    ours, _ = compat.page_exporter()(config=config).from_notebook_node(nb, dict(resources))
    assert 'tabindex="0"' in theirs
    assert ours == theirs


DEFER = "from nncourse import compat; compat.defer_iri_grammar(); "
IRI_VALUES = [
    "http://example.com/ä",
    "https://example.org:8888/lab?token=x#cell",
    "mailto:student@example.org",
    "not an iri",
    "http://exa mple.com/",
    "rel/ä",
    "//host/path",
    "",
]


def _python(code: str) -> str:
    """What a fresh interpreter prints for code (the imports under test happen once a process)."""
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_importing_nbformat_builds_the_iri_parsers_unless_deferred():
    """nbformat's jsonschema builds rfc3987_syntax's parsers as it is imported, unless deferred."""
    probe = "import sys, nbformat; print('rfc3987_syntax.syntax_helpers' in sys.modules)"
    assert _python(probe) == "True"
    assert _python(DEFER + probe) == "False"


def test_deferred_iri_formats_check_what_they_checked():
    """With the stand-in, jsonschema's iri formats load the real parsers and agree with them."""
    probe = (
        "import json, sys, jsonschema; checker = jsonschema.FormatChecker(); "
        f"values = {IRI_VALUES!r}; "
        "print(json.dumps([[checker.conforms(v, f) for v in values] "
        "for f in ('iri', 'iri-reference')] + ['rfc3987_syntax.syntax_helpers' in sys.modules]))"
    )
    as_is = json.loads(_python(probe))
    assert json.loads(_python(DEFER + probe)) == as_is
    # The formats were really checked: absolute IRIs only, then relative references too.
    assert as_is[0] == [True, True, True, False, False, False, False, False]
    assert as_is[1] == [True, True, True, False, False, True, True, True]
    assert as_is[2] is True  # checking loaded the real parsers
