"""check_cmd/reload_cmd: {{.src}} expansion, output, timeout that kills the whole group."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from meshkit.confd.commands import expand, run_command


def test_expand() -> None:
    assert expand("nginx -t -c {{.src}} && cmp {{ .src }} {{.dest}}", src="/s", dest="/d") == \
        "nginx -t -c /s && cmp /s /d"


async def test_output_and_status() -> None:
    res = await run_command("echo out; echo err >&2; exit 3", 5)
    assert res.returncode == 3 and not res.ok and not res.timed_out
    assert "out" in res.output and "err" in res.output


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    res = await run_command(f"sleep 30 & echo $! > {pidfile}; echo started; wait", 1.0)
    assert res.timed_out and res.returncode is None and "started" in res.output
    assert time.monotonic() - start < 5
    child = int(pidfile.read_text())
    for _ in range(100):  # the background child, in the same group, is gone too
        if _dead(child):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the command's child survived the timeout")


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"  # killed, not yet reaped by init
    except FileNotFoundError:
        return True
