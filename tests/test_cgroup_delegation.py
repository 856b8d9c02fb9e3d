"""Where the sandbox makes its cgroups on a cgroup v2 host: in the subtree delegated to it.

A grader account may write only the cgroup that systemd (Delegate=pids memory) or root
delegated to it, never the v2 root. This machine's pids controller is on cgroup v1, so these
tests build a cgroup v2 file tree in a temporary folder and point the sandbox at it; the
kernel's own rules (moving a pid empties it from its old cgroup) are what a real cgroupfs adds.
"""

from pathlib import Path

import pytest

from nncourse import sandbox
from nncourse.sandbox import LEAF_CGROUP, SandboxUnavailable, _Cgroup


def _cgroup(path: Path, controllers: str, procs: str = "") -> Path:
    """Make a fake cgroup v2 folder with the interface files the sandbox reads and writes."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers)
    (path / "cgroup.subtree_control").write_text("")
    (path / "cgroup.procs").write_text(procs)
    return path


@pytest.fixture
def v2_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A pure cgroup v2 host: the grader runs in a delegated cgroup of the hub's service."""
    root = _cgroup(tmp_path / "cgroup", "cpu memory pids")
    service = "system.slice/jupyterhub.service/grader"
    delegated = _cgroup(root / service, "memory pids")
    monkeypatch.setattr(sandbox, "_mounts", lambda: [(str(root), "cgroup2", {"rw"})])
    own = {"": "/" + service}
    monkeypatch.setattr(sandbox, "_own_cgroups", lambda: dict(own))
    return root, delegated, own


def test_the_sandbox_cgroup_is_made_in_the_delegated_subtree_not_the_root(v2_host) -> None:
    root, delegated, _ = v2_host
    group = _Cgroup._create_v2("nbsandbox-1-a", 64, 2**30)
    assert group.dirs == [delegated / "nbsandbox-1-a"]
    assert (delegated / "nbsandbox-1-a" / "pids.max").read_text() == "64"
    assert (delegated / "nbsandbox-1-a" / "memory.max").read_text() == str(2**30)
    assert (delegated / "cgroup.subtree_control").read_text() == "+pids +memory"
    assert (root / "cgroup.subtree_control").read_text() == "", "the v2 root is never written"


def test_the_grader_moved_into_its_leaf_keeps_using_the_delegated_cgroup(v2_host) -> None:
    _, delegated, own = v2_host
    _cgroup(delegated / LEAF_CGROUP, "memory pids")
    own[""] += "/" + LEAF_CGROUP
    group = _Cgroup._create_v2("nbsandbox-2-b", 64, 0)
    assert group.dirs == [delegated / "nbsandbox-2-b"], "a sibling of the leaf, not a child"


def test_processes_that_do_not_leave_the_delegated_cgroup_are_reported(v2_host) -> None:
    """A fake cgroupfs keeps its pids: the bounded move gives up and names the cgroup."""
    _, delegated, _ = v2_host
    (delegated / "cgroup.procs").write_text("4242\n")
    with pytest.raises(OSError, match=f"{delegated}: processes are left"):
        _Cgroup._create_v2("nbsandbox-3-c", 64, 0)
    assert (delegated / LEAF_CGROUP / "cgroup.procs").read_text() == "4242"


def test_a_cgroup_without_delegated_controllers_names_the_cgroup_and_the_remedy(
    v2_host, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, delegated, _ = v2_host
    (delegated / "cgroup.controllers").write_text("cpu")
    monkeypatch.setattr(_Cgroup, "_create_v1", classmethod(lambda cls, *a: _raise_v1()))
    with pytest.raises(SandboxUnavailable) as caught:
        _Cgroup.create(64, 0)
    message = str(caught.value)
    # The hierarchy that could have worked is named first; the one without pids comes last.
    assert message.index("cgroup v1: read-only") < message.index(str(delegated))
    assert "not delegated here (available: cpu)" in message
    assert "Delegate=pids memory" in message


def _raise_v1() -> None:
    raise PermissionError("cgroup v1: read-only here")
