"""A run that must not start changes nothing; one that writes backs the gradebook up first."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from crash_class import (  # noqa: F401 - the *_fixture names are fixtures
    graded_fixture,
    reference_fixture,
    run_grade,
    state,
)

from nncourse import durable

pytestmark = [pytest.mark.kernels, pytest.mark.sandbox]
NO_BWRAP = '\nc.SandboxedKernelManager.bwrap = "/nonexistent/bwrap"\n'


def snapshot(course: Path) -> dict[str, str]:
    """Every file a grading run writes, by content: gradebook, autograded, feedback, reports."""
    files = {}
    for path in sorted(course.rglob("*")):
        relative = path.relative_to(course)
        if path.is_file() and relative.parts[0] not in ("source", "release", "submitted"):
            files[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def add_config(course: Path, text: str) -> None:
    """Append settings to the course's nbgrader_config.py."""
    with (course / "nbgrader_config.py").open("a") as config:
        config.write(text)


def test_a_refused_force_regrade_loses_no_grade(graded, reference):
    add_config(graded, NO_BWRAP)
    refused = run_grade(graded, "--force")
    assert refused.returncode != 0
    assert "/nonexistent/bwrap" in refused.stderr
    assert state(graded)["scores"] == reference["scores"]
    config = (graded / "nbgrader_config.py").read_text()
    (graded / "nbgrader_config.py").write_text(config.replace(NO_BWRAP, ""))
    assert run_grade(graded).returncode == 3
    assert state(graded)["scores"] == reference["scores"]


@pytest.mark.parametrize(
    ("config", "args", "said"),
    [
        (NO_BWRAP, ["--force"], "/nonexistent/bwrap"),
        ("\nc.Exchange.root = (\n", [], "nbgrader_config.py cannot be loaded: SyntaxError"),
        ("\nraise ValueError('typo')\n", [], "nbgrader_config.py cannot be loaded: ValueError"),
        ("", ["no_such_assignment"], "unknown assignment(s) no_such_assignment"),
    ],
    ids=["no sandbox", "syntax error in config", "config raises", "unknown assignment"],
)
def test_a_refused_run_says_why_and_changes_nothing(graded, config, args, said):
    add_config(graded, config)
    before = snapshot(graded)
    refused = run_grade(graded, *args)
    assert refused.returncode == 1
    assert said in refused.stderr
    assert "Traceback" not in refused.stderr
    assert snapshot(graded) == before


def test_a_second_run_is_refused_while_one_holds_the_lock(graded):
    before = snapshot(graded)
    with (graded / "gradebook.db.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        refused = run_grade(graded, "--force")
    assert refused.returncode == 1
    assert "another grading run holds" in refused.stderr
    assert snapshot(graded) == before


@pytest.mark.root  # mounts a tmpfs
def test_a_full_disk_is_refused_before_anything_is_written(graded, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", disk], check=True)
    try:
        course = disk / "course"
        subprocess.run(["cp", "-a", graded, course], check=True)
        with pytest.raises(OSError, match="No space"):
            _fill(disk / "filler")
        before = snapshot(course)
        refused = run_grade(course, "--force")
        assert refused.returncode == 1
        assert f"cannot write in {course}" in refused.stderr
        assert snapshot(course) == before
    finally:
        subprocess.run(["umount", "-l", disk], check=True)


def _fill(path: Path) -> None:
    """Write zeros to a file until the filesystem is full."""
    with path.open("wb") as filler:
        while True:
            filler.write(b"\0" * 1024**2)
            filler.flush()


def test_a_writing_run_backs_the_gradebook_up(graded, reference):
    backups = graded / "gradebook-backups"
    assert len(list(backups.glob("*.db"))) == 1  # the reference's own run
    done = run_grade(graded, "--force", "--jobs", "2")
    assert done.returncode == 3
    kept = sorted(backups.glob("gradebook-*.db"))
    assert len(kept) == 2
    assert f"gradebook backed up to {kept[-1]}" in done.stdout
    assert state(graded) == reference


def test_backups_keep_the_five_newest_each_a_whole_copy(tmp_path):
    """What each writing run calls: seven backups in a row leave the last five, all readable."""
    database = tmp_path / "gradebook.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE grade (student TEXT, score REAL)")
        db.execute("INSERT INTO grade VALUES ('alice', 30)")
        db.commit()
    made = [durable.backup(database) for _ in range(7)]
    kept = sorted((tmp_path / "gradebook-backups").iterdir())
    assert len(kept) == durable.KEEP_BACKUPS == 5
    assert kept == made[-5:]
    for copy in kept:
        with contextlib.closing(sqlite3.connect(copy)) as db:
            assert db.execute("SELECT * FROM grade").fetchall() == [("alice", 30.0)]


def test_an_unchanged_class_is_not_backed_up_again(graded):
    done = run_grade(graded)
    assert done.returncode == 3
    assert "backed up" not in done.stdout
    assert len(list((graded / "gradebook-backups").glob("*.db"))) == 1


@pytest.mark.parametrize(("nth", "passes"), [(1, 0), (3, 2)])
def test_a_crash_point_kills_on_its_nth_pass(nth, passes):
    code = (
        "from nncourse import crashpoints\n"
        "for _ in range(5):\n"
        "    crashpoints.reached('elsewhere')\n"
        "    crashpoints.reached('here')\n"
        "    print('passed', flush=True)\n"
    )
    env = {**os.environ, "NNCOURSE_CRASH_AT": f"here:{nth}"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL
    assert run.stdout.count("passed") == passes


def test_stopping_children_also_stops_what_a_killed_child_left_behind():
    """A worker's own child, orphaned when the worker is killed, is adopted and stopped too."""
    code = (
        "import os, subprocess\n"
        "from nncourse import durable\n"
        "durable.adopt_orphans()\n"
        "before = durable.children()\n"
        "worker = subprocess.Popen(['sh', '-c', 'sleep 300 & echo $!; wait'],\n"
        "                          stdout=subprocess.PIPE, text=True)\n"
        "print(worker.stdout.readline().strip(), flush=True)\n"
        "durable.stop_children(spare=before)\n"
        "print(sorted(durable.children() - before), flush=True)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    orphan, left = run.stdout.split("\n")[:2]
    assert left == "[]", run.stderr
    assert not Path(f"/proc/{orphan}").exists(), "the orphaned sleep outlived stop_children"
