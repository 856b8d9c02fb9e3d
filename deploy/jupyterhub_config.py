"""JupyterHub configuration for one class of the nn-fundamentals course.

deploy/install fills in every @SETTING@ and installs this file as
@PREFIX@/etc/jupyterhub_config.py; the systemd unit it writes starts the hub as root with it
(the hub spawns every user's server as that Linux account). Written for JupyterHub 6 and
nbgrader 0.9.6.

Who may log in, who teaches and who grades is decided by Linux groups: adding a student is
`usermod -aG @STUDENTS_GROUP@ alice`, and the roster service below enrols them in the course.
"""

import grp
from pathlib import Path

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

COURSE_ID = "@COURSE_ID@"
# The Linux account that owns the course root and runs the formgrader and roster services.
GRADER = "@GRADER@"
STUDENTS_GROUP = "@STUDENTS_GROUP@"
INSTRUCTORS_GROUP = "@INSTRUCTORS_GROUP@"
PREFIX = "@PREFIX@"
# Every service of the course runs through this root-only launcher: it joins the grader's
# delegated cgroup (the grading sandbox needs it), becomes the grader and runs the command.
AS_GRADER = f"{PREFIX}/bin/as-grader"
ROSTER = f"{COURSE_ID}-roster"

# --- Network -------------------------------------------------------------------------------
# The hub listens on loopback; put a TLS-terminating reverse proxy (nginx, Caddy) in front of
# it. configurable-http-proxy (installed in @PREFIX@/proxy) is started by the hub itself.
c.JupyterHub.bind_url = "http://127.0.0.1:@HUB_PORT@/"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int("@HUB_API_PORT@")
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:@PROXY_API_PORT@"
# The hub's state (cookie secret, its SQLite database, the proxy's pid).
STATE = "@HUB_STATE@"
c.JupyterHub.cookie_secret_file = f"{STATE}/jupyterhub_cookie_secret"
c.JupyterHub.db_url = f"sqlite:///{STATE}/jupyterhub.sqlite"
c.ConfigurableHTTPProxy.pid_file = f"{STATE}/jupyterhub-proxy.pid"

# --- Who may log in ----------------------------------------------------------------------
# PAM against the machine's Linux accounts; only members of the two course groups get in.
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_groups = {STUDENTS_GROUP, INSTRUCTORS_GROUP}
# Instructors are hub admins so they can look after stuck student servers.
c.Authenticator.admin_groups = {INSTRUCTORS_GROUP}

# --- Single-user servers -------------------------------------------------------------------
# Everyone's own server runs from the students' environment: JupyterLab, nbgrader's student
# side (assignment list, Validate), numpy and matplotlib, and nothing of the grader's. Its
# etc/jupyter turns the formgrader, Create Assignment and the course list off.
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [f"{PREFIX}/student/bin/jupyterhub-singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 90
# Memory is not enforced by LocalProcessSpawner; size the machine (see README) or switch to
# systemdspawner for per-user limits.

# --- Groups and roles ------------------------------------------------------------------------
# nbgrader's JupyterHubAuthPlugin finds a student's courses in the hub groups named
# nbgrader-<course id> (kept equal to the Linux students' group by the roster service) and an
# instructor's in formgrade-<course id>.
try:
    _instructors = sorted(grp.getgrnam(INSTRUCTORS_GROUP).gr_mem)
except KeyError:
    _instructors = []
c.JupyterHub.load_groups = {
    f"formgrade-{COURSE_ID}": {"users": [GRADER, *_instructors]},
    f"nbgrader-{COURSE_ID}": {"users": []},
}

c.JupyterHub.load_roles = [
    {
        # Instructors (and the grader account) may open the course's formgrader service.
        "name": f"formgrader-{COURSE_ID}",
        "groups": [f"formgrade-{COURSE_ID}"],
        "scopes": [f"access:services!service={COURSE_ID}"],
    },
    {
        # The token of every user's own server may read that user's groups: that is how
        # nbgrader's assignment list learns which courses a student is enrolled in.
        "name": "server",
        "scopes": [
            "users:activity!user",
            "access:servers!server",
            "read:users:name!user",
            "read:users:groups!user",
        ],
    },
    {
        # The formgrader looks up who is in which course.
        "name": f"grader-service-{COURSE_ID}",
        "services": [COURSE_ID],
        "scopes": [
            "list:groups",
            "read:groups",
            "list:users",
            "read:users:name",
            "read:users:groups",
        ],
    },
    {
        # The roster creates the hub user of a student who never logged in and keeps the
        # course's group equal to the Linux students' group.
        "name": f"roster-{COURSE_ID}",
        "services": [ROSTER],
        "scopes": [
            "admin:users",
            f"groups!group=nbgrader-{COURSE_ID}",
            "list:groups",
            "read:groups",
        ],
    },
]

# --- The course's services, run as the grader ---------------------------------------------
# The formgrader runs in the grader's own Jupyter server, from the grader's environment, in the
# course root. Its name must be the course id: nbgrader's course list links to
# /services/<course id>/. Open it in its own tab (the iframe is blank on JupyterHub >= 4.1).
c.JupyterHub.services = [
    {
        "name": COURSE_ID,
        "url": "http://127.0.0.1:@SERVICE_PORT@",
        "command": [AS_GRADER, "--", "jupyterhub-singleuser"],
        # nbgrader's JupyterHubAuthPlugin asks the hub for this user's courses.
        "environment": {"JUPYTERHUB_DEFAULT_URL": "/lab", "JUPYTERHUB_USER": GRADER},
        "oauth_no_confirm": True,
    },
    {
        # `nncourse roster` every few seconds; an admin may run it at once with as-grader, with
        # the same token (readable by root and the grader only).
        "name": ROSTER,
        "command": [AS_GRADER, "--", "nncourse", "roster", "--every", "@ROSTER_EVERY@"],
        "api_token": Path(f"{PREFIX}/etc/roster-token").read_text().strip(),
    },
]
