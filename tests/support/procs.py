"""Starting real servers for tests: the real etcd binary and meshkit's own, on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")


def require_reference_binaries() -> None:
    """Skip when the real etcd/etcdctl are absent; in CI (MESHKIT_REQUIRE_ETCD=1) fail instead."""
    if ETCD is not None and ETCDCTL is not None:
        return
    msg = "the real etcd/etcdctl are not installed (apt-get install etcd-server etcd-client)"
    if os.environ.get("MESHKIT_REQUIRE_ETCD"):
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: all bound at once, so one is never handed out twice."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class ServerProc:
    proc: subprocess.Popen[bytes]
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def etcd_flags(name: str, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    return [
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", f"http://127.0.0.1:{client_port}",
        "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"{name}=http://127.0.0.1:{peer_port}",
    ]


def start_etcd(tmp: Path, *extra: str, name: str = "default") -> ServerProc:
    """Start the real etcd (Debian etcd-server) on free loopback ports."""
    if ETCD is None:
        require_reference_binaries()
    cport, pport = free_ports(2)
    data = tmp / "etcd-data"
    log = tmp / "etcd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [ETCD, *etcd_flags(name, data, cport, pport), *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp,
        )
    sp = ServerProc(proc, cport, pport, data, log)
    wait_port(cport, proc=proc)
    return sp


def start_meshkit(tmp: Path, *extra: str, name: str = "default", data_dir: Path | None = None,
                  client_port: int | None = None) -> ServerProc:
    """Start `meshkit server` as a real subprocess with etcd's flags."""
    fresh = free_ports(2)
    cport = client_port or fresh[0]
    pport = next(p for p in fresh if p != cport)
    data = data_dir or (tmp / "meshkit-data")
    log = tmp / f"meshkit-{cport}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshkit", "server", *etcd_flags(name, data, cport, pport), *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    sp = ServerProc(proc, cport, pport, data, log)
    wait_port(cport, proc=proc)
    return sp


@contextlib.contextmanager
def running(sp: ServerProc) -> Iterator[ServerProc]:
    try:
        yield sp
    finally:
        sp.stop()
