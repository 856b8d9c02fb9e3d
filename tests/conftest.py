"""Shared test set-up: nbgrader must find this environment's commands."""

import os
import sys
from pathlib import Path

# nbgrader runs `alembic` from PATH when it creates a gradebook, and the tests call nbgrader
# in-process as well as in subprocesses: both must find this virtual environment's tools.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

# One class of every hostile student, graded once for the modules that look at it.
from hostile_class import hostile_class, site  # noqa: E402, F401
