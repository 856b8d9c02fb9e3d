"""Benchmark: `nncourse grade` against sequential `nbgrader autograde` and a bare-kernel floor.

Usage (from the course root): python bench/grading.py [--submissions 16] [--jobs N]

All are measured on the same submissions in fresh copies of the course:
- the instructor's whole job: `nbgrader autograde`, `nbgrader generate_feedback` and
  `nbgrader export`, one after the other, against `make grade` (`nncourse grade`: grading,
  feedback, exports and the class report), each side run as the commands it is, so that both
  pay their start (imports, config); timed in the order nbgrader, ours, ours, nbgrader so that
  a machine whose speed drifts during the run (a shared host) does not tilt the ratio;
- baseline: `nbgrader autograde` (one process, one submission after another);
- ours: grading alone, `nncourse grade --jobs N`'s grading step called in this process (its
  start not counted), and with `--jobs 1` for the per-submission cost;
- ours on Dask: `nncourse grade` on a local Dask cluster of N one-thread worker processes
  (started before the clock starts), against the process pool: the Dask overhead;
- floor: each submitted notebook executed once in a fresh kernel with nbclient, nothing else.
It also measures what a larger course is planned from (docs/scale.md): the CPU of one
submission, the single writer's time per submission, what feedback and exports add, and the
grading kernels' memory, sampled while ours runs (it follows the jobs, not the class).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbgrader.api import Gradebook

from nncourse import grade, record, submissions
from nncourse.course import MISTAKES

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "simple_nn"
NBGRADER = str(Path(sys.executable).parent / "nbgrader")
NNCOURSE = str(Path(sys.executable).parent / "nncourse")


def make_class(folder: Path, count: int) -> Path:
    """A course copy with `count` submissions: correct ones and every catalogued mistake in turn."""
    shutil.copytree(ROOT / "source", folder / "source")
    shutil.copy(ROOT / "nbgrader_config.py", folder)
    subprocess.run(
        [NBGRADER, "generate_assignment", ASSIGNMENT], cwd=folder, check=True, capture_output=True
    )
    submissions.write_class(folder, ASSIGNMENT, count, MISTAKES)
    return folder


def timed(action) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (the workers, and their kernels)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def on_dask(course: Path, workers: int) -> float:
    """Seconds to grade the course on a local Dask cluster of `workers` (its start not counted)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        return timed(lambda: grade.grade_class(course, progress=False, scheduler=address))


def nbgrader_whole(course: Path) -> tuple[float, float]:
    """Seconds of nbgrader's autograde, then of its generate_feedback and export, on the course."""
    steps = [["autograde", ASSIGNMENT], ["generate_feedback", ASSIGNMENT], ["export"]]
    run = [
        timed(
            lambda s=s: subprocess.run([NBGRADER, *s], cwd=course, check=True, capture_output=True)
        )
        for s in steps
    ]
    return run[0], run[1] + run[2]


def make_grade(course: Path, jobs: int) -> float:
    """Seconds of `nncourse grade --jobs N` in the course: the command `make grade` runs."""
    command = [NNCOURSE, "grade", "--jobs", str(jobs)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=course, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    # 3: graded, and some students need a person (the catalogue's mistakes include such work).
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(command)} failed in {course}:\n{done.stdout}{done.stderr}")
    return seconds


def bare_kernels(course: Path) -> None:
    """Execute every submitted notebook once, each in a fresh kernel, with nothing around it."""
    for path in sorted((course / "submitted").glob(f"*/{ASSIGNMENT}/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(path.parent)}},
            # Unsandboxed kernels talk TCP and warn about it on every start: noise here.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        ).execute()


def scores(course: Path) -> dict:
    """(student, total score) for every submission in the course's gradebook."""
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {s.student.id: s.score for s in gb.assignment_submissions(ASSIGNMENT)}


class WriterClock:
    """Adds up the time the driver spends recording outcomes (record.save_outcome) in a block."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.save = record.save_outcome

    def __enter__(self) -> None:
        def timed_save(*args, **kwargs) -> None:
            start = time.perf_counter()
            try:
                self.save(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        record.save_outcome = timed_save

    def __exit__(self, *exc) -> None:
        record.save_outcome = self.save


class KernelSampler(threading.Thread):
    """Samples, every 0.2 s, how many grading kernels run, their total and largest memory."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.most_kernels, self.most_rss_mib, self.running = 0, 0.0, True
        self.largest_kernel_mib = 0.0

    def run(self) -> None:
        while self.running:
            kernels, rss = 0, 0.0
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                    # The kernel itself, not the sandbox's launcher and bwrap around it.
                    if b"ipykernel_launcher" not in cmdline or b"bwrap" in cmdline:
                        continue
                    status = (proc / "status").read_text()
                except OSError:
                    continue
                kernels += 1
                vm_rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
                mib = int(vm_rss.split()[1]) / 1024
                rss += mib
                self.largest_kernel_mib = max(self.largest_kernel_mib, mib)
            self.most_kernels = max(self.most_kernels, kernels)
            self.most_rss_mib = max(self.most_rss_mib, rss)
            time.sleep(0.2)


def main() -> None:
    """Run the benchmark and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    n = args.submissions
    with tempfile.TemporaryDirectory(prefix="nncourse-bench-") as tmp:
        names = ["sequential", "sequential_again", "whole", "whole_again"]
        names += ["parallel", "dask", "one_job", "floor"]
        courses = {name: make_class(Path(tmp) / name, n) for name in names}
        print(f"{n} submissions, {os.cpu_count()} cores, --jobs {args.jobs}")
        # nbgrader, ours, ours, nbgrader: a machine that speeds up or slows down during the
        # run (a shared host) shifts both sides alike, and the ratio of the sums holds.
        first = nbgrader_whole(courses["sequential"])
        whole = [make_grade(courses[name], args.jobs) for name in ("whole", "whole_again")]
        second = nbgrader_whole(courses["sequential_again"])
        sampler = KernelSampler()
        sampler.start()
        writer = WriterClock()
        with writer:
            parallel = timed(
                lambda: grade.grade_class(courses["parallel"], jobs=args.jobs, progress=False)
            )
        sampler.running = False
        dask = on_dask(courses["dask"], args.jobs)
        cpu_before = cpu_seconds()
        one_job = timed(lambda: grade.grade_class(courses["one_job"], jobs=1, progress=False))
        cpu = cpu_seconds() - cpu_before
        floor = timed(lambda: bare_kernels(courses["floor"]))
        graded = [scores(courses[name]) for name in names if name != "floor"]
        same = all(found == graded[0] for found in graded)

    baselines = [sum(first), sum(second)]
    baseline = sum(baselines) / 2
    sequential = (first[0] + second[0]) / 2
    ours = sum(whole) / 2
    print(
        f"nbgrader autograde, generate_feedback, export  {baseline:7.1f} s   "
        f"(mean of {baselines[0]:.1f} and {baselines[1]:.1f}, first and last)"
    )
    print(
        f"make grade (grade, feedback, exports, report)   {ours:7.1f} s   "
        f"ratio {ours / baseline:.2f} of nbgrader's (target <= 0.45)   "
        f"(mean of {whole[0]:.1f} and {whole[1]:.1f}, in between)"
    )
    print(f"sequential nbgrader autograde   {sequential:7.1f} s")
    print(
        f"nncourse grade --jobs {args.jobs:<2}         {parallel:7.1f} s   "
        f"ratio {parallel / sequential:.2f} of sequential (target <= 0.55)"
    )
    print(
        f"nncourse grade on Dask, {args.jobs} workers {dask:7.1f} s   "
        f"ratio {dask / sequential:.2f} of sequential, {dask / parallel:.2f} of the process pool"
    )
    print(
        f"Dask overhead per submission    {(dask - parallel) / n:7.2f} s   "
        f"ratio {(dask - parallel) / sequential:.3f} of sequential"
    )
    print(f"grades identical                {same}")
    print(f"bare-kernel floor per submission {floor / n:6.2f} s")
    print(
        f"nncourse grade --jobs 1 per submission {one_job / n:6.2f} s   "
        f"ratio {one_job / floor:.2f} of the floor (target <= 1.3)"
    )
    print(f"CPU per submission, --jobs 1     {cpu / n:6.2f} s   (grader, worker and kernel)")
    print(
        f"start, feedback, exports, report {ours - parallel:6.1f} s   (make grade - grading alone)"
    )
    print(f"recording per submission         {writer.seconds / n:6.2f} s   (the single writer)")
    print(
        f"kernels alive at once (most)    {sampler.most_kernels} for {n} submissions, "
        f"{sampler.most_rss_mib:.0f} MiB resident at most, "
        f"{sampler.largest_kernel_mib:.0f} MiB the largest kernel"
    )


if __name__ == "__main__":
    main()
