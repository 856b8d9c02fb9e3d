"""Student files the grader never trusts: links, pipes, devices and hard links."""

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from nncourse.files import Folder, Refused, TooLarge

# --- the safe reader on its own ---------------------------------------------------------------


@pytest.fixture
def tricky(tmp_path: Path) -> Path:
    """A folder holding one of everything a student can put in it, and a secret outside it."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the gradebook password")
    folder = tmp_path / "sub"
    (folder / "plots").mkdir(parents=True)
    (folder / "notebook.ipynb").write_text("{}")
    (folder / "plots" / "a.png").write_bytes(b"png")
    (folder / "link").symlink_to(secret)
    (folder / "plots" / "up").symlink_to(tmp_path)
    (folder / "zero").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe")
    os.link(secret, folder / "hard")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "sock"))
    return folder


def test_survey_sorts_regular_files_from_everything_else(tricky: Path) -> None:
    with Folder(tricky.parent, "sub", base_label="submitted") as folder:
        survey = folder.survey(100)
    assert survey.files == {"notebook.ipynb": 2, "plots/a.png": 3}
    assert survey.refused == {
        "link": "a symbolic link",
        "plots/up": "a symbolic link",
        "zero": "a symbolic link",
        "pipe": "a named pipe (FIFO)",
        "hard": "a hard link (one of 2 names of the same file)",
        "sock": "a socket",
    }
    assert not survey.truncated


def test_reading_refuses_every_link_and_special_file_at_once(tricky: Path) -> None:
    """No read follows a link, blocks on the pipe or reads /dev/zero: each one is refused."""
    refused = {}

    def read_all() -> None:
        with Folder(tricky.parent, "sub", base_label="submitted") as folder:
            for name in ["link", "zero", "pipe", "hard", "sock", "plots", "plots/up/secret.txt"]:
                try:
                    folder.read(name, 1024)
                except Refused as error:
                    refused[name] = str(error)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "a read blocked"
    assert refused == {
        "link": "submitted/sub/link is a symbolic link",
        "zero": "submitted/sub/zero is a symbolic link",
        "pipe": "submitted/sub/pipe is a named pipe (FIFO)",
        "hard": "submitted/sub/hard is a hard link (one of 2 names of the same file)",
        "sock": "submitted/sub/sock is a socket",
        "plots": "submitted/sub/plots is a folder",
        "plots/up/secret.txt": "submitted/sub/plots/up is a symbolic link",
    }


def test_a_regular_file_is_read_within_its_limit(tricky: Path) -> None:
    with Folder(tricky.parent, "sub") as folder:
        assert folder.read("plots/a.png", 3) == b"png"
        with pytest.raises(TooLarge, match="has 3 bytes, over the limit of 2 bytes"):
            folder.read("plots/a.png", 2)


def test_a_folder_that_is_a_link_is_refused(tricky: Path) -> None:
    (tricky.parent / "elsewhere").symlink_to(tricky)
    with pytest.raises(Refused, match="submitted/elsewhere is a symbolic link"):
        Folder(tricky.parent, "elsewhere", base_label="submitted")


def test_a_survey_stops_at_its_limit(tmp_path: Path) -> None:
    for index in range(5000):
        (tmp_path / f"f{index}").touch()
    started = time.monotonic()
    with Folder(tmp_path) as folder:
        survey = folder.survey(100)
    assert survey.truncated
    assert survey.entries == 100
    assert time.monotonic() - started < 1
