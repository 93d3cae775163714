"""Helpers shared by the side-by-side benchmarks: start/stop a real etcd and a
meshkit server on loopback, read their CPU time and resident memory.

Not a test and not part of the package. Everything here is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

ETCD_BIN = os.environ.get("ETCD_BIN", shutil.which("etcd") or "/usr/bin/etcd")
LOOPBACK = "127.0.0.1"
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (threads included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / _TICKS


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def dir_size_mib(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total / (1024 * 1024)


class ServerProc:
    """One server (``kind`` is ``"etcd"`` or ``"meshkit"``) on its own ports and
    data directory. ``start()`` returns once a Range succeeds."""

    def __init__(self, kind: str, workdir: Path, name: str | None = None,
                 python_prefix: list[str] | None = None) -> None:
        assert kind in ("etcd", "meshkit")
        self.kind = kind
        self.name = name or kind
        self.workdir = workdir
        self.data_dir = workdir / f"{self.name}.data"
        self.log_path = workdir / f"{self.name}.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.python_prefix = python_prefix  # e.g. [python, -m, cProfile, -o, f]
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.client_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        client = f"http://{LOOPBACK}:{self.client_port}"
        peer = f"http://{LOOPBACK}:{self.peer_port}"
        flags = [
            "--name", "default",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
        ]
        if self.kind == "etcd":
            return [ETCD_BIN, *flags]
        prefix = self.python_prefix or [sys.executable, "-m"]
        return [*prefix, "meshkit", "server", *flags]

    def start(self, timeout: float = 60.0) -> float:
        """Start the process; return seconds until the first Range succeeded."""
        assert self.proc is None or self.proc.poll() is not None
        self._log = open(self.log_path, "ab")
        # both servers read ETCD_* variables: keep them on their defaults + flags
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        return wait_range_ok(self, t0, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> float:
        """Send ``sig`` and wait for the exit; return the seconds it took."""
        if self.proc is None:
            return 0.0
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        dt = time.perf_counter() - t0
        if self._log is not None:
            self._log.close()
            self._log = None
        return dt

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_mib(self) -> float:
        return proc_rss_mib(self.pid)


def wait_range_ok(srv: ServerProc, t0: float, timeout: float) -> float:
    """Poll a (linearizable) Range until it succeeds; seconds since ``t0``."""
    deadline = t0 + timeout
    last: Exception | None = None
    while time.perf_counter() < deadline:
        if srv.proc is not None and srv.proc.poll() is not None:
            raise RuntimeError(f"{srv.name} exited with {srv.proc.returncode}:\n{srv.log_tail()}")
        try:
            with grpc.insecure_channel(srv.address) as ch:
                rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0"), timeout=0.5)
            return time.perf_counter() - t0
        except grpc.RpcError as e:
            last = e
            time.sleep(0.01)
    raise RuntimeError(f"{srv.name} did not answer a Range within {timeout}s: {last}\n"
                       f"{srv.log_tail()}")


def count_keys(srv: ServerProc, prefix: bytes) -> int:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    with grpc.insecure_channel(srv.address) as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=end, count_only=True), timeout=30)
    return r.count


class WorkDir:
    """A temporary directory removed on exit (kept with ``keep=True``)."""

    def __init__(self, keep: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="meshkit-bench-"))
        self.keep = keep

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)
