"""Benchmark: what one slow submission costs a class, and the grader's memory on oversized ones.

Usage (from the course root): python bench/limits.py [--students 30] [--jobs N]

Grades, with `nncourse grade` (feedback, exports and report included) and the course's own
nbgrader_config.py:
- a class of correct and catalogued wrong submissions, as it usually is;
- the same class with one student whose every solution cell sleeps just under the cell
  timeout (c.GradingLimits.time_budget decides what that costs);
- a class of oversized submissions (a 300 MB notebook, 20,000 cells, a 300 MB image and a
  100 MB page displayed, 100,000 files), sampling the peak resident memory of the grader's own
  processes (the main process and its workers, not the sandboxed kernels).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat

from nncourse import course_config, submissions
from nncourse.course import MISTAKES

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "simple_nn"
NBGRADER = str(Path(sys.executable).parent / "nbgrader")
NNCOURSE = str(Path(sys.executable).parent / "nncourse")


def make_course(folder: Path) -> Path:
    """A copy of the course with its release generated and no submissions."""
    shutil.copytree(ROOT / "source", folder / "source")
    shutil.copy(ROOT / "nbgrader_config.py", folder)
    subprocess.run(
        [NBGRADER, "generate_assignment", ASSIGNMENT], cwd=folder, check=True, capture_output=True
    )
    return folder


def make_class(folder: Path, count: int, slow: bool) -> Path:
    """`count` students, every 4th correct, the others catalogued mistakes; one slow if asked."""
    course = make_course(folder)
    release = submissions.read_release(course, ASSIGNMENT)
    fixtures = submissions.load_fixtures(MISTAKES)
    config = course_config.load(course)
    sleep = max(1, config.Execute.timeout - 2)
    for index in range(count):
        fixture = fixtures[index % len(fixtures)] if index % 4 else None
        cells = submissions.student_cells(ASSIGNMENT, fixture)
        if slow and index == count // 2:
            cells = {k: f"import time\ntime.sleep({sleep})\n{v}" for k, v in cells.items()}
        submissions.write_submission(
            course, f"student{index:03d}", ASSIGNMENT, submissions.fill(release, cells)
        )
    return course


def make_oversized(folder: Path) -> Path:
    """One student for each way a submission can be too big."""
    course = make_course(folder)
    release = submissions.read_release(course, ASSIGNMENT)
    right = submissions.fill(release, submissions.student_cells(ASSIGNMENT))

    def with_cell(source: str) -> nbformat.NotebookNode:
        nb = copy.deepcopy(right)
        nb.cells.append(nbformat.v4.new_code_cell(source))
        return nb

    path = submissions.write_submission(course, "notebook_300mb", ASSIGNMENT, right)
    with path.open("a") as out:  # real bytes, not a sparse file: the grader must not read them
        for _ in range(300):
            out.write(" " * 1_000_000)
    crowded = copy.deepcopy(right)
    crowded.cells += [nbformat.v4.new_markdown_cell("") for _ in range(20_000)]
    submissions.write_submission(course, "cells_20000", ASSIGNMENT, crowded)
    display = (
        "from IPython.display import display\n"
        'display({"image/png": "iVBORw0KGgo" + "A" * 300_000_000}, raw=True)\n'
        'display({"text/html": "<p>" + "x" * 100_000_000}, raw=True)\n'
    )
    submissions.write_submission(course, "outputs_400mb", ASSIGNMENT, with_cell(display))
    files = "for i in range(100_000):\n    open(f'f{i}', 'w').close()\n"
    submissions.write_submission(course, "files_100000", ASSIGNMENT, with_cell(files))
    return course


class GraderSampler(threading.Thread):
    """Samples the peak resident memory (VmHWM) of one process and its direct children."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_mib, self.running = str(pid), 0.0, True

    def run(self) -> None:
        while self.running:
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    status = (proc / "status").read_text()
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                mine = proc.name == self.pid or fields.get("PPid", "").strip() == self.pid
                if mine and "VmHWM" in fields:
                    self.peak_mib = max(self.peak_mib, int(fields["VmHWM"].split()[0]) / 1024)
            time.sleep(0.05)


def graded(course: Path, jobs: int) -> tuple[float, float, list[str]]:
    """Seconds and the grader's peak MiB for `nncourse grade`, and its summary's lines."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [NNCOURSE, "grade", "--jobs", str(jobs)],
        cwd=course,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    sampler = GraderSampler(process.pid)
    sampler.start()
    out, _ = process.communicate()
    sampler.running = False
    sampler.join()
    return time.perf_counter() - start, sampler.peak_mib, out.splitlines()


def main() -> None:
    """Run the benchmark and print what it found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    with tempfile.TemporaryDirectory(prefix="nncourse-bench-") as tmp:
        usual, _, _ = graded(make_class(Path(tmp) / "usual", args.students, False), args.jobs)
        slow, _, summary = graded(make_class(Path(tmp) / "slow", args.students, True), args.jobs)
        _, peak, oversized = graded(make_oversized(Path(tmp) / "oversized"), args.jobs)
    print(f"{args.students} students, {os.cpu_count()} cores, --jobs {args.jobs}")
    print(f"usual class                     {usual:7.1f} s")
    print(f"with one slow submission        {slow:7.1f} s   ratio {slow / usual:.2f} (target <= 2)")
    print("\n".join(line for line in summary if "timed out" in line))
    print("oversized submissions:")
    print("\n".join(line for line in oversized if line.startswith("    ")))
    print(f"grader peak memory, oversized   {peak:7.0f} MiB (target < 1024)")


if __name__ == "__main__":
    main()
