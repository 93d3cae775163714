"""The registry page: every service's instances (``meshkit.registry``'s key layout),
their health, weight, zone, version and the TTL left on their lease."""

from __future__ import annotations

import asyncio
from typing import Any

from meshkit.client import Client, EventType, KeyValue
from meshkit.client.kv import prefix_end
from meshkit.dashboard.codec import key_text
from meshkit.dashboard.feeds import Changes, EventStream, PrefixFeed
from meshkit.dashboard.leases import lease_ttls
from meshkit.registry import InvalidValueError, instance_from_value, parse_key

__all__ = ["ServiceRows", "instance_row", "stream_services"]


def instance_row(prefix: str, kv: KeyValue) -> dict[str, Any] | None:
    """One instance as the page shows it, or None for a key that is no instance
    (outside ``<prefix>/<service>/<id>``, or a value saying ``Op: Delete``)."""
    try:
        key = kv.key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parsed = parse_key(prefix, key)
    if parsed is None:
        return None
    service, inst_id = parsed
    row: dict[str, Any] = {
        "key": key_text(kv.key), "service": service, "id": inst_id,
        "lease": f"{kv.lease:x}" if kv.lease else "", "mod_revision": kv.mod_revision,
    }
    try:
        inst = instance_from_value(prefix, key, kv.value)
    except InvalidValueError as e:
        row.update(health="bad value", error=e.detail, addr="", weight=None, zone="", version="",
                   metadata={})
        return row
    if inst is None:
        return None
    # Only passing instances have keys (the registrar withdraws failing ones).
    row.update(health="passing", addr=inst.addr, weight=inst.weight, zone=inst.zone,
               version=inst.version, metadata=dict(inst.metadata))
    return row


class ServiceRows:
    """The instances under the registry prefix, kept from a snapshot and watch events."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.rows: dict[bytes, dict[str, Any]] = {}
        self.leases: dict[bytes, int] = {}

    def reset(self, kvs: list[KeyValue]) -> None:
        self.rows.clear()
        self.leases.clear()
        for kv in kvs:
            self._put(kv)

    def _put(self, kv: KeyValue) -> dict[str, Any] | None:
        row = instance_row(self.prefix, kv)
        if row is None:
            self.rows.pop(kv.key, None)
            self.leases.pop(kv.key, None)
            return None
        self.rows[kv.key] = row
        self.leases[kv.key] = kv.lease
        return row

    def apply(self, ch: Changes) -> tuple[list[dict[str, Any]], list[str], set[int]]:
        """(rows added or changed, keys removed (as shown), leases of the changed rows)."""
        upserts: dict[bytes, dict[str, Any]] = {}
        removed: dict[bytes, str] = {}
        for ev in ch.events:
            k = ev.kv.key
            had = k in self.rows or k in upserts
            row = self._put(ev.kv) if ev.type == EventType.PUT else None
            if row is not None:
                upserts[k] = row
                removed.pop(k, None)
                continue
            self.rows.pop(k, None)
            self.leases.pop(k, None)
            upserts.pop(k, None)
            if had:
                removed[k] = key_text(k)
        leases = {self.leases[k] for k in upserts if self.leases.get(k)}
        return list(upserts.values()), list(removed.values()), leases

    def sorted_rows(self) -> list[dict[str, Any]]:
        return [self.rows[k] for k in sorted(self.rows)]


async def stream_services(es: EventStream, client: Client, prefix: str, *,
                          ttl_refresh: float, limit: int) -> None:
    """``snapshot`` (every instance and TTL), then ``change`` per watch delivery and
    ``ttls`` every ``ttl_refresh`` seconds."""
    base = (prefix.rstrip("/") + "/").encode()
    table = ServiceRows(prefix)

    async def refresh_ttls() -> None:
        while True:
            await asyncio.sleep(ttl_refresh)
            leases = set(table.leases.values())
            if leases:
                await es.send("ttls", {"ttls": await lease_ttls(client, leases)})

    async with PrefixFeed(client, base, prefix_end(base), limit=limit) as feed, \
            asyncio.TaskGroup() as tg:
        ticker = tg.create_task(refresh_ttls())
        async for item in feed:
            if isinstance(item, Changes):
                upserts, removed, leases = table.apply(item)
                await es.send("change", {"revision": item.revision, "upserts": upserts,
                                         "removed": removed,
                                         "ttls": await lease_ttls(client, leases)})
            else:
                table.reset(item.kvs)
                await es.send("snapshot", {
                    "revision": item.revision, "prefix": prefix, "rows": table.sorted_rows(),
                    "ttls": await lease_ttls(client, table.leases.values())})
        ticker.cancel()
