"""The grader account's nbgrader configuration: the machine-wide one plus the course root.

deploy/install fills in every @SETTING@ and installs this file as
@PREFIX@/grader/etc/jupyter/nbgrader_config.py (readable by root and the grader only). It is
read by the formgrader and roster services and by `nbgrader` / `nncourse` run as the grader,
before the course root's own nbgrader_config.py.
"""

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

load_subconfig("@PREFIX@/student/etc/jupyter/nbgrader_config.py")  # noqa: F821

# The grader's clone of the course repository (source/, release/, submitted/, gradebook.db).
c.CourseDirectory.root = "@COURSE_ROOT@"

# Who the course's students are: `nncourse roster` (the hub's roster service) keeps the hub
# group nbgrader-@COURSE_ID@ and the gradebook equal to this Linux group. From a root shell
# (`as-grader nncourse roster`) it reaches the hub with the roster service's token.
c.Roster.students_group = "@STUDENTS_GROUP@"
c.Roster.hub_api_url = "http://127.0.0.1:@HUB_API_PORT@/hub/api"
c.Roster.api_token_file = "@PREFIX@/etc/roster-token"

# Gradebook. The default is SQLite (gradebook.db in the course root), safe because
# `nncourse grade` writes it from one process. With several graders using the formgrader at
# once, or the formgrader open while grading runs, use PostgreSQL (Debian's postgresql and the
# course's pinned psycopg), e.g. through the local socket with peer authentication:
#     sudo -u postgres createuser @GRADER@
#     sudo -u postgres createdb -O @GRADER@ nn_fundamentals
# c.CourseDirectory.db_url = "postgresql+psycopg:///nn_fundamentals?host=/var/run/postgresql"

# nbgrader's docs recommend a log file on a hub; this one stays in the grader's home.
c.NbGrader.logfile = "@GRADER_HOME@/nbgrader.log"
