"""Machine-wide nbgrader configuration for the hub: install as /etc/jupyter/nbgrader_config.py.

Every account on the hub reads this file (students, instructors, the grader service), so it
holds nothing secret: no database URL, no token. The course's own settings (preprocessors,
sandbox, timeouts) live in the course root's nbgrader_config.py; the grader account's
settings (course root, gradebook URL) in deploy/grader_nbgrader_config.py.
"""

from nbgrader.auth import JupyterHubAuthPlugin

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

# The course of this hub. With several courses on one hub leave this out here and set it in
# each grader account's config instead (students then see every course they are enrolled in).
c.CourseDirectory.course_id = "nn-fundamentals"

# The shared exchange. Create it once as root:
#     install -d -m 0777 /srv/nbgrader/exchange
# (nbgrader's documented `chmod ugo+rw`; the grading sandbox hides /srv/nbgrader from kernels).
# nbgrader creates <root>/<course>/{inbound,outbound,feedback} itself at the first release,
# owned by the releasing account: inbound 2733 (students write into it but cannot list it),
# outbound 755, feedback 711.
c.Exchange.root = "/srv/nbgrader/exchange"

# Keep each course's assignments apart in students' homes (~/<course>/<assignment>) and in the
# exchange; required with the JupyterHub auth plugin and with several courses.
c.Exchange.path_includes_course = True

# Ask the hub which courses a user belongs to: groups nbgrader-<course> (students) and
# formgrade-<course> (instructors, grader). Students see only their own courses' assignments.
c.Authenticator.plugin_class = JupyterHubAuthPlugin

# Each submission's folder name ends in 12 random characters (nbgrader's default, kept on
# purpose): inbound is not listable, so the name is what keeps submissions private.
c.ExchangeSubmit.add_random_string = True
