"""Every reliance on nbgrader's, nbconvert's, jupyter_client's, traitlets' and jsonschema's
internals, pinned by test_compat.

Importing it is cheap: nbgrader and nbconvert (seconds each) are imported where a function
needs them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from jupyter_client.manager import AsyncKernelManager

if TYPE_CHECKING:
    from nbformat.notebooknode import NotebookNode
    from nbgrader.api import Gradebook
    from traitlets.config import Config


def defer_iri_grammar() -> None:
    """Build rfc3987_syntax's IRI parsers when an IRI is first checked, not when it is imported.

    nbformat imports jsonschema, jsonschema imports rfc3987_syntax for its "iri" formats, and
    that module builds some thirty Earley parsers as it is imported: 2.8 s of every nncourse
    command on a 2-core server, spent before any work (python-jsonschema/jsonschema#1428). No
    schema nncourse validates uses those formats. Called before nbformat is first imported,
    this puts a stand-in in the package's place that imports the real module on first use.
    """
    name = "rfc3987_syntax"
    spec = importlib.util.find_spec(name) if name not in sys.modules else None
    if spec is None or spec.submodule_search_locations is None:
        return

    def helpers() -> ModuleType:
        # A submodule of the stand-in, found through its __path__: the package's own file.
        return importlib.import_module(f"{name}.syntax_helpers")

    def is_valid_syntax(term: str, value: str) -> bool:
        """rfc3987_syntax.is_valid_syntax, the one name jsonschema imports."""
        return helpers().is_valid_syntax(term, value)

    stand_in = ModuleType(name, "rfc3987_syntax, its parsers built on first use (nncourse)")
    stand_in.__path__ = list(spec.submodule_search_locations)
    stand_in.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    stand_in.__getattr__ = lambda attribute: getattr(helpers(), attribute)  # type: ignore[method-assign]
    sys.modules[name] = stand_in


class _Borrowed:
    """A gradebook lent to nbgrader code that opens its own: closing it closes nothing."""

    def __init__(self, gb: Gradebook) -> None:
        self._gb = gb

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gb, name)

    def __enter__(self) -> _Borrowed:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        """Leave the lender's session open."""


@contextlib.contextmanager
def gradebook_transaction(gb: Gradebook) -> Iterator[Gradebook]:
    """One transaction for a block of nbgrader gradebook calls: committed at the end or not at all.

    nbgrader's Gradebook methods and SaveAutoGrades commit after every change, so a grading
    interrupted between them would leave a submission half replaced. Inside this block their
    commits only flush (the changes reach the database, uncommitted, and later queries see
    them), and nbgrader's preprocessors, which open a Gradebook of their own from a URL
    (SaveAutoGrades, AssignLatePenalties), are handed this one.
    """
    session = gb.db
    commit = session.commit
    session.commit = session.flush  # an attribute on the scoped_session shadows its method
    lent = [m for m in _preprocessor_modules() if hasattr(m, "Gradebook")]
    saved = [m.Gradebook for m in lent]
    for module in lent:
        module.Gradebook = lambda *args, **kwargs: _Borrowed(gb)
    try:
        # Every nbgrader method ends in a commit (a flush here); autoflushing in between
        # would flush add_submission's new rows before it adds them to the session.
        with session.no_autoflush:
            yield gb
    except BaseException:
        vars(session).pop("commit", None)
        session.rollback()
        raise
    else:
        vars(session).pop("commit", None)
        commit()
    finally:
        for module, original in zip(lent, saved, strict=True):
            module.Gradebook = original


def _preprocessor_modules() -> list[ModuleType]:
    """nbgrader's preprocessor modules (each imports Gradebook by name)."""
    import nbgrader.preprocessors

    prefix = nbgrader.preprocessors.__name__ + "."
    return [m for name, m in list(sys.modules.items()) if name.startswith(prefix) and m]


class ConfigError(Exception):
    """nbgrader_config.py could not be loaded; the message names the file and the error."""


def new_gradebook(url: str, like: Gradebook) -> None:
    """Create an empty gradebook at `url` with the tables and schema version of `like`.

    nbgrader's Gradebook() stamps a database it creates with the version that the command
    `alembic heads` prints, and runs that command to learn it: seconds at the start of every
    grading run (record.master_cells), while no worker has started. The tables here are
    nbgrader's own models; the version is the copied gradebook's. Gradebook() then opens the
    file as an existing one.
    """
    from nbgrader.api import Base
    from sqlalchemy import create_engine, text

    version = like.db.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            Base.metadata.create_all(bind=connection)
            connection.execute(
                text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
            )
            connection.execute(
                text("INSERT INTO alembic_version (version_num) VALUES (:version)"),
                {"version": version},
            )
    finally:
        engine.dispose()


def load_app_config(course_root: Path) -> Config:
    """The configuration NbGraderApp loads in the working directory, refusing a broken file.

    traitlets logs an exception raised by a config file and carries on without it (its
    `raise_config_file_errors` is False by default): grading would then run with defaults
    the instructor did not choose, the sandbox's among them.
    """
    from nbgrader.apps.nbgraderapp import NbGraderApp

    app = NbGraderApp()
    app.raise_config_file_errors = True
    try:
        app.initialize([])
    except Exception as error:  # noqa: BLE001 - a config file can raise anything
        raise ConfigError(
            f"{course_root / 'nbgrader_config.py'} cannot be loaded: "
            f"{type(error).__name__}: {error}"
        ) from error
    return app.config


def kill_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """SIGKILL a process pool's workers and drop its queued work, without waiting for any."""
    # ProcessPoolExecutor offers no way to stop running work; its worker table is private.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError, ValueError):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def route_formgrader_autograde(autograde: Any) -> None:
    """Make the formgrader's Autograde button call `autograde(api, assignment_id, student_id)`.

    nbgrader's AutogradeHandler answers the button with `self.api.autograde(assignment_id,
    student_id)` on an NbGraderAPI, and the page shows the returned dict's "log" and then its
    "error" (manage_submissions.js); test_compat pins both.
    """
    from nbgrader.apps.api import NbGraderAPI

    NbGraderAPI.autograde = autograde


def autograde_steps(config: Config) -> tuple[list, list, list]:
    """nbgrader's sanitise and autograde steps, the latter split where it starts writing grades."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import SaveAutoGrades

    autograde = Autograde(config=config)
    steps = list(autograde.autograde_preprocessors)
    split = steps.index(SaveAutoGrades)
    return list(autograde.sanitize_preprocessors), steps[:split], steps[split:]


def run_steps(
    steps: Iterable[type], config: Config, nb: NotebookNode, resources: dict
) -> NotebookNode:
    """Apply nbgrader preprocessors the way its exporter does (respecting each one's `enabled`)."""
    for step in steps:
        nb, resources = step(config=config)(nb, resources)
    return nb


def converter_resources(
    student: str, assignment: str, notebook: str, db_url: str, path: Path
) -> dict[str, Any]:
    """The resources dict nbgrader's converters hand to their preprocessors."""
    return {
        "unique_key": notebook,
        "output_files_dir": f"{notebook}_files",
        "metadata": {"path": str(path), "name": notebook},
        "nbgrader": {
            "student": student,
            "assignment": assignment,
            "notebook": notebook,
            "db_url": db_url,
        },
    }


def remove_hidden_tests(cell: NotebookNode) -> None:
    """Strip a grade cell's hidden tests in place, as nbgrader's ClearHiddenTests does.

    Its region remover is private, and it is the one place that knows nbgrader's delimiters
    (c.ClearHiddenTests.begin_test_delimeter and end_test_delimeter, spelled so).
    """
    from nbgrader.preprocessors import ClearHiddenTests

    ClearHiddenTests(enforce_metadata=False)._remove_hidden_test_region(cell)


class HookedKernelManager(AsyncKernelManager):
    """jupyter_client's AsyncKernelManager, with public hooks where its private steps run.

    Starting a kernel runs `_async_pre_start_kernel` (the command and connection file), then
    `_async_launch_kernel` (the process, through the kernel provisioner); stopping it runs
    `_async_kill_kernel` and `_async_cleanup_resources`. AsyncKernelManager binds its public
    names (`pre_start_kernel`, `cleanup_resources`, ...) to KernelManager's functions rather
    than to these, so they are bound again here: nbclient calls the public names.
    """

    async def before_start(self) -> None:
        """Set up what the kernel's command needs (transport, connection file): first step."""

    async def launch(self, kernel_cmd: list[str], **kw: Any) -> None:
        """Start the kernel process; wrap the command and call start_process to change how."""
        await self.start_process(kernel_cmd, **kw)

    def start_failed(self) -> None:
        """Undo before_start and launch after either raised: nbclient cleans up nothing then."""

    async def after_kill(self, restart: bool) -> None:
        """Called once jupyter_client has killed the kernel process."""

    async def after_cleanup(self, restart: bool) -> None:
        """Called once jupyter_client has removed the connection file and sockets."""

    async def start_process(self, kernel_cmd: list[str], **kw: Any) -> None:
        """jupyter_client's own launch of kernel_cmd."""
        await super()._async_launch_kernel(kernel_cmd, **kw)

    def process_group(self) -> int | None:
        """The kernel process's group (the local provisioner makes it lead its own)."""
        return getattr(self.provisioner, "pgid", None)

    def process_running(self) -> bool:
        """Whether the kernel process was started and not yet reaped (safe from any thread)."""
        process = getattr(self.provisioner, "process", None)
        return process is not None and process.returncode is None

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        try:
            await self.before_start()
            return await super()._async_pre_start_kernel(**kw)
        except BaseException:
            self.start_failed()
            raise

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        try:
            await self.launch(kernel_cmd, **kw)
        except BaseException:
            self.start_failed()
            raise

    async def _async_kill_kernel(self, restart: bool = False) -> None:
        await super()._async_kill_kernel(restart=restart)
        await self.after_kill(restart)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        await self.after_cleanup(restart)

    pre_start_kernel = _async_pre_start_kernel
    _launch_kernel = _async_launch_kernel
    _kill_kernel = _async_kill_kernel
    cleanup_resources = _async_cleanup_resources


class InboundRecordHook:
    """For nbgrader's ExchangeCollect: `unparsable_folder(path)` names a folder it cannot read.

    ExchangeCollect turns each inbound folder's name (student+assignment+time) into a record
    in its private `_path_to_record`, and a name without a valid time raises there.
    """

    def unparsable_folder(self, path: str) -> dict:
        """The record of an inbound folder whose name nbgrader could not parse."""
        raise NotImplementedError

    def _path_to_record(self, path: str) -> dict:
        try:
            return super()._path_to_record(path)  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - dateutil raises assorted errors for a bad name
            return self.unparsable_folder(path)


class SolutionStubHook:
    """For nbgrader's ClearSolutions: `stub_for(cell, stub)` chooses each cell's code stub.

    ClearSolutions reads `code_stub[language]` inside its private `_replace_solution_region`,
    once per solution cell, so the stub is swapped in for that call only.
    """

    def stub_for(self, cell: NotebookNode, stub: str) -> str:
        """The stub that replaces this cell's solution (default: the configured one)."""
        return stub

    def _replace_solution_region(self, cell: NotebookNode, language: str) -> bool:
        configured = self.code_stub  # type: ignore[attr-defined]
        chosen = self.stub_for(cell, configured.get(language, ""))
        self.code_stub = {**configured, language: chosen}
        try:
            return super()._replace_solution_region(cell, language)  # type: ignore[misc]
        finally:
            self.code_stub = configured


# ---------------------------------------------------------------------------------------------
# Feedback pages: nbconvert's HTMLExporter, less its second pass over the whole page

NO_ALT_TEXT = "No description has been provided for this image"  # nbconvert's words
# What html.parser reads as one unit: a comment, a script or style with its raw content, or a
# tag with its attributes (a quoted value may hold ">"). Only an <img> tag is rewritten.
_MARKUP = re.compile(
    r"""<!--.*?-->|<(script|style)\b.*?</\1\s*>"""
    r"""|<(img)\b((?:[^>"']|"[^"]*"|'[^']*')*)>|<[a-zA-Z/!?](?:[^>"']|"[^"]*"|'[^']*')*>""",
    re.DOTALL | re.IGNORECASE,
)
_ATTRIBUTE = re.compile(r"""([^\s"'<>/=]+)(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]*))?""")


def with_alt_text(html: str) -> tuple[str, int]:
    """Give every <img> without an alt attribute nbconvert's placeholder; the page and how many.

    The same change as HTMLExporter's `img:not([alt])` pass, without parsing the page into a
    tree and writing it out again.
    """
    missing = 0

    def fill(match: re.Match) -> str:
        nonlocal missing
        if not match.group(2):
            return match.group(0)
        attributes = match.group(3)
        if "alt" in {name.lower() for name in _ATTRIBUTE.findall(attributes)}:
            return match.group(0)
        missing += 1
        body = attributes.rstrip()
        closing = "/" if body.endswith("/") else ""
        body = body.removesuffix("/").rstrip()
        return f'<{match.group(2)}{body} alt="{NO_ALT_TEXT}"{closing}>'

    return _MARKUP.sub(fill, html), missing


_HIGHLIGHTS_KEPT = 4096  # distinct cells; the course's own repeat on every student's page


@functools.cache
def page_exporter() -> type:
    """HTMLExporter for feedback pages: the same page, for about a third of its CPU.

    HTMLExporter renders its template, then parses the whole page with BeautifulSoup to give
    images without alt text a placeholder and the lab template's cells a tabindex, and writes
    the tree out again: more than half of a feedback page's time. This renders the same
    template and adds the alt text with with_alt_text; a page with the lab template's cells
    (class jp-Notebook) takes HTMLExporter's own path. Templates are compiled and code cells
    highlighted once per process: most cells are the course's, the same on every student's page.
    """
    from jinja2 import BytecodeCache
    from jinja2.bccache import Bucket
    from nbconvert.exporters import HTMLExporter, TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    highlighted: dict[str, str] = {}

    class RememberedTemplates(BytecodeCache):
        """The templates' compiled code, kept for the process: each page has a new exporter,
        whose new jinja environment would compile every template again (a fifth of a page)."""

        def __init__(self) -> None:
            self.compiled: dict[tuple, bytes] = {}

        def _key(self, bucket: Bucket) -> tuple:
            # Compiled code depends on the environment's settings as well as the source (whose
            # checksum jinja checks on load): all the same for this exporter's environments.
            environment = bucket.environment
            return bucket.key, environment.is_async, tuple(sorted(environment.extensions))

        def load_bytecode(self, bucket: Bucket) -> None:
            """Give the bucket the code compiled before, if any."""
            if (code := self.compiled.get(self._key(bucket))) is not None:
                bucket.bytecode_from_string(code)

        def dump_bytecode(self, bucket: Bucket) -> None:
            """Keep code just compiled."""
            self.compiled[self._key(bucket)] = bucket.bytecode_to_string()

    templates = RememberedTemplates()

    class RememberedHighlight(Highlight2HTML):
        """Highlight2HTML that highlights each distinct cell once per process."""

        def __call__(self, source: str, language: str | None = None, metadata: Any = None) -> str:
            # Of a cell's metadata, nbconvert's highlighting reads "magics_language" alone;
            # the rest (scores, execution times) differs from student to student.
            magics = (metadata or {}).get("magics_language")
            key = json.dumps(
                [source, language or self.pygments_lexer, magics, self.extra_formatter_options],
                sort_keys=True,
                default=str,
            )
            if key not in highlighted:
                if len(highlighted) >= _HIGHLIGHTS_KEPT:
                    highlighted.clear()
                highlighted[key] = super().__call__(source, language, metadata)
            return highlighted[key]

    class PageExporter(HTMLExporter):
        """HTMLExporter without its BeautifulSoup pass (see page_exporter)."""

        def _create_environment(self) -> Any:
            """HTMLExporter's jinja environment, taking compiled templates from the process."""
            environment = super()._create_environment()
            environment.bytecode_cache = templates
            return environment

        def from_notebook_node(
            self, nb: NotebookNode, resources: dict | None = None, **kw: Any
        ) -> tuple[str, dict]:
            """HTMLExporter.from_notebook_node's rendering, then the alt text by a scan."""
            language = nb.metadata.get("language_info", {})
            lexer = language.get("pygments_lexer", language.get("name", None))
            highlight = self.filters.get(
                "highlight_code", RememberedHighlight(pygments_lexer=lexer, parent=self)
            )
            resources = self._init_resources(resources)
            data_type = WidgetsDataTypeFilter(
                notebook_metadata=self._nb_metadata, parent=self, resources=resources
            )
            self.register_filter("highlight_code", highlight)
            self.register_filter("filter_data_type", data_type)
            html, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
            if "jp-Notebook" in html:
                return super().from_notebook_node(nb, resources, **kw)
            html, missing = with_alt_text(html)
            if missing:
                self.log.warning("Alternative text is missing on %s image(s).", missing)
            return html, resources

    return PageExporter
