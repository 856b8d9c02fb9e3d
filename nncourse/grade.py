"""`nncourse grade`, the driver of a grading run: plan (plan.py), execute on an executor
(executors.py), record each outcome as it arrives (record.py); every student ends with a result."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry, SubmittedAssignment
from nbgrader.coursedir import CourseDirectory
from tqdm import tqdm
from traitlets.config import Config

from nncourse import course_config, crashpoints, durable, executors, plan, record
from nncourse.inert import printable
from nncourse.results import NEEDS_ATTENTION, Outcome, Status, StudentResult, Task
from nncourse.sandbox import SandboxUnavailable


class GradingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during grading; the message says what was saved."""


def grade_class(
    course_root: Path,
    assignments: list[str] | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
) -> list[StudentResult]:
    """Grade every new or changed submission; return one result per student and assignment.

    Planning only reads. Nothing is written before every check passed (config, assignments,
    sandbox, disk) and the gradebook was backed up; then each submission's new grades replace
    its old ones in one transaction. A run stopped anywhere is finished by running it again.
    """
    config = course_config.load_or_exit(course_root)
    executors.choose(config, scheduler)
    course = CourseDirectory(config=config)
    with run_lock(course):
        return grade_locked(course, config, assignments, jobs, force, progress)


@contextlib.contextmanager
def run_lock(course: CourseDirectory) -> Iterator[None]:
    """Hold the course's grading lock; another run holding it: refused."""
    try:
        with durable.run_lock(Path(course.root), course.db_url):
            yield
    except durable.RunRefused as error:
        raise SystemExit(f"nncourse grade: {error}") from None


def grade_locked(
    course: CourseDirectory,
    config: Config,
    assignments: list[str] | None,
    jobs: int | None,
    force: bool,
    progress: bool,
) -> list[StudentResult]:
    """grade_class, for a caller that loaded the config and holds the run lock."""
    jobs = jobs or os.cpu_count() or 1
    with Gradebook(course.db_url, course.course_id) as gb:
        known = [a.name for a in gb.assignments]
        assignments = assignments or known
        unknown = sorted(set(assignments) - set(known))
        if unknown:
            raise SystemExit(
                f"unknown assignment(s) {', '.join(unknown)}: the gradebook {course.db_url} knows "
                f"{', '.join(known) or 'none'}. "
                "Run `nncourse build` (or nbgrader generate_assignment) first."
            )
        notebooks = {a: [n.name for n in gb.find_assignment(a).notebooks] for a in assignments}
        tasks, kept = plan.plan_class(gb, course, config, notebooks, force)
        gb.db.rollback()  # planning read: end its transaction before anything writes
        outcomes = list(kept)
        with executors.chosen(config, jobs) as executor:
            preflight(course, config, executor if tasks else None)
            if tasks:
                _run_tasks(gb, course, config, tasks, notebooks, executor, progress, outcomes)
    regraded = {(t.student, t.assignment) for t in tasks}
    return _results(course, outcomes, regraded)


def preflight(course: CourseDirectory, config: Config, executor: executors.Executor | None) -> None:
    """Refuse, changing nothing, a run that could not finish: no sandbox, no room to write.

    The executor checks where it executes (every Dask worker); None: nothing to execute.
    """
    try:
        if executor is not None:
            executor.preflight(config)
        root = Path(course.root)
        database = durable.sqlite_path(course.db_url)
        folders = [root / course.autograded_directory, root / course.feedback_directory]
        durable.check_writable(
            [folder if folder.exists() else root for folder in folders]
            + ([database.parent] if database else []),
            database,
        )
    except (SandboxUnavailable, durable.RunRefused, executors.ExecutorUnavailable) as error:
        raise SystemExit(f"nncourse grade: {error}. Nothing was changed.") from None


def _run_tasks(
    gb: Gradebook,
    course: CourseDirectory,
    config: Config,
    tasks: list[Task],
    notebooks: dict[str, list[str]],
    executor: executors.Executor,
    progress: bool,
    outcomes: list[Outcome],
) -> None:
    """Back up, execute the tasks on the executor and save each outcome as it arrives."""
    database = durable.sqlite_path(course.db_url)
    if database:
        print(f"gradebook backed up to {durable.backup(database)}")
    crashpoints.reached("backup-done")
    autograded = Path(course.root) / course.autograded_directory
    durable.clear_staging(autograded)
    run = durable.staging_root(autograded) / f"{os.getpid()}-{time.time_ns()}"
    for task in tasks:
        task.staging = str(run / task.student / task.assignment)
    by_key = {(t.student, t.assignment): t for t in tasks}
    bar = tqdm(total=len(tasks), unit="submission", desc="grading", disable=not progress)
    saved = 0

    def on_done(outcome: Outcome) -> None:
        nonlocal saved
        task = by_key[outcome.student, outcome.assignment]
        record.save_outcome(
            gb,
            config,
            outcome,
            notebooks[outcome.assignment],
            task.submission.timestamp,
            Path(task.staging),
        )
        saved += 1
        outcomes.append(outcome)
        bar.update()
        if outcome.status in NEEDS_ATTENTION:
            bar.write(printable(f"{outcome.student}: {outcome.status}: {outcome.reason}"))

    try:
        with record.master_cells(course.db_url, course.course_id) as read_url:
            for task in tasks:
                task.read_db_url = read_url
            executor.run(tasks, on_done)
    except KeyboardInterrupt:
        raise GradingInterrupted(
            f"{saved} of {len(tasks)} submissions to grade were saved in the gradebook"
        ) from None
    finally:
        bar.close()
    durable.clear_staging(autograded)


def _has_submission(gb: Gradebook, student: str, assignment: str) -> bool:
    """Whether the gradebook holds a submission of this student for this assignment."""
    try:
        gb.find_submission(assignment, student)
    except MissingEntry:
        return False
    return True


def _results(
    course: CourseDirectory, outcomes: list[Outcome], regraded: set
) -> list[StudentResult]:
    """Join outcomes with the scores the gradebook now holds."""
    results = []
    with Gradebook(course.db_url, course.course_id) as gb:
        max_scores = {a.name: a.max_score for a in gb.assignments}
        for o in sorted(outcomes, key=lambda o: (o.assignment, o.student)):
            score, to_grade = 0.0, {}
            if o.status != Status.MISSING and _has_submission(gb, o.student, o.assignment):
                submission = gb.find_submission(o.assignment, o.student)
                score, to_grade = submission.score, waiting_for_a_person(submission)
            results.append(
                StudentResult(
                    o.student,
                    o.assignment,
                    o.status,
                    score,
                    max_scores[o.assignment],
                    o.reason,
                    o.seconds,
                    (o.student, o.assignment) in regraded,
                    o.flags,
                    to_grade,
                    [grade_id for grade_id in o.grade_again if grade_id in to_grade],
                )
            )
    return results


def waiting_for_a_person(submission: SubmittedAssignment) -> dict[str, float]:
    """A gradebook submission's grade cells that need manual grading, with their points."""
    return {
        grade.name: grade.max_score
        for notebook in submission.notebooks
        for grade in notebook.grades
        if grade.needs_manual_grade
    }


def summary(results: list[StudentResult]) -> str:
    """A plain-text table of the class: scores, statuses and who needs attention."""
    lines = []
    for assignment in sorted({r.assignment for r in results}):
        rows = [r for r in results if r.assignment == assignment]
        scores = [r.score for r in rows]
        statuses = Counter(r.status for r in rows)
        lines += [
            f"assignment {assignment}: {len(rows)} students, max score {rows[0].max_score:g}",
            f"  mean {statistics.mean(scores):.2f}   median {statistics.median(scores):.2f}   "
            f"regraded now {sum(r.regraded for r in rows)}",
            "  " + "   ".join(f"{status}: {count}" for status, count in sorted(statuses.items())),
        ]
        lines += _manual_lines(rows)
        attention = [r for r in rows if r.needs_attention]
        if attention:
            lines.append("  needs attention:")
            for r in attention:
                lines.append(f"    {printable(r.student):<24} {r.status:<11} {printable(r.reason)}")
                lines += [f"    {'':<24} flagged: {printable(flag)}" for flag in r.flags]
    return "\n".join(lines)


def _manual_lines(rows: list[StudentResult]) -> list[str]:
    """What is left for a person to grade in the formgrader, and what to grade again."""
    waiting = [r for r in rows if r.to_grade]
    if not waiting:
        return []
    points = sum(sum(r.to_grade.values()) for r in waiting)
    cells = Counter(grade_id for r in waiting for grade_id in r.to_grade)
    lines = [
        f"  needs manual grading: {_students(len(waiting))}, {points:g} points not yet awarded",
        "    (left out of the scores above until a person grades them in the formgrader)",
        *(f"    {grade_id:<28} {count} submissions" for grade_id, count in sorted(cells.items())),
    ]
    for r in waiting:
        if r.grade_again:
            lines.append(
                f"    {printable(r.student):<24} answer changed since it was graded, grade it "
                f"again: {', '.join(r.grade_again)}"
            )
    return lines


def _students(count: int) -> str:
    """A number of students, in words."""
    return f"{count} student" + ("" if count == 1 else "s")


def exit_status(results: list[StudentResult]) -> int:
    """0 when every submission was graded cleanly; 3 when some need attention or were flagged."""
    return 3 if any(r.needs_attention for r in results) else 0
