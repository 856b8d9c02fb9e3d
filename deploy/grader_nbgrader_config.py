"""The grader account's nbgrader configuration.

Install as /home/grader-nn-fundamentals/.jupyter/nbgrader_config.py.

Read by the formgrader service and by `nbgrader` / `nncourse` commands run as the grader
account, after /etc/jupyter/nbgrader_config.py and before the course root's own
nbgrader_config.py. Keep the home folder 0700: this file may hold the gradebook password.
"""

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

# The course repository checked out in the grader's home (release/, source/, submitted/ ...).
c.CourseDirectory.root = "/home/grader-nn-fundamentals/nn-fundamentals"
c.CourseDirectory.course_id = "nn-fundamentals"

# Gradebook. The default is SQLite (gradebook.db in the course root), safe because
# `nncourse grade` writes it from one process. With several graders using the formgrader at
# once, or the formgrader open while grading runs, use PostgreSQL (Debian's postgresql and the
# course's pinned psycopg), e.g. through the local socket with peer authentication:
#     sudo -u postgres createuser grader-nn-fundamentals
#     sudo -u postgres createdb -O grader-nn-fundamentals nn_fundamentals
# c.CourseDirectory.db_url = (
#     "postgresql+psycopg:///nn_fundamentals?host=/var/run/postgresql"
# )

# nbgrader's docs recommend a log file on a hub; this one stays in the grader's home.
c.NbGrader.logfile = "/home/grader-nn-fundamentals/nbgrader.log"
