"""Helpers for the server tests: `meshkit server` subprocesses that are always stopped,
waiting until a member serves, and a snapshot of the whole key space."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshkit.client import Client, KeyValue
from tests.support.procs import ServerProc, etcd_flags, free_port, start_meshkit, wait_port

RESTART_RE = re.compile(r"restarted member ([0-9a-f]+): applied (\d+), (\d+) wal entries to replay")


def meshkit_cmd(data_dir: Path, *extra: str, client_port: int | None = None) -> list[str]:
    """argv of `meshkit server` with etcd's flags on free loopback ports."""
    flags = etcd_flags("default", data_dir, client_port or free_port(), free_port())
    return [sys.executable, "-m", "meshkit", "server", *flags, *extra]


async def wait_ready(endpoint: str, limit: float = 20.0) -> None:
    """Until the member answers Status (listening is not serving yet), at most ``limit`` s."""
    deadline = time.monotonic() + limit
    async with Client([endpoint], timeout=1.0) as c:
        while True:
            try:
                await c.status()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


@dataclass
class Procs:
    """Starts `meshkit server` subprocesses in one directory; stops them all at teardown."""

    tmp: Path
    started: list[ServerProc] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.tmp / "meshkit-data"

    def start(self, *flags: str, data_dir: Path | None = None) -> ServerProc:
        sp = start_meshkit(self.tmp, *flags, data_dir=data_dir or self.data_dir)
        self.started.append(sp)
        return sp

    def restart(self, old: ServerProc, *flags: str) -> ServerProc:
        """Start again on the same data dir with the same flags and ports (as an
        operator restarting a member does)."""
        assert old.proc.poll() is not None, "stop the member before restarting it"
        cmd = [sys.executable, "-m", "meshkit", "server",
               *etcd_flags("default", old.data_dir, old.client_port, old.peer_port), *flags]
        with open(old.log_path, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        sp = ServerProc(proc, old.client_port, old.peer_port, old.data_dir, old.log_path)
        self.started.append(sp)
        wait_port(sp.client_port, proc=proc)
        return sp

    async def start_ready(self, *flags: str, data_dir: Path | None = None) -> ServerProc:
        sp = self.start(*flags, data_dir=data_dir)
        await wait_ready(sp.endpoint)
        return sp

    async def restart_ready(self, old: ServerProc, *flags: str) -> ServerProc:
        sp = self.restart(old, *flags)
        await wait_ready(sp.endpoint)
        return sp

    def stop_all(self) -> None:
        for sp in self.started:
            if sp.proc.poll() is None:
                sp.proc.kill()
                sp.proc.wait(10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def kill9(sp: ServerProc) -> None:
    sp.proc.send_signal(signal.SIGKILL)
    sp.proc.wait(10)


def stop_clean(sp: ServerProc) -> None:
    """SIGTERM and require a clean exit."""
    sp.stop(signal.SIGTERM)
    assert sp.proc.returncode == 0, sp.log_path.read_text()


def log_text(sp: ServerProc) -> str:
    return sp.log_path.read_text(errors="replace")


def restart_line(sp: ServerProc) -> tuple[int, int]:
    """(applied, wal entries to replay) from the member's last "restarted member" log line
    (a restarted member appends to the log of its first start)."""
    found = RESTART_RE.findall(log_text(sp))
    assert found, f"no restart line in the log:\n{log_text(sp)}"
    return int(found[-1][1]), int(found[-1][2])


Snapshot = tuple[int, list[KeyValue]]


async def snapshot(c: Client) -> Snapshot:
    """(header revision, every key-value) of the whole key space."""
    r = await c.get(b"\0", from_key=True)
    return r.header.revision, r.kvs


def run_meshkit(cmd: list[str], cwd: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
