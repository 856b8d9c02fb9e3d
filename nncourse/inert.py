"""Student text made harmless wherever it is shown: HTML pages, the terminal and spreadsheets.

A student's notebook reaches the instructor's browser through nbgrader's formgrader and the
feedback pages (nbconvert's HTML templates put text/html outputs, application/javascript
outputs and the HTML inside markdown into the page as they are) and through JupyterLab. What
is kept of it here is what no renderer can run: sanitised HTML, plain text and raster or
image-only SVG pictures. Student ids and file names are escaped for the terminal and
spreadsheets that show them.
"""

from __future__ import annotations

import base64
import re

import nh3
from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

# Output types a renderer shows without running anything once text/html and text/markdown are
# cleaned: no application/javascript, no widget views, no vendor types a future renderer might
# execute. text/latex goes to MathJax, which nbconvert loads with its Safe extension.
KEPT_TYPES = frozenset(
    ["text/plain", "text/html", "text/markdown", "text/latex"]
    + ["image/png", "image/jpeg", "image/gif"]
)
# The only data: URLs kept, and only as <img src>: a browser runs no script in an image, SVG
# included, and loads nothing it references.
IMAGE_DATA_URL = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml)[;,]", re.IGNORECASE)
# Markdown passes raw HTML through, and so does nbconvert's renderer inside ```mermaid blocks.
# A zero-width space after "<" stops every tag, comment and autolink from opening, in text,
# code and math alike, and shows the student's text unchanged; the same after "&" stops
# character references from spelling a URL scheme ("javascript&#58;").
TAG_OR_ENTITY_START = re.compile(r"(?<=<)(?=[A-Za-z/!?])|(?<=&)(?=[#A-Za-z])")
# Browsers drop tabs and newlines inside a URL and markdown drops backslash escapes, so
# "java\tscript:" and "javascript\:" are script URLs too.
SCRIPT_SCHEME = re.compile(
    "(" + "|".join(r"[\x00-\x20\\]*".join(word) for word in ("javascript", "vbscript")) + r")"
    r"[\x00-\x20\\]*(?=:)",
    re.IGNORECASE,
)
ZERO_WIDTH_SPACE = "\u200b"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def sanitise_html(text: str) -> str:
    """HTML without scripts, event handlers, frames, forms, styles or script URLs."""
    return nh3.clean(
        text,
        url_schemes=nh3.ALLOWED_URL_SCHEMES | {"data"},
        attribute_filter=_image_data_only,
    )


def _image_data_only(element: str, attribute: str, value: str) -> str | None:
    """Keep a data: URL only as an image's source, and only of an image type."""
    url = value.lstrip()
    if not url.lower().startswith("data:"):
        return value
    return value if (element, attribute) == ("img", "src") and IMAGE_DATA_URL.match(url) else None


def defuse_markdown(text: str) -> str:
    """Markdown whose HTML, character references and script links show as text."""
    text = TAG_OR_ENTITY_START.sub(ZERO_WIDTH_SPACE, text)
    return SCRIPT_SCHEME.sub(lambda match: match.group(0) + ZERO_WIDTH_SPACE, text)


def _text(value: object) -> str | None:
    """A notebook's text field (a string or a list of strings) as one string, else None."""
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return "".join(value)
    return value if isinstance(value, str) else None


def inert_bundle(data: dict) -> dict:
    """A mime bundle that shows what it can without anything in it running."""
    # A kernel sends any JSON as a bundle's value; a template prints a dict's repr unescaped.
    texts = {mime: _text(value) for mime, value in data.items()}
    svg = texts.pop("image/svg+xml", None)
    if svg is not None and texts.get("text/html") is None:
        encoded = base64.b64encode(svg.encode()).decode()
        texts["text/html"] = f'<img src="data:image/svg+xml;base64,{encoded}">'
    kept = {mime: text for mime, text in texts.items() if mime in KEPT_TYPES and text is not None}
    if "text/html" in kept:
        kept["text/html"] = sanitise_html(kept["text/html"])
    if "text/markdown" in kept:
        kept["text/markdown"] = defuse_markdown(kept["text/markdown"])
    return kept


def inert_notebook(nb: NotebookNode) -> NotebookNode:
    """Make a notebook's markdown, raw cells and outputs inert in place; return it."""
    nb.metadata.pop("widgets", None)  # widget state nbconvert hands to a widget manager
    for cell in nb.cells:
        if cell.cell_type in ("markdown", "raw"):
            cell.source = defuse_markdown(_text(cell.get("source")) or "")
        for output in cell.get("outputs", []):
            if isinstance(output.get("data"), dict):
                output["data"] = NotebookNode(inert_bundle(output["data"]))
    return nb


class MakeInert(NbGraderPreprocessor):
    """nbgrader step that makes a notebook inert, for autograde and generate_feedback."""

    def preprocess(
        self, nb: NotebookNode, resources: ResourcesDict
    ) -> tuple[NotebookNode, ResourcesDict]:
        """Make every markdown, raw cell and output of the notebook inert."""
        return inert_notebook(nb), resources


def printable(text: object) -> str:
    """Text for the terminal: control characters (ANSI escapes, newlines, ...) shown escaped."""
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode() for char in str(text)
    )


def csv_cell(value: object) -> object:
    """A spreadsheet cell that cannot start a formula: a quote before =, +, -, @, tab or CR."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    """Whether a spreadsheet reads this text as a plain number (-1.5 is one, -1+1 is not)."""
    try:
        float(text)
    except ValueError:
        return False
    return not text[:1].isspace()


def safe_student_id(student: str) -> bool:
    """Whether nbgrader's formgrader can show this id: it prints ids into its pages unescaped."""
    return printable(student) == student and not set(student) & set("<>&\"'`")
