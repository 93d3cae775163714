"""Servers and helpers for the registry tests: every server-backed test runs against
the real etcd 3.4 and against `meshkit server`, both fresh subprocesses on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from meshkit.client import Client
from tests.support.procs import (
    ETCD,
    ServerProc,
    etcd_flags,
    free_port,
    require_reference_binaries,
    start_etcd,
    start_meshkit,
    wait_port,
)

SERVERS = ["etcd", "meshkit"]


def wait_serving(endpoint: str, timeout: float = 15.0) -> None:
    """Block until the server answers Maintenance.Status (listening is not serving yet)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)
        while True:
            try:
                stub.Status(rpc_pb2.StatusRequest(), timeout=1.0, wait_for_ready=True)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@dataclass
class Server:
    """One running server that a test may stop and start again (same port, same data)."""

    kind: str
    tmp: Path
    proc: ServerProc

    @property
    def endpoint(self) -> str:
        return self.proc.endpoint

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.proc.stop(sig)

    def restart(self) -> None:
        """Start again on the same client port and data directory."""
        self.proc.stop()
        if self.kind == "meshkit":
            self.proc = start_meshkit(self.tmp, data_dir=self.proc.data_dir,
                                      client_port=self.proc.client_port)
        else:
            assert ETCD is not None
            old = self.proc
            log = self.tmp / "etcd-restart.log"
            with open(log, "ab") as out:
                p = subprocess.Popen(
                    [ETCD, *etcd_flags("default", old.data_dir, old.client_port, old.peer_port)],
                    stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp)
            self.proc = ServerProc(p, old.client_port, old.peer_port, old.data_dir, log)
            wait_port(old.client_port, proc=p)
        wait_serving(self.endpoint)


def start_server(kind: str, tmp: Path) -> Server:
    if kind == "etcd":
        require_reference_binaries()
    # procs.free_port() can hand out the same just-freed port for the client and the
    # peer listener (or another test takes it first): start again on fresh ports.
    for attempt in range(3):
        try:
            sp = start_etcd(tmp) if kind == "etcd" else start_meshkit(tmp)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    wait_serving(sp.endpoint)
    return Server(kind, tmp, sp)


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(request.param, tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Client]:
    async with Client([server.endpoint], timeout=5.0) as c:
        yield c


class HealthApp:
    """A real HTTP app on 127.0.0.1 whose ``/health`` the test flips (200 or 503)."""

    def __init__(self) -> None:
        self.healthy = True
        self.hits = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _health(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.healthy:
            return web.Response(text="ok")
        return web.Response(status=503, text="unhealthy")

    async def __aenter__(self) -> HealthApp:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def health_app() -> AsyncIterator[HealthApp]:
    async with HealthApp() as app:
        yield app


REGISTER = [sys.executable, "-m", "meshkit.cli.register"]


@contextlib.contextmanager
def sidecar_proc(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`meshkit register ARGS` as a real subprocess (killed if the test leaves it running)."""
    with open(log, "wb") as out:
        p = subprocess.Popen([*REGISTER, *args], stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield p
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


async def eventually(pred: object, timeout: float, what: str, interval: float = 0.05) -> None:  # noqa: ASYNC109
    """Poll an async predicate until it is true (bounded in time)."""
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while True:
        if await pred():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what}")
        await asyncio.sleep(interval)
