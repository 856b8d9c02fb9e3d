"""Limits the grader holds every submission to, before and after its kernel runs."""

from __future__ import annotations

from traitlets import Integer
from traitlets.config import Configurable

MiB = 1024**2


class GradingLimits(Configurable):
    """What one submission may cost the grader: bytes, files and cells.

    Set them in nbgrader_config.py as ``c.GradingLimits.<name>``; a submission over a limit
    on what it submitted is ungradable, with the limit named in the reason.
    """

    notebook_bytes = Integer(
        20 * MiB,
        help="Largest submitted notebook file, in bytes; checked before it is parsed.",
    ).tag(config=True)

    submission_bytes = Integer(
        50 * MiB,
        help="Largest total of the regular files of a submitted folder, in bytes.",
    ).tag(config=True)

    submission_files = Integer(
        1000,
        help="Most files and folders a submitted folder may hold; counting stops there.",
    ).tag(config=True)

    cells = Integer(
        1000, help="Most cells a submitted notebook may have; checked before it is parsed."
    ).tag(config=True)


def setting(trait: str) -> str:
    """How an instructor sets a limit: the config line that names it."""
    return f"c.GradingLimits.{trait}"
