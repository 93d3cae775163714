"""etcd3gw (the Python client of etcd's grpc-gateway) against meshkit's gateway and
against the real etcd: the same calls give the same results.

etcd3gw is synchronous (requests), so each scenario runs in a thread while the
in-process member keeps serving on the test's event loop. It finds its API
prefix from ``/version`` (``3.4`` and later: ``/v3/``), which the client app
(``make_client_app``) serves next to the gateway.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.compat.test_gateway import Gw, etcd_gateway, meshkit_gateway

etcd3gw = pytest.importorskip("etcd3gw")
exceptions = pytest.importorskip("etcd3gw.exceptions")

pytestmark = pytest.mark.etcd

_IDS = ("cluster_id", "member_id", "raft_term")


def _norm(obj: Any, lease_ids: set[int]) -> Any:
    """Ids that differ between two clusters: cluster, member, term, granted leases."""
    if isinstance(obj, dict):
        return {k: (f"<{k}>" if k in _IDS else _norm(v, lease_ids)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_norm(v, lease_ids) for v in obj]
    if isinstance(obj, (int, str)) and not isinstance(obj, bool) and str(obj) in {str(i) for i in lease_ids}:
        return "<lease>"
    return obj


def _next_events(events: Any, n: int) -> list[Any]:
    """The next ``n`` events of an etcd3gw watch iterator (which blocks), or what came in 10 s."""
    got: queue.Queue[Any] = queue.Queue()

    def pull() -> None:
        for _ in range(n):
            got.put(next(events))

    threading.Thread(target=pull, daemon=True).start()
    out = []
    for _ in range(n):
        try:
            out.append(got.get(timeout=10))
        except queue.Empty:
            break
    return out


def scenario(url: str) -> list[Any]:
    u = urlsplit(url)
    c = etcd3gw.client(host=u.hostname, port=u.port, timeout=10)
    leases: set[int] = set()
    out: list[Any] = [c.api_path]

    # KV
    out.append(c.put("foo", "bar"))
    out.append(c.get("foo"))
    out.append(c.get("foo", metadata=True))
    out.append(c.get("missing"))
    c.put("foo/a", "1")
    c.put("foo/b", "2")
    out.append(c.get_prefix("foo/"))
    out.append(c.get_prefix("foo/", sort_order="descend", sort_target="key"))
    out.append(c.get_all())
    out.append(c.get("foo", keys_only=True, metadata=True))
    out.append([c.create("new", "v"), c.create("new", "v2"), c.get("new")])
    out.append([c.replace("new", "v", "w"), c.replace("new", "v", "x"), c.get("new")])
    out.append([c.delete("new"), c.delete("new")])
    out.append([c.delete_prefix("foo/"), c.get_prefix("foo/")])
    out.append(c.transaction({"compare": [], "success": [{"request_range": {"key": "Zm9v"}}], "failure": []}))

    # Leases
    lease = c.lease(ttl=60)
    leases.add(lease.id)
    out.append(lease.ttl() in (59, 60))
    c.put("leased", "v", lease=lease)
    c.put("leased2", "v", lease=lease)
    out.append(sorted(lease.keys()))
    out.append(lease.refresh())
    out.append(c.get("leased", metadata=True))
    out.append(lease.revoke())
    out.append([c.get("leased"), lease.keys(), lease.refresh()])

    # Watches, with cancel
    events, cancel = c.watch("wk")
    time.sleep(0.3)
    c.put("wk", "1")
    c.delete("wk")
    out.append(_next_events(events, 2))
    cancel()
    events, cancel = c.watch_prefix("wp/", prev_kv=True)
    time.sleep(0.3)
    c.put("wp/1", "a")
    c.put("wp/1", "b")
    c.put("other", "x")
    c.delete("wp/1")
    out.append(_next_events(events, 3))
    cancel()
    events, cancel = c.watch("wk", start_revision=2)
    out.append(_next_events(events, 1))
    cancel()
    threading.Timer(0.3, c.put, ("once", "1")).start()
    out.append(c.watch_once("once", timeout=10))
    try:
        c.watch_once("never", timeout=0.5)
    except exceptions.WatchTimedOut as e:
        out.append(type(e).__name__)

    # etcd3gw's own lock (a txn on /locks/<name> with a lease)
    lock = c.lock("mylock", ttl=30)
    other = c.lock("mylock", ttl=30)
    out.append([lock.acquire(), lock.is_acquired(), other.acquire(), other.is_acquired()])
    assert lock.lease is not None and other.lease is not None
    leases |= {lock.lease.id, other.lease.id}
    out.append(lock.refresh())
    out.append([lock.release(), lock.release(), other.acquire(), other.is_acquired(), other.release()])
    with c.lock("ctx", ttl=30) as held:
        assert held.lease is not None
        leases.add(held.lease.id)
        out.append(held.is_acquired())
    out.append(held.is_acquired())

    # Maintenance and cluster
    status = c.status()
    out.append(sorted(status))
    out.append(status["header"])
    members = c.members()
    out.append([(m["name"], sorted(m)) for m in members])

    # Errors: the HTTP status picks etcd3gw's exception; the text is etcd's JSON.
    for call in (lambda: c.put("k", "v", lease=etcd3gw.Lease(31337, c)),
                 lambda: c.post(c.get_url("/auth/enable"), json={}),
                 lambda: c.post(c.get_url("/kv/range"), json={}),
                 lambda: c.post(c.get_url("/nothing"), json={})):
        try:
            call()
            out.append("no error")
        except exceptions.Etcd3Exception as e:
            out.append((type(e).__name__, e.args, e.detail_text))
    return _norm(out, leases)


async def test_etcd3gw_same_results(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "m").mkdir()
    results: list[list[Any]] = []
    for serve in (etcd_gateway, meshkit_gateway):
        async with serve(tmp_path / ("e" if serve is etcd_gateway else "m")) as gw:
            assert isinstance(gw, Gw)
            results.append(await asyncio.to_thread(scenario, gw.url))
    etcd, mesh = results
    assert etcd[0] == "/v3/"
    assert mesh == etcd
