"""The local mirror: a snapshot of the metadata keys, then a watch from its revision.

Requests are answered from memory and never reach the cluster. ``version`` is the
revision of the last change to this group's metadata (data, mapping, rules) that
the mirror knows of: the newest ``mod_revision`` in the snapshot, then each applied
event's revision. It is a cluster revision, so it survives restarts and replicas
agree on it. To learn about deletes that happened just before the snapshot (which
leave no key behind), the watch starts right after the newest key of the snapshot:
events up to the snapshot's revision only advance ``version``.

A watch that lost history to a compaction (``WatchCompactedError``) makes the mirror
read a fresh snapshot, swap it in and wake the waiters whose answers changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.errors import MeshkitError
from meshkit._internal.logging import get_logger
from meshkit.client import Client, Event, EventType, GetResult, Op, WatchCompactedError
from meshkit.metad.paths import KeyLayout, Parts, canonical_ip
from meshkit.metad.tree import READ, AccessNode, Rule, Tree, build_access, parse_rules

__all__ = ["Changes", "Mirror"]

log = get_logger("metad")


@dataclass(slots=True)
class Changes:
    """What one revision (or a re-read) changed: data paths, hosts whose mapping or
    rules changed."""

    data: set[Parts] = field(default_factory=set)
    mapping_hosts: set[str] = field(default_factory=set)
    rule_hosts: set[str] = field(default_factory=set)
    everything: bool = False  # a re-read that could not say exactly

    def __bool__(self) -> bool:
        return self.everything or bool(self.data or self.mapping_hosts or self.rule_hosts)

    def merge(self, other: Changes) -> None:
        self.data |= other.data
        self.mapping_hosts |= other.mapping_hosts
        self.rule_hosts |= other.rule_hosts
        self.everything = self.everything or other.everything


Predicate = Callable[[Changes], bool]


@dataclass(eq=False, slots=True)
class _Waiter:
    predicate: Predicate
    after: int
    future: asyncio.Future[None]


class _State:
    """One consistent copy of the three trees."""

    def __init__(self) -> None:
        self.data = Tree()
        self.mapping = Tree()
        self.rules: dict[str, list[Rule]] = {}
        self.bad_rules: set[str] = set()


class Mirror:
    """``async with Mirror(client, layout) as m: await m.wait_ready(10)``."""

    def __init__(self, client: Client, layout: KeyLayout, *, clock: Clock | None = None,
                 history: int = 1024, retry_max: float = 5.0) -> None:
        self.client = client
        self.layout = layout
        self.clock: Clock = clock or RealClock()
        self.version = 0
        self.snapshot_revision = 0
        self.resyncs = 0  # fresh snapshots read after a compaction
        self.window_lost = 0  # deletes before the snapshot that history no longer held
        self._state = _State()
        self._history: deque[tuple[int, Changes]] = deque(maxlen=max(history, 1))
        self._floor = 0  # changes after this revision are in the history
        self._waiters: set[_Waiter] = set()
        self._listeners: list[Callable[[], None]] = []
        self._access_cache: dict[str, AccessNode | None] = {}
        self._ready = asyncio.Event()
        self._retry_max = retry_max
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ---- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Mirror:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="metad-mirror")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for w in self._waiters:
            if not w.future.done():
                w.future.cancel()
        self._waiters.clear()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until the first snapshot is loaded; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    def on_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every applied change (used to drop response caches)."""
        self._listeners.append(fn)

    # ---- reads -------------------------------------------------------------------------

    @property
    def data(self) -> Tree:
        return self._state.data

    @property
    def mapping(self) -> Tree:
        return self._state.mapping

    @property
    def keys(self) -> int:
        return self._state.data.size + self._state.mapping.size + len(self._state.rules)

    @property
    def waiters(self) -> int:
        return len(self._waiters)

    def rules(self, hosts: list[str] | None = None) -> dict[str, list[Rule]]:
        src = self._state.rules
        if not hosts:
            return dict(src)
        return {h: src[h] for h in hosts if h in src}

    def mapping_of(self, ip: str) -> Tree | None:
        """The mapping subtree of one caller (keys compared as canonical IPs)."""
        node = self._state.mapping.find((ip,))
        if node is None:
            for name, child in self._state.mapping.root.children.items():
                if canonical_ip(name) == ip:
                    node = child
                    break
        if node is None:
            return None
        t = Tree()
        t.root = node
        return t

    def access(self, ip: str) -> AccessNode | None:
        """The access tree of a caller: its rules, else read on its mapped data paths;
        None when it has neither (it may read nothing)."""
        if ip in self._access_cache:
            return self._access_cache[ip]
        acc: AccessNode | None
        if ip in self._state.bad_rules:
            acc = AccessNode()  # unreadable stored rules: fail closed
        elif ip in self._state.rules:
            acc = build_access(self._state.rules[ip])
        else:
            m = self.mapping_of(ip)
            if m is None:
                acc = None
            else:
                rules: list[Rule] = []
                for _parts, link in m.items():
                    if link.startswith("/"):
                        with contextlib.suppress(MeshkitError):
                            rules.append(Rule(link, READ))
                try:
                    acc = build_access(rules)
                except MeshkitError:
                    acc = AccessNode()
        if len(self._access_cache) > 65536:
            self._access_cache.clear()
        self._access_cache[ip] = acc
        return acc

    # ---- long poll ----------------------------------------------------------------------

    def changed_since(self, predicate: Predicate, revision: int) -> bool:
        """Whether a change matching ``predicate`` happened after ``revision``; True
        when the history no longer reaches back that far (the caller re-reads)."""
        if revision >= self.version:
            return False
        if revision < self._floor:
            return True
        return any(rev > revision and predicate(ch) for rev, ch in self._history)

    async def wait_change(self, predicate: Predicate, after: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Until a change with revision > ``after`` matches; False after ``timeout``."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        w = _Waiter(predicate, after, fut)
        self._waiters.add(w)
        try:
            async with asyncio.timeout(timeout):
                await fut
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(w)

    async def wait_version(self, revision: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Until ``version >= revision`` (a manage write is visible); False on timeout."""
        if self.version >= revision:
            return True
        return await self.wait_change(lambda _ch: self.version >= revision, revision - 1, timeout)

    # ---- the sync loop ------------------------------------------------------------------

    async def _run(self) -> None:
        pause = 0.05
        while True:
            try:
                snap_rev, newest = await self._snapshot()
            except (MeshkitError, OSError) as e:
                log.warning("metad: reading the metadata snapshot failed: %s", e)
                await self.clock.sleep(pause)
                pause = min(pause * 2, self._retry_max)
                continue
            pause = 0.05
            try:
                await self._follow(snap_rev, newest)
            except WatchCompactedError as e:
                self.resyncs += 1
                log.warning("metad: watch history compacted at %d: reading a fresh snapshot",
                            e.compact_revision)
            except (MeshkitError, OSError) as e:
                log.warning("metad: watch failed (%s): reading a fresh snapshot", e)
                await self.clock.sleep(pause)

    async def _snapshot(self) -> tuple[int, int]:
        ops = [Op.get(key, prefix=True) for key, _p in self.layout.watch_ranges()]
        res = await self.client.txn().then(*ops).commit()
        state = _State()
        newest = 0
        for r in res.responses:
            assert isinstance(r, GetResult)
            for kv in r.kvs:
                newest = max(newest, kv.mod_revision)
                self._put(state, kv.key, kv.value)
        snap_rev = res.header.revision
        first = not self._ready.is_set()
        old = self._state
        self._state = state
        self.snapshot_revision = snap_rev
        self._history.clear()
        if first:
            self.version = newest
            self._floor = newest
            self._changed(Changes(everything=True), newest, notify=False)
            self._ready.set()
            log.info("metad: mirror loaded %d keys at revision %d", self.keys, snap_rev)
        else:
            diff = _diff(old, state)
            version = max(newest, self.version)
            if diff and version == self.version:
                version = snap_rev  # a delete we cannot date: the snapshot's revision
            self._floor = snap_rev
            self._changed(diff, version, notify=bool(diff))
        return snap_rev, newest

    async def _follow(self, snap_rev: int, newest: int) -> None:
        """Follow every watch range until one fails; raise that failure (not a group)."""
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._follow_range(key, snap_rev, newest))
                 for key, _p in self.layout.watch_ranges()]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc
        raise MeshkitError("the metadata watch ended")

    async def _follow_range(self, key: bytes, snap_rev: int, newest: int) -> None:
        # On the first snapshot, replay (newest, snap_rev] to date the deletes in it.
        start = newest + 1 if self.resyncs == 0 and newest < snap_rev else snap_rev + 1
        while True:
            try:
                async with self.client.watch(key, prefix=True, start_revision=start) as w:
                    async for resp in w:
                        self._apply(resp.events, snap_rev)
                raise MeshkitError("the watch ended (client closed)")
            except WatchCompactedError as e:
                if start <= snap_rev and e.compact_revision <= snap_rev:
                    self.window_lost += 1
                    start = snap_rev + 1  # only the replay window is gone
                    continue
                raise

    def _apply(self, events: list[Event], snap_rev: int) -> None:
        by_rev: dict[int, Changes] = {}
        for ev in events:
            rev = ev.kv.mod_revision
            ch = by_rev.setdefault(rev, Changes())
            if rev <= snap_rev:
                # Replay before the snapshot: the snapshot already holds the result.
                cls = self.layout.classify(ev.kv.key)
                if cls is not None:
                    _note(ch, cls[0], cls[1])
                continue
            if ev.type == EventType.PUT:
                changed = self._put(self._state, ev.kv.key, ev.kv.value)
            else:
                changed = self._delete(self._state, ev.kv.key)
            if changed is not None:
                _note(ch, changed[0], changed[1])
        for rev in sorted(by_rev):
            ch = by_rev[rev]
            if ch:
                self._changed(ch, rev, notify=True)

    def _changed(self, ch: Changes, rev: int, *, notify: bool) -> None:
        out_of_order = rev < self.version
        self.version = max(self.version, rev)
        self._access_cache.clear()
        if self._history and self._history[-1][0] == rev:
            self._history[-1][1].merge(ch)
        else:
            if len(self._history) == self._history.maxlen:
                self._floor = max(self._floor, self._history[0][0])
            self._history.append((rev, ch))
        for fn in self._listeners:
            fn()
        if notify:
            for w in list(self._waiters):
                if not w.future.done() and (rev > w.after or out_of_order) and w.predicate(ch):
                    w.future.set_result(None)

    # ---- applying keys --------------------------------------------------------------------

    def _put(self, state: _State, key: bytes, value: bytes) -> tuple[str, Parts] | None:
        cls = self.layout.classify(key)
        if cls is None:
            return None
        kind, parts = cls
        text = value.decode("utf-8", errors="replace")
        if kind == "data":
            return (kind, parts) if state.data.put(parts, text) else None
        if kind == "mapping":
            return (kind, parts) if state.mapping.put(parts, text) else None
        host = canonical_ip(parts[-1]) if len(parts) == 1 else None
        if host is None:
            return None
        try:
            rules = parse_rules(json.loads(text))
        except (ValueError, MeshkitError):
            log.error("metad: stored rules of %s are not valid: denying it everything", host)
            state.bad_rules.add(host)
            state.rules.pop(host, None)
            return kind, (host,)
        state.bad_rules.discard(host)
        state.rules[host] = rules
        return kind, (host,)

    def _delete(self, state: _State, key: bytes) -> tuple[str, Parts] | None:
        cls = self.layout.classify(key)
        if cls is None:
            return None
        kind, parts = cls
        if kind == "data":
            return (kind, parts) if state.data.delete(parts) else None
        if kind == "mapping":
            return (kind, parts) if state.mapping.delete(parts) else None
        host = canonical_ip(parts[-1]) if len(parts) == 1 else None
        if host is None:
            return None
        state.bad_rules.discard(host)
        return (kind, (host,)) if state.rules.pop(host, None) is not None else None


def _note(ch: Changes, kind: str, parts: Parts) -> None:
    if kind == "data":
        ch.data.add(parts)
    elif kind == "mapping":
        ip = canonical_ip(parts[0])
        if ip is not None:
            ch.mapping_hosts.add(ip)
    else:
        ip = canonical_ip(parts[0])
        if ip is not None:
            ch.rule_hosts.add(ip)


def _diff(old: _State, new: _State) -> Changes:
    ch = Changes()
    a, b = dict(old.data.items()), dict(new.data.items())
    ch.data = {p for p in a.keys() | b.keys() if a.get(p) != b.get(p)}
    ma, mb = dict(old.mapping.items()), dict(new.mapping.items())
    for p in ma.keys() | mb.keys():
        if ma.get(p) != mb.get(p):
            _note(ch, "mapping", p)
    for h in old.rules.keys() | new.rules.keys() | old.bad_rules | new.bad_rules:
        if old.rules.get(h) != new.rules.get(h) or (h in old.bad_rules) != (h in new.bad_rules):
            ch.rule_hosts.add(h)
    return ch
