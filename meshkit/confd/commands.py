"""Running check_cmd and reload_cmd: a shell, a timeout, the whole process group killed on expiry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

__all__ = ["OUTPUT_LIMIT", "CommandResult", "expand", "run_command"]

OUTPUT_LIMIT = 64 * 1024  # bytes of output kept per run
_DRAIN_AFTER_EXIT = 0.5  # seconds to collect output still buffered when the shell exits


@dataclass(frozen=True, slots=True)
class CommandResult:
    command: str
    returncode: int | None  # None when it was killed after its timeout
    output: str  # stdout and stderr interleaved, at most OUTPUT_LIMIT bytes
    timed_out: bool
    duration: float

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.returncode == 0


def expand(command: str, *, src: str, dest: str) -> str:
    """confd's command template: ``{{.src}}`` (the staged file) and ``{{.dest}}``."""
    out = command
    for name, value in (("src", src), ("dest", dest)):
        for spelling in ("{{." + name + "}}", "{{ ." + name + " }}"):
            out = out.replace(spelling, value)
    return out


async def run_command(command: str, timeout: float,  # noqa: ASYNC109 - the command's own limit
                      *, cwd: str | None = None) -> CommandResult:
    """Run ``command`` with ``/bin/sh -c`` in a new session (its own process group).

    On expiry (or cancellation) the group gets SIGKILL, so a hung command and
    everything it started are gone; output is kept up to :data:`OUTPUT_LIMIT`.
    """
    start = time.monotonic()
    proc = await asyncio.create_subprocess_shell(
        command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True, cwd=cwd,
    )
    buf = bytearray()

    async def pump() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            if len(buf) < OUTPUT_LIMIT:
                buf.extend(chunk[: OUTPUT_LIMIT - len(buf)])

    reader = asyncio.get_running_loop().create_task(pump())
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            await proc.wait()
        # Children left running may hold the pipe open: take what is there, then stop reading.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), _DRAIN_AFTER_EXIT)
    except BaseException:
        _kill_group(proc.pid)
        raise
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return CommandResult(command, None if timed_out else proc.returncode,
                         buf.decode("utf-8", errors="replace"), timed_out, time.monotonic() - start)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
