"""`meshkit server` with no flags behaves like `etcd` with none: data in ./default.etcd,
clients on 127.0.0.1:2379 (etcd's default listen URL is http://localhost:2379)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meshkit.client import Client
from tests.server.conftest import wait_ready
from tests.support.procs import wait_port


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_without_flags(cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["PYTHONUNBUFFERED"] = "1"
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "meshkit", "server"], cwd=cwd,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def test_no_flags_uses_default_etcd_dir_and_port_2379(tmp_path: Path) -> None:
    if not (_port_free(2379) and _port_free(2380)):
        pytest.skip("127.0.0.1:2379 or :2380 is in use")
    log = tmp_path / "server.log"
    proc = _start_without_flags(tmp_path, log)
    try:
        wait_port(2379, proc=proc)
        await wait_ready("127.0.0.1:2379")
        async with Client(["127.0.0.1:2379"], timeout=5.0) as c:
            await c.put(b"k", b"v")
            assert (await c.get(b"k")).value == b"v"
            members = (await c.member_list()).members
            assert [m.name for m in members] == ["default"]
            assert members[0].client_urls == ["http://localhost:2379"]
        files = _files(tmp_path)
        assert any(re.fullmatch(r"default\.etcd/member/wal/[0-9a-f-]+\.wal", f) for f in files), files
        assert "default.etcd/member/snap" in files
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 0, log.read_text()
