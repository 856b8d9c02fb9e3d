"""Limits the grader holds every submission to, before and after its kernel runs."""

from __future__ import annotations

import time
from collections import Counter
from queue import Empty
from typing import Any

import zmq
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session, extract_dates
from traitlets import Float, Integer, Type
from traitlets.config import Configurable

MiB = 1024**2
# The kernel's messages that become a cell's outputs.
OUTPUT_MESSAGES = {"stream", "display_data", "execute_result", "error", "update_display_data"}
OUTPUT_TOO_LARGE = "OutputTooLarge"
_HEADERS_BYTES = 64 * 1024  # a message's header and parent header are a few hundred bytes


class GradingLimits(Configurable):
    """What one submission may cost the grader: bytes, files, cells and seconds.

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

    cell_output_bytes = Integer(
        2 * MiB,
        help="Most bytes of output kept per cell (as the kernel sent it, images in base64): "
        "the rest is dropped as it arrives, unparsed, and the cell gets an OutputTooLarge "
        "error instead (a grade cell is still scored by the grader's verdict).",
    ).tag(config=True)

    notebook_output_bytes = Integer(
        20 * MiB,
        help="Most bytes of output kept for a whole notebook, the same way; also the largest "
        "reply the grader reads from the kernel (a larger one becomes an error reply).",
    ).tag(config=True)

    time_budget = Float(
        60.0,
        help="Wall-clock seconds for all the kernels of one submission; then the kernel is "
        "killed, the submission is timed out and the cells that finished count. 0: none.",
    ).tag(config=True)


def setting(trait: str) -> str:
    """How an instructor sets a limit: the config line that names it."""
    return f"c.GradingLimits.{trait}"


class _LimitedChannel(AsyncZMQSocketChannel):
    """A channel from the kernel that looks at a message's size before parsing it."""

    def __init__(self, socket: zmq.asyncio.Socket, session: Session, loop: Any = None) -> None:
        """Create the channel; the limits come from the session's configuration."""
        super().__init__(socket, session, loop)
        self.limits = GradingLimits(config=session.config)

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message that is kept (or says what was dropped); Empty after timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not await self.socket.poll(None if left is None else int(left * 1000)):
                raise Empty
            _, parts = self.session.feed_identities(
                await self.socket.recv_multipart(copy=False), copy=False
            )
            if len(parts) < 5 or len(parts[1]) + len(parts[2]) > _HEADERS_BYTES:
                continue  # no message the kernel's own libraries would send
            msg = self._within_limits(parts, sum(len(part) for part in parts))
            if msg is not None:
                return msg

    def _within_limits(self, parts: list[zmq.Frame], size: int) -> dict[str, Any] | None:
        """The message, one that stands for it, or None when it is dropped silently."""
        raise NotImplementedError

    def _headers(self, parts: list[zmq.Frame]) -> tuple[dict, dict]:
        """A message's header and parent header, parsed without touching its content."""
        return tuple(extract_dates(self.session.unpack(part.bytes)) for part in parts[1:3])

    def _standing_in(self, parts: list[zmq.Frame], msg_type: str, content: dict) -> dict:
        """A message in the place of a dropped one: same parent, so it lands where it would."""
        header, parent = self._headers(parts)
        return {
            "header": {**header, "msg_type": msg_type},
            "msg_id": header.get("msg_id", ""),
            "msg_type": msg_type,
            "parent_header": parent,
            "metadata": {},
            "content": content,
            "buffers": [],
        }


def _too_large(text: str) -> dict[str, Any]:
    """An error's content saying that the kernel sent too much."""
    return {"ename": OUTPUT_TOO_LARGE, "evalue": text, "traceback": [f"{OUTPUT_TOO_LARGE}: {text}"]}


class LimitedIOPubChannel(_LimitedChannel):
    """The kernel's output channel, keeping at most so many bytes per cell and per notebook.

    A message over the limit is dropped as soon as it is received, before its content is
    copied or parsed, so that an image or page of hundreds of megabytes costs the grader one
    buffer for a moment, not a parsed copy in the notebook and in every file written from it.
    """

    def __init__(self, socket: zmq.asyncio.Socket, session: Session, loop: Any = None) -> None:
        """Create the channel with nothing kept yet."""
        super().__init__(socket, session, loop)
        self.kept: Counter[str] = Counter()  # parent message id (one per cell) -> bytes
        self.cut: set[str] = set()  # cells whose output was cut

    def _within_limits(self, parts: list[zmq.Frame], size: int) -> dict[str, Any] | None:
        """The message, an error that stands for the first one over the limit, or None."""
        header, parent = self._headers(parts)
        if header.get("msg_type") not in OUTPUT_MESSAGES and size <= self.limits.cell_output_bytes:
            return self.session.deserialize(parts, copy=False)
        cell = parent.get("msg_id", "")
        if (
            self.kept[cell] + size <= self.limits.cell_output_bytes
            and self.kept.total() + size <= self.limits.notebook_output_bytes
        ):
            self.kept[cell] += size
            return self.session.deserialize(parts, copy=False)
        if cell in self.cut:
            return None
        self.cut.add(cell)
        return self._standing_in(
            parts,
            "error",
            _too_large(
                f"this cell's output went over the {self.limits.cell_output_bytes:,} bytes the "
                f"grader keeps per cell ({setting('cell_output_bytes')}) or "
                f"{self.limits.notebook_output_bytes:,} per notebook "
                f"({setting('notebook_output_bytes')}); the rest of it was dropped"
            ),
        )


class LimitedShellChannel(_LimitedChannel):
    """The kernel's reply channel: a reply larger than a notebook's output is refused unparsed.

    Replies carry a cell's status and what user expressions evaluated to; a kernel can make
    either as large as its memory. The reply is replaced by an error reply to the same request.
    """

    def _within_limits(self, parts: list[zmq.Frame], size: int) -> dict[str, Any] | None:
        """The reply, or an error reply in its place when it is over notebook_output_bytes."""
        if size <= self.limits.notebook_output_bytes:
            return self.session.deserialize(parts, copy=False)
        header, _ = self._headers(parts)
        text = (
            f"the kernel's reply had {size:,} bytes, over the "
            f"{self.limits.notebook_output_bytes:,} the grader reads "
            f"({setting('notebook_output_bytes')})"
        )
        return self._standing_in(
            parts, header.get("msg_type", "execute_reply"), {"status": "error", **_too_large(text)}
        )


class LimitedKernelClient(AsyncKernelClient):
    """A kernel client whose output and reply channels keep to GradingLimits."""

    iopub_channel_class = Type(LimitedIOPubChannel)  # type: ignore[assignment]
    shell_channel_class = Type(LimitedShellChannel)  # type: ignore[assignment]
