"""The class report: one self-contained HTML page on where the class struggles."""

from __future__ import annotations

import base64
import datetime
import html
import io
import os
import statistics
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path

# A Figure of its own, not pyplot: no display or global figure state is needed on a server,
# and pyplot's backend machinery (half a second) is never imported.
from matplotlib.figure import Figure

from nncourse.results import NEEDS_MANUAL, CellResult, Status, StudentResult

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left;
         vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.attention { color: #a30; font-weight: bold; }
img { max-width: 100%; }
small { color: #666; }
"""


def _png(fig: Figure) -> str:
    """Embed a figure as a data URL, so the page needs no other file."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _score_histogram(results: list[StudentResult]) -> str:
    """Distribution of the total scores."""
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    top = results[0].max_score
    ax.hist([r.score for r in results], bins=min(20, int(top) + 1), range=(0, top), color="#4a7ab7")
    ax.set_xlabel(f"score (of {top:g})")
    ax.set_ylabel("students")
    return _png(fig)


def _pass_rates(cells: list[CellResult]) -> dict[str, float | None]:
    """The share of students with full points in each grade cell, in notebook order.

    Answers waiting for a person are left out; None when every answer of a cell waits.
    """
    by_cell: dict[str, list[bool]] = {}
    for cell in cells:
        scored = by_cell.setdefault(cell.grade_id, [])
        if cell.grading != NEEDS_MANUAL:
            scored.append(cell.score >= cell.max_score)
    return {
        grade_id: sum(passed) / len(passed) if passed else None
        for grade_id, passed in by_cell.items()
    }


def _pass_rate_chart(rates: dict[str, float | None]) -> str:
    """A horizontal bar per grade cell."""
    fig = Figure(figsize=(7, 0.3 * len(rates) + 0.8))
    ax = fig.subplots()
    names = list(rates)[::-1]
    ax.barh(names, [100 * (rates[n] or 0) for n in names], color="#5a9e6f")
    ax.set_xlim(0, 100)
    ax.set_xlabel("students with full points (%)")
    return _png(fig)


def _link(path: Path, base: Path) -> str:
    """A relative URL from the report's folder to path, or nothing when the file is absent."""
    # Student ids name folders; quoted, a "#" or "?" in one stays part of the path.
    return urllib.parse.quote(os.path.relpath(path, base)) if path.exists() else ""


def write_report(
    results: list[StudentResult], cells: list[CellResult], feedback: dict[str, Path], target: Path
) -> Path:
    """Write the report of one assignment; feedback maps a student to their feedback page."""
    assignment = results[0].assignment
    scores = [r.score for r in results]
    statuses = Counter(r.status for r in results)
    rates = _pass_rates(cells)
    failures: dict[str, Counter] = defaultdict(Counter)
    points = {}
    to_grade: Counter = Counter()
    for cell in cells:
        points[cell.grade_id] = cell.max_score
        to_grade[cell.grade_id] += cell.grading == NEEDS_MANUAL
        if cell.message and cell.status not in (Status.MISSING, Status.UNGRADABLE):
            failures[cell.grade_id][cell.message[:300]] += 1

    base = target.parent

    def student_row(r: StudentResult) -> str:
        link = _link(feedback.get(r.student, Path("-")), base)
        name = (
            f'<a href="{html.escape(link)}">{html.escape(r.student)}</a>'
            if link
            else html.escape(r.student)
        )
        css = ' class="attention"' if r.needs_attention else ""
        return (
            f"<tr><td>{name}</td><td{css}>{html.escape(r.status)}</td>"
            f"<td class=num>{r.score:g}</td>"
            f"<td>{html.escape('; '.join(filter(None, [r.reason, *r.flags, _waiting(r)])))}"
            "</td></tr>"
        )

    cell_rows = []
    for grade_id, rate in rates.items():
        common = "".join(
            f"<li>{count} × <code>{html.escape(message)}</code></li>"
            for message, count in failures[grade_id].most_common(3)
        )
        shown = "not graded yet" if rate is None else f"{100 * rate:.0f}%"
        cell_rows.append(
            f"<tr><td><code>{html.escape(grade_id)}</code></td>"
            f"<td class=num>{points[grade_id]:g}</td>"
            f"<td class=num>{shown}</td><td class=num>{to_grade[grade_id] or ''}</td>"
            f"<td><ul>{common}</ul></td></tr>"
        )
    attention = [r for r in results if r.needs_attention]
    waiting = [r for r in results if r.to_grade]
    waiting_points = sum(sum(r.to_grade.values()) for r in waiting)
    manual = (
        f"<p><strong>Written answers of {len(waiting)} of {len(results)} students need manual "
        f"grading</strong> in the formgrader: {waiting_points:g} points not yet awarded, which "
        "the scores below leave out until a person grades them.</p>"
        if waiting
        else ""
    )
    status_line = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Class report: {html.escape(assignment)}</title>
<style>{STYLE}</style></head><body>
<h1>Class report: {html.escape(assignment)}</h1>
<p><small>Written {
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    } by nncourse grade.</small></p>
<p>{len(results)} students ({status_line}).
Mean score {statistics.mean(scores):.1f}, median {statistics.median(scores):.1f} of {
        results[0].max_score:g}.</p>
{manual}
<h2>Score distribution</h2><img alt="Histogram of total scores" src="{_score_histogram(results)}">
<h2>Grade cells</h2>
<p>Cells are in notebook order; the pass rate counts students with full points, missing
submissions included, and leaves out answers that need manual grading (counted in the next
column). Failure messages are those the students' feedback shows.</p>
<img alt="Pass rate of each grade cell" src="{_pass_rate_chart(rates)}">
<table><tr><th>grade cell</th><th>points</th><th>pass rate</th><th>needs manual grading</th>
<th>most common failures</th></tr>
{"".join(cell_rows)}</table>
<h2>Students who need attention</h2>
{
        "<p>None.</p>"
        if not attention
        else "<table><tr><th>student</th><th>status</th><th>score</th><th>reason</th></tr>"
        + "".join(student_row(r) for r in attention)
        + "</table>"
    }
<h2>All students</h2>
<table><tr><th>student</th><th>status</th><th>score</th><th>note</th></tr>
{"".join(student_row(r) for r in results)}</table>
</body></html>
"""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page)
    return target


def _waiting(r: StudentResult) -> str:
    """What of a student's work waits for a person, said in the student's row."""
    if not r.to_grade:
        return ""
    text = (
        f"needs manual grading: {', '.join(r.to_grade)} "
        f"({sum(r.to_grade.values()):g} points not yet awarded)"
    )
    return text + (
        f", answer changed since graded: {', '.join(r.grade_again)}" if r.grade_again else ""
    )
