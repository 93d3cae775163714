"""In-process clusters: N members in one event loop, each serving etcd's gRPC API
on 127.0.0.1, talking Raft through a fault-injecting MemoryNetwork."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshkit.client import Client
from meshkit.server.embed import EmbeddedServer
from meshkit.server.etcdserver.server import ServerSettings
from meshkit.server.transport import MemoryNetwork, MemoryTransport
from tests.support.procs import free_port

HEARTBEAT_MS = 50
ELECTION_MS = 500


@dataclass
class Member:
    name: str
    settings: ServerSettings
    port: int
    server: EmbeddedServer | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def id(self) -> int:
        assert self.server is not None
        return self.server.etcd.member_id


@dataclass
class Cluster:
    tmp: Path
    net: MemoryNetwork
    members: list[Member] = field(default_factory=list)

    @classmethod
    def build(cls, tmp: Path, size: int, seed: int = 0, **overrides: object) -> Cluster:
        c = cls(tmp, MemoryNetwork(rand=random.Random(seed)))
        names = [f"m{i}" for i in range(size)]
        peers = {n: f"http://127.0.0.1:{free_port()}" for n in names}
        for n in names:
            port = free_port()
            s = ServerSettings(
                name=n, data_dir=tmp / n, wal_dir=None,
                initial_cluster=tuple(peers.items()), initial_cluster_token="test-cluster",
                advertise_peer_urls=(peers[n],), advertise_client_urls=(f"http://127.0.0.1:{port}",),
                heartbeat_ms=HEARTBEAT_MS, election_ms=ELECTION_MS,
            )
            for k, v in overrides.items():
                setattr(s, k, v)
            c.members.append(Member(n, s, port))
        return c

    async def start(self, m: Member) -> None:
        t = MemoryTransport(self.net)
        t.urls = m.settings.advertise_peer_urls
        m.server = EmbeddedServer(m.settings, [("127.0.0.1", m.port)], transport=t)
        await m.server.start()

    async def stop(self, m: Member) -> None:
        if m.server is not None:
            await m.server.close(grace=0)
            m.server = None

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(m) for m in self.members))

    async def stop_all(self) -> None:
        for m in self.members:
            with contextlib.suppress(Exception):
                await self.stop(m)

    @property
    def running(self) -> list[Member]:
        return [m for m in self.members if m.server is not None]

    def by_id(self, mid: int) -> Member:
        return next(m for m in self.running if m.id == mid)

    async def wait_leader(self, among: list[Member] | None = None, limit: float = 10.0) -> Member:
        """Until the given members agree on one leader among them."""
        group = among or self.running
        deadline = time.monotonic() + limit
        while True:
            leads = {m.server.etcd.leader_id for m in group if m.server is not None}
            if len(leads) == 1:
                lead = leads.pop()
                for m in group:
                    if m.server is not None and m.id == lead and m.server.etcd.is_leader():
                        return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no agreed leader among {[m.name for m in group]}: {leads}")
            await asyncio.sleep(0.02)

    async def wait_hashes_equal(self, limit: float = 10.0) -> int:
        """Until every running member has applied the leader's current revision and
        gives the same HashKV at it; returns that revision."""
        lead = await self.wait_leader()
        rev = lead.server.etcd.store.current_revision  # type: ignore[union-attr]
        deadline = time.monotonic() + limit
        while True:
            stores = [m.server.etcd.store for m in self.running]  # type: ignore[union-attr]
            hashes = {s.hash_kv(rev) for s in stores if s.current_revision >= rev}
            if len(hashes) == 1 and all(s.current_revision >= rev for s in stores):
                return rev
            assert time.monotonic() < deadline, f"HashKV at revision {rev} not equal: {hashes}"
            await asyncio.sleep(0.05)

    def client(self, *members: Member, timeout: float = 5.0) -> Client:
        return Client([m.endpoint for m in (members or self.running)], timeout=timeout)


@pytest.fixture
async def cluster3(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster.build(tmp_path, 3)
    try:
        await c.start_all()
        yield c
    finally:
        await c.stop_all()
