"""Build student submissions from a release notebook: correct, blank, or with one known mistake.

A submission is the release notebook (what students receive) with some of its solution cells
filled in. ``correct_cells`` gives the reference code of every solution cell, ``parse_fixture``
reads one student's cell from ``nncourse/course/mistakes/``, ``fill`` puts cells into a copy of
the release notebook, and ``write_submission`` lays it out where ``nbgrader autograde`` looks.

A fixture file is the code a student typed into one solution cell, under a header of comment
lines that ``parse_fixture`` reads (and strips from the code)::

    # cell: backprop_any_depth
    # loses: backprop_any_depth_step, backprop_any_depth_training
    # why: propagates the error through weights already updated in this epoch
    # shows: backprop_any_depth_step: relative error
    # visible: backprop_any_depth_step: for layer sizes (2, 4, 3, 1)
    # ruff: noqa

``cell`` is the grade id of the solution cell, ``loses`` the grade cells that must score 0
(empty for a correct solution), ``why`` what the student did, and each ``shows`` a text that
must appear in the autograded output of the named cell. ``visible`` is what the student sees
before grading: the first grade cell whose visible test fails and the start of its message, or
``none`` when every visible test passes. A line starting with ``#`` and two spaces continues
the line before it.
"""

from __future__ import annotations

import copy
import datetime
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from nncourse import notebooks, references

#: Lines holding these are nbgrader's solution delimiters; a student's cell has none.
SOLUTION_DELIMITERS = ("BEGIN SOLUTION", "END SOLUTION")

#: nbgrader's ``Exchange.timestamp_format``, in UTC like ``Exchange.timezone``'s default.
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f %Z"

_HEADER_RE = re.compile(r"^#\s*(cell|loses|why|shows|visible|ruff):\s?(.*)$")
_CONTINUATION_RE = re.compile(r"^#\s{2,}(\S.*)$")


class FixtureError(ValueError):
    """A fixture file's header is missing a field or malformed."""


@dataclass(frozen=True)
class Fixture:
    """One student's code for one solution cell, and what grading must make of it."""

    name: str
    cell: str
    loses: tuple[str, ...]
    why: str
    source: str
    shows: tuple[tuple[str, str], ...] = ()
    # The first visible test that fails and the start of its message; None: all pass.
    visible: tuple[str, str] | None = None
    has_visible: bool = False  # whether the header says what the visible tests do


def strip_delimiters(source: str) -> str:
    """Drop the lines holding nbgrader's solution delimiters, as a student's cell would."""
    lines = source.splitlines()
    kept = [line for line in lines if not any(mark in line for mark in SOLUTION_DELIMITERS)]
    return "\n".join(kept)


def correct_cells(assignment: str) -> dict[str, str]:
    """Return {grade id: source} of the reference solution cells, delimiters removed."""
    return {
        cell["grade_id"]: strip_delimiters(cell["source"])
        for cell in references.exported(assignment)["solutions"]
    }


def parse_fixture(path: Path) -> Fixture:
    """Read a fixture file: its header fields and the cell's code below the header."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    fields: dict[str, list[str]] = {"cell": [], "loses": [], "why": [], "shows": [], "visible": []}
    last: str | None = None
    body_start = len(lines)
    for index, line in enumerate(lines):
        match = _HEADER_RE.match(line)
        continuation = _CONTINUATION_RE.match(line)
        if match:
            last = match.group(1)
            if last != "ruff":
                fields[last].append(match.group(2).strip())
        elif continuation and last in fields:
            fields[last][-1] += " " + continuation.group(1).strip()
        else:
            body_start = index
            break
    for key in ("cell", "loses", "why"):
        if len(fields[key]) != 1:
            raise FixtureError(f"{path.name}: the header needs exactly one '# {key}:' line")
    if not fields["cell"][0] or not fields["why"][0]:
        raise FixtureError(f"{path.name}: '# cell:' and '# why:' must not be empty")
    loses = tuple(item.strip() for item in fields["loses"][0].split(",") if item.strip())
    shows = []
    for entry in fields["shows"]:
        cell, sep, text = entry.partition(":")
        if not sep or not cell.strip() or not text.strip():
            raise FixtureError(f"{path.name}: write '# shows: <grade id>: <text>', got {entry!r}")
        shows.append((cell.strip(), text.strip()))
    if len(fields["visible"]) > 1:
        raise FixtureError(f"{path.name}: at most one '# visible:' line")
    visible = None
    if fields["visible"] and fields["visible"][0] != "none":
        cell, sep, text = fields["visible"][0].partition(":")
        if not sep or not cell.strip() or not text.strip():
            raise FixtureError(f"{path.name}: write '# visible: <grade id>: <text>' or 'none'")
        visible = (cell.strip(), text.strip())
    source = "\n".join(lines[body_start:]).strip("\n")
    if not source:
        raise FixtureError(f"{path.name}: no code below the header")
    return Fixture(
        name=path.stem,
        cell=fields["cell"][0],
        loses=loses,
        why=fields["why"][0],
        source=source,
        shows=tuple(shows),
        visible=visible,
        has_visible=bool(fields["visible"]),
    )


def load_fixtures(directory: Path) -> list[Fixture]:
    """Parse every ``*.py`` fixture of a directory, in name order."""
    return [parse_fixture(path) for path in sorted(Path(directory).glob("*.py"))]


def student_cells(assignment: str, fixture: Fixture | None = None) -> dict[str, str]:
    """Return the reference cells of a correct student, with the fixture's cell swapped in."""
    cells = correct_cells(assignment)
    if fixture is not None:
        if fixture.cell not in cells:
            raise KeyError(f"{fixture.name}: {assignment} has no solution cell {fixture.cell!r}")
        cells[fixture.cell] = fixture.source
    return cells


def solution_ids(nb: NotebookNode) -> list[str]:
    """Return the grade ids of the notebook's solution cells (not grade cells), in order."""
    ids = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and not meta.get("grade"):
            ids.append(meta["grade_id"])
    return ids


def fill(release_nb: NotebookNode, cells: dict[str, str]) -> NotebookNode:
    """Return a copy of release_nb whose solution cells named in cells hold the given sources."""
    nb = copy.deepcopy(release_nb)
    unknown = set(cells) - set(solution_ids(nb))
    if unknown:
        raise KeyError(f"the notebook has no solution cells {sorted(unknown)}")
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and not meta.get("grade") and meta["grade_id"] in cells:
            cell.source = cells[meta["grade_id"]]
    return nb


def answer(nb: NotebookNode, grade_id: str, text: str) -> NotebookNode:
    """Write a student's text into a written answer (a grade cell a person scores), in place."""
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade_id") == grade_id and meta.get("solution") and meta.get("grade"):
            cell.source = text
            return nb
    raise KeyError(f"the notebook has no written answer {grade_id!r}")


def notebook_name(course_root: Path, assignment: str) -> str:
    """Return the file name of the assignment's one notebook, from release/ (else source/)."""
    for folder in ("release", "source"):
        found = sorted((Path(course_root) / folder / assignment).glob("*.ipynb"))
        if len(found) == 1:
            return found[0].name
        if len(found) > 1:
            raise ValueError(f"{folder}/{assignment} holds {len(found)} notebooks; name one")
    raise FileNotFoundError(f"no notebook of {assignment} in release/ or source/ of {course_root}")


def read_release(course_root: Path, assignment: str) -> NotebookNode:
    """Read the assignment's release notebook (run ``nbgrader generate_assignment`` first)."""
    return notebooks.read(
        Path(course_root) / "release" / assignment / notebook_name(course_root, assignment)
    )


def timestamp(when: datetime.datetime | None = None) -> str:
    """Format a time like nbgrader's ``timestamp.txt`` (now, in UTC, by default)."""
    when = when or datetime.datetime.now(datetime.UTC)
    return when.astimezone(datetime.UTC).strftime(TIMESTAMP_FORMAT)


def write_submission(
    course_root: Path,
    student: str,
    assignment: str,
    nb: NotebookNode,
    *,
    name: str | None = None,
    when: datetime.datetime | None = None,
) -> Path:
    """Write ``submitted/<student>/<assignment>/<name>.ipynb`` and its ``timestamp.txt``."""
    name = name or notebook_name(course_root, assignment)
    if not name.endswith(".ipynb"):
        name += ".ipynb"
    folder = Path(course_root) / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.validate(nb)
    notebooks.write(nb, path)
    (folder / "timestamp.txt").write_text(timestamp(when), encoding="utf-8")
    return path


def write_class(course_root: Path, assignment: str, count: int, mistakes: Path) -> list[str]:
    """Lay out `count` students: every 4th correct, the others each catalogued mistake in turn."""
    release = read_release(course_root, assignment)
    fixtures = load_fixtures(mistakes)
    students = []
    for index in range(count):
        fixture = fixtures[index % len(fixtures)] if index % 4 else None
        student = f"student{index:03d}"
        write_submission(
            course_root, student, assignment, fill(release, student_cells(assignment, fixture))
        )
        students.append(student)
    return students
