"""Clusters of real server processes on loopback (`meshkit server`, or the real etcd
binary for side-by-side runs): start, kill -9, SIGSTOP/SIGCONT, restart on the same
data dir, add a member with --initial-cluster-state existing; ask each member
who leads and for its HashKV. With ``netfault=True`` the members' peer traffic goes
through the fault injector of tests/support/netfault.py (``p.net.isolate(n)``, ...)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.client import Client
from tests.server.conftest import wait_ready
from tests.support.netfault import NetFault
from tests.support.procs import ETCD, free_ports, require_reference_binaries

MESHKIT = [sys.executable, "-m", "meshkit", "server"]


class ProcCluster:
    """Members named ``p0``, ``p1``, ... each with its own client and peer port.

    ``async with`` is optional without ``netfault`` (then ``stop_all()`` in a
    ``finally``); with it, ``async with`` starts the fault injector before any member
    and leaving stops the members, then the injector."""

    def __init__(self, tmp: Path, argv0: Sequence[str] = MESHKIT, token: str = "mk",
                 names: Sequence[str] = ("p0", "p1", "p2"), extra: Sequence[str] = (),
                 heartbeat_ms: int = 50, election_ms: int = 500, netfault: bool = False) -> None:
        self.tmp = tmp
        self.argv0 = list(argv0)
        self.token = token
        self.extra = list(extra)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.names: list[str] = []
        self.cport: dict[str, int] = {}
        self.pport: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopped: set[str] = set()  # SIGSTOPped
        ports = free_ports(2 * len(names))  # bound all at once: never one port twice
        for i, n in enumerate(names):
            self.add_name(n, ports[2 * i], ports[2 * i + 1])
        # the members named now are the ones the injector proxies (add_name later: not)
        self._net = NetFault(self.pport) if netfault else None

    @property
    def net(self) -> NetFault:
        assert self._net is not None, "ProcCluster(netfault=True) has the fault injector"
        return self._net

    async def __aenter__(self) -> ProcCluster:
        if self._net is not None:
            await self._net.__aenter__()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.stop_all()
        if self._net is not None:
            await self._net.close()

    def add_name(self, n: str, client_port: int | None = None, peer_port: int | None = None) -> None:
        """A member name with its ports (fresh ones unless given), not started."""
        if client_port is None or peer_port is None:
            taken = {*self.cport.values(), *self.pport.values()}
            ports = [p for p in free_ports(2 + len(taken)) if p not in taken]
            client_port, peer_port = ports[0], ports[1]
        self.cport[n], self.pport[n] = client_port, peer_port
        self.names.append(n)

    def cluster_flag(self, names: Sequence[str] | None = None) -> str:
        return ",".join(f"{n}=http://127.0.0.1:{self.pport[n]}" for n in (names or self.names))

    def flags(self, n: str, *, state: str = "new", cluster: Sequence[str] | None = None) -> list[str]:
        return [
            "--name", n, "--data-dir", str(self.tmp / n),
            "--listen-client-urls", f"http://127.0.0.1:{self.cport[n]}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.cport[n]}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.pport[n]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.pport[n]}",
            "--initial-cluster", self.cluster_flag(cluster), "--initial-cluster-token", self.token,
            "--initial-cluster-state", state,
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
            *self.extra,
        ]

    def env(self, n: str) -> dict[str, str]:
        """Member ``n``'s environment: the test's own, plus its proxy with netfault
        (only there: the test process and its clients never get ``grpc_proxy``)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return env if self._net is None else self._net.env(n, env)

    def start(self, n: str, *, state: str = "new", cluster: Sequence[str] | None = None) -> None:
        """Start (or restart, on its data dir) member ``n``; its output goes to ``<n>.log``."""
        old = self.procs.get(n)
        assert old is None or old.poll() is not None, f"{n} is still running"
        assert self._net is None or self._net.proxy_port, "start the fault injector first (async with)"
        with open(self.tmp / f"{n}.log", "ab") as log:
            self.procs[n] = subprocess.Popen(
                [*self.argv0, *self.flags(n, state=state, cluster=cluster)], stdout=log,
                stderr=subprocess.STDOUT, cwd=self.tmp, env=self.env(n))

    def log(self, n: str) -> str:
        return (self.tmp / f"{n}.log").read_text(errors="replace")

    def running(self) -> list[str]:
        return [n for n in self.names if n in self.procs and self.procs[n].poll() is None]

    def kill9(self, n: str) -> None:
        p = self.procs[n]
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        self.stopped.discard(n)

    def sigstop(self, n: str) -> None:
        self.procs[n].send_signal(signal.SIGSTOP)
        self.stopped.add(n)

    def sigcont(self, n: str) -> None:
        self.procs[n].send_signal(signal.SIGCONT)
        self.stopped.discard(n)

    def endpoint(self, n: str) -> str:
        return f"127.0.0.1:{self.cport[n]}"

    def endpoints(self, names: Sequence[str] | None = None) -> list[str]:
        return [self.endpoint(n) for n in (names or self.names)]

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()  # SIGKILL ends a SIGSTOPped process as well
                p.wait(10)

    # ---- asking the members ---------------------------------------------------------

    async def wait_ready(self, names: Sequence[str] | None = None, limit: float = 30.0) -> None:
        """Every member answers, the cluster takes a write, and *each* member names
        every member (MemberList is answered from the member's own view, so one
        member having applied the others' published names is not enough)."""
        names = list(names or self.names)
        deadline = time.monotonic() + limit
        for n in names:
            await wait_ready(self.endpoint(n), limit=limit)
        async with Client(self.endpoints(names), timeout=2.0) as c:
            while True:
                with contextlib.suppress(Exception):
                    await c.put(b"ready", b"1")
                    break
                assert time.monotonic() < deadline, "cluster not ready"
                await asyncio.sleep(0.1)
        for n in names:
            async with Client([self.endpoint(n)], timeout=2.0) as c:
                while True:
                    with contextlib.suppress(Exception):
                        ml = await c.member_list()
                        if all(m.name and m.client_urls for m in ml.members):
                            break
                    assert time.monotonic() < deadline, f"{n} does not name every member"
                    await asyncio.sleep(0.1)

    async def status(self, n: str, timeout: float = 1.0) -> pb.StatusResponse:  # noqa: ASYNC109 (a gRPC deadline)
        async with grpc.aio.insecure_channel(self.endpoint(n)) as ch:
            return await rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=timeout)

    async def member_id(self, n: str) -> int:
        return int((await self.status(n, timeout=5.0)).header.member_id)

    async def leader(self, among: Sequence[str] | None = None, limit: float = 15.0,
                     not_: str | None = None) -> str:
        """The member every one of ``among`` names as leader (one of them), waiting up
        to ``limit`` seconds for them to agree."""
        among = list(among or self.running())
        deadline = time.monotonic() + limit
        last: object = None
        while True:
            try:
                sts = {n: await self.status(n) for n in among}
                leads = {s.leader for s in sts.values()}
                ids = {int(s.header.member_id): n for n, s in sts.items()}
                if len(leads) == 1:
                    lead = leads.pop()
                    if lead in ids and ids[lead] != not_:
                        return ids[lead]
                last = {n: (s.leader, s.raftTerm) for n, s in sts.items()}
            except grpc.aio.AioRpcError as e:
                last = e.details()
            if time.monotonic() > deadline:
                raise AssertionError(f"no agreed leader among {among} in {limit}s: {last}")
            await asyncio.sleep(0.05)

    async def hash_kv(self, n: str, revision: int) -> tuple[int, int]:
        """(hash, compact revision) of member ``n``'s keys up to ``revision``."""
        async with grpc.aio.insecure_channel(self.endpoint(n)) as ch:
            r = await rpc_pb2_grpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(revision=revision),
                                                             timeout=10.0)
            return int(r.hash), int(r.compact_revision)

    async def wait_hashes_equal(self, names: Sequence[str], revision: int, limit: float = 20.0) -> int:
        """Until every member in ``names`` has applied ``revision`` and they all give
        the same HashKV at it; returns the hash."""
        deadline = time.monotonic() + limit
        last: object = None
        while True:
            try:
                hashes = {}
                for n in names:
                    st = await self.status(n)
                    if st.header.revision < revision:
                        raise _Behind(f"{n} at revision {st.header.revision}")
                    hashes[n] = await self.hash_kv(n, revision)
                if len(set(hashes.values())) == 1:
                    return next(iter(hashes.values()))[0]
                last = hashes
            except (_Behind, grpc.aio.AioRpcError) as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"HashKV at revision {revision} not equal on {list(names)}: {last}")
            await asyncio.sleep(0.1)


class _Behind(Exception):
    pass


async def side_by_side(tmp: Path, token: str, scenario: Callable[[ProcCluster], Awaitable[dict[str, Any]]],
                       **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``scenario`` on a 3-member real etcd cluster, then on a meshkit one (each in
    its own directory, stopped after); their results, etcd's first."""
    require_reference_binaries()
    assert ETCD is not None
    results: dict[str, dict[str, Any]] = {}
    for kind, argv0 in (("etcd", [ETCD]), ("meshkit", MESHKIT)):
        d = tmp / kind
        d.mkdir()
        p = ProcCluster(d, argv0, token=f"{token}-{kind}", **kwargs)
        try:
            results[kind] = await scenario(p)
        finally:
            p.stop_all()
    return results["etcd"], results["meshkit"]
