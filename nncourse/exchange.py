"""nbgrader's exchange files, read safely, and a collect that copies no link or special file.

nbgrader's own collect copies each student's inbound folder with ``shutil.copytree``, as the
instructor, following every symbolic link in it: a student who submits a link to a file the
instructor can read gets that file into ``submitted/`` (and from there into autograded/ and
feedback/); a FIFO blocks the copy, a link to ``/dev/zero`` fills the disk. A ``timestamp.txt``
that is not a time stops the whole collect (``CourseDirectory.get_existing_timestamp`` calls a
``fail`` method its class lacks). :class:`SafeCollect` is that collect with both fixed; the
course's nbgrader_config.py makes ``nbgrader collect`` and the formgrader use it.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
import pwd
import shutil
from pathlib import Path

from nbgrader.exchange.default.collect import ExchangeCollect
from nbgrader.utils import parse_utc

from nncourse import compat
from nncourse.files import Folder, Refused, course_folder
from nncourse.limits import GradingLimits, setting

# What nbgrader's exchange puts beside a submission; release_feedback needs the secret.
TIMESTAMP, SECRET = "timestamp.txt", "submission_secret.txt"
EXCHANGE_FILES = (TIMESTAMP, SECRET)
EXCHANGE_FILE_BYTES = 4096  # nbgrader writes a few dozen bytes to each
# What SafeCollect refused, written beside what it collected; a student's own file of this
# name is never copied (nbgrader_config.py ignores .nncourse-* names).
REFUSED_FILE = ".nncourse-refused.json"
REFUSED_FILE_BYTES = 1024**2


def read_timestamp(folder: Folder) -> datetime.datetime | None:
    """The time in a submission's timestamp.txt, None without one; Refused if it is not a time."""
    try:
        raw = folder.read(TIMESTAMP, EXCHANGE_FILE_BYTES)
    except FileNotFoundError:
        return None
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return None  # nbgrader treats an empty file as no timestamp
    try:
        return parse_utc(text)
    except Exception as error:  # noqa: BLE001 - dateutil raises ValueError, OverflowError, ...
        raise Refused(
            f"{folder.label}/{TIMESTAMP} holds {text[:80]!r} instead of a time "
            f"({type(error).__name__}); nbgrader submit writes one like "
            "'2026-01-31 23:59:00.000000 UTC'. Correct or delete the file, or ask the student "
            "to submit again"
        ) from error


def check_exchange_files(folder: Folder) -> datetime.datetime | None:
    """The submission's time; Refused when an exchange file is a link, special, large or garbled.

    release_feedback reads submission_secret.txt of every student with a feedback page and
    stops at the first one it cannot read, so a bad one must keep its student from feedback.
    """
    for name in EXCHANGE_FILES:
        try:
            folder.read(name, EXCHANGE_FILE_BYTES)
        except FileNotFoundError:
            continue  # not collected through the exchange
        except Refused as error:
            raise Refused(
                f"{error}; nbgrader's exchange writes a small plain file there. Delete it, or "
                "ask the student to submit again"
            ) from error
    return read_timestamp(folder)


def read_refusals(folder: Folder) -> dict[str, str]:
    """What SafeCollect refused when it collected this folder (path -> why)."""
    try:
        data = json.loads(folder.read(REFUSED_FILE, REFUSED_FILE_BYTES))
    except FileNotFoundError:
        return {}
    except (Refused, ValueError) as error:
        return {REFUSED_FILE: f"unreadable ({error})"}
    refused = data.get("refused", {}) if isinstance(data, dict) else {}
    return {str(k): str(v) for k, v in refused.items()} if isinstance(refused, dict) else {}


class SafeCollect(compat.InboundRecordHook, ExchangeCollect):
    """nbgrader's collect that copies only regular files and survives a garbled timestamp."""

    def unparsable_folder(self, path: str) -> dict:
        """An inbound folder's name without a valid time: its submission sorts oldest."""
        self.log.warning("Inbound folder %s has no valid time in its name", path)
        return {
            "username": os.path.basename(path).split("+", 1)[0],
            "filename": os.path.basename(path),
            "timestamp": datetime.datetime.min,
        }

    def copy_files(self) -> None:
        """Collect each student's latest submission, as nbgrader does, reading nothing unsafely."""
        course = self.coursedir
        if not self.src_records:
            self.log.warning("No submissions of %r to collect", course.assignment_id)
        for rec in self.src_records:
            student, assignment = rec["username"], course.assignment_id
            src = os.path.join(self.inbound_path, rec["filename"])
            if self.check_owner:
                self._check_owner(src, student)
            dest = course.format_path(course.submitted_directory, student, assignment)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.lexists(dest):
                existing = self._existing_timestamp(dest, student, assignment)
                newer = existing is None or rec["timestamp"] > existing
                changed = self.before_duedate and existing != rec["timestamp"]
                if not ((self.update and newer) or changed):
                    self.log.info("No newer submission to collect: %s %s", student, assignment)
                    continue
                self.log.info("Updating submission: %s %s", student, assignment)
                _remove(dest)
            else:
                self.log.info("Collecting submission: %s %s", student, assignment)
            self.do_copy(src, dest)

    def _check_owner(self, src: str, student: str) -> None:
        """Warn, as nbgrader does, when a submission is not owned by the student it names."""
        try:
            owner = pwd.getpwuid(os.lstat(src).st_uid).pw_name
        except (KeyError, OSError):
            owner = "unknown id"
        if owner != student:
            self.log.warning(
                "%s claims to be submitted by %s but is owned by %s; cheating attempt? (unset "
                "CollectApp.check_owner to silence this)",
                src,
                student,
                owner,
            )

    def _existing_timestamp(
        self, dest: str, student: str, assignment: str
    ) -> datetime.datetime | None:
        """The time of a collected submission; None (so it is replaced) if it has none readable."""
        course = self.coursedir
        try:
            with course_folder(course, course.submitted_directory, student, assignment) as folder:
                return read_timestamp(folder)
        except (Refused, OSError) as error:
            self.log.warning("%s: %s; collecting the submission again", dest, error)
            return None

    def do_copy(self, src: str, dest: str, log: object = None) -> None:
        """Copy the regular files of src to dest; note every link or special file refused."""
        limits = GradingLimits(config=self.config)
        course = self.coursedir
        os.makedirs(dest)
        refused: dict[str, str] = {}
        try:
            with Folder(self.inbound_path, os.path.basename(src), base_label="inbound") as folder:
                survey = folder.survey(limits.submission_files)
                refused.update(survey.refused)
                if survey.truncated or survey.size > limits.submission_bytes:
                    refused["."] = (
                        f"more than {limits.submission_files} files "
                        f"({setting('submission_files')}) or {limits.submission_bytes:,} bytes "
                        f"({setting('submission_bytes')}); nothing was collected"
                    )
                    survey.files = {}
                for relative, size in sorted(survey.files.items()):
                    if _ignored(relative, course.ignore, course.include):
                        continue
                    if size > 1000 * course.max_file_size:
                        self.log.warning("Ignoring file too large: %s/%s", src, relative)
                        continue
                    target = Path(dest, relative)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        folder.copy(relative, target, limits.submission_bytes)
                    except Refused as error:
                        refused[relative] = str(error)
        except Refused as error:
            refused["."] = str(error)
        for path, why in refused.items():
            self.log.warning("Refused %s/%s: %s", src, path, why)
        if refused:
            Path(dest, REFUSED_FILE).write_text(json.dumps({"refused": refused}, indent=1))
        if course.groupshared:
            _share_with_group(Path(dest))


def _ignored(relative: str, exclude: list[str], include: list[str]) -> bool:
    """nbgrader's copy rules: any part matching an ignore glob, or a file name not included."""
    parts = relative.split("/")
    if any(fnmatch.fnmatch(part, glob) for part in parts for glob in exclude):
        return True
    return bool(include) and not any(fnmatch.fnmatch(parts[-1], glob) for glob in include)


def _remove(path: str) -> None:
    """Remove a collected submission; a link is removed itself (rmtree never follows one)."""
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)


def _share_with_group(dest: Path) -> None:
    """Give the group what nbgrader's groupshared collect gives it: ug+rw files, 2770 folders."""
    for path in [dest, *dest.rglob("*")]:
        mode = path.lstat().st_mode
        wanted = (mode | 0o2770) & 0o2777 if path.is_dir() else (mode | 0o660) & 0o777
        path.chmod(wanted)
