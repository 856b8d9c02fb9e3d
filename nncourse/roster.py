"""`nncourse roster`: the Linux students' group decides who is enrolled (hub group, gradebook).

On the classroom hub an admin enrols a student with `usermod -aG nn-students alice` and takes
them out with `gpasswd -d alice nn-students`. This module makes the course follow that group:
each member gets a hub user (created if they never logged in), membership of the hub group
``nbgrader-<course id>`` (which is what shows them the course's assignments) and a gradebook
entry named from their account's full name. Whoever leaves the Linux group leaves the hub
group; their gradebook entry is kept when it holds a submission, so that no grade is lost.

The hub service of deploy/jupyterhub_config.py runs `nncourse roster --every 10`; an admin runs
`nncourse roster` once (through deploy/as-grader) to enrol at once and see any error.
"""

from __future__ import annotations

import dataclasses
import grp
import json
import logging
import os
import pwd
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from nbgrader.api import Gradebook, MissingEntry
from traitlets import Unicode
from traitlets.config import Config, Configurable

log = logging.getLogger(__name__)


class RosterError(RuntimeError):
    """The roster could not be brought in line; the message says why and what to do."""


class Roster(Configurable):
    """Where the course's students are listed and how to reach the hub."""

    students_group = Unicode(
        "", help="The Linux group whose members are the course's students (e.g. nn-students)."
    ).tag(config=True)
    hub_api_url = Unicode(
        "", help="The hub's REST API; default: $JUPYTERHUB_API_URL (set in a hub service)."
    ).tag(config=True)
    api_token_file = Unicode(
        "",
        help="A file holding the roster service's hub API token, for runs outside the hub; "
        "default: $JUPYTERHUB_API_TOKEN (set in a hub service).",
    ).tag(config=True)


@dataclasses.dataclass
class Changes:
    """What one sync did."""

    enrolled: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    kept_in_gradebook: list[str] = dataclasses.field(default_factory=list)
    hub_users_created: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per change, for the log."""
        out = [f"enrolled {name}" for name in self.enrolled]
        out += [
            f"created the hub user {name} (never logged in yet)" for name in self.hub_users_created
        ]
        out += [f"took {name} out of the course" for name in self.removed]
        out += [
            f"kept {name} in the gradebook: they have a submission, and no grade is ever deleted"
            for name in self.kept_in_gradebook
        ]
        return out


def group_members(group: str) -> set[str]:
    """The accounts in a Linux group: listed members and those whose primary group it is."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        raise RosterError(
            f"there is no Linux group {group!r}; create it (groupadd {group}) or set "
            "c.Roster.students_group to the students' group"
        ) from None
    members = set(entry.gr_mem)
    members |= {p.pw_name for p in pwd.getpwall() if p.pw_gid == entry.gr_gid}
    # JupyterHub lowercases the names it is given: "Alice" could log in only as "alice", an
    # account that does not exist, so such an account cannot take part.
    for name in sorted(n for n in members if n != n.lower()):
        log.warning(
            "%s is in %s but cannot use the hub: JupyterHub lowercases user names", name, group
        )
    return {n for n in members if n == n.lower()}


def full_name(account: str) -> tuple[str | None, str | None]:
    """First and last name from the account's GECOS field ("Alice Smith,,," -> Alice, Smith)."""
    try:
        gecos = pwd.getpwnam(account).pw_gecos.split(",")[0].strip()
    except KeyError:
        return None, None
    if not gecos:
        return None, None
    first, _, last = gecos.rpartition(" ")
    return (first or None, last) if first else (None, last)


class Hub:
    """The few calls of JupyterHub's REST API the roster makes, with the roster's token."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None, ok_missing: bool = False) -> Any:
        """Make one API call; return its JSON (None for 404 when ok_missing)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            if ok_missing and error.code == 404:
                return None
            detail = error.read().decode(errors="replace")[:300]
            hint = (
                " (the roster's token lacks a scope: see the roster role in jupyterhub_config.py)"
                if error.code == 403
                else ""
            )
            raise RosterError(
                f"the hub answered {error.code} to {method} {path}{hint}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            raise RosterError(
                f"cannot reach the hub's API at {self.api_url} ({error}); is the hub running?"
            ) from None
        return json.loads(text) if text else None

    def group_users(self, group: str) -> set[str]:
        """Members of a hub group."""
        found = self.call("GET", f"/groups/{urllib.parse.quote(group)}", ok_missing=True)
        if found is None:
            raise RosterError(f"the hub has no group {group!r}; it is made by jupyterhub_config.py")
        return set(found["users"])

    def ensure_user(self, name: str) -> bool:
        """Create the hub user if the hub does not know it yet; return whether it was created."""
        path = f"/users/{urllib.parse.quote(name)}"
        if self.call("GET", path, ok_missing=True) is not None:
            return False
        self.call("POST", path)
        return True


def _hub(roster: Roster) -> Hub:
    """The hub API client from the roster's settings or the hub service's environment."""
    url = roster.hub_api_url or os.environ.get("JUPYTERHUB_API_URL", "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if roster.api_token_file:
        try:
            token = Path(roster.api_token_file).read_text().strip()
        except OSError as error:
            raise RosterError(
                f"cannot read the roster token {roster.api_token_file}: {error}"
            ) from None
    if not url or not token:
        raise RosterError(
            "no hub API URL or token: run as the hub's roster service, or set "
            "c.Roster.hub_api_url and c.Roster.api_token_file (deploy/install writes both)"
        )
    return Hub(url, token)


def sync(config: Config) -> Changes:
    """Bring the hub group and the gradebook in line with the Linux students' group once."""
    from nbgrader.coursedir import CourseDirectory

    roster = Roster(config=config)
    if not roster.students_group:
        raise RosterError("c.Roster.students_group is not set in nbgrader_config.py")
    course = CourseDirectory(config=config)
    hub_group = f"nbgrader-{course.course_id}"
    wanted = group_members(roster.students_group)
    hub = _hub(roster)
    changes = Changes()
    in_hub = hub.group_users(hub_group)
    for name in sorted(wanted - in_hub):
        if hub.ensure_user(name):
            changes.hub_users_created.append(name)
    if wanted - in_hub:
        hub.call("POST", f"/groups/{hub_group}/users", {"users": sorted(wanted - in_hub)})
    if in_hub - wanted:
        hub.call("DELETE", f"/groups/{hub_group}/users", {"users": sorted(in_hub - wanted)})
    changes.removed = sorted(in_hub - wanted)
    with Gradebook(course.db_url, course.course_id) as gb:
        known = {s.id for s in gb.students}
        for name in sorted(wanted):
            first, last = full_name(name)
            if name not in known:
                gb.update_or_create_student(name, first_name=first, last_name=last)
        for name in sorted(known - wanted):
            if _has_submission(gb, name):
                if name in changes.removed:
                    changes.kept_in_gradebook.append(name)
            else:
                gb.remove_student(name)
    changes.enrolled = sorted((wanted - in_hub) | (wanted - known))
    return changes


def _has_submission(gb: Gradebook, student: str) -> bool:
    """Whether the gradebook holds any submission of the student."""
    try:
        return bool(gb.find_student(student).submissions)
    except MissingEntry:
        return False


def run(course_root: Path, every: float | None) -> int:
    """Sync once (exit status 1 on failure) or, with `every`, forever, logging each change."""
    from nncourse import course_config

    config = course_config.load_or_exit(course_root, "nncourse roster")
    try:
        while True:
            try:
                for line in sync(config).lines():
                    log.info("%s", line)
            except RosterError as error:
                if every is None:
                    log.error("roster not synced: %s", error)
                    return 1
                log.error("roster not synced, retrying in %g s: %s", every, error)
            if every is None:
                return 0
            time.sleep(every)
    except KeyboardInterrupt:  # the hub stops its services with SIGINT
        return 0 if every else 130
