"""The course's configuration: nbgrader_config.py, loaded once per run and passed along."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from traitlets.config import Config

from nncourse import compat
from nncourse.compat import ConfigError


def load(course_root: Path) -> Config:
    """The configuration nbgrader itself would load in course_root; a broken file: ConfigError."""
    # traitlets configures logging with dictConfig, which disables every logger that exists
    # already (ours included); give them back their voice afterwards.
    enabled = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.disabled
    ]
    with _chdir(course_root):
        config = compat.load_app_config(course_root)
    for logger in enabled:
        logger.disabled = False
    config.CourseDirectory.root = str(course_root)
    return config


def load_or_exit(course_root: Path, command: str = "nncourse grade") -> Config:
    """The course's configuration, or a refusal naming the file that cannot be loaded."""
    try:
        return load(course_root)
    except ConfigError as error:
        raise SystemExit(f"{command}: {error}. Nothing was changed.") from None


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    """Run a block in another working directory."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
