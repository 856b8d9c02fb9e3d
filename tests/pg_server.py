"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temporary cluster."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian's postgresql, installed by .ci/run)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: run `apt-get install postgresql` (see .ci/run)"
        )
    return Path(found[-1]).parent


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; as root, run it as the postgres user instead."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server(database: str = "gradebook") -> Iterator[str]:
    """Start a server on a private socket, create `database`, yield its URL, then stop it."""
    bin_dir = _bin_dir()
    # A short path: a Unix socket's path may not exceed about 100 characters.
    folder = Path(tempfile.mkdtemp(prefix="nncourse-pg-"))
    data, log = folder / "data", folder / "server.log"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    run = _as_server_user
    try:
        subprocess.run(
            run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "start",
                    "-o",
                    f"-k {folder} -c listen_addresses='' -p 5432",
                ]
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            run([str(bin_dir / "createdb"), "-h", str(folder), "-U", "postgres", database]),
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@/{database}?host={folder}"
    finally:
        subprocess.run(
            run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
