"""The locks and elections page: keys laid out by etcd's Go ``concurrency`` package
(``meshkit.concurrency``, ``etcdctl lock``/``elect``): ``<name>/<lease id in hex>``,
held by that lease. The oldest key (lowest create revision) of a name holds the lock
or is the leader; the others wait in create-revision order.

A name whose keys all have empty values is shown as a lock (Mutex, ``etcdctl lock``
write nothing); one with a value as an election (the value is the proposal).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from meshkit._internal.errors import MeshkitError, PermissionDeniedError
from meshkit.client import Client, EventType, KeyValue
from meshkit.client.kv import prefix_end
from meshkit.dashboard.codec import b64, bytes_view, key_text
from meshkit.dashboard.feeds import Changes, EventStream, PrefixFeed, scan
from meshkit.dashboard.keys import key_range_of
from meshkit.dashboard.leases import lease_ttls

__all__ = ["LockScanDeniedError", "LockTable", "lock_name", "stream_locks"]

VALUE_BYTES = 4096


def lock_name(kv: KeyValue) -> bytes | None:
    """The lock/election name of a key ``<name>/<its lease in hex>``, else None."""
    if not kv.lease:
        return None
    name, sep, last = kv.key.rpartition(b"/")
    if not sep or not name or last != f"{kv.lease:x}".encode():
        return None
    return name


class LockTable:
    """Names -> their waiting keys, from snapshots and watch events."""

    def __init__(self) -> None:
        self.groups: dict[bytes, dict[bytes, KeyValue]] = {}

    def reset(self, kvs: Iterable[KeyValue], within: tuple[bytes, bytes] | None = None) -> set[bytes]:
        """Replace what lies in ``within`` (a key range; None: everything) by ``kvs``;
        returns the names that changed."""
        changed: set[bytes] = set()
        for name in list(self.groups):
            if within is None or _in_range(name + b"/", within):
                changed.add(name)
                del self.groups[name]
        for kv in kvs:
            found = lock_name(kv)
            if found is not None:
                self.groups.setdefault(found, {})[kv.key] = kv
                changed.add(found)
        return changed

    def apply(self, ch: Changes) -> set[bytes]:
        changed: set[bytes] = set()
        for ev in ch.events:
            kv = ev.kv
            name = kv.key.rpartition(b"/")[0]
            if ev.type == EventType.PUT and lock_name(kv) is not None:
                self.groups.setdefault(name, {})[kv.key] = kv
                changed.add(name)
                continue
            g = self.groups.get(name)
            if g is not None and g.pop(kv.key, None) is not None:
                changed.add(name)
                if not g:
                    del self.groups[name]
        return changed

    def leases(self, names: Iterable[bytes] | None = None) -> set[int]:
        pick = self.groups if names is None else {n: self.groups[n] for n in names if n in self.groups}
        return {kv.lease for g in pick.values() for kv in g.values()}

    def view(self, name: bytes) -> dict[str, Any] | None:
        g = self.groups.get(name)
        if not g:
            return None
        kvs = sorted(g.values(), key=lambda kv: kv.create_revision)
        entries = [{"key": key_text(kv.key), "lease": f"{kv.lease:x}",
                    "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
                    "value": bytes_view(kv.value, limit=VALUE_BYTES)} for kv in kvs]
        kind = "election" if any(kv.value for kv in kvs) else "lock"
        return {"name": key_text(name), "id": b64(name), "kind": kind, "holder": entries[0],
                "waiters": entries[1:]}

    def views(self) -> list[dict[str, Any]]:
        return [v for n in sorted(self.groups) if (v := self.view(n)) is not None]


def _in_range(key: bytes, rng: tuple[bytes, bytes]) -> bool:
    start, end = rng
    return key >= start and (end == b"\x00" or key < end)


class LockScanDeniedError(MeshkitError):
    """The user may not read a range the locks page looks in."""

    def __init__(self, prefix: bytes) -> None:
        where = f"under {key_text(prefix)!r}" if prefix != b"\x00" else "in the whole keyspace"
        super().__init__(f"etcdserver: permission denied reading keys {where}: start the "
                         "dashboard with --lock-prefix for prefixes your users can read")


async def _snapshot(client: Client, rng: tuple[bytes, bytes], limit: int) -> tuple[list[KeyValue], int]:
    """The lock keys in ``rng`` at one revision: a keys-only scan, then the values of
    the names found (an election's proposals), read at that same revision."""
    try:
        kvs, rev = await scan(client, rng[0], rng[1], keys_only=True, limit=limit)
    except PermissionDeniedError:
        raise LockScanDeniedError(rng[0]) from None
    names = {n for kv in kvs if (n := lock_name(kv)) is not None}
    out: list[KeyValue] = []
    for name in sorted(names):
        base = name + b"/"
        r = await client.get(base, prefix_end(base), revision=rev)
        out.extend(kv for kv in r.kvs if lock_name(kv) == name)
    return out, rev


async def stream_locks(es: EventStream, client: Client, prefixes: Iterable[str], *,
                       ttl_refresh: float, limit: int) -> None:
    """``snapshot`` of every lock and election under ``prefixes``, then ``change``
    (names updated or gone) per watch delivery and ``ttls`` every ``ttl_refresh`` s."""
    table = LockTable()
    ranges = [key_range_of(p.encode()) for p in dict.fromkeys(prefixes)]
    lock = asyncio.Lock()  # one range's update is sent whole before another's

    async def send_changed(changed: set[bytes], revision: int) -> None:
        upserts = [v for n in sorted(changed) if (v := table.view(n)) is not None]
        removed = [b64(n) for n in sorted(changed) if n not in table.groups]
        await es.send("change", {"revision": revision, "upserts": upserts, "removed": removed,
                                 "ttls": await lease_ttls(client, table.leases(changed))})

    async def follow(rng: tuple[bytes, bytes]) -> None:
        kvs, rev = await _snapshot(client, rng, limit)
        async with lock:
            table.reset(kvs, rng)
        ready.release()
        async with PrefixFeed(client, rng[0], rng[1], start_revision=rev, keys_only=True,
                              limit=limit) as feed:
            async for item in feed:
                async with lock:
                    if isinstance(item, Changes):
                        await send_changed(table.apply(item), item.revision)
                    else:  # compacted: read this range again
                        kvs, rev = await _snapshot(client, rng, limit)
                        await send_changed(table.reset(kvs, rng), rev)

    async def refresh_ttls() -> None:
        while True:
            await asyncio.sleep(ttl_refresh)
            leases = table.leases()
            if leases:
                await es.send("ttls", {"ttls": await lease_ttls(client, leases)})

    ready = asyncio.Semaphore(0)
    async with asyncio.TaskGroup() as tg:
        for rng in ranges:
            tg.create_task(follow(rng))
        for _ in ranges:
            await ready.acquire()
        async with lock:
            await es.send("snapshot", {"prefixes": [key_text(p.encode()) for p in prefixes],
                                       "groups": table.views(),
                                       "ttls": await lease_ttls(client, table.leases())})
        tg.create_task(refresh_ttls())
