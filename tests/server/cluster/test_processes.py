"""Three `meshkit server` processes on loopback (gRPC peer transport): etcdctl
member list/add/remove and endpoint status --cluster, side by side with three real
etcd processes. (kill -9 of a member and its restart: test_linearizable_faults.py,
under load.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.server.cluster.proc_cluster import MESHKIT, ProcCluster
from tests.support.procs import ETCD, ETCDCTL, free_port, require_reference_binaries

pytestmark = pytest.mark.slow


class Proc3(ProcCluster):
    """Members p0, p1, p2 of `meshkit server` or of the real etcd (``argv0``), with
    etcdctl pointed at all three (also used by test_etcdctl_ops.py and the snapshot
    restore tests)."""

    def __init__(self, tmp: Path, argv0: list[str], token: str) -> None:
        super().__init__(tmp, argv0, token)

    def etcdctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert ETCDCTL is not None
        return subprocess.run([ETCDCTL, "--endpoints", ",".join(self.endpoints()), *args],
                              capture_output=True, text=True, timeout=30,
                              env={**os.environ, "ETCDCTL_API": "3"}, check=False)


async def _wait_cluster(p: ProcCluster, limit: float = 30.0) -> None:
    await p.wait_ready(limit=limit)


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
    for kind, argv0 in (("meshkit", MESHKIT), ("etcd", [ETCD])):
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
