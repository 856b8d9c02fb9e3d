"""The code stub of a solution cell names the function to write.

nbgrader's ClearSolutions replaces every solution region with one stub for the whole
course, ``raise NotImplementedError()``. A student who runs the untouched release then sees
a bare ``NotImplementedError:`` under a test cell, with no hint of which function it means.
``NamedStubs`` writes ``raise NotImplementedError("implement logistic")`` instead, naming
the function whose body the region is (the nearest ``def`` above it).
"""

import re

from nbgrader.preprocessors import ClearSolutions

_DEF_RE = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_GENERIC_RAISE = "raise NotImplementedError()"


def function_name(source: str, delimiter: str) -> str | None:
    """Return the name of the last function defined above the solution region, if any."""
    head = source.split(delimiter, 1)[0]
    names = _DEF_RE.findall(head)
    return names[-1] if names else None


class NamedStubs(ClearSolutions):
    """ClearSolutions, with the Python stub's ``NotImplementedError`` naming its function."""

    def _replace_solution_region(self, cell, language):
        name = function_name(cell.source, self.begin_solution_delimeter)
        generic = self.code_stub
        stub = generic.get(language, "")
        if cell.cell_type != "code" or name is None or _GENERIC_RAISE not in stub:
            return super()._replace_solution_region(cell, language)
        named = f'raise NotImplementedError("implement {name}")'
        # The parent reads the stub from the trait: swap in the named one for this cell only.
        self.code_stub = {**generic, language: stub.replace(_GENERIC_RAISE, named)}
        try:
            return super()._replace_solution_region(cell, language)
        finally:
            self.code_stub = generic
