"""The payload suite of tests/fixtures/active_content.json as notebook cells, and a finder of
what in an HTML page would run one of them.

Used by tests/test_inert.py (nbconvert's HTML, read as text) and tests/test_inert_pages.py
(the pages a browser opens).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "active_content.json"
PAYLOADS: dict[str, dict] = {
    name: payload
    for name, payload in json.loads(FIXTURE.read_text()).items()
    if not name.startswith("_")
}
# Elements that load or submit a document of their own: any payload in their attributes runs.
FRAMES_AND_FORMS = {"iframe", "frame", "object", "embed", "form", "base", "meta"}
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "data", "xlink:href"}


def cell(name: str, js: str) -> NotebookNode:
    """The payload's cell, running js: a markdown cell, or a code cell with the output it makes."""
    payload = PAYLOADS[name]
    if "markdown" in payload:
        return nbformat.v4.new_markdown_cell(payload["markdown"].replace("{js}", js))
    bundle = {mime: text.replace("{js}", js) for mime, text in payload["display"].items()}
    code = nbformat.v4.new_code_cell(f"display({bundle!r}, raw=True)")
    code.outputs = [nbformat.v4.new_output("display_data", data=bundle)]
    return code


def active_parts(page: str, marker: str) -> list[str]:
    """Where in an HTML page the marker would run: scripts, handlers, script URLs, frames."""
    finder = _ActiveParts(marker)
    finder.feed(page)
    finder.close()
    return finder.found


class _ActiveParts(HTMLParser):
    """Collects the elements and attributes of a page that hold the marker and can run it."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.found: list[str] = []
        self.in_script = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note handlers, script URLs and frame or form attributes that hold the marker."""
        self.in_script += tag == "script"
        for name, value in attrs:
            if self.marker not in (value or ""):
                continue
            # A browser drops control characters and spaces around and inside a URL's scheme.
            url = re.sub(r"[\x00-\x20]", "", value or "").lower()
            script_url = name in URL_ATTRIBUTES and url.startswith("javascript:")
            if name.startswith("on") or script_url or tag in FRAMES_AND_FORMS:
                self.found.append(f"<{tag} {name}>")

    def handle_endtag(self, tag: str) -> None:
        """Leave a script element."""
        self.in_script -= tag == "script" and self.in_script > 0

    def handle_data(self, data: str) -> None:
        """Note script text that holds the marker."""
        if self.in_script and self.marker in data:
            self.found.append("<script>")
