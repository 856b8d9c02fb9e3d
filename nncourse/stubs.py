"""The code stub of a solution cell names the function to write.

nbgrader's ClearSolutions replaces every solution region with one stub for the whole
course, ``raise NotImplementedError()``. A student who runs the untouched release then sees
a bare ``NotImplementedError:`` under a test cell, with no hint of which function it means.
``NamedStubs`` writes ``raise NotImplementedError("implement logistic")`` instead, naming
the function whose body the region is (the nearest ``def`` above it).
"""

import re

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearSolutions

from nncourse import compat

_DEF_RE = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_GENERIC_RAISE = "raise NotImplementedError()"


def function_name(source: str, delimiter: str) -> str | None:
    """Return the name of the last function defined above the solution region, if any."""
    head = source.split(delimiter, 1)[0]
    names = _DEF_RE.findall(head)
    return names[-1] if names else None


class NamedStubs(compat.SolutionStubHook, ClearSolutions):
    """ClearSolutions, with the Python stub's ``NotImplementedError`` naming its function."""

    def stub_for(self, cell: NotebookNode, stub: str) -> str:
        """The configured stub, its bare raise naming the function the cell defines."""
        name = function_name(cell.source, self.begin_solution_delimeter)
        if cell.cell_type != "code" or name is None:
            return stub
        return stub.replace(_GENERIC_RAISE, f'raise NotImplementedError("implement {name}")')
