"""The registry across failures of its servers, against three `meshkit server`
processes and three real etcd processes (Raft over loopback), and against a single
member killed with -9 and started again on the same data directory.

What must hold afterwards: every instance is registered again within a bounded
time, on its registrar's current lease; one key per instance id and one live lease
per instance (no leaked or duplicate registrations); a Discovery watcher that lived
through the failure holds exactly the set the server holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshkit.client import Client
from meshkit.registry import Discovery, Instance, Registrar, instance_from_value
from tests.support.procs import ETCD, free_ports, require_reference_binaries, wait_port
from tests.tools.registry.conftest import (
    SERVERS,
    HealthApp,
    Server,
    eventually,
    sidecar_proc,
    wait_serving,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

PREFIX = "meshkit/services/"
TTL = 2  # seconds; etcd raises it to its minimum (1.5 x election timeout = 0.75 s here)


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Cluster:
    """Three server processes of one kind on loopback."""

    kind: str
    tmp: Path
    members: list[Member] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> None:
        ports = free_ports(6)
        self.members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1]) for i in range(3)]
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        if self.kind == "etcd":
            assert ETCD is not None
            argv0 = [ETCD]
        else:
            argv0 = [sys.executable, "-m", "meshkit", "server"]
        for m in self.members:
            with open(self.tmp / f"{m.name}.log", "ab") as out:
                m.proc = subprocess.Popen([
                    *argv0, "--name", m.name, "--data-dir", str(self.tmp / m.name),
                    "--listen-client-urls", f"http://{m.endpoint}",
                    "--advertise-client-urls", f"http://{m.endpoint}",
                    "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", f"registry-{self.kind}",
                    "--heartbeat-interval", "50", "--election-timeout", "500",
                ], stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for m in self.members:
            wait_port(m.client_port, timeout=20, proc=m.proc)
        for m in self.members:
            wait_serving(m.endpoint, timeout=20)

    def stop(self) -> None:
        for m in self.members:
            m.kill()

    async def wait_writable(self, limit: float = 20.0) -> None:
        deadline = time.monotonic() + limit
        async with Client(self.endpoints, timeout=2.0, dial_timeout=0.5) as c:
            while True:
                try:
                    await c.put("registry-test/ready", "1")
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.1)

    async def leader(self) -> Member:
        async with Client(self.endpoints, timeout=2.0) as c:
            lead = (await c.status()).leader
            for m in self.members:
                if (await c.status(m.endpoint)).header.member_id == lead:
                    return m
        raise AssertionError("no member is the leader")


@pytest.fixture(params=SERVERS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    if request.param == "etcd":
        require_reference_binaries()
    c = Cluster(request.param, tmp_path)
    try:
        c.start()
        await c.wait_writable()
        yield c
    finally:
        c.stop()


async def registry_state(c: Client) -> tuple[dict[str, int], set[int]]:
    """(key -> lease of every key under the prefix, the ids of every live lease)."""
    res = await c.get(PREFIX, prefix=True)
    keys = {kv.key.decode(): kv.lease for kv in res.kvs}
    return keys, set((await c.leases()).ids)


async def server_instances(c: Client) -> dict[str, Instance]:
    res = await c.get(PREFIX, prefix=True)
    out = {}
    for kv in res.kvs:
        inst = instance_from_value(PREFIX, kv.key.decode(), kv.value)
        assert inst is not None
        out[kv.key.decode()] = inst
    return out


def sidecar_args(endpoints: list[str], app: HealthApp, inst_id: str) -> list[str]:
    return ["--endpoints", ",".join(endpoints), "--service", "web", "--addr", app.addr,
            "--id", inst_id, "--check", app.url, "--interval", "200ms", "--timeout", "1s",
            "--ttl", str(TTL), "--dial-timeout", "500ms"]


async def assert_all_registered(c: Client, registrars: list[Registrar], sidecar_key: str,
                                limit: float) -> None:
    """Within ``limit`` seconds: each registrar's key on its current, live lease; the
    sidecar's key present; nothing else under the prefix; and every live lease holds
    exactly one of these keys (no lease leaked by a registration that was redone)."""
    want = {r.key for r in registrars} | {sidecar_key}
    last: list[object] = []

    async def settled() -> bool:
        try:
            keys, live = await registry_state(c)
        except Exception as e:  # the cluster may still be electing: try again
            last[:] = [repr(e)]
            return False
        last[:] = [keys, live, {r.key: r.lease_id for r in registrars}]
        return (set(keys) == want
                and all(r.registered and keys[r.key] == r.lease_id for r in registrars)
                and set(keys.values()) == live and len(live) == len(want))

    try:
        await eventually(settled, limit, "every instance registered once, on one live lease each")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen {last}") from None


def leader_first(endpoints: list[str], leader: str) -> list[str]:
    return [leader, *(e for e in endpoints if e != leader)]


async def test_leader_kill9_registrars_and_sidecar(cluster: Cluster, tmp_path: Path) -> None:
    leader = await cluster.leader()
    # Clients talk to the leader first, so killing it breaks their streams mid-flight.
    order = leader_first(cluster.endpoints, leader.endpoint)
    survivors = [e for e in order if e != leader.endpoint]
    async with HealthApp() as app, \
            Client(order, timeout=3.0, dial_timeout=0.5) as shared, \
            Client(order, timeout=3.0, dial_timeout=0.5) as own, \
            Client(order, timeout=3.0, dial_timeout=0.5) as watcher, \
            Discovery(watcher, "web") as d, \
            Registrar(shared, Instance("web", "127.0.0.1:81", id="a"), ttl=TTL) as ra, \
            Registrar(shared, Instance("web", "127.0.0.1:82", id="b"), ttl=TTL) as rb, \
            Registrar(own, Instance("web", "127.0.0.1:83", id="c"), ttl=TTL) as rc:
        with sidecar_proc(sidecar_args(order, app, "s"), tmp_path / "sidecar.log") as side:
            for r in (ra, rb, rc):
                await r.wait_registered(10)
            await d.wait_for(lambda d: len(d.instances()) == 4, 15)

            leader.kill()
            # Longer than the TTL: whatever lease was lost must be replaced.
            await asyncio.sleep(TTL + 0.5)
            async with Client(survivors, timeout=3.0) as probe:
                await assert_all_registered(probe, [ra, rb, rc], PREFIX + "web/s", 20)
                # A registrar started after the kill registers through the new leader.
                async with Registrar(own, Instance("web", "127.0.0.1:84", id="e"), ttl=TTL) as re:
                    await re.wait_registered(15)
                    await d.wait_for(lambda d: len(d.instances()) == 5, 15)
                await assert_all_registered(probe, [ra, rb, rc], PREFIX + "web/s", 15)

                # The watcher, which lived through the kill, ends with the server's set.
                final = await server_instances(probe)
                await d.wait_for(lambda d: d.snapshot() == final, 15)
                assert sorted(i.instance_id for i in final.values()) == ["a", "b", "c", "s"]
            assert side.poll() is None, "the sidecar exited"
    for c in (shared, own, watcher):
        assert c.current_endpoint != leader.endpoint


async def test_single_member_kill9_restart_loses_leases(server: Server, tmp_path: Path) -> None:
    """kill -9, down longer than the TTL, started again on the same data dir: the
    registrar and the sidecar register again on new leases, and the old leases,
    restored by the restarted server, expire without taking any key."""
    async with HealthApp() as app, \
            Client([server.endpoint], timeout=2.0, dial_timeout=0.5) as c, \
            Client([server.endpoint], timeout=2.0, dial_timeout=0.5) as watcher, \
            Discovery(watcher, "web") as d, \
            Registrar(c, Instance("web", "127.0.0.1:81", id="a"), ttl=TTL) as ra, \
            Registrar(c, Instance("web", "127.0.0.1:82", id="b"), ttl=TTL) as rb:
        with sidecar_proc(sidecar_args([server.endpoint], app, "s"), tmp_path / "sidecar.log") as side:
            await ra.wait_registered(10)
            await rb.wait_registered(10)
            await d.wait_for(lambda d: len(d.instances()) == 3, 15)
            before = {ra.lease_id, rb.lease_id}

            server.stop(signal.SIGKILL)
            await eventually(lambda: _lost(ra, rb), TTL + 8, "both registrars declared their leases lost")
            await asyncio.to_thread(server.restart)
            await assert_all_registered(c, [ra, rb], PREFIX + "web/s", 20)
            assert not before & {ra.lease_id, rb.lease_id}, "registered again on new leases"
            assert ra.lease_losses >= 1 and rb.lease_losses >= 1

            # The old leases (restored by the restarted server, then left to expire)
            # take no key with them: still one key per instance afterwards.
            await asyncio.sleep(TTL + 1.5)
            await assert_all_registered(c, [ra, rb], PREFIX + "web/s", 5)
            final = await server_instances(c)
            await d.wait_for(lambda d: d.snapshot() == final, 15)
            assert sorted(i.instance_id for i in final.values()) == ["a", "b", "s"]
            assert side.poll() is None, "the sidecar exited"
    # The sidecar saw its lease lost and registered again after that. (Its first put
    # may have been applied with its answer lost to the kill: no "registered" before.)
    log = (tmp_path / "sidecar.log").read_text()
    assert "lease-lost" in log and log.rindex('"msg": "registered ') > log.index("lease-lost"), log[-3000:]


async def _lost(*rs: Registrar) -> bool:
    return all(r.lease_losses >= 1 for r in rs)
