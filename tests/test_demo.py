"""`nncourse demo`, as the quick start runs it: exits 0, flags the broken students, no noise."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from course_copy import copy_course

pytestmark = [pytest.mark.kernels, pytest.mark.sandbox]

# What a library writes for its developers, not for an instructor: a Python warning, a log
# record of a library's logger, a traceback.
NOISE = re.compile(
    r"WARNING|Warning:|Traceback|\[\w+App\]|\b(traitlets|nbclient|nbconvert|nbgrader|jupyter_\w+): "
)


def _nncourse(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `nncourse ARGS` in the copy at root, with the copy's own package."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "nncourse", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_demo_ends_well_and_grading_alone_still_says_attention(tmp_path: Path) -> None:
    """The demo exits 0 after listing who needs attention; `nncourse grade` keeps exit 3."""
    copy_course(tmp_path)
    demo = _nncourse(tmp_path, "demo")
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output[-3000:]
    assert "needs attention:" in output
    assert "exit status" not in output, "the demo exits 0: it must not announce another status"
    assert re.search(r"ida\s+ungradable", output), "the broken notebook is not flagged"
    assert (tmp_path / "reports" / "simple_nn_report.html").is_file()
    noise = [line for line in output.splitlines() if NOISE.search(line)]
    assert not noise, "\n".join(noise)

    again = _nncourse(tmp_path, "grade")
    assert again.returncode == 3, again.stdout[-2000:] + again.stderr[-2000:]
    assert "Some students need attention (see above); exit status 3" in again.stdout
    assert "regraded now 0" in again.stdout
