"""A 3-member cluster: the registrar and discovery survive killing the leader.

Only against the real etcd: `meshkit server` runs a single member so far (the
cluster transport is not built yet), so there is no meshkit cluster to kill a
leader of. The server-restart case runs against both in test_registrar.py.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshkit.client import Client
from meshkit.registry import Discovery, Instance, Registrar
from tests.support.procs import ETCD, ServerProc, free_port, require_reference_binaries, wait_port
from tests.tools.registry.conftest import eventually, wait_serving


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[list[ServerProc]]:
    require_reference_binaries()
    assert ETCD is not None
    ports = [(free_port(), free_port()) for _ in range(3)]
    initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
    procs: list[ServerProc] = []
    try:
        for i, (cport, pport) in enumerate(ports):
            data, log = tmp_path / f"m{i}", tmp_path / f"m{i}.log"
            with open(log, "wb") as out:
                p = subprocess.Popen([
                    ETCD, "--name", f"m{i}", "--data-dir", str(data),
                    "--listen-client-urls", f"http://127.0.0.1:{cport}",
                    "--advertise-client-urls", f"http://127.0.0.1:{cport}",
                    "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--heartbeat-interval", "50", "--election-timeout", "500",
                ], stdout=out, stderr=subprocess.STDOUT)
            procs.append(ServerProc(p, cport, pport, data, log))
        for sp in procs:
            wait_port(sp.client_port, proc=sp.proc)
        for sp in procs:
            wait_serving(sp.endpoint)
        yield procs
    finally:
        for sp in procs:
            sp.stop(signal.SIGKILL)


async def test_leader_kill(etcd_cluster: list[ServerProc]) -> None:
    eps = [sp.endpoint for sp in etcd_cluster]
    async with Client(eps) as probe:
        leader_id = (await probe.status()).leader
        leader = None
        for sp in etcd_cluster:
            if (await probe.status(sp.endpoint)).header.member_id == leader_id:
                leader = sp
    assert leader is not None
    # Both clients talk to the leader first, so killing it breaks their streams.
    order = [leader.endpoint, *(e for e in eps if e != leader.endpoint)]
    async with Client(order, timeout=3.0, dial_timeout=0.5) as c, \
            Client(order, timeout=3.0, dial_timeout=0.5) as watcher_client, \
            Discovery(watcher_client, "web") as d, \
            Registrar(c, Instance("web", "127.0.0.1:80", id="a"), ttl=2) as r:
        await r.wait_registered(10)
        await d.wait_for(lambda d: len(d.instances()) == 1, 10)
        leader.stop(signal.SIGKILL)
        # Longer than the TTL: the registrar must hold (or win back) its registration.
        await asyncio.sleep(2.5)
        async with Registrar(c, Instance("web", "127.0.0.1:81", id="b"), ttl=2) as r2:
            await r2.wait_registered(15)
            await d.wait_for(lambda d: {i.instance_id for i in d.instances()} == {"a", "b"}, 15)
        await d.wait_for(lambda d: {i.instance_id for i in d.instances()} == {"a"}, 15)

        async def one_key() -> bool:
            res = await c.get("meshkit/services/", prefix=True)
            return [kv.lease for kv in res.kvs] == [r.lease_id] and r.registered
        await eventually(one_key, 15, "exactly one key, on the registrar's live lease")
        assert c.current_endpoint != leader.endpoint
