"""The course's own content, apart from the tooling that grades it.

- checks.py: what each hidden test checks, and the mistakes it names;
- reference_solutions/: the master's solution cells, exported by `nncourse build`;
- mistakes/: one student's code for one solution cell per file, named for the mistake
  (``fails_...``, or ``passes_...`` for a different but right answer), with the score it
  must get. The demo's example class is made of them, and the tests grade every one.

The grader alone reads this folder: grading kernels never see the package.
"""

from pathlib import Path

MISTAKES = Path(__file__).with_name("mistakes")
REFERENCE_SOLUTIONS = Path(__file__).with_name("reference_solutions")
