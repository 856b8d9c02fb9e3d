"""The bubblewrap kernel sandbox: real bwrap, real kernels, notebooks executed by nbclient."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from traitlets.config import Config

import nncourse
from nncourse.sandbox import (
    CGROUP_PREFIX,
    DEFAULT_HIDDEN_PATHS,
    RUNDIR_PREFIX,
    KernelTimeLimitExceeded,
    SandboxedKernelManager,
    SandboxUnavailable,
    check_sandbox,
    find_bwrap,
)

REPO = Path(nncourse.__file__).resolve().parent.parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


pytestmark = [pytest.mark.kernels, pytest.mark.sandbox]


def run(
    cells: list[str], workdir: Path, timeout: int | None = 30, **traits: Any
) -> tuple[NotebookNode, BaseException | None]:
    """Execute cells in a sandboxed kernel with workdir as cwd; return notebook and error."""
    config = Config()
    for name, value in traits.items():
        setattr(config.SandboxedKernelManager, name, value)
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in cells], metadata={"kernelspec": KERNELSPEC}
    )
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_manager_class=SandboxedKernelManager,
        resources={"metadata": {"path": str(workdir)}},
        allow_errors=True,
        interrupt_on_timeout=True,
        config=config,
    )
    try:
        client.execute()
    except Exception as err:  # the tests look at how a notebook fails
        return nb, err
    return nb, None


def stdout(nb: NotebookNode, index: int) -> str:
    """Return what cell index printed to stdout."""
    outputs = nb.cells[index].outputs
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")


def stderr(nb: NotebookNode) -> str:
    """Return everything the notebook printed to stderr (a grade cell with stderr scores 0)."""
    return "".join(
        o.text
        for cell in nb.cells
        for o in cell.outputs
        if o.output_type == "stream" and o.name == "stderr"
    )


def error_names(nb: NotebookNode, index: int) -> list[str]:
    """Return the exception names cell index raised."""
    return [o.ename for o in nb.cells[index].outputs if o.output_type == "error"]


def processes_with(marker: str) -> list[int]:
    """Return the host pids whose command line contains marker (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # exited meanwhile
    return found


def assert_none_left(marker: str) -> None:
    """Assert that no process with marker in its command line exists (after a short grace)."""
    deadline = time.monotonic() + 1.0
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


def sandbox_leftovers() -> set[str]:
    """Return the runtime folders and cgroups of this process's sandboxes (xdist runs several)."""
    rundirs = Path(tempfile.gettempdir()).glob(f"{RUNDIR_PREFIX}{os.getpid()}-*")
    cgroups = Path("/sys/fs/cgroup").rglob(f"{CGROUP_PREFIX}{os.getpid()}-*")
    return {str(p) for p in [*rundirs, *cgroups]}


def new_marker() -> str:
    """Return a number unlikely to be in any other command line (used as `sleep` seconds)."""
    return f"1000.{random.randrange(10**9, 10**10)}"


def read_attempts(paths: list[str]) -> str:
    """Return cell source that prints, as JSON, what reading each path raised ("" if nothing)."""
    return (
        "import json, os\nresults = {}\n"
        f"for path in {paths!r}:\n"
        "    try:\n"
        "        os.listdir(path) if os.path.isdir(path) else open(path, 'rb').read()\n"
        "        results[path] = ''\n"
        "    except OSError as err:\n"
        "        results[path] = type(err).__name__\n"
        "print(json.dumps(results))"
    )


def write_attempts(paths: list[str]) -> str:
    """Return cell source that prints, as JSON, what writing each path raised ("" if nothing)."""
    return (
        "import json\nresults = {}\n"
        f"for path in {paths!r}:\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('student was here')\n"
        "        results[path] = ''\n"
        "    except OSError as err:\n"
        "        results[path] = type(err).__name__\n"
        "print(json.dumps(results))"
    )


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_sandbox_leftovers() -> Iterator[None]:
    """Check that every test's kernels removed their runtime folder and cgroup."""
    before = sandbox_leftovers()
    yield
    deadline = time.monotonic() + 2.0
    while (left := sandbox_leftovers() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == set()


@pytest.fixture
def course(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A course root laid out as nbgrader does, outside /tmp, and the current directory."""
    root = Path(tempfile.mkdtemp(prefix="sandbox-test-course-", dir="/var/tmp"))
    files = {
        "nbgrader_config.py": "c = get_config()  # SECRET",
        "gradebook.db": "SECRET grades",
        "source/ps1/ps1.ipynb": "SECRET solution",
        "solutions/ps1/ps1.ipynb": "SECRET solution",
        "release/ps1/ps1.ipynb": "release",
        "submitted/alice/ps1/ps1.ipynb": "alice",
        "submitted/bob/ps1/ps1.ipynb": "SECRET bob",
        "autograded/bob/ps1/ps1.ipynb": "SECRET bob",
        "feedback/bob/ps1/ps1.html": "SECRET feedback",
        "exchange/nn/inbound/bob+ps1/ps1.ipynb": "SECRET bob",
        "autograded/alice/ps1/ps1.ipynb": "alice",
        "autograded/alice/ps1/data.csv": "1,2,3",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    monkeypatch.chdir(root)  # nbgrader runs in the course root
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(course: Path) -> Path:
    """The kernel's working folder: alice's autograded submission."""
    return course / "autograded" / "alice" / "ps1"


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_check_sandbox_passes_here() -> None:
    """Bubblewrap and a pids cgroup work on this machine (as root)."""
    check_sandbox()


def test_numpy_matplotlib_notebook_runs_and_plots(workdir: Path) -> None:
    """A normal notebook imports numpy and matplotlib, plots inline and saves a figure."""
    nb, error = run(
        [
            "%matplotlib inline\nimport numpy as np\nimport matplotlib.pyplot as plt",
            "x = np.linspace(0, 2 * np.pi, 50)\nplt.plot(x, np.sin(x))\nplt.show()",
            "fig, ax = plt.subplots()\nax.hist(np.random.default_rng(0).normal(size=100))\n"
            "fig.savefig('hist.png')\nprint(float(np.sin(np.pi / 2)))",
            "import socket\nprint(socket.gethostname())",
        ],
        workdir,
    )
    assert error is None
    assert "image/png" in nb.cells[1].outputs[0].data
    assert stdout(nb, 2) == "1.0\n"
    assert stdout(nb, 3) == "sandbox\n"  # it really ran in the sandbox
    assert stderr(nb) == ""  # no matplotlib/IPython warnings that would fail grade cells
    assert (workdir / "hist.png").stat().st_size > 0


def test_course_home_and_secrets_are_invisible(course: Path, workdir: Path) -> None:
    """Nothing of the course but the working folder, nor /root, /home, secrets, can be read."""
    secret = [
        str(course / "gradebook.db"),
        str(course / "nbgrader_config.py"),
        str(course / "source" / "ps1" / "ps1.ipynb"),
        str(course / "solutions"),
        str(course / "release"),
        str(course / "submitted" / "alice"),
        str(course / "autograded" / "bob" / "ps1" / "ps1.ipynb"),
        str(course / "feedback"),
        str(course / "exchange"),
        "/root/.bashrc",
        "/root/.cache",
        str(REPO / "gradebook.db"),  # the repository: a course root holding the venv
        str(REPO / "source"),
        str(REPO / "nbgrader_config.py"),
        str(REPO / "tests"),
        "/etc/shadow",
    ]
    nb, error = run(
        [
            read_attempts(secret),
            "import os, json\nlistings = []\n"
            f"for path in [{str(course)!r}, {str(course / 'autograded')!r}, '/home', "
            "'/usr/share/doc']:\n"
            "    try:\n"
            "        listings.append(sorted(os.listdir(path)))\n"
            "    except FileNotFoundError:\n"
            "        listings.append([])\n"
            "print(json.dumps(listings))",
            # The virtual environment (inside the repository) and the data next to the
            # notebook; the course's own package, checks and reference solutions are not there.
            f"import numpy\nprint(open({str(Path(sys.prefix) / 'pyvenv.cfg')!r}).read()[:4])\n"
            "import importlib.util\nprint(importlib.util.find_spec('nncourse'))\n"
            "print(open('data.csv').read())",
        ],
        workdir,
        hidden_paths=[*DEFAULT_HIDDEN_PATHS, "/usr/share/doc"],
    )
    assert error is None
    results = json.loads(stdout(nb, 0))
    assert {path: result for path, result in results.items() if result == ""} == {}
    assert set(results.values()) <= {"FileNotFoundError", "PermissionError"}
    course_listing, autograded_listing, home, doc = json.loads(stdout(nb, 1))
    assert set(course_listing) <= {"autograded"}  # only the path to the working folder
    assert autograded_listing == ["alice"]
    assert home == []
    assert doc == []  # a configured hidden path under a visible system folder
    assert stdout(nb, 2) == "home\nNone\n1,2,3\n"


def test_writing_outside_working_folder_fails(course: Path, workdir: Path) -> None:
    """Every path outside the working folder and the private /tmp is read-only or absent."""
    targets = [
        str(course / "gradebook.db"),
        str(course / "new.txt"),
        str(course / "source" / "ps1" / "ps1.ipynb"),
        str(course / "autograded" / "bob" / "ps1" / "ps1.ipynb"),
        str(course / "autograded" / "alice" / "new.txt"),
        str(Path(sys.prefix) / "new.txt"),
        str(REPO / "new.txt"),
        "/new.txt",
        "/usr/new.txt",
        "/etc/new.txt",
        "/var/tmp/new.txt",
        "/root/new.txt",
        "/home/new.txt",
    ]
    nb, error = run([write_attempts(targets)], workdir)
    assert error is None
    results = json.loads(stdout(nb, 0))
    # A checkout under /tmp (CI clones to a temporary folder) lies in the kernel's private
    # /tmp: writing there succeeds but never reaches the host, as the last checks show.
    private = [path for path in results if path.startswith("/tmp/")]
    assert {p: r for p, r in results.items() if r == "" and p not in private} == {}
    assert (course / "gradebook.db").read_text() == "SECRET grades"
    assert not (course / "new.txt").exists()
    assert not (REPO / "new.txt").exists()
    assert not Path("/var/tmp/new.txt").exists()


def test_working_folder_is_writable_and_tmp_private(workdir: Path) -> None:
    """The kernel writes its working folder; its /tmp is its own, not the host's."""
    name = f"sandbox-private-{new_marker()}"
    nb, error = run(
        [
            "import os\nos.makedirs('out/plots')\nopen('out/plots/a.txt', 'w').write('A')\n"
            f"open('/tmp/{name}', 'w').write('T')\nprint(sorted(os.listdir('/tmp')))",
        ],
        workdir,
    )
    assert error is None
    assert (workdir / "out" / "plots" / "a.txt").read_text() == "A"
    assert name in stdout(nb, 0)
    assert not (Path(tempfile.gettempdir()) / name).exists()


def test_network_is_unreachable(workdir: Path) -> None:
    """Neither a server on the host's loopback nor any outside address can be reached."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        attempts = [("127.0.0.1", port), ("1.1.1.1", 53), ("8.8.8.8", 443), ("pypi.org", 443)]
        nb, error = run(
            [
                "import json, socket\nresults = {}\n"
                f"for host, port in {attempts!r}:\n"
                "    try:\n"
                "        socket.create_connection((host, port), timeout=3).close()\n"
                "        results[host] = 'connected'\n"
                "    except OSError as err:\n"
                "        results[host] = type(err).__name__\n"
                "print(json.dumps(results))\n"
                "print([name for _, name in socket.if_nameindex()])",
            ],
            workdir,
        )
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected from the sandbox
    assert error is None
    results_line, interfaces = stdout(nb, 0).splitlines()
    assert "connected" not in json.loads(results_line).values()
    assert interfaces == "['lo']"


def test_started_processes_die_with_kernel(workdir: Path) -> None:
    """Detached children (new session, double fork, ignoring SIGTERM/SIGHUP) do not survive."""
    marker = new_marker()
    nb, error = run(
        [
            "import os, subprocess\n"
            f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
            f"subprocess.Popen(['sh', '-c', 'trap \"\" TERM HUP INT; sleep {marker}; :'])\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            f"        os.execvp('sleep', ['sleep', '{marker}'])\n"
            "    os._exit(0)",
            "import time\ntime.sleep(0.5)\n"
            "print(sum(1 for p in os.listdir('/proc') if p.isdigit() and "
            f"b'{marker}' in open(f'/proc/{{p}}/cmdline', 'rb').read()))",
        ],
        workdir,
    )
    assert error is None
    assert stdout(nb, 1) == "4\n"  # 3 sleeps and the sh
    assert_none_left(marker)


def test_process_spray_and_fork_bomb_are_contained(workdir: Path) -> None:
    """500 sleeps and a fork bomb hit pids.max; the kernel survives; nothing is left after."""
    marker = new_marker()
    nb, error = run(
        [
            "import subprocess\nprocs = []\ntry:\n"
            "    for _ in range(500):\n"
            f"        procs.append(subprocess.Popen(['sleep', '{marker}']))\n"
            "except OSError as err:\n"
            "    print(len(procs), type(err).__name__)",
            "for p in procs:\n    p.kill()\n    p.wait()",
            "import os, sys, time\n"
            "bomb = 'import os\\nwhile True:\\n    try:\\n        os.fork()\\n'"
            f" '    except OSError:\\n        pass  # {marker}'\n"
            "subprocess.Popen([sys.executable, '-c', bomb])\ntime.sleep(1)\n"
            "print(sum(1 for p in os.listdir('/proc') if p.isdigit()))",
        ],
        workdir,
        max_processes=64,
    )
    assert error is None
    started, err_name = stdout(nb, 0).split()
    assert int(started) < 64
    assert err_name == "BlockingIOError"
    assert int(stdout(nb, 2)) <= 64  # all tasks of the sandbox, the bomb's included
    assert_none_left(marker)


def test_huge_allocation_fails(workdir: Path) -> None:
    """Allocating 20 GB raises MemoryError (RLIMIT_AS) and the kernel carries on."""
    nb, error = run(
        [
            "import numpy as np\ntry:\n    np.ones(20 * 1024**3 // 8)\n"
            "except MemoryError:\n    print('MemoryError')",
            "bytearray(20 * 1024**3)",
            "print('alive')",
        ],
        workdir,
    )
    assert error is None
    assert stdout(nb, 0) == "MemoryError\n"
    assert error_names(nb, 1) == ["MemoryError"]
    assert stdout(nb, 2) == "alive\n"


def test_memory_cgroup_kills_a_process_over_the_limit(workdir: Path) -> None:
    """Memory used by all processes is capped by the cgroup: the offender is OOM-killed."""
    hog = (
        "open('/proc/self/oom_score_adj', 'w').write('1000')\n"
        "b = bytearray(600 * 1024**2)  # touched: resident, under RLIMIT_AS"
    )
    nb, error = run(
        [
            f"import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', {hog!r}])"
            ".returncode)",
            "print('alive')",
        ],
        workdir,
        memory_limit=256 * 1024**2,
    )
    assert error is None
    assert stdout(nb, 0) == "-9\n"
    assert stdout(nb, 1) == "alive\n"


def test_endless_loop_is_interrupted_by_message(workdir: Path) -> None:
    """The per-cell timeout interrupts through the control channel; the next cell runs."""
    started = time.monotonic()
    nb, error = run(["while True:\n    pass", "print('after')"], workdir, timeout=2)
    assert error is None
    assert error_names(nb, 0) == ["KeyboardInterrupt"]
    assert stdout(nb, 1) == "after\n"
    assert time.monotonic() - started < 15


def test_sigint_ignoring_loop_is_killed_at_time_limit(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop that ignores interrupts is ended by the wall-clock limit, sandbox and all."""
    marker = new_marker()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR):
        _, error = run(
            [
                f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'], "
                "start_new_session=True)",
                "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n"
                "    pass",
            ],
            workdir,
            timeout=None,
            time_limit=4.0,
        )
    assert isinstance(error, DeadKernelError)
    assert 4 <= time.monotonic() - started < 20
    assert "wall-clock limit" in caplog.text
    assert_none_left(marker)


def test_submitted_modules_do_not_shadow(workdir: Path) -> None:
    """numpy.py, ipykernel_launcher.py, sitecustomize.py ... next to the notebook are ignored."""
    names = ["numpy", "matplotlib", "ipykernel_launcher", "sitecustomize", "nncourse", "IPython"]
    for name in names:
        (workdir / f"{name}.py").write_text(
            f"print('HIJACK')\nopen({str(workdir / f'HIJACKED-{name}')!r}, 'w').close()\n"
        )
    nb, error = run(
        [
            "import os, sys\nimport numpy, matplotlib\n"
            "print(numpy.__file__)\nprint('' in sys.path, os.getcwd() in sys.path)",
        ],
        workdir,
    )
    assert error is None
    assert "HIJACK" not in stdout(nb, 0)
    numpy_file, on_path = stdout(nb, 0).splitlines()
    assert "site-packages" in numpy_file
    assert on_path == "False False"
    assert list(workdir.glob("HIJACKED-*")) == []


def test_missing_bwrap_is_reported() -> None:
    """Without the bwrap binary, check_sandbox and kernel start raise SandboxUnavailable."""
    manager = SandboxedKernelManager(bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="not found") as info:
        check_sandbox(manager)
    assert "c.SandboxedKernelManager.enabled = False" in str(info.value)
    _, error = run(["1"], Path.cwd(), bwrap="/nonexistent/bwrap")
    assert isinstance(error, SandboxUnavailable)


def test_failed_start_leaves_nothing_behind(course: Path) -> None:
    """A kernel that cannot start (no working folder) leaves no runtime folder or cgroup."""
    _, error = run(["1"], course / "missing")
    assert isinstance(error, FileNotFoundError)  # no_sandbox_leftovers checks the rest


@pytest.mark.parametrize(
    ("outer_flags", "reason"),
    [
        (["--disable-userns"], "namespace"),  # user namespaces refused, as on some hosts
        ([], "proc"),  # a container that does not let a new /proc be mounted
    ],
)
def test_refused_namespaces_are_reported(outer_flags: list[str], reason: str) -> None:
    """Where bwrap cannot build its sandbox (inside a container), check_sandbox says why."""
    script = (
        "from nncourse.sandbox import SandboxUnavailable, check_sandbox\n"
        "try:\n    check_sandbox()\nexcept SandboxUnavailable as err:\n    print(err)\n"
        "else:\n    print('available')"
    )
    outer = [find_bwrap(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    outer += ["--tmpfs", "/tmp", "--unshare-user", "--unshare-pid", "--die-with-parent"]
    outer += ["--ro-bind", str(REPO), str(REPO)]  # back over the tmpfs if checked out in /tmp
    result = subprocess.run(
        [*outer, *outer_flags, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "IPYTHONDIR": "/tmp/ipython"},
    )
    assert "bubblewrap cannot create the kernel sandbox" in result.stdout
    assert reason in result.stdout
    assert "c.SandboxedKernelManager.enabled = False" in result.stdout


def test_disabled_sandbox_falls_back_with_warning(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """enabled = False runs a plain kernel and says so in the log."""
    with caplog.at_level(logging.WARNING):
        nb, error = run(["import socket\nprint(socket.gethostname())"], workdir, enabled=False)
    assert error is None
    assert stdout(nb, 0) != "sandbox\n"
    assert "Kernel sandbox disabled" in caplog.text


def test_sandboxed_execute_preprocessor(workdir: Path) -> None:
    """nbgrader's Execute, as SandboxedExecute, runs in the sandbox and reports the time limit."""
    from nncourse.sandbox import SandboxedExecute

    config = Config()
    config.Execute.timeout = 60  # Execute's config applies to the subclass
    config.SandboxedKernelManager.time_limit = 4.0
    preprocessor = SandboxedExecute(config=config)
    assert preprocessor.timeout == 60
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import socket\nprint(socket.gethostname())"),
            nbformat.v4.new_code_cell("while True:\n    pass"),
        ],
        metadata={"kernelspec": KERNELSPEC},
    )
    with pytest.raises(KernelTimeLimitExceeded):
        preprocessor.preprocess(nb, {"metadata": {"path": str(workdir)}})
    assert stdout(nb, 0) == "sandbox\n"
