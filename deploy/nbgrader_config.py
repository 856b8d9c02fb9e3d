"""Machine-wide nbgrader configuration of the hub, read by everyone's own server.

deploy/install fills in every @SETTING@ and installs this file as
@PREFIX@/student/etc/jupyter/nbgrader_config.py; the grader's configuration loads it too.
Every account reads it, so it holds nothing secret: no database URL, no token.
"""

from nbgrader.auth import JupyterHubAuthPlugin

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

# The course of this hub. With several courses on one hub, each grader's configuration sets
# its own, and students see every course they are enrolled in.
c.CourseDirectory.course_id = "@COURSE_ID@"

# The shared exchange, made 0777 by deploy/install (nbgrader's documented `chmod ugo+rw`; the
# grading sandbox hides it from kernels). nbgrader creates <root>/<course>/{inbound,outbound,
# feedback} itself at the first release, owned by the grader: inbound 2733 (students write
# into it but cannot list it), outbound 755, feedback 711.
c.Exchange.root = "@EXCHANGE@"

# Keep each course's assignments apart in students' homes (~/<course>/<assignment>) and in the
# exchange; required with the JupyterHub auth plugin and with several courses.
c.Exchange.path_includes_course = True

# Ask the hub which courses a user belongs to: groups nbgrader-<course> (students) and
# formgrade-<course> (instructors, grader). Students see only their own courses' assignments.
c.Authenticator.plugin_class = JupyterHubAuthPlugin

# Each submission's folder name ends in 12 random characters (nbgrader's default, kept on
# purpose): inbound is not listable, so the name is what keeps submissions private.
c.ExchangeSubmit.add_random_string = True
