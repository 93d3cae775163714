"""etcdctl's cluster-level read commands against meshkit, next to the real etcd."""

from __future__ import annotations

import json
import re

import pytest

from tests.compat.conftest import Pair
from tests.compat.etcdctl import etcdctl

pytestmark = pytest.mark.etcd


def _status(endpoint: str) -> dict[str, object]:
    out = etcdctl(endpoint, "endpoint", "status", "-w", "json", raw=True)
    assert out.code == 0, out.err
    [entry] = json.loads(out.out)
    return entry["Status"]  # type: ignore[no-any-return]


def test_endpoint_status_has_etcds_shape(pair: Pair) -> None:
    etcdctl(pair.etcd.endpoint, "put", "k", "v")
    etcdctl(pair.meshkit.endpoint, "put", "k", "v")
    want, got = _status(pair.etcd.endpoint), _status(pair.meshkit.endpoint)
    assert set(got) == set(want)
    assert got["leader"] == got["header"]["member_id"]  # type: ignore[index]
    assert got["raftTerm"] == want["raftTerm"] == 2
    # A single member: committed == applied, and one put past the bootstrap.
    assert got["raftIndex"] == got["raftAppliedIndex"]
    assert got["header"]["revision"] == want["header"]["revision"] == 2  # type: ignore[index]
    assert got["dbSize"] > 0  # type: ignore[operator]
    assert got["version"] == "3.4.0"


def test_endpoint_health_commits_a_proposal(pair: Pair) -> None:
    for ep in (pair.etcd.endpoint, pair.meshkit.endpoint):
        out = etcdctl(ep, "endpoint", "health")
        assert out.code == 0
        # etcdctl prints the verdict on stderr
        assert re.fullmatch(r"<endpoint> is healthy: successfully committed proposal: took = \S+\n", out.err)


def test_member_list_same_as_etcd(pair: Pair) -> None:
    def norm(ep: str, port: int, peer: int) -> str:
        out = etcdctl(ep, "member", "list", raw=True)
        assert out.code == 0, out.err
        return re.sub(r"^[0-9a-f]{1,16}", "<id>", out.out).replace(str(port), "<port>").replace(str(peer), "<peer>")

    want = norm(pair.etcd.endpoint, pair.etcd.client_port, pair.etcd.peer_port)
    got = norm(pair.meshkit.endpoint, pair.meshkit.client_port, pair.meshkit.peer_port)
    assert got == want
    assert got.startswith("<id>, started, default, http://127.0.0.1:<peer>, http://127.0.0.1:<port>, false")


def test_alarm_list_is_empty_on_both(pair: Pair) -> None:
    assert etcdctl(pair.etcd.endpoint, "alarm", "list") == etcdctl(pair.meshkit.endpoint, "alarm", "list")
    assert etcdctl(pair.meshkit.endpoint, "alarm", "list").out == ""


def test_member_and_cluster_ids_equal_etcds_for_the_same_flags(pair: Pair) -> None:
    # The ids derive from the advertised peer URLs and the cluster token, as in
    # etcd; with the same URLs the two servers would agree.
    from meshkit.server.etcdserver import ids

    for sp in (pair.etcd, pair.meshkit):
        st = _status(sp.endpoint)
        mid = ids.member_id([f"http://127.0.0.1:{sp.peer_port}"], "etcd-cluster")
        assert st["header"]["member_id"] == mid  # type: ignore[index]
        assert st["header"]["cluster_id"] == ids.cluster_id([mid])  # type: ignore[index]
