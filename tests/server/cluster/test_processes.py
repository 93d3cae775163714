"""Three `meshkit server` processes on loopback (gRPC peer transport): kill -9 a
member, restart it, it catches up; etcdctl member list/add/remove and endpoint
status --cluster, side by side with three real etcd processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshkit.client import Client
from tests.server.conftest import wait_ready
from tests.support.procs import ETCD, ETCDCTL, free_port, require_reference_binaries

pytestmark = pytest.mark.slow


class Proc3:
    def __init__(self, tmp: Path, argv0: list[str], token: str) -> None:
        self.tmp = tmp
        self.argv0 = argv0
        self.names = ["p0", "p1", "p2"]
        self.cport = {n: free_port() for n in self.names}
        self.pport = {n: free_port() for n in self.names}
        self.token = token
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def cluster_flag(self) -> str:
        return ",".join(f"{n}=http://127.0.0.1:{self.pport[n]}" for n in self.names)

    def flags(self, n: str) -> list[str]:
        return [
            "--name", n, "--data-dir", str(self.tmp / n),
            "--listen-client-urls", f"http://127.0.0.1:{self.cport[n]}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.cport[n]}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.pport[n]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.pport[n]}",
            "--initial-cluster", self.cluster_flag(), "--initial-cluster-token", self.token,
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]

    def start(self, n: str) -> None:
        log = open(self.tmp / f"{n}.log", "ab")
        self.procs[n] = subprocess.Popen([*self.argv0, *self.flags(n)], stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.tmp, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def endpoints(self) -> str:
        return ",".join(f"127.0.0.1:{self.cport[n]}" for n in self.names)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)

    def etcdctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert ETCDCTL is not None
        return subprocess.run([ETCDCTL, "--endpoints", self.endpoints(), *args], capture_output=True,
                              text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"}, check=False)


async def _wait_cluster(p: Proc3, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    for n in p.names:
        await wait_ready(f"127.0.0.1:{p.cport[n]}", limit=limit)
    async with Client(p.endpoints().split(","), timeout=2.0) as c:
        while True:
            try:
                await c.put(b"ready", b"1")
                ml = await c.member_list()
                if all(m.client_urls for m in ml.members):
                    return
            except Exception:
                pass
            assert time.monotonic() < deadline, "cluster not ready"
            await asyncio.sleep(0.1)


async def test_kill9_member_restarts_and_catches_up(tmp_path: Path) -> None:
    p = Proc3(tmp_path, [sys.executable, "-m", "meshkit", "server"], "mk")
    try:
        for n in p.names:
            p.start(n)
        await _wait_cluster(p)
        async with Client(p.endpoints().split(","), timeout=2.0) as c:
            for i in range(20):
                await c.put(b"a/%02d" % i, b"v")
            p.procs["p1"].send_signal(signal.SIGKILL)
            p.procs["p1"].wait(10)
            for i in range(20, 60):
                for _ in range(5):  # a write in flight to a dead leader times out: retry it
                    try:
                        await c.put(b"a/%02d" % i, b"v")
                        break
                    except Exception:
                        await asyncio.sleep(0.2)
                else:
                    raise AssertionError("the cluster stopped accepting writes")
        p.start("p1")
        async with Client([f"127.0.0.1:{p.cport['p1']}"], timeout=5.0) as c:
            deadline = time.monotonic() + 20
            while True:
                try:
                    r = await c.get(b"a/", prefix=True, keys_only=True)
                    if len(r.kvs) == 60:
                        break
                except Exception:
                    pass
                assert time.monotonic() < deadline, "restarted member did not catch up"
                await asyncio.sleep(0.1)
    finally:
        p.stop_all()


def _status_shape(out: str) -> list[tuple[str, bool]]:
    rows = json.loads(out)
    leaders = {r["Status"]["leader"] for r in rows}
    assert len(leaders) == 1
    terms = {r["Status"]["raftTerm"] for r in rows}
    assert len(terms) == 1
    return sorted((r["Endpoint"].rsplit(":", 1)[0], r["Status"]["header"]["member_id"] == r["Status"]["leader"])
                  for r in rows)


async def test_etcdctl_against_meshkit_and_etcd_clusters(tmp_path: Path) -> None:
    require_reference_binaries()
    assert ETCD is not None
    results = {}
    for kind, argv0 in (("meshkit", [sys.executable, "-m", "meshkit", "server"]), ("etcd", [ETCD])):
        d = tmp_path / kind
        d.mkdir()
        p = Proc3(d, argv0, "tok")
        try:
            for n in p.names:
                p.start(n)
            await _wait_cluster(p)
            ml = p.etcdctl("member", "list", "-w", "json")
            assert ml.returncode == 0, ml.stderr
            members = json.loads(ml.stdout)["members"]
            st = p.etcdctl("endpoint", "status", "--cluster", "-w", "json")
            assert st.returncode == 0, st.stderr
            shape = _status_shape(st.stdout)
            # both refuse membership changes until every voter has been connected
            # for 5 s ("etcdserver: unhealthy cluster")
            new_peer = f"http://127.0.0.1:{free_port()}"
            add = p.etcdctl("member", "add", "p3", "--peer-urls", new_peer, "--learner")
            early = add.stderr.strip().splitlines()[-1] if add.returncode else "accepted"
            for _ in range(30):
                if add.returncode == 0:
                    break
                assert "etcdserver: unhealthy cluster" in add.stderr, add.stderr
                await asyncio.sleep(0.5)
                add = p.etcdctl("member", "add", "p3", "--peer-urls", new_peer, "--learner")
            assert add.returncode == 0, add.stderr
            added_id = next(line.split()[1] for line in add.stdout.splitlines() if line.startswith("Member "))
            ml2 = json.loads(p.etcdctl("member", "list", "-w", "json").stdout)["members"]
            rm = p.etcdctl("member", "remove", added_id)
            assert rm.returncode == 0, rm.stderr
            rm2 = p.etcdctl("member", "remove", added_id)
            results[kind] = {
                "early_add": early,
                "members": sorted(
                    (m["name"], tuple(m["peerURLs"]) == (f"http://127.0.0.1:{p.pport[m['name']]}",),
                     tuple(m["clientURLs"]) == (f"http://127.0.0.1:{p.cport[m['name']]}",))
                    for m in members),
                "status": [(e.split("//")[-1].split(":")[0], lead) for e, lead in shape],
                "add": add.stdout.splitlines()[0].split(" added")[0].split()[0],
                "learner_listed": [m.get("isLearner", False) for m in ml2 if m["peerURLs"] == [new_peer]],
                # etcdctl prints ids with %16x: a short id is padded with spaces
                "remove": " ".join(rm.stdout.replace(added_id, "ID").split(" removed")[0].split()),
                "remove_again": (rm2.returncode, rm2.stderr.strip().splitlines()[-1].split("rpc error:")[-1]),
            }
        finally:
            p.stop_all()
    mk, et = results["meshkit"], results["etcd"]
    for key in ("early_add", "members", "status", "add", "learner_listed", "remove", "remove_again"):
        assert mk[key] == et[key], key
