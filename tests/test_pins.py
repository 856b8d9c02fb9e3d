"""requirements.txt is a complete lock that installs on Debian 12's own Python, 3.11.2.

The hub deployment installs these pins with Debian's interpreter, which is older than the
3.11 this repository is developed on; a pin whose Requires-Python excludes 3.11.2 (soupsieve
after 2.10 does) would fail there and nowhere else. pip resolves the file for 3.11.2 without
installing anything, against the package index, so this test needs the registry.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_12_PYTHON = "3.11.2"

pytestmark = pytest.mark.registry


def _pins() -> dict[str, str]:
    """Every requirement of requirements.txt as name -> version; fails on an unpinned line."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line.strip())
        assert match, f"requirements.txt: {line!r} is not pinned as name==version"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_the_pins_resolve_on_debian_12_python_to_exactly_themselves(tmp_path: Path) -> None:
    """pip resolves the pins for Python 3.11.2 and needs no package that is not pinned."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--only-binary=:all:",
            f"--python-version={DEBIAN_12_PYTHON}",
            "--target",
            str(tmp_path / "target"),
            "--report",
            str(report),
            "-r",
            str(ROOT / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        f"pins do not install on Python {DEBIAN_12_PYTHON}:\n{result.stderr[-3000:]}"
    )
    resolved = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert resolved == _pins()
