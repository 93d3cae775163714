"""Servers for the config center tests: each runs against the real etcd and meshkit's server."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshkit.client import Client, MeshkitError
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
_names = itertools.count(1)


async def wait_leader(endpoint: str, within: float = 20.0) -> None:
    """Until the member has a leader (listening is not serving: etcd elects itself first)."""
    async with asyncio.timeout(within), Client([endpoint], timeout=2.0) as c:
        while True:
            try:
                if (await c.status()).leader:
                    return
            except MeshkitError:  # not serving yet: refused, unavailable, no leader
                pass
            await asyncio.sleep(0.05)


@dataclass
class Cluster:
    """One single-member server (the real etcd or `meshkit server`) that a test may stop and
    start again on the same data dir and client port."""

    kind: str
    tmp: Path
    sp: ServerProc

    @property
    def endpoint(self) -> str:
        return self.sp.endpoint

    def stop(self) -> None:
        self.sp.stop()

    def start_again(self) -> None:
        """Restart on the same data dir and client port (after ``stop``)."""
        assert self.sp.proc.poll() is not None, "stop() first"
        if self.kind == "meshkit":
            self.sp = start_meshkit(self.tmp, data_dir=self.sp.data_dir,
                                    client_port=self.sp.client_port)
            return
        assert ETCD is not None
        with open(self.sp.log_path, "ab") as out:
            proc = subprocess.Popen(
                [ETCD, *etcd_flags("default", self.sp.data_dir, self.sp.client_port,
                                   self.sp.peer_port)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.sp = ServerProc(proc, self.sp.client_port, self.sp.peer_port, self.sp.data_dir,
                             self.sp.log_path)
        wait_port(self.sp.client_port, proc=proc)


def start_cluster(kind: str, tmp: Path) -> Cluster:
    if kind == "etcd":
        require_reference_binaries()
    tmp.mkdir(parents=True, exist_ok=True)
    sp = start_etcd(tmp) if kind == "etcd" else start_meshkit(tmp)
    return Cluster(kind, tmp, sp)


@pytest.fixture(scope="module", params=SERVERS)
def shared_cluster(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server per module and kind, for tests that do not stop it or enable auth
    (each test uses its own config names)."""
    c = start_cluster(request.param, tmp_path_factory.mktemp(f"cc-{request.param}"))
    try:
        asyncio.run(wait_leader(c.endpoint))
        yield c
    finally:
        c.stop()


@pytest.fixture(params=SERVERS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A fresh server for this test alone (stopped, restarted, auth-enabled...)."""
    c = start_cluster(request.param, tmp_path / "server")
    try:
        await wait_leader(c.endpoint)
        yield c
    finally:
        c.stop()


@pytest.fixture
async def client(shared_cluster: Cluster) -> AsyncIterator[Client]:
    async with Client([shared_cluster.endpoint], timeout=5.0) as c:
        yield c


@pytest.fixture
def app_name() -> str:
    """A config name no other test of the module uses."""
    return f"test/ns{next(_names)}/api"


def unused_endpoint() -> str:
    return f"127.0.0.1:{free_port()}"
