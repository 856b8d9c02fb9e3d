"""What makes a grading run safe to interrupt: one run at a time, a backup first, atomic files."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import fcntl
import os
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

SQLITE = "sqlite:///"
BACKUPS_DIR = "gradebook-backups"
KEEP_BACKUPS = 5
STAGING_DIR = ".nncourse-staging"  # in autograded/: new folders wait here until the DB commits
# Room a run needs beyond the gradebook's own backup: autograded notebooks, feedback, reports.
SPARE_BYTES = 32 * 1024**2


class RunRefused(Exception):
    """A grading run that must not start; the message says why and what to do."""


def sqlite_path(db_url: str) -> Path | None:
    """The file of a SQLite gradebook; None for a server database."""
    return Path(db_url[len(SQLITE) :]) if db_url.startswith(SQLITE) else None


@contextlib.contextmanager
def run_lock(course_root: Path, db_url: str) -> Iterator[Path]:
    """Hold the course's grading lock (an flock, released by the kernel if the process dies)."""
    database = sqlite_path(db_url)
    path = Path(f"{database}.lock") if database else course_root / ".nncourse-grading.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunRefused(
                f"another grading run holds {path}; wait for it to finish (nothing was changed)"
            ) from None
        yield path
    finally:
        os.close(fd)


def check_writable(folders: list[Path], database: Path | None) -> None:
    """Refuse a run that could not write its files: each (existing) folder must take a file."""
    need = SPARE_BYTES + (database.stat().st_size if database and database.exists() else 0)
    for folder in folders:
        try:
            free = shutil.disk_usage(folder).free
            if free < need:
                raise OSError(f"{free:,} bytes free, {need:,} needed")
            with tempfile.TemporaryFile(dir=folder) as probe:
                probe.write(b"\0" * 65536)
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as error:
            raise RunRefused(f"cannot write in {folder}: {error}. Free some space first") from None


def backup(database: Path) -> Path:
    """A consistent copy of a SQLite gradebook by its online backup API; the 5 newest are kept."""
    folder = database.parent / BACKUPS_DIR
    folder.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = folder / f"{database.stem}-{stamp}{database.suffix}"
    partial = target.with_name(f".{target.name}.partial")
    with (
        contextlib.closing(sqlite3.connect(database)) as live,
        contextlib.closing(sqlite3.connect(partial)) as copy,
    ):
        live.backup(copy)
    os.replace(partial, target)  # a crash mid-copy leaves no file that looks like a backup
    for old in sorted(folder.glob(f"{database.stem}-*{database.suffix}"))[:-KEEP_BACKUPS]:
        old.unlink()
    return target


@contextlib.contextmanager
def replaced(target: Path) -> Iterator[Path]:
    """A temporary path to write; it replaces target in one rename when the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def staging_root(autograded: Path) -> Path:
    """Where a run builds new autograded folders before they replace the old ones."""
    return autograded / STAGING_DIR


def clear_staging(autograded: Path) -> None:
    """Remove what an interrupted run left half built; its gradebook changes decide the rest."""
    shutil.rmtree(staging_root(autograded), ignore_errors=True)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


def adopt_orphans() -> None:
    """Become the parent of this process's orphaned descendants (PR_SET_CHILD_SUBREAPER).

    A grading worker killed mid-kernel can leave a sandbox process whose own parent-death
    signal did not fire; adopted, it is found and stopped by stop_children.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def children() -> set[int]:
    """This process's child processes, from /proc."""
    me, found = str(os.getpid()), set()
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                found.add(int(entry.name))
        except (OSError, IndexError):
            continue  # not a process, or gone
    return found


def stop_children(spare: set[int]) -> None:
    """SIGKILL and reap every child process but those spared, adopted orphans included."""
    # A worker's own children become ours only once it has exited, and a sandbox that its
    # worker was still starting has no parent-death signal yet: so kill, reap and look
    # again, until a look finds nobody new.
    while left := children() - spare:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
