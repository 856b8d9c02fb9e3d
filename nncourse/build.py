"""``nncourse build``: regenerate figures, ``release/`` and ``solutions/`` from ``source/``.

For each assignment ``A`` (a folder of ``source/`` holding notebooks) the build

1. normalises every ``source/A/*.ipynb`` in place (no outputs, only meaningful metadata);
2. calls ``nncourse.references.export(notebook, course_root)`` when that exists;
3. executes each source notebook (solutions included) in ``source/A/`` and writes the PNG
   of every code cell tagged ``{"nncourse": {"figure": NAME}}`` to
   ``source/A/figures/NAME.png``; ``figures/`` belongs to the build, which deletes PNGs
   there that no cell produced any more;
4. runs ``nbgrader generate_assignment A --force`` and ``nbgrader generate_solution A
   --force`` (nbgrader copies ``figures/`` along into both);
5. normalises ``release/A`` (no outputs) and the metadata of ``solutions/A`` (outputs kept
   so the plots show), then checks that no solution code or hidden test leaked.

Running it twice in a row leaves every file byte-identical: the tests rely on that to
prove the committed generated copies are up to date.
"""

import base64
import contextlib
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat import NotebookNode
from traitlets.config import Config

from nncourse import notebooks

log = logging.getLogger(__name__)

SOURCE_DIR = "source"
RELEASE_DIR = "release"
# Must match CourseDirectory.solution_directory in nbgrader_config.py.
SOLUTIONS_DIR = "solutions"
FIGURES_DIR = "figures"
#: Where nbgrader writes the release and solutions before they replace the committed ones.
STAGING_DIR = ".nncourse-build"

#: Per-cell limit when the build executes a notebook; the same as Execute.timeout in
#: nbgrader_config.py, because a cell too slow here would also time out at autograde.
CELL_TIMEOUT = 60

SOLUTION_DELIMITER = "BEGIN SOLUTION"
HIDDEN_TESTS_DELIMITER = "BEGIN HIDDEN TESTS"

_FIGURE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

# Only settings that affect the bytes of a figure, never its look: the look must be the
# same for students, who do not get this file. It also shields the build from a
# developer's own ~/.config/matplotlib/matplotlibrc (a different dpi there would
# change every committed PNG).
_MATPLOTLIBRC = """\
# Written by `nncourse build`; see nncourse/build.py.
svg.hashsalt: nncourse
"""


class BuildError(Exception):
    """The build cannot go on; the message says what to fix."""


def discover_assignments(course_root: Path) -> list[str]:
    """Return the names of the folders of ``source/`` that hold at least one notebook."""
    source = Path(course_root) / SOURCE_DIR
    if not source.is_dir():
        return []
    return sorted(
        child.name
        for child in source.iterdir()
        if child.is_dir() and not child.name.startswith(".") and any(child.glob("*.ipynb"))
    )


def build(
    course_root: Path,
    assignments: Sequence[str] = (),
    *,
    db_url: str | None = None,
    verbose: bool = False,
) -> None:
    """Regenerate everything derived from ``source/`` for the given (default: all) assignments."""
    course_root = Path(course_root).resolve()
    if not (course_root / "nbgrader_config.py").is_file():
        raise BuildError(f"{course_root} has no nbgrader_config.py: run in the course root")
    check_nbgrader_config(course_root)
    names = list(assignments) or discover_assignments(course_root)
    if not names:
        raise BuildError(f"no assignment (folder with notebooks) in {course_root / SOURCE_DIR}")
    for name in names:
        if not list((course_root / SOURCE_DIR / name).glob("*.ipynb")):
            raise BuildError(f"{SOURCE_DIR}/{name}/ holds no notebook")

    with tempfile.TemporaryDirectory(prefix="nncourse-build-") as scratch:
        with _reproducible_environment(Path(scratch)):
            _warm_matplotlib_font_cache()
            for name in names:
                start = time.monotonic()
                build_assignment(course_root, name, db_url=db_url, verbose=verbose)
                log.info("built %s in %.1f s", name, time.monotonic() - start)


def check_nbgrader_config(course_root: Path) -> None:
    """Fail if nbgrader_config.py does not load or names another solutions folder."""
    # nbgrader only logs a broken config file and goes on with its defaults: solutions
    # in solution/ with their hidden tests, no course id. Load it first to fail instead.
    from traitlets.config.loader import PyFileConfigLoader

    try:
        config = PyFileConfigLoader("nbgrader_config.py", path=str(course_root)).load_config()
    except Exception as exc:
        raise BuildError(f"nbgrader_config.py does not load: {exc!r}") from exc
    solutions = config.CourseDirectory.get("solution_directory")
    if solutions != SOLUTIONS_DIR:
        raise BuildError(
            f"nbgrader_config.py sets CourseDirectory.solution_directory to {solutions!r}; "
            f"nncourse build expects {SOLUTIONS_DIR!r}"
        )


def build_assignment(
    course_root: Path, assignment: str, *, db_url: str | None = None, verbose: bool = False
) -> None:
    """Run the five build steps for one assignment (see the module docstring)."""
    source_dir = course_root / SOURCE_DIR / assignment
    sources = sorted(source_dir.glob("*.ipynb"))

    for path in sources:
        if notebooks.normalise_file(path):
            log.info("normalised %s", path.relative_to(course_root))

    for path in sources:
        check_every_grade_cell_judged(notebooks.read(path), assignment, label=str(path))
        export_references(path, course_root)

    figures: dict[str, bytes] = {}
    for path in sources:
        log.info("executing %s", path.relative_to(course_root))
        executed = execute_notebook(notebooks.read(path), cwd=source_dir, label=str(path))
        check_grade_cells_quiet(executed, label=str(path))
        for name, png in collect_figures(executed, label=str(path)).items():
            if name in figures:
                raise BuildError(f"{path}: figure name {name!r} is used twice in {assignment}")
            figures[name] = png
    write_figures(source_dir / FIGURES_DIR, figures, course_root)

    # nbgrader writes into a staging folder; only a release and solutions that passed every
    # check replace the committed ones, so a failed build leaves them as they were.
    staging = course_root / STAGING_DIR / assignment
    shutil.rmtree(staging, ignore_errors=True)
    staged = {folder: staging / folder for folder in (RELEASE_DIR, SOLUTIONS_DIR)}
    for command, setting, folder in (
        ("generate_assignment", "release_directory", RELEASE_DIR),
        ("generate_solution", "solution_directory", SOLUTIONS_DIR),
    ):
        run_nbgrader(
            course_root,
            command,
            assignment,
            db_url=db_url,
            verbose=verbose,
            extra=[f"--CourseDirectory.{setting}={staged[folder]}"],
        )

    release = sorted((staged[RELEASE_DIR] / assignment).glob("*.ipynb"))
    solutions = sorted((staged[SOLUTIONS_DIR] / assignment).glob("*.ipynb"))
    if len(release) != len(sources) or len(solutions) != len(sources):
        raise BuildError(
            f"nbgrader wrote {len(release)} release and {len(solutions)} solution notebooks "
            f"for {len(sources)} source notebooks of {assignment}"
        )
    for path in release:
        notebooks.normalise_file(path)
        check_release_notebook(notebooks.read(path), label=str(path))
    for path in solutions:
        notebooks.normalise_file(path, keep_outputs=True)
        check_solution_notebook(notebooks.read(path), label=str(path))
    for folder, built in staged.items():
        swap_in(built / assignment, course_root / folder / assignment)
    shutil.rmtree(course_root / STAGING_DIR)


def swap_in(built: Path, target: Path) -> None:
    """Replace target with built by renames; the old copy is removed only once built is in place."""
    old = built.with_name(built.name + ".old")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def export_references(notebook: Path, course_root: Path) -> None:
    """Call ``nncourse.references.export`` if that module and function exist yet."""
    try:
        from nncourse import references
    except ModuleNotFoundError as exc:
        # Only the module itself being absent is expected; a missing import inside it is a bug.
        if exc.name != "nncourse.references":
            raise
        log.info("skipping reference export: nncourse.references does not exist")
        return
    export = getattr(references, "export", None)
    if export is None:
        log.info("skipping reference export: nncourse.references has no export()")
        return
    export(notebook, course_root)


def check_every_grade_cell_judged(nb: NotebookNode, assignment: str, *, label: str) -> None:
    """Refuse (for the course's assignment) or warn of code grade cells that no check decides."""
    from nncourse.course import checks

    missing = [
        cell.metadata.nbgrader.get("grade_id", "?")
        for cell in nb.cells
        if cell.cell_type == "code"
        and cell.metadata.get("nbgrader", {}).get("grade")
        and cell.metadata.nbgrader.get("grade_id") not in checks.CHECKS
    ]
    if not missing:
        return
    message = (
        f"{label}: no check in nncourse/course/checks.py CHECKS decides the grade cells "
        f"{', '.join(missing)}; grading scores them 0. Add a Check for each."
    )
    if assignment == checks.ASSIGNMENT:
        raise BuildError(message)
    log.warning(message)


def _ipc_kernel(sockets: str) -> dict[str, str]:
    """Kernel settings for Unix sockets in a private folder instead of TCP on localhost."""
    # No port to race for, and nothing on the network that the kernel would warn about
    # ("Kernel is running over TCP without encryption", on every build).
    return {"transport": "ipc", "ip": os.path.join(sockets, "kernel")}


def execute_notebook(nb: NotebookNode, *, cwd: Path, label: str) -> NotebookNode:
    """Execute ``nb`` with ``cwd`` as working directory; raise BuildError naming a failing cell."""
    with tempfile.TemporaryDirectory(prefix="nncourse-kernel-") as sockets:
        client = NotebookClient(
            nb,
            config=Config({"KernelManager": _ipc_kernel(sockets)}),
            timeout=CELL_TIMEOUT,
            # Timing metadata would differ on every run; we never want it.
            record_timing=False,
            resources={"metadata": {"path": str(cwd)}},
        )
        try:
            client.execute()
        except CellExecutionError as exc:
            raise BuildError(
                f"{label}: a cell raised while executing the solution:\n{exc}"
            ) from exc
    return nb


def check_grade_cells_quiet(nb: NotebookNode, *, label: str) -> None:
    """Fail if a grade cell writes to stderr (autograde would score it 0); warn for others."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            if output.output_type != "stream" or output.name != "stderr":
                continue
            if cell.metadata.get("nbgrader", {}).get("grade"):
                grade_id = cell.metadata.nbgrader.get("grade_id", f"cell {index}")
                raise BuildError(
                    f"{label}: grade cell {grade_id!r} writes to stderr with the reference "
                    f"solution, so autograde would give it 0 points:\n{output.text}"
                )
            # Warnings name a per-run temporary file (/tmp/ipykernel_<pid>/...), so the
            # executed solution would differ on every build.
            log.warning("%s: cell %d writes to stderr:\n%s", label, index, output.text)


def collect_figures(nb: NotebookNode, *, label: str) -> dict[str, bytes]:
    """Return {name: PNG bytes} for the executed cells tagged as figures."""
    figures: dict[str, bytes] = {}
    for index, cell in enumerate(nb.cells):
        marker = cell.metadata.get("nncourse", {})
        name = marker.get("figure") if isinstance(marker, dict) else None
        if name is None:
            continue
        where = f"{label}: cell {index} (id {cell.get('id')!r}, figure {name!r})"
        if cell.cell_type != "code":
            raise BuildError(f"{where} is a {cell.cell_type} cell; only code cells make figures")
        if not isinstance(name, str) or not _FIGURE_NAME_RE.match(name):
            raise BuildError(f"{where}: a figure name is letters, digits, '-' and '_' only")
        if name in figures:
            raise BuildError(f"{where}: figure name used twice")
        png = next(
            (out.data["image/png"] for out in cell.outputs if "image/png" in out.get("data", {})),
            None,
        )
        if png is None:
            raise BuildError(f"{where} produced no image/png output")
        figures[name] = base64.b64decode(png)
    return figures


def write_figures(figures_dir: Path, figures: dict[str, bytes], course_root: Path) -> None:
    """Write changed figures and delete stale ones, so figures/ mirrors the notebook."""
    for name, png in sorted(figures.items()):
        path = figures_dir / f"{name}.png"
        if path.exists() and path.read_bytes() == png:
            continue
        figures_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        log.info("wrote %s", path.relative_to(course_root))
    if figures_dir.is_dir():
        # A renamed or deleted figure cell must not leave its old PNG to travel into the
        # release (nbgrader copies every file of source/A/ along).
        for path in sorted(figures_dir.glob("*.png")):
            if path.stem not in figures:
                path.unlink()
                log.info("removed stale %s", path.relative_to(course_root))
        if not any(figures_dir.iterdir()):
            figures_dir.rmdir()


def run_nbgrader(
    course_root: Path,
    command: str,
    assignment: str,
    *,
    db_url: str | None = None,
    verbose: bool = False,
    extra: Sequence[str] = (),
) -> None:
    """Run ``nbgrader COMMAND ASSIGNMENT --force`` in the course root; raise on failure."""
    # A subprocess keeps nbgrader's global traitlets and logging state out of ours, and
    # sys.executable is this venv's Python, hence its nbgrader and its kernel.
    argv = [sys.executable, "-m", "nbgrader", command, assignment, "--force"]
    argv.append(f"--log-level={'INFO' if verbose else 'WARN'}")
    if db_url:
        argv.append(f"--CourseDirectory.db_url={db_url}")
    argv += extra
    log.info("running nbgrader %s %s", command, assignment)
    with tempfile.TemporaryDirectory(prefix="nncourse-kernel-") as sockets:
        argv += [f"--KernelManager.{k}={v}" for k, v in _ipc_kernel(sockets).items()]
        result = subprocess.run(argv, cwd=course_root, check=False)
    if result.returncode != 0:
        raise BuildError(f"nbgrader {command} {assignment} failed (exit {result.returncode})")


def check_release_notebook(nb: NotebookNode, *, label: str) -> None:
    """Fail if a release notebook still holds solution code, hidden tests or outputs."""
    for index, cell in enumerate(nb.cells):
        for delimiter in (SOLUTION_DELIMITER, HIDDEN_TESTS_DELIMITER):
            if delimiter in cell.source:
                raise BuildError(f"{label}: cell {index} still contains {delimiter!r}")
        if cell.cell_type == "code" and cell.outputs:
            raise BuildError(f"{label}: cell {index} has outputs")


def check_solution_notebook(nb: NotebookNode, *, label: str) -> None:
    """Fail if the executed solution kept hidden tests or shows an error."""
    for index, cell in enumerate(nb.cells):
        if HIDDEN_TESTS_DELIMITER in cell.source:
            # Happens when nbgrader ran without our nbgrader_config.py (ClearHiddenTests).
            raise BuildError(f"{label}: cell {index} still contains hidden tests")
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        # nbgrader's Execute has allow_errors=True, so generate_solution succeeds anyway.
        for output in cell.outputs:
            if output.output_type == "error":
                raise BuildError(
                    f"{label}: cell {index} raised {output.ename} in the executed solution "
                    "(without hidden tests): does a later cell rely on a hidden test?"
                )


X86_64_NUMERICS = (
    {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE": "Haswell"}
    if platform.machine() in ("x86_64", "AMD64")
    else {}
)


@contextlib.contextmanager
def _reproducible_environment(scratch: Path) -> Iterator[None]:
    """Set, for this process and the kernels and nbgrader runs it starts, a stable environment."""
    rc = scratch / "matplotlibrc"
    rc.write_text(_MATPLOTLIBRC, encoding="utf-8")
    (scratch / "ipython").mkdir()
    (scratch / "jupyter-config").mkdir()
    settings = {
        # Set and dict-of-str reprs in outputs would otherwise change from run to run.
        "PYTHONHASHSEED": "0",
        # Figures must come back as image/png outputs even if the caller exported
        # MPLBACKEND=Agg; this is the backend ipykernel would choose anyway.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MATPLOTLIBRC": str(rc),
        # Dates embedded by matplotlib's SVG/PDF writers (PNG has none).
        "SOURCE_DATE_EPOCH": "0",
        # An empty IPython profile: a developer's startup files must not change outputs.
        "IPYTHONDIR": str(scratch / "ipython"),
        # Likewise a developer's ~/.jupyter/nbgrader_config.py; nbgrader still reads the
        # course's own nbgrader_config.py from the course root.
        "JUPYTER_CONFIG_DIR": str(scratch / "jupyter-config"),
        # One BLAS/OpenMP thread: results (and printed costs) must not depend on the core
        # count, and two builds side by side (pytest -n) must not oversubscribe 2 cores.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        # Training a network amplifies the last bit of every sum: the same code prints other
        # costs and draws other figures on CPUs whose numpy and OpenBLAS pick AVX-512 code.
        # Pin both to their AVX2 code, which every x86-64 machine of the last decade runs.
        **X86_64_NUMERICS,
        # debugpy in ipykernel warns about frozen modules on every kernel start.
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        # nbgrader runs the `alembic` command from PATH when it creates a gradebook: make
        # it this venv's, even when nncourse was started as .venv/bin/nncourse without
        # activating the venv (else: FileNotFoundError 'alembic', or a stranger's alembic).
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _warm_matplotlib_font_cache() -> None:
    """Build matplotlib's font cache here, so no kernel prints the 'building' warning."""
    # On a fresh machine the first kernel that imports pyplot builds the cache, and if
    # that takes over 5 s it logs "Matplotlib is building the font cache" to stderr,
    # which would land in a committed output (in a grade cell: fail the cell).
    import matplotlib.font_manager  # noqa: F401  (imported for its side effect)
