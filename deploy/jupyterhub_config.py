"""JupyterHub configuration for one class of the nn-fundamentals course.

Install as /etc/jupyterhub/jupyterhub_config.py and start the hub as root (it spawns every
user's server, and the grading service, as that Linux account):

    cd /etc/jupyterhub && /opt/nncourse/venv/bin/jupyterhub -f jupyterhub_config.py

Accounts are ordinary Linux accounts (PAM). Who may log in, who teaches and who grades is
decided by the Linux groups below, so adding a student is `useradd` plus `usermod -aG`; see
deploy/README.md. Written for JupyterHub 5/6 (role-based access) and nbgrader 0.9.6.
"""

import os

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

COURSE_ID = "nn-fundamentals"
# The Linux account that owns the course root and runs the formgrader service.
GRADER = f"grader-{COURSE_ID}"
# Linux groups an admin manages with usermod; nothing else needs to be edited per term.
STUDENTS_GROUP = "nn-students"
INSTRUCTORS_GROUP = "nn-instructors"
# The port of the formgrader service on loopback; one distinct port per course.
SERVICE_PORT = 9999

# --- Network -------------------------------------------------------------------------------
# The hub listens on loopback; put a TLS-terminating reverse proxy (nginx, Caddy) in front of
# it. configurable-http-proxy (npm) is started by the hub itself.
c.JupyterHub.bind_url = os.environ.get("NNCOURSE_HUB_URL", "http://127.0.0.1:8000/")
c.JupyterHub.hub_ip = "127.0.0.1"
# The hub's state (cookie secret, its SQLite database, the proxy's pid) lives in /srv/jupyterhub.
STATE = os.environ.get("NNCOURSE_HUB_STATE", "/srv/jupyterhub")
c.JupyterHub.cookie_secret_file = f"{STATE}/jupyterhub_cookie_secret"
c.JupyterHub.db_url = f"sqlite:///{STATE}/jupyterhub.sqlite"
c.ConfigurableHTTPProxy.pid_file = f"{STATE}/jupyterhub-proxy.pid"

# --- Who may log in ----------------------------------------------------------------------
# PAM against the machine's Linux accounts; only members of the two course groups get in.
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_groups = {STUDENTS_GROUP, INSTRUCTORS_GROUP}
c.Authenticator.admin_groups = {INSTRUCTORS_GROUP}
# Instructors are hub admins so they can look after stuck student servers; they do not need
# a shell on the machine for that.

# --- Single-user servers -------------------------------------------------------------------
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
# Every student starts in their own home; the exchange is reached through nbgrader only.
c.Spawner.cmd = ["jupyterhub-singleuser"]
# Memory is not enforced by LocalProcessSpawner; size the machine (see README) or switch to
# systemdspawner for per-user limits.

# --- Groups, roles and the formgrader service ---------------------------------------------
# nbgrader's JupyterHubAuthPlugin finds a student's courses in the hub groups named
# nbgrader-<course id> and an instructor's in formgrade-<course id>. The hub keeps groups in
# its database; load_groups only adds members, it never removes them.
c.JupyterHub.load_groups = {
    f"formgrade-{COURSE_ID}": {"users": [GRADER]},
    # Filled by `nbgrader db student add` / the formgrader (JupyterHubAuthPlugin).
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
        # The grading service enrols students (nbgrader db student add adds them to the
        # nbgrader-<course> group) and lists groups.
        "name": f"grader-service-{COURSE_ID}",
        "services": [COURSE_ID],
        "scopes": [
            "list:groups",
            "read:groups",
            f"groups!group=nbgrader-{COURSE_ID}",
            "list:users",
            "read:users:name",
            "read:users:groups",
        ],
    },
]

# The formgrader runs in the grader account's own Jupyter server, started by the hub as a
# managed service. Its name must be the course id: nbgrader's course list links to
# /services/<course id>/. Open it from the course list in a NEW TAB (the iframe is blank
# on JupyterHub >= 4.1, see README).
c.JupyterHub.services = [
    {
        "name": COURSE_ID,
        "url": f"http://127.0.0.1:{SERVICE_PORT}",
        "command": ["jupyterhub-singleuser"],
        "user": GRADER,
        "cwd": f"/home/{GRADER}",
        # Inside a virtual environment jupyter_core reads the environment's config before
        # ~/.jupyter, so the sys-prefix "formgrader off" of the admin guide would win over
        # the grader's own "on": prefer the account's config instead.
        "environment": {"JUPYTERHUB_DEFAULT_URL": "/lab", "JUPYTER_PREFER_ENV_PATH": "0"},
        "oauth_no_confirm": True,
    },
]

# Instructors add their own membership of formgrade-<course> at start-up: every member of the
# Linux instructors group gets formgrader access. (PAM's allowed_groups is checked at login;
# this is the hub-side group used by roles and by nbgrader.)
try:
    import grp

    _instructors = grp.getgrnam(INSTRUCTORS_GROUP).gr_mem
except KeyError:
    _instructors = []
c.JupyterHub.load_groups[f"formgrade-{COURSE_ID}"]["users"] += sorted(_instructors)
