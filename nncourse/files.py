"""Folders a student could have made, read without following a link or blocking on a pipe.

A submitted folder is the student's: it can hold symbolic links (to the solutions, the
gradebook, ``/dev/zero``), named pipes that block whoever opens them, devices, sockets and
hard links to files elsewhere. :class:`Folder` opens such a folder once, then reaches every
entry relative to it with ``O_NOFOLLOW``, so no path component can lead out of it; a file
is read only when ``lstat`` and ``fstat`` of the opened descriptor agree that it is a
regular file with a single name. Everything else is refused, with the reason.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbgrader.coursedir import CourseDirectory

# O_NONBLOCK: opening a FIFO that slipped in between lstat and open returns at once.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_CHUNK = 1024**2
# Why a student's file is not read, said once in every message that refuses one.
NOT_READ = (
    "The grader reads no symbolic links, pipes, devices or hard links: put the student's own "
    "files there, or ask the student to submit again"
)


class Refused(Exception):
    """A path the grader does not read; the message names it and says why."""


class TooLarge(Refused):
    """A regular file over the size the caller allows."""


def refusal(st: os.stat_result) -> str:
    """Why an entry is not read, in words; empty for a folder or a regular file with one name."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISREG(mode) and st.st_nlink > 1:
        return f"a hard link (one of {st.st_nlink} names of the same file)"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return ""
    return "not a regular file"


@dataclasses.dataclass
class Survey:
    """What a folder holds, found with lstat alone: nothing in it was opened."""

    files: dict[str, int] = dataclasses.field(default_factory=dict)  # path -> bytes
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> why
    entries: int = 0  # files, folders and refused entries
    truncated: bool = False  # stopped at the entry limit

    @property
    def size(self) -> int:
        """Bytes of the regular files."""
        return sum(self.files.values())


class Folder:
    """A folder opened without following links; its entries are reached only through it."""

    def __init__(self, base: Path | str, *parts: str, base_label: str = "") -> None:
        """Open base (trusted) and then each of parts (the student's) without following links.

        Messages show base as base_label. Raises FileNotFoundError when a part does not exist
        and Refused when one is a link, a special file or not a folder.
        """
        shown = base_label or str(base)
        self.label = os.path.join(shown, *parts)
        self.fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index, part in enumerate(parts):
                fd = _open_dir(self.fd, part, os.path.join(shown, *parts[: index + 1]))
                os.close(self.fd)
                self.fd = fd
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self) -> Folder:
        """Use the folder in a with block; it is closed at the end."""
        return self

    def __exit__(self, *exc: Any) -> None:
        """Close the folder."""
        self.close()

    def close(self) -> None:
        """Release the folder's descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def survey(self, max_entries: int) -> Survey:
        """Every entry below the folder, sorted into regular files and refused ones.

        Stops (truncated) after max_entries, so that 100,000 files cost no more than the limit.
        """
        found = Survey()
        pending = [""]
        while pending and not found.truncated:
            relative = pending.pop()
            fd = self._open_relative_dir(relative)
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if found.entries >= max_entries:
                            found.truncated = True
                            break
                        found.entries += 1
                        path = f"{relative}/{entry.name}" if relative else entry.name
                        st = entry.stat(follow_symlinks=False)
                        why = refusal(st)
                        if why:
                            found.refused[path] = why
                        elif stat.S_ISDIR(st.st_mode):
                            pending.append(path)
                        else:
                            found.files[path] = st.st_size
            finally:
                os.close(fd)
        return found

    def read(self, relative: str, max_bytes: int) -> bytes:
        """The bytes of a regular file below the folder; Refused if it is anything else or big."""
        fd = self._open_file(relative, max_bytes)
        try:
            chunks, total = [], 0
            while chunk := os.read(fd, min(_CHUNK, max_bytes + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:  # it grew after fstat
                    raise TooLarge(self._too_large(relative, max_bytes))
            return b"".join(chunks)
        finally:
            os.close(fd)

    def update_hash(self, relative: str, digest: Any, max_bytes: int) -> None:
        """Feed a regular file's bytes to a hashlib object, a chunk at a time."""
        fd = self._open_file(relative, max_bytes)
        try:
            while chunk := os.read(fd, _CHUNK):
                digest.update(chunk)
        finally:
            os.close(fd)

    def copy(self, relative: str, dest: Path, max_bytes: int) -> None:
        """Copy a regular file to dest, a new file (an existing dest or a link there fails)."""
        fd = self._open_file(relative, max_bytes)
        try:
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                while chunk := os.read(fd, _CHUNK):
                    os.write(out, chunk)
            finally:
                os.close(out)
        finally:
            os.close(fd)

    def _open_relative_dir(self, relative: str) -> int:
        """A new descriptor of a folder below this one (or of this one for "")."""
        fd = os.dup(self.fd)
        for part in relative.split("/") if relative else []:
            try:
                child = _open_dir(fd, part, f"{self.label}/{relative}")
            finally:
                os.close(fd)
            fd = child
        return fd

    def _open_file(self, relative: str, max_bytes: int) -> int:
        """A descriptor of a regular file with one name, at most max_bytes; Refused otherwise."""
        folder, _, name = relative.rpartition("/")
        dir_fd = self._open_relative_dir(folder)
        try:
            shown = f"{self.label}/{relative}"
            before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            why = refusal(before) or ("a folder" if stat.S_ISDIR(before.st_mode) else "")
            if why:
                raise Refused(f"{shown} is {why}")
            if before.st_size > max_bytes:
                raise TooLarge(self._too_large(relative, max_bytes, before.st_size))
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        after = os.fstat(fd)
        if refusal(after) or not _same(before, after):
            os.close(fd)
            raise Refused(f"{shown} changed while the grader opened it")
        return fd

    def _too_large(self, relative: str, max_bytes: int, size: int | None = None) -> str:
        """The message for a file over its size limit."""
        has = f" has {size:,} bytes," if size is not None else " grew"
        return f"{self.label}/{relative}{has} over the limit of {max_bytes:,} bytes"


def course_folder(course: CourseDirectory, step: str, student: str, assignment: str) -> Folder:
    """A student's folder of one nbgrader step (submitted/, autograded/), opened as a Folder.

    The step's folder is the instructor's; from there on, every part is opened without
    following links. FileNotFoundError if it does not exist, Refused if a part is a link.
    """
    base = Path(course.root) / step
    path = Path(course.format_path(step, student, assignment))
    return Folder(base, *path.relative_to(base).parts, base_label=step)


def _open_dir(parent: int, name: str, shown: str) -> int:
    """Open the folder name below parent; Refused if it is a link, special file or plain file."""
    before = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISDIR(before.st_mode):
        raise Refused(f"{shown} is {refusal(before) or 'a file, not a folder'}")
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    if not _same(before, os.fstat(fd)):
        os.close(fd)
        raise Refused(f"{shown} changed while the grader opened it")
    return fd


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stat results describe the same file."""
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
