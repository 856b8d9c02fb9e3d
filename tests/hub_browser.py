"""A real JupyterHub for tests/test_hub.py, installed and started as deploy/README.md says.

`install` runs deploy/install as root with only folder roots, ports and account names changed;
`Hub.from_unit` starts the hub the way the systemd unit it wrote does (its WorkingDirectory,
Environment, ExecStartPre and ExecStart), since the test machine runs no systemd.

Also: headless Chromium (Debian's, never a downloaded one) and small JupyterLab helpers,
among them typing into a notebook cell the way a student does.
"""

from __future__ import annotations

import contextlib
import os
import shlex
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
DEBIAN_PYTHON = "/usr/bin/python3.11"
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
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        return f"{DEBIAN_PYTHON} is missing: deploy/install needs Debian's python3.11"
    if subprocess.run(["npm", "--version"], capture_output=True).returncode != 0:
        return "npm is missing: deploy/install installs JupyterHub's proxy with it"
    return ha.can_run() or browser_missing()


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


def install(settings: dict[str, str], log: Path) -> None:
    """Run deploy/install as root with these settings (folder roots, ports, names)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    env.update(LANG="C.UTF-8", **settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        done = subprocess.run(
            [str(DEPLOY / "install")], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1200
        )
    if done.returncode != 0:
        raise AssertionError(f"deploy/install exited {done.returncode}:\n{log.read_text()[-4000:]}")


def unit_settings(unit: Path) -> dict[str, str]:
    """The [Service] keys of a systemd unit file written by deploy/install."""
    found = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found.setdefault(key.strip(), value.strip())
    return found


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
    def from_unit(cls, unit: Path, state: Path, bind_port: int, hub_api_port: int) -> Hub:
        """Start the hub as systemd would from the unit: ExecStartPre, then ExecStart."""
        keys = unit_settings(unit)
        name, _, value = keys["Environment"].partition("=")
        # What systemd sets for a unit with User=root, and the unit's own Environment.
        env = {"HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash"}
        env.update({name: value, "LANG": "C.UTF-8"})
        cwd = keys["WorkingDirectory"]
        subprocess.run(shlex.split(keys["ExecStartPre"]), env=env, cwd=cwd, check=True)
        url = f"http://127.0.0.1:{bind_port}/"
        hub = cls(url, f"http://127.0.0.1:{hub_api_port}/hub/api", state, state / "hub.log")
        log = open(hub.log_path, "wb")  # noqa: SIM115 (kept open for the child)
        hub.proc = subprocess.Popen(
            shlex.split(keys["ExecStart"]),
            cwd=cwd,
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


def type_into_cell(page, cell, text: str) -> None:
    """Replace a cell's source by typing it into its editor, key by key, as a student does.

    Enter makes the editor indent the new line by itself; Shift+Home then selects that
    indentation, so the line's own (typed) indentation replaces it.
    """
    cell.scroll_into_view_if_needed()
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    for number, line in enumerate(text.split("\n")):
        if number:
            page.keyboard.press("Enter")
            page.keyboard.press("Shift+Home")
        if line:
            page.keyboard.type(line)
        else:
            page.keyboard.press("Delete")  # an empty line: drop the editor's indentation
