"""The config center page: every published config (``meshkit.configcenter``'s layout),
its versions, diffs between them, and rollback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from meshkit.client import Client, EventType, KeyValue
from meshkit.client.kv import prefix_end
from meshkit.configcenter import ConfigStore, ConfigVersion, DocumentError
from meshkit.dashboard.codec import key_text
from meshkit.dashboard.feeds import Changes, EventStream, PrefixFeed, scan

__all__ = ["config_summary", "current_configs", "stream_configs", "version_json"]

CURRENT = b"/@current"


def _name_of(prefix: str, key: bytes) -> str | None:
    p = prefix.encode()
    if not key.startswith(p) or not key.endswith(CURRENT) or len(key) <= len(p) + len(CURRENT):
        return None
    try:
        return key[len(p):-len(CURRENT)].decode("utf-8")
    except UnicodeDecodeError:
        return None


def config_summary(prefix: str, kv: KeyValue) -> dict[str, Any] | None:
    """A config's published version for the list (None for keys that are not ``@current``)."""
    name = _name_of(prefix, kv.key)
    if name is None:
        return None
    namespace, _, app = name.rpartition("/")
    out: dict[str, Any] = {"name": name, "namespace": namespace, "app": app}
    try:
        v = ConfigVersion.from_kv(kv)
    except DocumentError as e:
        out["error"] = str(e)
        out["revision"] = kv.mod_revision
        return out
    out.update(v.summary())
    return out


def version_json(v: ConfigVersion) -> dict[str, Any]:
    """One version with its document (as pushed, and parsed)."""
    out = v.summary()
    out["text"] = v.text
    out["data"] = json.dumps(v.data, indent=2, sort_keys=True, ensure_ascii=False)
    return out


async def current_configs(client: Client, prefix: str, *, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every config's published version, as of one revision."""
    p = prefix.encode()
    keys, rev = await scan(client, p, prefix_end(p), keys_only=True, limit=limit)
    wanted = [kv.key for kv in keys if _name_of(prefix, kv.key) is not None]
    sem = asyncio.Semaphore(16)

    async def one(key: bytes) -> KeyValue | None:
        async with sem:
            r = await client.get(key, revision=rev)
            return r.kvs[0] if r.kvs else None

    kvs = await asyncio.gather(*(one(k) for k in wanted))
    rows = [s for kv in kvs if kv is not None and (s := config_summary(prefix, kv)) is not None]
    return sorted(rows, key=lambda r: r["name"]), rev


async def stream_configs(es: EventStream, client: Client, prefix: str, *, limit: int) -> None:
    """``snapshot`` (every config's published version), then ``change`` when a config
    is published or rolled back (or its ``@current`` deleted)."""
    rows, rev = await current_configs(client, prefix, limit=limit)
    await es.send("snapshot", {"prefix": prefix, "revision": rev, "configs": rows})
    p = prefix.encode()
    async with PrefixFeed(client, p, prefix_end(p), start_revision=rev, keys_only=True,
                          limit=limit) as feed:
        async for item in feed:
            if isinstance(item, Changes):
                upserts: list[dict[str, Any]] = []
                removed: list[str] = []
                for ev in item.events:
                    name = _name_of(prefix, ev.kv.key)
                    if name is None:
                        continue
                    if ev.type == EventType.PUT:
                        s = config_summary(prefix, ev.kv)
                        if s is not None:
                            upserts.append(s)
                    else:
                        removed.append(name)
                if upserts or removed:
                    await es.send("change", {"revision": item.revision, "upserts": upserts,
                                             "removed": removed})
            else:
                rows, rev = await current_configs(client, prefix, limit=limit)
                await es.send("snapshot", {"prefix": prefix, "revision": rev, "configs": rows})


async def config_history(store: ConfigStore, name: str) -> dict[str, Any]:
    versions = await store.history(name)
    cur, rev = await store.read_current(name)
    return {"name": name, "revision": rev, "current_revision": cur.revision if cur else 0,
            "versions": [v.summary() for v in reversed(versions)],
            "key": key_text(store.name(name).current_key)}
