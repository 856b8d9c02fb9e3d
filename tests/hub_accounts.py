"""Real Linux accounts, a shared nbgrader exchange and delegated cgroups for the multi-user tests.

Used by tests/test_exchange.py (and tests/test_hub.py). Everything here needs root: accounts are
made with ``useradd`` under a unique prefix and removed with ``userdel -r``; commands run as
those accounts through ``runuser`` with a clean environment, so that nothing of root's
environment (HOME, config paths, tokens) leaks into them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
USERADD = shutil.which("useradd") or "/usr/sbin/useradd"
USERDEL = shutil.which("userdel") or "/usr/sbin/userdel"
GROUPADD = shutil.which("groupadd") or "/usr/sbin/groupadd"
GROUPDEL = shutil.which("groupdel") or "/usr/sbin/groupdel"


def can_run() -> str | None:
    """Return why these tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (creates Linux accounts)"
    for tool in (RUNUSER, USERADD, USERDEL):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing"
    if shutil.which("setfacl") is None:
        return "setfacl is missing (Debian's acl package; tests/system-deps installs it)"
    return None


def unique_prefix(tag: str) -> str:
    """A short, lowercase, collision-free account name prefix (names stay under 32 bytes)."""
    return f"{tag}{uuid.uuid4().hex[:6]}"


@dataclass
class Account:
    """One Linux account made for a test."""

    name: str
    home: Path
    uid: int
    gid: int

    def env(self, **extra: str) -> dict[str, str]:
        """A login-like environment: this account's HOME and the course's virtual environment."""
        env = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": "/bin/bash",
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
        env.update(extra)
        return env


@dataclass
class Accounts:
    """Accounts (and groups) created under one prefix; ``remove`` deletes all of them."""

    prefix: str
    made: list[Account] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def group(self, suffix: str) -> str:
        """Create the group ``<prefix>-<suffix>`` and return its name."""
        name = f"{self.prefix}-{suffix}"
        subprocess.run([GROUPADD, name], check=True)
        self.groups.append(name)
        return name

    def add(
        self,
        suffix: str,
        groups: list[str] = (),
        password: str | None = None,
        full_name: str = "",
    ) -> Account:
        """Create ``<prefix>-<suffix>`` with a private (0700) home and its own group."""
        name = f"{self.prefix}-{suffix}"
        cmd = [USERADD, "--create-home", "--user-group", "--shell", "/bin/bash"]
        if full_name:
            cmd += ["--comment", full_name]
        # Debian 12's useradd makes world-readable homes (UMASK 022, HOME_MODE unset).
        cmd += ["--key", "HOME_MODE=0700"]
        if groups:
            cmd += ["--groups", ",".join(groups)]
        subprocess.run([*cmd, name], check=True, capture_output=True)
        account = self.adopt(name)
        if password is not None:
            subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        return account

    def adopt(self, name: str) -> Account:
        """Take an existing account (made by deploy/install, say) into those removed at the end."""
        entry = pwd.getpwnam(name)
        account = Account(name, Path(entry.pw_dir), entry.pw_uid, entry.pw_gid)
        self.made.append(account)
        return account

    def remove(self) -> list[str]:
        """Delete every account (with its home and mail spool) and group; return what failed."""
        problems = []
        for account in reversed(self.made):
            # userdel refuses while the account has processes; ours have all ended or been
            # killed by the test, so a failure here is worth reporting, not forcing.
            done = subprocess.run(
                [USERDEL, "--remove", account.name], capture_output=True, text=True
            )
            if done.returncode not in (0, 12):  # 12: could not remove the home (already gone)
                problems.append(f"userdel {account.name}: {done.stderr.strip()}")
            shutil.rmtree(account.home, ignore_errors=True)
        for name in reversed(self.groups):
            done = subprocess.run([GROUPDEL, name], capture_output=True, text=True)
            if done.returncode not in (0, 6):  # 6: no such group (removed with its user)
                problems.append(f"groupdel {name}: {done.stderr.strip()}")
        return problems


def run_as(
    account: Account,
    args: list[str],
    cwd: Path | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
    wrap: list[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run args as the account, in cwd (default: its home), with a clean environment.

    ``wrap`` is a root-side prefix (e.g. a shell that joins cgroups) run before ``runuser``.
    """
    environment = env or account.env()
    command = [
        *wrap,
        RUNUSER,
        "-u",
        account.name,
        "--",
        "/usr/bin/env",
        "-i",
        *[f"{k}={v}" for k, v in environment.items()],
        *args,
    ]
    done = subprocess.run(
        command,
        cwd=str(cwd or account.home),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"as {account.name}: {' '.join(args)} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
    return done


def chown_tree(path: Path, account: Account) -> None:
    """Give a folder and everything in it to the account."""
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), account.uid, account.gid)
    os.lchown(path, account.uid, account.gid)


def closed_ancestors() -> list[Path]:
    """Folders on the way to this Python that other users cannot traverse (e.g. /root for pyenv)."""
    closed = []
    for target in {
        Path(sys.executable).resolve(),
        Path(sys.base_prefix).resolve(),
        Path(sys.prefix).resolve(),
    }:
        for folder in reversed(target.parents):
            if not folder.stat().st_mode & stat.S_IXOTH and folder not in closed:
                closed.append(folder)
    return closed


@dataclass
class Traversal:
    """ACL entries letting one group traverse (x only, no listing) folders, removed afterwards.

    The course's interpreter may live under a folder closed to others (pyenv in /root on this
    machine). The test accounts then get search permission on exactly those folders, through a
    group ACL entry (Debian's ``acl`` package), for as long as the test runs.
    """

    group: str
    folders: list[Path]

    @classmethod
    def grant(cls, group: str, folders: list[Path]) -> Traversal:
        """Add ``g:<group>:--x`` to each folder's ACL."""
        granted = cls(group, [])
        for folder in folders:
            subprocess.run(["setfacl", "-m", f"g:{group}:--x", str(folder)], check=True)
            granted.folders.append(folder)
        return granted

    def revoke(self) -> None:
        """Remove the entries again (and the mask entry setfacl added, if nothing else needs it)."""
        for folder in self.folders:
            subprocess.run(["setfacl", "-x", f"g:{self.group}", str(folder)], check=False)
            listing = subprocess.run(
                ["getfacl", "-c", "-p", str(folder)], capture_output=True, text=True
            ).stdout
            named = [
                line
                for line in listing.splitlines()
                if line.startswith(("user:", "group:")) and line.split(":")[1]
            ]
            if not named:
                subprocess.run(["setfacl", "-b", str(folder)], check=False)


def write_user_config(account: Account, text: str) -> Path:
    """Write ``~/.jupyter/nbgrader_config.py`` for the account, owned by it."""
    folder = account.home / ".jupyter"
    folder.mkdir(exist_ok=True)
    path = folder / "nbgrader_config.py"
    path.write_text(text, encoding="utf-8")
    for item in (folder, path):
        os.chown(item, account.uid, account.gid)
    return path


# --------------------------------------------------------------------------------------------
# cgroup delegation: how a non-root grader gets the pids/memory cgroups the sandbox requires
# --------------------------------------------------------------------------------------------


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path in a v1 hierarchy."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return "/"


@dataclass
class DelegatedCgroups:
    """cgroup v1 folders (pids, memory) owned by one account, below this process's own cgroups.

    A process started through :meth:`wrap` joins them before it becomes the account; the
    sandbox then creates its per-kernel cgroups inside them, as that account, like under a
    systemd unit with ``Delegate=yes``.
    """

    dirs: list[Path]

    @classmethod
    def create(cls, name: str, account: Account) -> DelegatedCgroups:
        """Create and chown the folders; raise OSError where a hierarchy is missing."""
        dirs = []
        for controller in ("pids", "memory"):
            mount = Path("/sys/fs/cgroup") / controller
            if not (mount / "cgroup.procs").exists():
                if controller == "pids":
                    raise OSError("no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids")
                continue
            parent = mount / _own_cgroup(controller).lstrip("/")
            path = parent / name
            path.mkdir()
            dirs.append(path)
            os.chown(path, account.uid, account.gid)
            for item in ("cgroup.procs", "tasks"):
                os.chown(path / item, account.uid, account.gid)
        return cls(dirs)

    def wrap(self) -> list[str]:
        """A root-side command prefix that moves itself into the folders, then runs the rest."""
        joins = "; ".join(f'echo $$ > "{d}/cgroup.procs"' for d in self.dirs)
        return ["/bin/sh", "-c", f'{joins}; exec "$@"', "join-cgroups"]

    def remove(self) -> None:
        """Remove the folders (and any per-kernel cgroup left inside), deepest first."""
        for d in self.dirs:
            if not d.exists():
                continue
            for child in sorted(d.iterdir(), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()
