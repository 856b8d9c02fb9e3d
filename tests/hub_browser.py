"""A real JupyterHub for tests/test_hub.py, started with the deployment's configuration.

The hub runs as root (as in deploy/README.md) from this virtual environment, with
deploy/jupyterhub_config.py loaded through a test-only config file that ``load_subconfig``s
it and then changes only what a test must: free loopback ports, a temporary state folder
(through NNCOURSE_HUB_URL / NNCOURSE_HUB_STATE, which the deployment's config reads), the
test's Linux groups and grader account, and a stand-in for /etc/jupyter.

Also: headless Chromium (Debian's, never a downloaded one) and small JupyterLab helpers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import hub_accounts as ha

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHP = "configurable-http-proxy"
# What deploy/README.md turns off for everyone but the grader account.
FORMGRADER_SERVER_EXT = "nbgrader.server_extensions.formgrader"
INSTRUCTOR_LAB_EXTS = ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment")


def write_json(path: Path, data: dict) -> None:
    """Write a world-readable JSON config file (folders 0755)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)
    path.write_text(json.dumps(data, indent=1))
    os.chmod(path, 0o644)


def browser_missing() -> str | None:
    """Why Chromium cannot be driven here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (Debian's chromium; tests/system-deps installs it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright (python) is not installed: pip install -r requirements.txt"
    return None


def can_run() -> str | None:
    """Why the hub test cannot run here, or None."""
    why = ha.can_run() or browser_missing()
    if why:
        return why
    if not any(
        os.access(os.path.join(d, CHP), os.X_OK)
        for d in [str(ha.VENV_BIN), *os.environ.get("PATH", "").split(os.pathsep)]
    ):
        return "configurable-http-proxy is missing (tests/system-deps installs it into .venv)"
    return None


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


TEST_CONFIG = '''\
"""Test-only JupyterHub config: the deployment's, with what a test must change."""
load_subconfig({deploy_config!r})

c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.debug = False

# The test's own Linux groups instead of nn-students / nn-instructors.
c.Authenticator.allowed_groups = {{{students_group!r}, {instructors_group!r}}}
c.Authenticator.admin_groups = {{{instructors_group!r}}}
c.JupyterHub.load_groups = {{
    "formgrade-{course}": {{"users": [{grader!r}, *{instructors!r}]}},
    "nbgrader-{course}": {{"users": []}},
}}

# /etc/jupyter stand-in (the deployment's machine-wide nbgrader_config.py, with the test's
# exchange root), for every user's server and for the grader service. Users' servers also
# read the stand-in for README's `--sys-prefix` disabling of the instructor-only extensions.
# The grader service does not: JUPYTER_CONFIG_PATH outranks ~/.jupyter, so there the
# grader's `--user` enabling would lose (as it does against --sys-prefix in a venv unless
# JUPYTER_PREFER_ENV_PATH=0, the deployment change this test assumes; see the report).
c.Spawner.environment = {{"JUPYTER_CONFIG_PATH": {config_dir!r} + ":" + {switches_dir!r}}}
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 90

service = c.JupyterHub.services[0]
service["url"] = "http://127.0.0.1:{service_port}"
service["user"] = {grader!r}
service["cwd"] = {grader_home!r}
service["environment"] = {{
    **service.get("environment", {{}}),
    "JUPYTER_CONFIG_PATH": {config_dir!r},
    "JUPYTER_PREFER_ENV_PATH": "0",
}}
# A token the test also uses to run `nbgrader db student add` as the grader (see README gap).
service["api_token"] = {service_token!r}
'''


@dataclass
class Hub:
    """A running JupyterHub subprocess (its own process group) and where it lives."""

    url: str
    api_url: str
    state: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    extra_pids: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, config_file: Path, state: Path, bind_port: int, hub_port: int) -> Hub:
        url = f"http://127.0.0.1:{bind_port}/"
        hub = cls(url, f"http://127.0.0.1:{hub_port}/hub/api", state, state / "hub.log")
        env = {
            "PATH": f"{ha.VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(state),
            "LANG": "C.UTF-8",
            "NNCOURSE_HUB_URL": url,
            "NNCOURSE_HUB_STATE": str(state),
        }
        log = open(hub.log_path, "wb")  # noqa: SIM115 (kept open for the child)
        hub.proc = subprocess.Popen(
            [str(ha.VENV_BIN / "jupyterhub"), "-f", str(config_file)],
            cwd=str(state),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        hub.wait_ready()
        return hub

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited {self.proc.returncode}\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "hub/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"jupyterhub not ready after {timeout}s\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM the hub (it stops servers, services and the proxy), then make sure."""
        proxy_pid = None
        with contextlib.suppress(OSError, ValueError):
            proxy_pid = int((self.state / "jupyterhub-proxy.pid").read_text().strip())
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Anything left in the hub's own process group (the proxy is started in it).
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if proxy_pid:
            kill_pids([proxy_pid])


def pids_of_uids(uids: set[int]) -> list[int]:
    """Processes (by pid) whose real uid is one of the test accounts'."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in open(f"/proc/{entry}/status"):
                if line.startswith("Uid:"):
                    if int(line.split()[1]) in uids:
                        found.append(int(entry))
                    break
    return found


def kill_pids(pids: list[int], grace: float = 5) -> None:
    """SIGTERM the given pids, wait a little, SIGKILL whatever is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z"):
            return False
    return True


# --------------------------------------------------------------------------------------------
# Browser helpers
# --------------------------------------------------------------------------------------------


def launch(playwright):
    """Debian's headless Chromium; Playwright never downloads a browser here."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def hub_login(page, hub_url: str, username: str, password: str, shot=None) -> None:
    """Log in through the hub's login page (PAM behind it)."""
    page.goto(hub_url + "hub/login")
    page.locator("#username_input").fill(username)
    page.locator("#password_input").fill(password)
    if shot:
        shot(page)
    page.locator("#login_submit").click()


def wait_for_lab(page, timeout: float = 90_000) -> None:
    """Wait until JupyterLab's shell and its menu bar are up."""
    page.wait_for_selector("#jp-main-dock-panel", timeout=timeout)
    page.get_by_role("menuitem", name="Nbgrader").wait_for(timeout=timeout)


def lab_menu(page, top: str, item: str) -> None:
    """Open a JupyterLab main-menu entry (e.g. Run → Run All Cells)."""
    page.get_by_role("menuitem", name=top, exact=True).click()
    page.locator(".lm-Menu").get_by_role("menuitem", name=item).first.click()


def dismiss_news(page) -> None:
    """Answer JupyterLab's "get notified about Jupyter news?" toast (No), if it shows."""
    try:
        page.get_by_role("button", name="No", exact=True).click(timeout=3000)
    except Exception:  # noqa: BLE001 (the toast is optional)
        pass


def scroll_to_output(page, nb_panel, steps: int = 60) -> None:
    """Scroll the notebook from the top until a cell's output (preferably a plot) is in view.

    JupyterLab renders only the cells near the viewport, so scroll and look, step by step.
    """
    scroller = nb_panel.locator(".jp-WindowedPanel-outer").first
    scroller.evaluate("el => { el.scrollTop = 0; }")
    for want in (".jp-OutputArea-output img", ".jp-OutputArea-output"):
        scroller.evaluate("el => { el.scrollTop = 0; }")
        for _ in range(steps):
            found = nb_panel.locator(want)
            for i in range(found.count()):
                if found.nth(i).is_visible():
                    found.nth(i).scroll_into_view_if_needed()
                    page.wait_for_timeout(300)
                    return
            scroller.evaluate("el => { el.scrollTop += el.clientHeight * 0.8; }")
            page.wait_for_timeout(150)
    raise AssertionError("no cell output visible in the notebook after Run All Cells")
