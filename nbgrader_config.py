"""nbgrader configuration of the nn-fundamentals course (nbgrader 0.9.6).

nbgrader reads this file from the course root (the folder every nbgrader and nncourse
command runs in). Every class and trait named here exists in nbgrader 0.9.6; the tests
load this file and check the preprocessor list against nbgrader's own default.
"""

from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    ComputeChecksums,
    Execute,
    IncludeHeaderFooter,
    InstantiateTests,
    LockCells,
    SaveCells,
)

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

# The gradebook and the exchange key every record on the course id; one fixed id keeps
# several courses of one instructor apart and makes `--course` unnecessary.
c.CourseDirectory.course_id = "nn-fundamentals"

# nbgrader's default is "solution" (singular); the repository layout uses "solutions".
# nncourse/build.py (SOLUTIONS_DIR) relies on this name.
c.CourseDirectory.solution_directory = "solutions"

# generate_solution writes the executed solutions handed to students after the
# deadline. nbgrader's default list keeps the hidden tests, which would give them away
# for the next cohort; ClearHiddenTests must come before Execute so that the shown
# outputs are those of the visible tests alone. Otherwise this is nbgrader 0.9.6's
# default list (IncludeHeaderFooter, LockCells, ClearOutput, ClearMarkScheme, Execute).
c.GenerateSolution.preprocessors = [
    IncludeHeaderFooter,
    LockCells,
    ClearOutput,
    ClearMarkScheme,
    ClearHiddenTests,
    Execute,
]

# generate_assignment writes the release. Each solution region becomes
# `raise NotImplementedError("implement <function>")` instead of nbgrader's bare
# `raise NotImplementedError()`, so that a test cell run before its function is written says
# which function it waits for (nncourse/stubs.py). Otherwise this is nbgrader 0.9.6's
# default list.
from nncourse.stubs import NamedStubs  # noqa: E402

c.GenerateAssignment.preprocessors = [
    IncludeHeaderFooter,
    InstantiateTests,
    LockCells,
    NamedStubs,
    ClearOutput,
    CheckCellMetadata,
    ComputeChecksums,
    SaveCells,
    ClearHiddenTests,
    ClearMarkScheme,
    ComputeChecksums,
    CheckCellMetadata,
]

# A student who deletes a grade cell (or its hidden tests with it) would otherwise get
# "needs manual grade" for it; with this, autograde restores the cell from the gradebook
# and runs it, so the tests always run.
c.OverwriteCells.add_missing_cells = True

# Seconds per cell before the kernel is interrupted and the cell fails. Every cell of the
# reference solution runs in well under 10 s; 60 s leaves room for a slow student
# solution on a loaded 2-core grading machine, yet bounds an endless loop to one minute
# per cell. nncourse build executes the source with the same limit (CELL_TIMEOUT), so a
# cell that is too slow shows up at build time, not at grading time.
c.Execute.timeout = 60

# A grade cell that writes anything to stderr scores 0. On a machine whose matplotlib
# font cache is not built yet, the first `import matplotlib.pyplot` in a kernel builds it
# and, when that takes over 5 s, logs exactly this message to stderr. Drop it (only a
# stream that holds nothing else) so that no student loses points for it. IgnorePattern
# is disabled by default.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"\AMatplotlib is building the font cache; this may take a moment\.\s*\Z"

# nbgrader's feedback shows grade cells as they ran: hidden tests, their tracebacks and the
# values they print (jupyter/nbgrader#917, #1363). HideHiddenTests keeps each grade cell's
# visible tests and one line saying what failed, so `nbgrader generate_feedback` and
# `nncourse grade` hand out feedback that gives nothing of the hidden tests away.
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import GetGrades  # noqa: E402

from nncourse.feedback import HideHiddenTests  # noqa: E402
from nncourse.inert import MakeInert  # noqa: E402

# nbconvert's templates put a student's text/html and JavaScript outputs and the HTML in their
# markdown into the page as they are; MakeInert keeps only what cannot run (nncourse/inert.py),
# also for notebooks graded before it was in the autograde steps below.
c.GenerateFeedback.preprocessors = [
    GetGrades,
    HideHiddenTests,
    MakeInert,
    CSSHTMLHeaderPreprocessor,
]

# nbgrader's defaults, plus the grader's own files (.nncourse-grading.json beside each
# autograded notebook, .nncourse-refused.json beside a collected submission): never copied
# from a submission, never into feedback/.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".nncourse-*"]

# generate_feedback copies every other file of autograded/<student>/<assignment>/ into
# feedback/, following symbolic links (to the gradebook, /dev/zero, a FIFO) and globbing the
# folder once per file. Before it does, this leaves only the notebooks and the exchange's
# timestamp.txt and submission_secret.txt there (release_feedback needs them).
c.GenerateFeedback.pre_convert_hook = "nncourse.record.prune_autograded"

# nbgrader's collect copies each inbound folder with shutil.copytree, following every link in
# it as the instructor: a link to a file the instructor can read would be collected as that
# file. SafeCollect copies regular files only, records what it refused (the grader flags it,
# or marks the student ungradable when the notebook itself was refused) and survives a
# timestamp.txt that is not a time, which stops nbgrader's own collect for everyone.
c.ExchangeFactory.collect = "nncourse.exchange.SafeCollect"

# The history setting is the one ipykernel kernels are usually given for headless runs: no
# history file. Grading kernels import nothing of ours: the checks run in the grader.
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:"]

# Student code runs in a bubblewrap sandbox (nncourse/sandbox.py): it sees only its own
# autograded folder and a private /tmp, has no network, its own PID namespace (every process
# it starts dies with it), a cgroup capping processes and memory, and a wall-clock limit.
# Every grade cell is scored by the grader's verdict (nncourse/verdicts.py): the kernel only
# calls the student's functions on the check's inputs and hands back the numbers; the
# reference, the comparison and the named mistakes stay in the grading process. nbgrader's
# Execute ignores c.Execute.kernel_manager_class, so GradedExecute takes Execute's place in
# nbgrader's own autograde steps; `nbgrader autograde` and `nncourse grade` both use it, and
# the c.Execute settings above still apply.
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

from nncourse.verdicts import GradedExecute  # noqa: E402

c.Autograde.autograde_preprocessors = [
    GradedExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
    MakeInert,
]
# MakeInert comes last, after the grades are saved: the formgrader shows the autograded notebook
# in the instructor's session, so nothing a student's cells display may run there.
# A kernel alive for five minutes is killed with everything it started (plain `nbgrader
# autograde` too). `nncourse grade` holds each submission to the tighter budget below.
c.SandboxedKernelManager.time_limit = 300

# The kernel's working folder is a tmpfs of its own inside the sandbox, holding the
# assignment's files read-only: whatever the kernel writes there (and in its private /tmp) is
# gone with the sandbox, and nothing it leaves (links to the gradebook, pipes, thousands of
# files) is ever seen by the grader or copied to autograded/ or feedback/. 64 MiB is far more
# than any plot a student saves; writing past it fails with "No space left on device".
c.SandboxedKernelManager.workdir_size = 64 * 1024**2
# A kernel with more than 10,000 files in its working folder and /tmp is stopped (counted
# twice a second; each file costs kernel memory): a solution needs none.
c.SandboxedKernelManager.max_files = 10_000

# What one submission may cost the grader (nncourse/limits.py). Over a limit on what was
# submitted, the student is ungradable with the limit named; these are checked before the
# notebook is parsed.
# The executed solution is 0.4 MB with every plot and has 67 cells; 20 MiB and 1,000 cells
# leave room for any honest notebook, while a 300 MB notebook or 20,000 cells are refused
# before they cost the grader memory or minutes.
c.GradingLimits.notebook_bytes = 20 * 1024**2
c.GradingLimits.cells = 1000
# The whole submitted folder: the notebook, the figures, nbgrader's files and any extras.
c.GradingLimits.submission_bytes = 50 * 1024**2
c.GradingLimits.submission_files = 1000
# Output the grader keeps while the kernel runs, counted as the kernel sends it (images in
# base64). The largest cell of the solution outputs 0.1 MB; more than 2 MiB in a cell, or
# 20 MiB in a notebook, is dropped as it arrives, unparsed, and the cell shows an
# OutputTooLarge error instead (grade cells are still scored by the verdict). A reply of the
# kernel over 20 MiB (the grader's calls hand back at most 8 MiB) becomes an error reply.
# Keeps the grader's memory bounded whatever a kernel displays or returns.
c.GradingLimits.cell_output_bytes = 2 * 1024**2
c.GradingLimits.notebook_output_bytes = 20 * 1024**2
# Seconds for all the kernels of one submission in `nncourse grade`; then the kernel is
# stopped, the student is "timed out" and the cells that finished count. The reference
# takes about 7 s on a 2-core machine (kernel start included); 60 s leaves an honest but
# slow solution room. A submission that sleeps in every cell holds one worker for 60 s at
# most instead of the kernel's five minutes, so a class finishes at most one budget later
# than usual: under twice its usual time for any class that takes over a minute, as 30
# students do (about 30 x 7 s / 2 jobs plus feedback; `python bench/limits.py` measures it).
c.GradingLimits.time_budget = 60
# Where bubblewrap cannot run (some container hosts), grading stops with a message saying
# why. Only an instructor who accepts running student code unconfined opts out:
# c.SandboxedKernelManager.enabled = False

# Where `nncourse grade` executes submissions (nncourse/executors.py). Empty: a process pool on
# this machine, as many kernels at a time as it has cores (`--jobs`). A Dask scheduler's
# address, tcp://HOST:PORT: its workers execute them, each in its own sandbox (every worker
# is checked before anything is written); this process still writes every grade. Workers
# need this course's nncourse installed and the submitted/ folder at the same path (shared
# storage). `nncourse grade --scheduler ADDRESS` (or `make grade SCHEDULER=...`) wins.
c.GradingExecutor.scheduler = ""
