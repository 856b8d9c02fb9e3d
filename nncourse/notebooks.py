"""Read, write and normalise notebooks so that committed copies are byte-stable."""

import re
from pathlib import Path

import nbformat
from nbformat import NotebookNode

#: Cell metadata keys that carry meaning; everything else (``execution`` timings,
#: ``collapsed``, ``scrolled``, ``jupyter.source_hidden``, ...) is editor state that
#: would make every save or rebuild show up as a diff.
KEEP_CELL_METADATA = frozenset(
    {
        "nbgrader",  # grade/solution/locked flags, grade_id, points and checksums
        "nncourse",  # our own markers, e.g. {"figure": "<name>"} on plot cells
        "tags",  # e.g. "raises-exception", which nbclient and nbgrader honour
        # nbgrader's LockCells writes these into release/ and solutions/; dropping
        # them would let students delete or edit grade cells in JupyterLab.
        "deletable",
        "editable",
        # Raw cells use these to say which format they hold (nbconvert reads them).
        "format",
        "raw_mimetype",
    }
)

#: nbformat 4.5 made cell ids mandatory; older notebooks are upgraded to it.
MIN_NBFORMAT_MINOR = 5

_CELL_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def read(path: Path) -> NotebookNode:
    """Read a notebook file as nbformat v4."""
    return nbformat.read(str(path), as_version=4)


def dumps(nb: NotebookNode) -> str:
    """Serialise a notebook exactly like Jupyter saves it (indent=1, sorted keys, final newline)."""
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def write(nb: NotebookNode, path: Path) -> bool:
    """Write a notebook in the stable format; return whether the file changed."""
    text = dumps(nb)
    path = Path(path)
    # Leave unchanged files alone so their mtimes (and editors watching them) stay quiet.
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def normalise(nb: NotebookNode, *, keep_outputs: bool = False) -> NotebookNode:
    """Reduce a notebook, in place, to the content and metadata that matter; return it."""
    nb["nbformat"] = 4
    nb["nbformat_minor"] = max(nb.get("nbformat_minor", 0), MIN_NBFORMAT_MINOR)
    nb["metadata"] = _normalise_notebook_metadata(nb.get("metadata", {}))

    seen_ids: set[str] = set()
    for index, cell in enumerate(nb["cells"]):
        _ensure_cell_id(cell, index, seen_ids)
        cell["metadata"] = NotebookNode(
            {key: value for key, value in cell["metadata"].items() if key in KEEP_CELL_METADATA}
        )
        if cell["cell_type"] == "code":
            if keep_outputs:
                cell["outputs"] = _merge_streams(cell["outputs"])
                for output in cell["outputs"]:
                    # Jupyter never saves "transient" (display ids); nbclient may leave it.
                    output.pop("transient", None)
            else:
                cell["outputs"] = []
                cell["execution_count"] = None
    nbformat.validate(nb)
    return nb


def normalise_file(path: Path, *, keep_outputs: bool = False) -> bool:
    """Normalise the notebook at ``path`` in place; return whether the file changed."""
    return write(normalise(read(path), keep_outputs=keep_outputs), path)


def _merge_streams(outputs: list[NotebookNode]) -> list[NotebookNode]:
    """Join consecutive stream outputs of the same name (stdout, stderr) into one."""
    # The kernel flushes stdout on a timer, so a slow cell's prints arrive as one, two
    # or five stream outputs depending on the machine's load: merged, they are the same
    # bytes on every run.
    merged: list[NotebookNode] = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (
            output["output_type"] == "stream"
            and previous is not None
            and previous["output_type"] == "stream"
            and previous["name"] == output["name"]
        ):
            previous["text"] = _text(previous["text"]) + _text(output["text"])
        else:
            merged.append(output)
    return merged


def _text(text: str | list[str]) -> str:
    """Return a stream's text as one string (files store it as a list of lines)."""
    return text if isinstance(text, str) else "".join(text)


def _normalise_notebook_metadata(metadata: NotebookNode) -> NotebookNode:
    """Keep the kernelspec and the language name; drop versions, widgets state, toolbars."""
    kept = NotebookNode()
    # nbgrader's ClearSolutions picks the code stub from kernelspec.language, and
    # nbclient/nbgrader start the kernel named by kernelspec.name: keep all of it.
    if "kernelspec" in metadata:
        kept["kernelspec"] = metadata["kernelspec"]
    # language_info.version etc. change with the Python patch release of whoever
    # executed last; the name alone is enough for syntax highlighting.
    language = metadata.get("language_info", {}).get("name")
    if language:
        kept["language_info"] = NotebookNode(name=language)
    return kept


def _ensure_cell_id(cell: NotebookNode, index: int, seen: set[str]) -> None:
    """Give the cell a valid, unique id; a fresh one is derived from its position."""
    cell_id = cell.get("id")
    if cell_id is not None and not _CELL_ID_RE.match(cell_id):
        raise ValueError(f"cell {index} has an invalid id {cell_id!r}")
    if cell_id is None:
        # nbformat would invent a random id on every read, so a notebook saved by an
        # old tool would never build the same twice: derive a stable one instead.
        cell_id = f"cell-{index}"
        while cell_id in seen:
            cell_id += "x"
        cell["id"] = cell_id
    if cell_id in seen:
        raise ValueError(f"cell {index} repeats the cell id {cell_id!r}; give it a new one")
    seen.add(cell_id)
