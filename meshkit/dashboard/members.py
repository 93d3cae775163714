"""The members page: every member's status (leader, Raft term and index, database size),
health, and the cluster's alarms. etcd has no watch for these: the page's event stream
reads them every few seconds on the server side and sends each reading."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from meshkit._internal.errors import (
    AuthFailedError,
    AuthNotEnabledError,
    InvalidAuthTokenError,
    MeshkitError,
    PermissionDeniedError,
    UserEmptyError,
)
from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.client import Client, Member
from meshkit.client.endpoints import parse_endpoint
from meshkit.client.raw import RawAPI, RpcFailure
from meshkit.dashboard.feeds import EventStream

__all__ = ["StatusProbes", "members_snapshot", "stream_members"]

# A refusal for lack of rights still proves the member served a linearizable read
# (etcd checks permissions after the read barrier): etcdctl's endpoint health rule.
_ANSWERED = (PermissionDeniedError, UserEmptyError, InvalidAuthTokenError, AuthFailedError)


class StatusProbes:
    """One client per member endpoint for Status and health, without a user: etcd
    answers Status to anyone, and a health read refused for rights still proves the
    member serves. Owned by the dashboard; closing closes every client."""

    def __init__(self, make: Callable[[str], Client]) -> None:
        self._make = make
        self._clients: dict[str, Client] = {}
        self._closed = False

    async def __aenter__(self) -> StatusProbes:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def client(self, endpoint: str) -> Client:
        if self._closed:
            raise RuntimeError("the status probes are closed")
        c = self._clients.get(endpoint)
        if c is None:
            c = self._clients[endpoint] = self._make(endpoint)
        return c

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()


def _endpoint(m: Member) -> str | None:
    """The member's first usable client URL (kept whole: ``https://`` means TLS)."""
    for url in m.client_urls:
        try:
            parse_endpoint(url)
        except ValueError:
            continue
        return url
    return None


async def _member(m: Member, probes: StatusProbes, call_timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"{m.id:x}", "name": m.name, "peer_urls": m.peer_urls, "client_urls": m.client_urls,
        "is_learner": m.is_learner, "status": None, "status_error": None, "health": None,
    }
    ep = _endpoint(m)
    if ep is None:
        out["status_error"] = "not started (no client URL yet)" if not m.name else "no usable client URL"
        out["health"] = {"healthy": False, "error": out["status_error"], "took_ms": None}
        return out
    c = probes.client(ep)
    try:
        st = await c.status(timeout=call_timeout)
    except MeshkitError as e:
        out["status_error"] = str(e)
    else:
        out["status"] = {
            "version": st.version, "db_size": st.db_size, "db_size_in_use": st.db_size_in_use,
            "leader": f"{st.leader:x}" if st.leader else "", "raft_term": st.raft_term,
            "raft_index": st.raft_index, "raft_applied_index": st.raft_applied_index,
            "errors": st.errors, "is_learner": st.is_learner, "revision": st.header.revision,
        }
    t0 = time.perf_counter()
    health: dict[str, Any] = {"healthy": True, "error": None}
    try:
        await c.get(b"health", timeout=call_timeout)
    except _ANSWERED:
        pass
    except MeshkitError as e:
        health = {"healthy": False, "error": str(e)}
    health["took_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    if health["healthy"] and out["status"] and "etcdserver: no leader" in out["status"]["errors"]:
        health = {"healthy": False, "error": "no leader", "took_ms": health["took_ms"]}
    out["health"] = health
    return out


async def members_snapshot(client: Client, probes: StatusProbes, *, call_timeout: float) -> dict[str, Any]:
    """Members (through the user's client), each member's status and health (probes),
    and the alarms (the user's client)."""
    ml = await client.member_list(timeout=call_timeout)
    members = await asyncio.gather(*(_member(m, probes, call_timeout) for m in ml.members))
    leader = next((m["status"]["leader"] for m in members if m["status"] and m["status"]["leader"]),
                  "")
    for m in members:
        m["is_leader"] = bool(leader) and m["id"] == leader
    alarms: list[dict[str, str]] = []
    alarms_error: str | None = None
    try:
        resp = await RawAPI(client).unary(
            "maintenance", "Alarm",
            rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET, memberID=0,
                                 alarm=rpc_pb2.AlarmType.NONE),
            timeout=call_timeout, retry_sent=True)
        alarms = [{"member": f"{a.memberID:x}", "alarm": rpc_pb2.AlarmType.Name(a.alarm)}
                  for a in resp.alarms]
    except RpcFailure as e:
        alarms_error = e.details or e.code.name
    terms = [m["status"]["raft_term"] for m in members if m["status"]]
    revs = [m["status"]["revision"] for m in members if m["status"]]
    return {
        "cluster_id": f"{ml.header.cluster_id:x}", "revision": max(revs, default=ml.header.revision),
        "raft_term": max(terms) if terms else ml.header.raft_term, "leader": leader,
        "members": sorted(members, key=lambda m: (m["name"], m["id"])),
        "alarms": alarms, "alarms_error": alarms_error, "time": time.time(),
    }


async def stream_members(es: EventStream, client: Client, probes: StatusProbes, *,
                         interval: float, call_timeout: float) -> None:
    """A ``members`` event now and every ``interval`` seconds (a failed reading is sent
    as ``members-error`` and the next one is tried)."""
    while True:
        try:
            snap = await members_snapshot(client, probes, call_timeout=call_timeout)
        except (AuthFailedError, InvalidAuthTokenError, UserEmptyError, AuthNotEnabledError):
            raise  # the session's user is no longer accepted: end the stream
        except MeshkitError as e:
            await es.send("members-error", {"error": str(e), "time": time.time()})
        else:
            await es.send("members", snap)
        await asyncio.sleep(interval)
