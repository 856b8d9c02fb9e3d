"""Every reliance on nbgrader's (and traitlets') internals, in one place, pinned by test_compat."""

from __future__ import annotations

import concurrent.futures
import contextlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from nbformat.notebooknode import NotebookNode
from nbgrader.api import Gradebook
from nbgrader.converters import Autograde
from nbgrader.preprocessors import ClearHiddenTests, SaveAutoGrades
from traitlets.config import Config


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
    ClearHiddenTests(enforce_metadata=False)._remove_hidden_test_region(cell)
