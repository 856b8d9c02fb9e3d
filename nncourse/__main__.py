"""Command line: ``nncourse SUBCOMMAND ...`` (run in the course root)."""

import argparse
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar


def _add_build(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nncourse build [ASSIGNMENT ...]``."""
    parser = subparsers.add_parser(
        "build",
        help="regenerate figures, release/ and solutions/ from source/",
        description="Normalise source notebooks, export figures, run nbgrader "
        "generate_assignment and generate_solution, and normalise their output.",
    )
    parser.add_argument(
        "assignments",
        nargs="*",
        metavar="ASSIGNMENT",
        help="assignment folder(s) under source/ (default: all)",
    )
    parser.add_argument(
        "--db-url",
        help="gradebook URL passed to nbgrader (default: sqlite gradebook.db in the root)",
    )
    parser.set_defaults(run=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    """Run the build; turn a BuildError into a one-line message and exit status 1."""
    # Imported here so that `nncourse --help` and other subcommands stay fast.
    from nncourse.build import BuildError, build

    try:
        build(args.root, args.assignments, db_url=args.db_url, verbose=args.verbose)
    except BuildError as exc:
        logging.getLogger("nncourse").error("build failed: %s", exc)
        return 1
    return 0


def _add_grade(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nncourse grade [ASSIGNMENT ...] [--jobs N] [--scheduler ADDRESS] [--force]``."""
    parser = subparsers.add_parser(
        "grade",
        help="autograde every submission in parallel, then feedback, exports and class report",
        description="Grade every new or changed submission in submitted/ with nbgrader's own "
        "steps, one fresh kernel per submission, JOBS at a time; then write feedback without "
        "hidden tests, reports/grades.csv, reports/grade_cells.csv and a class report. Exit "
        "status 3 means some students need attention (listed in the summary).",
    )
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="default: all")
    parser.add_argument("-j", "--jobs", type=int, help="parallel kernels (default: all cores)")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="execute the submissions on the workers of the Dask scheduler at ADDRESS "
        "(tcp://HOST:PORT; default: c.GradingExecutor.scheduler, else this machine; "
        "'' for this machine)",
    )
    parser.add_argument("--force", action="store_true", help="regrade unchanged submissions too")
    parser.set_defaults(run=_run_grade)


def _run_grade(args: argparse.Namespace) -> int:
    """Grade the class and print the summary."""
    from nncourse import workflow

    run = _resumable(
        lambda: workflow.grade_and_report(
            args.root, args.assignments, args.jobs, args.force, scheduler=args.scheduler
        ),
        rerun="make grade",
    )
    workflow.print_run(run)
    if run.exit_status:
        print("Some students need attention (see above); exit status", run.exit_status)
    return run.exit_status


T = TypeVar("T")


def _resumable(step: Callable[[], T], rerun: str) -> T:
    """Run a grading step; on Ctrl-C or SIGTERM say in one line what was kept, and exit 130."""
    # SIGTERM stops a run as Ctrl-C does: workers and kernels killed, the gradebook consistent.
    # SIGINT too, even where it was ignored when we started: a shell without job control
    # starts background commands so (`make grade &` in a script), and `kill -INT` must still stop
    # the run cleanly rather than go unheard.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return step()
    except KeyboardInterrupt as stopped:
        saved = str(stopped) or "what was graded before it is saved in the gradebook"
        print(f"\nnncourse: interrupted; {saved}. Rerun `{rerun}` to resume.", flush=True)
        sys.stderr.flush()
        # Everything kept is committed and renamed. A normal exit would join the stopped
        # process pool's threads, which can wait forever for workers that were killed.
        os._exit(130)


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nncourse demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="build, then grade the bundled example class of 30 students and report",
        description="Build release/ and solutions/, lay out the bundled example class in "
        "submitted/, grade it in parallel and write feedback, exports and the class report.",
    )
    parser.add_argument("-j", "--jobs", type=int, help="parallel kernels (default: all cores)")
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    """Run the demo on the bundled example class."""
    from nncourse.demo import run_demo

    return _resumable(lambda: run_demo(args.root, args.jobs), rerun="make demo")


def _add_roster(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nncourse roster [--every SECONDS]``."""
    parser = subparsers.add_parser(
        "roster",
        help="enrol the Linux students' group in the course (hub group and gradebook)",
        description="Make the hub group nbgrader-<course> and the gradebook follow the Linux "
        "group set in c.Roster.students_group: members are enrolled (their hub user created "
        "if they never logged in), leavers taken out. Exit status 1 when it cannot.",
    )
    parser.add_argument(
        "--every", type=float, metavar="SECONDS", help="sync again every SECONDS, forever"
    )
    parser.set_defaults(run=_run_roster)


def _run_roster(args: argparse.Namespace) -> int:
    """Sync the roster once or forever."""
    from nncourse import roster

    return roster.run(args.root, args.every)


class PrintableFormatter(logging.Formatter):
    """Log lines with control characters shown escaped: messages quote students' ids and files."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as usual, each line stripped of what a terminal would act on."""
        from nncourse.inert import printable  # here: it imports nbgrader, --help stays fast

        return "\n".join(printable(line) for line in super().format(record).split("\n"))


#: To add a subcommand, write an ``_add_<name>`` function that registers its parser and
#: sets ``run`` (a function taking the parsed args and returning an exit status), then
#: list it here.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_build,
    _add_grade,
    _add_demo,
    _add_roster,
]


def make_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="nncourse", description=__doc__)
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="course root holding nbgrader_config.py and source/ (default: current folder)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; return its exit status."""
    args = make_parser().parse_args(argv)
    from nncourse import compat  # jupyter_client, which nearly every subcommand imports anyway

    compat.defer_iri_grammar()
    # nbgrader runs `alembic` from PATH when it creates a gradebook: find this environment's.
    os.environ["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    )
    # Libraries (nbclient, traitlets, ...) stay at WARNING; only our own steps are chatty.
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("nncourse").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # nbgrader's gradebook makes SQLAlchemy warn about its own autoflush ("Object of type
    # <SubmittedNotebook> not in session") whenever a submission is replaced: nothing an
    # instructor can act on, and it reads as if grading broke. Shown with --verbose.
    if not args.verbose:
        warnings.filterwarnings("ignore", message=".* not in session", module=r"nbgrader\.")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
