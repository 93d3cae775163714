"""Servers, dashboards and the browser for the dashboard tests.

* ``mk_auth``: `meshkit server` with etcd auth enabled by the real etcdctl (root, and
  a user ``alice`` whose role grants only some prefixes), one per package;
* ``real_etcd_noauth``: the real etcd 3.4 without auth, one per package;
* ``start_dashboard``: `meshkit dashboard` as a real subprocess (the CLI), stopped at the end;
* the browser: Debian's chromium driven by playwright (never `playwright install`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.procs import (
    ETCDCTL,
    ServerProc,
    free_port,
    require_reference_binaries,
    start_etcd,
    start_meshkit,
    wait_port,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

ROOT = "root:rootpw"
ALICE = ("alice", "alicepw")
# alice's rights: what the pages under test need, nothing at the root of the keyspace.
ALICE_PREFIXES = {
    "app/": "readwrite",
    "meshkit/services/": "readwrite",
    "/meshkit/config/": "readwrite",
    "locks/": "readwrite",
    "<script>": "readwrite",
}


def wait_leader(endpoint: str, timeout: float = 20.0) -> None:
    """Until Maintenance.Status names a leader (listening is not serving yet)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)
        while True:
            try:
                if stub.Status(rpc_pb2.StatusRequest(), timeout=1.0, wait_for_ready=True).leader:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{endpoint}: no leader after {timeout}s")
            time.sleep(0.05)


def etcdctl(endpoint: str, *args: str, user: str | None = None, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real etcdctl 3.4 (v3 API) against ``endpoint``."""
    require_reference_binaries()
    assert ETCDCTL is not None
    cmd = [ETCDCTL, "--endpoints", endpoint, *(["--user", user] if user else []), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=20, input=stdin,
                          env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})


def enable_auth(endpoint: str) -> None:
    """root with the root role, auth on, and alice with a role over ALICE_PREFIXES only."""
    etcdctl(endpoint, "user", "add", ROOT, "--interactive=false")
    etcdctl(endpoint, "auth", "enable")
    etcdctl(endpoint, "user", "add", f"{ALICE[0]}:{ALICE[1]}", "--interactive=false", user=ROOT)
    etcdctl(endpoint, "role", "add", "dash", user=ROOT)
    for prefix, perm in ALICE_PREFIXES.items():
        etcdctl(endpoint, "role", "grant-permission", "--prefix=true", "dash", perm, prefix, user=ROOT)
    etcdctl(endpoint, "user", "grant-role", ALICE[0], "dash", user=ROOT)


@pytest.fixture(scope="package")
def mk_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """`meshkit server` with auth enabled (root: rootpw, alice: alicepw)."""
    require_reference_binaries()
    sp = start_meshkit(tmp_path_factory.mktemp("mk-auth"))
    try:
        wait_leader(sp.endpoint)
        enable_auth(sp.endpoint)
        yield sp
    finally:
        sp.stop()


@pytest.fixture(scope="package")
def real_etcd_noauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """The real etcd 3.4 without auth."""
    require_reference_binaries()
    sp = start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        wait_leader(sp.endpoint)
        yield sp
    finally:
        sp.stop()


@dataclass
class DashboardProc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def launch_dashboard(endpoint: str, log: Path, *flags: str) -> DashboardProc:
    """`python -m meshkit dashboard --endpoints EP --listen 127.0.0.1:PORT FLAGS`."""
    port = free_port()
    with open(log, "wb") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "meshkit", "dashboard", "--endpoints", endpoint,
             "--listen", f"127.0.0.1:{port}", *flags],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    d = DashboardProc(p, f"http://127.0.0.1:{port}", log)
    try:
        wait_port(port, proc=p)
    except BaseException:
        d.stop()
        raise
    return d


@pytest.fixture(scope="module")
def start_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., DashboardProc]]:
    """Start dashboards for the module; all stopped at its end."""
    started: list[DashboardProc] = []
    tmp = tmp_path_factory.mktemp("dashboard")

    def start(endpoint: str, *flags: str) -> DashboardProc:
        d = launch_dashboard(endpoint, tmp / f"dashboard-{len(started)}.log", *flags)
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            d.stop()


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save screenshots: $MESHKIT_SCREENSHOT_DIR, else a temp dir."""
    env = os.environ.get("MESHKIT_SCREENSHOT_DIR")
    d = Path(env) if env else tmp_path_factory.mktemp("screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d
