"""The key browser's reads and writes: a prefix as a tree, one key with its lease,
a key's history across revisions, and guarded put/delete."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

from meshkit.client import (
    Client,
    Cmp,
    Event,
    EventType,
    GetResult,
    KeyValue,
    Op,
    WatchCompactedError,
)
from meshkit.client.kv import prefix_end
from meshkit.dashboard.codec import b64, bytes_view, key_text, pretty

__all__ = [
    "DELIMITER",
    "child_changes",
    "delete_key",
    "get_key",
    "key_history",
    "key_range_of",
    "list_children",
    "put_key",
]

DELIMITER = b"/"
HISTORY_VALUE_BYTES = 16 * 1024  # each history entry shows this much of its value


def key_range_of(prefix: bytes) -> tuple[bytes, bytes]:
    """``[key, range_end)`` of every key starting with ``prefix`` ("" = every key)."""
    if not prefix:
        return b"\x00", b"\x00"
    return prefix, prefix_end(prefix)


def _meta(kv: KeyValue) -> dict[str, Any]:
    return {
        "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
        "version": kv.version, "lease": f"{kv.lease:x}" if kv.lease else "",
    }


def _child(prefix: bytes, key: bytes) -> tuple[bytes, bool]:
    """(the child of ``prefix`` that holds ``key``, whether it is a directory)."""
    rest = key[len(prefix):]
    i = rest.find(DELIMITER)
    if i >= 0 and i + 1 < len(rest):
        return rest[:i + 1], True
    return rest, False


def _child_json(prefix: bytes, name: bytes, is_dir: bool, kv: KeyValue | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": key_text(name), "key": b64(prefix + name), "dir": is_dir}
    if kv is not None and not is_dir:
        out.update(_meta(kv))
    return out


async def list_children(client: Client, prefix: bytes, *, limit: int = 1000,
                        page: int = 500) -> dict[str, Any]:
    """The direct children of ``prefix``: keys, and "directories" (the next ``/``).

    A key ending in ``/`` right after the prefix (``a/``) is a key, not a directory.
    Reads pages of keys only, skipping the inside of each directory found, all at the
    revision of the first page; at most ``limit`` children (``truncated`` past it).
    """
    start, end = key_range_of(prefix)
    children: dict[tuple[bytes, bool], dict[str, Any]] = {}
    cursor = start
    rev = 0
    truncated = False
    pages = 0
    while True:
        r = await client.get(cursor, end, revision=rev, limit=page, keys_only=True)
        pages += 1
        if rev == 0:
            rev = r.header.revision
        last_dir: bytes | None = None
        for kv in r.kvs:
            name, is_dir = _child(prefix, kv.key)
            last_dir = name if is_dir else None
            if not name:
                continue  # the prefix itself is a key: listed one level up
            if (name, is_dir) not in children:
                if len(children) >= limit:
                    truncated = True
                    break
                children[(name, is_dir)] = _child_json(prefix, name, is_dir, kv)
        if truncated or not r.more or not r.kvs:
            break
        if last_dir is not None:
            cursor = prefix_end(prefix + last_dir)
            if end != b"\x00" and cursor >= end:
                break
        else:
            cursor = r.kvs[-1].key + b"\x00"
        if pages >= 4 * (limit // page + 1):
            truncated = True
            break
    items = sorted(children.values(), key=lambda c: (not c["dir"], c["name"]))
    return {"prefix": key_text(prefix), "prefix_b64": b64(prefix), "revision": rev,
            "children": items, "truncated": truncated}


async def dir_exists(client: Client, dir_prefix: bytes, revision: int) -> bool:
    r = await client.get(dir_prefix, prefix_end(dir_prefix), revision=revision, limit=1,
                         keys_only=True)
    return bool(r.kvs)


async def child_changes(client: Client, prefix: bytes, events: list[Event]) -> dict[str, Any]:
    """What a batch of events changes in the listing of ``prefix``: children to add or
    update, children gone (a directory goes when its last key does), and the keys
    touched (so the page can refresh the key it shows)."""
    upserts: dict[tuple[bytes, bool], dict[str, Any]] = {}
    gone: set[tuple[bytes, bool]] = set()
    dirs_to_check: set[bytes] = set()
    touched: list[dict[str, Any]] = []
    rev = events[-1].kv.mod_revision if events else 0
    for ev in events:
        name, is_dir = _child(prefix, ev.kv.key)
        touched.append({"key": b64(ev.kv.key), "type": ev.type.name,
                        "mod_revision": ev.kv.mod_revision})
        if not name:
            continue
        if ev.type == EventType.PUT:
            upserts[(name, is_dir)] = _child_json(prefix, name, is_dir, ev.kv)
            gone.discard((name, is_dir))
            dirs_to_check.discard(name)
        elif is_dir:
            dirs_to_check.add(name)
        else:
            upserts.pop((name, False), None)
            gone.add((name, False))
    for d in dirs_to_check:
        if await dir_exists(client, prefix + d, rev):
            upserts.setdefault((d, True), _child_json(prefix, d, True, None))
        else:
            upserts.pop((d, True), None)
            gone.add((d, True))
    return {"revision": rev, "upserts": list(upserts.values()),
            "removed": [{"key": b64(prefix + n), "dir": d} for n, d in sorted(gone)],
            "touched": touched}


async def get_key(client: Client, key: bytes, *, max_value_bytes: int) -> dict[str, Any]:
    """One key: value (shown, exact, pretty printed), revisions, lease and TTL left."""
    r = await client.get(key)
    out: dict[str, Any] = {"key": key_text(key), "key_b64": b64(key), "revision": r.header.revision,
                           "exists": bool(r.kvs)}
    if not r.kvs:
        return out
    kv = r.kvs[0]
    out.update(_meta(kv))
    out["value"] = bytes_view(kv.value, limit=max_value_bytes)
    out["pretty"] = pretty(kv.value) if len(kv.value) <= max_value_bytes else None
    if kv.lease:
        try:
            t = await client.time_to_live(kv.lease)
            out["ttl"], out["granted_ttl"] = t.ttl, t.granted_ttl
        except Exception as e:  # shown, not fatal: the key itself was readable
            out["ttl_error"] = str(e)
    return out


async def key_history(client: Client, key: bytes, *, limit: int = 200, quiet: float = 0.5,
                      max_time: float = 5.0) -> dict[str, Any]:
    """The changes of one key (newest first, at most ``limit``), replayed by a watch
    from revision 1 (or from the compaction point) up to the revision read now.

    When the key exists now, the replay is complete once its current revision is seen.
    When it does not, the replay ends ``quiet`` seconds after a delete with nothing
    more (etcd sends a watcher's history in batches of up to 1,000 revisions).
    ``complete`` is false when ``max_time`` ran out first.
    """
    cur = await client.get(key)
    now = cur.header.revision
    last_mod = cur.kvs[0].mod_revision if cur.kvs else None
    entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
    total = 0
    compacted_at = 0
    start = 1
    complete = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_time
    while not complete:
        seen_delete_last = False
        try:
            async with client.watch(key, start_revision=start) as w:
                it = aiter(w)
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    wait = min(remaining, quiet) if (last_mod is None and (seen_delete_last or total == 0)) \
                        else remaining
                    try:
                        resp = await asyncio.wait_for(anext(it), wait)
                    except TimeoutError:
                        if last_mod is None and wait < remaining:
                            complete = True  # quiet after the last delete (or no history)
                        break
                    except StopAsyncIteration:
                        break
                    done = False
                    for ev in resp.events:
                        if ev.kv.mod_revision > now:
                            done = True
                            break
                        total += 1
                        entries.append(_history_entry(ev))
                        seen_delete_last = ev.type == EventType.DELETE
                        if last_mod is not None and ev.kv.mod_revision >= last_mod:
                            done = True
                            break
                    if done:
                        complete = True
                        break
        except WatchCompactedError as e:
            compacted_at = e.compact_revision
            start = e.compact_revision
            entries.clear()
            total = 0
            continue
        break
    return {"key": key_text(key), "key_b64": b64(key), "revision": now,
            "entries": list(reversed(entries)), "total": total, "shown": len(entries),
            "compacted_at": compacted_at, "complete": complete}


def _history_entry(ev: Event) -> dict[str, Any]:
    kv = ev.kv
    out: dict[str, Any] = {"revision": kv.mod_revision, "type": ev.type.name}
    if ev.type == EventType.PUT:
        out.update(_meta(kv))
        out["value"] = bytes_view(kv.value, limit=HISTORY_VALUE_BYTES)
    return out


async def put_key(client: Client, key: bytes, value: bytes, *, expect_mod_revision: int,
                  lease: int = 0) -> dict[str, Any]:
    """Put ``key`` only if its mod revision is still ``expect_mod_revision`` (0: only if
    it does not exist). ``{"ok": False, "current": ...}`` when someone changed it first."""
    res = await (client.txn()
                 .if_(Cmp.mod(key) == expect_mod_revision)
                 .then(Op.put(key, value, lease=lease))
                 .else_(Op.get(key, keys_only=True))
                 .commit())
    return _guarded_result(res.succeeded, res.header.revision, res.responses)


async def delete_key(client: Client, key: bytes, *, expect_mod_revision: int) -> dict[str, Any]:
    """Delete ``key`` only if its mod revision is still ``expect_mod_revision``."""
    res = await (client.txn()
                 .if_(Cmp.mod(key) == expect_mod_revision, Cmp.version(key) > 0)
                 .then(Op.delete(key))
                 .else_(Op.get(key, keys_only=True))
                 .commit())
    return _guarded_result(res.succeeded, res.header.revision, res.responses)


def _guarded_result(ok: bool, revision: int, responses: list[Any]) -> dict[str, Any]:
    if ok:
        return {"ok": True, "revision": revision}
    current: dict[str, Any] | None = None
    with contextlib.suppress(IndexError):
        got = responses[0]
        if isinstance(got, GetResult) and got.kvs:
            current = _meta(got.kvs[0])
    return {"ok": False, "revision": revision, "current": current}
