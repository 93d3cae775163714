"""WatchableStore: etcd 3.4's watchable store over :class:`KVStore`.

Watchers live in one of two groups, as in etcd's ``watchableStore``:

* **synced**: caught up with the store. The applier hands every write txn's
  events to :meth:`WatchableStore.notify` (same thread, right after the txn
  ends); each matching synced watcher gets one response holding all of its
  events of that revision, put into its stream's bounded buffer. Matching is a
  dict lookup for single-key watchers, one dict lookup per distinct prefix
  length for prefix watchers and a sorted scan of the few other ranges: the
  apply path never walks all watchers.
* **unsynced**: behind the store. New watchers with a start revision in the
  past, and synced watchers whose stream buffer was full when an event came
  (etcd's victims; here they go straight to unsynced with ``min_rev`` = the
  revision they missed, so nothing but the watcher itself is held in memory).
  A background task owned by the store catches them up from the backend in
  windows of at most ``MAX_REVS_PER_SYNC`` revisions and ``MAX_WATCHERS_PER_SYNC``
  watchers, skipping watchers whose stream is still full, and moves each back
  to synced once it has reached the current revision. A watcher that fell
  behind the compact revision is canceled with ``compact_revision`` set.

Each gRPC stream is a :class:`WatchStream`: watch ids (client-chosen or
assigned from 0), a FIFO of responses bounded at ``STREAM_BUFFER`` entries for
events (control responses are never dropped; the request side waits instead),
and the per-stream flags. Because everything a stream sends goes through its
one FIFO, responses are ordered; because a watcher is either synced (gets
revision r at apply time) or unsynced (gets r from the backend later), never
both, events are neither repeated nor skipped.

Single-threaded: everything runs on the event loop thread, like the store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from sortedcontainers import SortedKeyList

from meshkit._internal.errors import CompactedError, MeshkitError
from meshkit.server.mvcc.kv import Event, EventType, KeyValue
from meshkit.server.mvcc.store import KVStore

log = logging.getLogger("meshkit.server.watch")

# etcd: chanBufLen (responses buffered per stream before watchers become victims)
STREAM_BUFFER = 128
# etcd: maxWatchersPerSync, watchBatchMaxRevs
MAX_WATCHERS_PER_SYNC = 512
MAX_REVS_PER_SYNC = 1000
# Catch-up responses are also cut (at a revision boundary) once they hold about
# this many bytes: etcd sends up to 1000 revisions in one message, which can
# exceed the 4 MiB a default gRPC client accepts (etcd's own clients allow 2 GiB).
MAX_CATCHUP_BYTES = 1 << 20
# etcd: syncWatchersLoop runs every 100 ms while watchers are unsynced
SYNC_INTERVAL = 0.1
# etcd's default --experimental-watch-progress-notify-interval
DEFAULT_PROGRESS_INTERVAL = 600.0

_PUT = EventType.PUT
_DELETE = EventType.DELETE


class WatchError(MeshkitError):
    """A create request etcd refuses; the text is etcd's ``cancel_reason``."""


class EmptyWatcherRangeError(WatchError):
    def __init__(self) -> None:
        super().__init__("mvcc: watcher range is empty")


class DuplicateWatchIDError(WatchError):
    def __init__(self) -> None:
        super().__init__("mvcc: duplicate watch ID provided on the WatchStream")


def prefix_end(key: bytes) -> bytes:
    """etcd's GetPrefixRangeEnd; b"\\0" (from key) if every byte is 0xff."""
    k = key.rstrip(b"\xff")
    if not k:
        return b"\0"
    return k[:-1] + bytes((k[-1] + 1,))


class WatchEvent:
    """An event as delivered: ``prev`` resolved once (``known``), wire forms
    cached by the API layer (``wire``/``wire_prev``) so an event watched by a
    thousand watchers is encoded once."""

    __slots__ = ("event", "known", "prev", "wire", "wire_prev")

    def __init__(self, event: Event, prev: KeyValue | None = None, known: bool = True) -> None:
        self.event = event
        self.prev = prev
        self.known = known
        self.wire: Any = None
        self.wire_prev: Any = None

    @property
    def rev(self) -> int:
        return self.event.kv.mod_revision

    def __repr__(self) -> str:
        e = self.event
        return f"WatchEvent({e.type.name} {e.kv.key!r}@{e.kv.mod_revision})"


class Response:
    """One WatchResponse to send on a stream (the API layer encodes it)."""

    __slots__ = (
        "cancel_reason", "canceled", "compact_revision", "counted", "created", "events",
        "fragment", "prev_kv", "revision", "watch_id",
    )

    def __init__(
        self, watch_id: int, revision: int, events: list[WatchEvent] | None = None, *,
        created: bool = False, canceled: bool = False, cancel_reason: str = "",
        compact_revision: int = 0, prev_kv: bool = False, fragment: bool = False,
    ) -> None:
        self.watch_id = watch_id
        self.revision = revision
        self.events: list[WatchEvent] = events if events is not None else []
        self.created = created
        self.canceled = canceled
        self.cancel_reason = cancel_reason
        self.compact_revision = compact_revision
        self.prev_kv = prev_kv
        self.fragment = fragment
        self.counted = False  # queued by offer(): counts against the stream's bound

    def __repr__(self) -> str:
        flags = "".join(
            f for f, on in ((" created", self.created), (" canceled", self.canceled)) if on
        )
        return f"Response(id={self.watch_id} rev={self.revision}{flags} events={self.events})"


class Watcher:
    __slots__ = (
        "end", "fragment", "id", "key", "min_rev", "no_delete", "no_put", "prev_kv",
        "progress_notify", "quiet", "state", "stream",
    )

    # state
    SYNCED = 1
    UNSYNCED = 2
    GONE = 3

    def __init__(
        self, stream: WatchStream, wid: int, key: bytes, end: bytes | None, min_rev: int, *,
        prev_kv: bool, progress_notify: bool, fragment: bool, no_put: bool, no_delete: bool,
    ) -> None:
        self.stream = stream
        self.id = wid
        self.key = key
        # None: this key only; b"": every key >= key; else [key, end)
        self.end = end
        self.min_rev = min_rev
        self.prev_kv = prev_kv
        self.progress_notify = progress_notify
        self.fragment = fragment
        self.no_put = no_put
        self.no_delete = no_delete
        self.quiet = True  # no events since the last progress tick
        self.state = 0

    def matches(self, key: bytes) -> bool:
        end = self.end
        if end is None:
            return key == self.key
        return key >= self.key and (not end or key < end)

    def __repr__(self) -> str:
        return f"Watcher(id={self.id} {self.key!r}..{self.end!r} min_rev={self.min_rev} state={self.state})"


class WatcherGroup:
    """Watchers indexed for "who watches this key?" in O(matches)."""

    def __init__(self) -> None:
        self._keys: dict[bytes, set[Watcher]] = {}
        self._prefixes: dict[bytes, set[Watcher]] = {}
        self._prefix_lens: collections.Counter[int] = collections.Counter()
        self._sorted_lens: list[int] = []
        self._ranges: SortedKeyList = SortedKeyList(key=lambda w: (w.key, id(w)))
        self._all: set[Watcher] = set()

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, w: object) -> bool:
        return w in self._all

    def __iter__(self) -> Any:
        return iter(self._all)

    def add(self, w: Watcher) -> None:
        if w in self._all:
            return
        self._all.add(w)
        if w.end is None:
            self._keys.setdefault(w.key, set()).add(w)
        elif w.end and w.end == prefix_end(w.key):
            s = self._prefixes.get(w.key)
            if s is None:
                s = self._prefixes[w.key] = set()
            s.add(w)
            n = len(w.key)
            self._prefix_lens[n] += 1
            if self._prefix_lens[n] == 1:
                self._sorted_lens = sorted(self._prefix_lens)
        else:
            self._ranges.add(w)

    def remove(self, w: Watcher) -> None:
        if w not in self._all:
            return
        self._all.discard(w)
        if w.end is None:
            s = self._keys[w.key]
            s.discard(w)
            if not s:
                del self._keys[w.key]
        elif w.end and w.end == prefix_end(w.key):
            s = self._prefixes[w.key]
            s.discard(w)
            if not s:
                del self._prefixes[w.key]
            n = len(w.key)
            self._prefix_lens[n] -= 1
            if self._prefix_lens[n] == 0:
                del self._prefix_lens[n]
                self._sorted_lens = sorted(self._prefix_lens)
        else:
            self._ranges.remove(w)

    def match(self, key: bytes) -> list[Watcher]:
        out: list[Watcher] = []
        s = self._keys.get(key)
        if s:
            out.extend(s)
        if self._prefixes:
            n = len(key)
            for ln in self._sorted_lens:
                if ln > n:
                    break
                s = self._prefixes.get(key[:ln])
                if s:
                    out.extend(s)
        if self._ranges:
            for w in self._ranges.irange_key(max_key=(key, 1 << 64)):
                end = w.end
                if not end or key < end:
                    out.append(w)
        return out

    def batches(self, events: Iterable[WatchEvent]) -> dict[Watcher, list[WatchEvent]]:
        """Events per watcher, in order, honouring min_rev and filters."""
        out: dict[Watcher, list[WatchEvent]] = {}
        for we in events:
            ev = we.event
            rev = ev.kv.mod_revision
            is_put = ev.type == _PUT
            for w in self.match(ev.kv.key):
                if rev < w.min_rev or (w.no_put if is_put else w.no_delete):
                    continue
                lst = out.get(w)
                if lst is None:
                    out[w] = [we]
                else:
                    lst.append(we)
        return out


class WatchStream:
    """The watches of one client stream and the FIFO of what to send it."""

    def __init__(self, store: WatchableStore, capacity: int = STREAM_BUFFER) -> None:
        self._ws = store
        self.capacity = capacity
        self.watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self._buf: collections.deque[Response] = collections.deque()
        self._events_queued = 0  # event responses in _buf (control ones are not counted)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.blocked = False  # an event response was refused since the last drain
        self.closed = False

    # ---- requests --------------------------------------------------------------

    def watch(
        self, key: bytes, range_end: bytes = b"", start_revision: int = 0, watch_id: int = 0, *,
        prev_kv: bool = False, progress_notify: bool = False, fragment: bool = False,
        no_put: bool = False, no_delete: bool = False,
    ) -> Watcher | None:
        """Create a watch as etcd's serverWatchStream does for a create request:
        queue the ``created`` response (canceled with etcd's reason if refused)
        and register the watcher. Returns None when refused."""
        ws = self._ws
        wsrev = ws.store.current_revision
        if not key:
            key = b"\0"  # etcd: \x00 is the smallest key
        end: bytes | None
        if not range_end:
            end = None
        elif range_end == b"\0":
            end = b""
        else:
            end = range_end
        try:
            if end and key >= end:
                raise EmptyWatcherRangeError()
            if self.closed:
                raise EmptyWatcherRangeError()
            if watch_id == 0:
                while self._next_id in self.watchers:
                    self._next_id += 1
                wid = self._next_id
                self._next_id += 1
            elif watch_id in self.watchers:
                raise DuplicateWatchIDError()
            else:
                wid = watch_id
        except WatchError as e:
            self.push(Response(-1, wsrev, created=True, canceled=True, cancel_reason=str(e)))
            return None
        rev = start_revision if start_revision > 0 else wsrev + 1
        w = Watcher(self, wid, key, end, rev, prev_kv=prev_kv, progress_notify=progress_notify,
                    fragment=fragment, no_put=no_put, no_delete=no_delete)
        self.watchers[wid] = w
        self.push(Response(wid, wsrev, created=True))
        ws._add(w)
        return w

    def cancel(self, watch_id: int) -> bool:
        """etcd: an unknown id is ignored (no response); a known one answers canceled."""
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return False
        self._ws._remove(w)
        self.push(Response(watch_id, self._ws.store.current_revision, canceled=True))
        return True

    def request_progress(self) -> None:
        """etcd 3.4: one response for the whole stream, watch_id -1, current revision."""
        self.push(Response(-1, self._ws.store.current_revision))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in self.watchers.values():
            self._ws._remove(w)
        self.watchers.clear()
        self._buf.clear()
        self._events_queued = 0
        self._ws._streams.discard(self)
        self._wake.set()
        self._room.set()

    # ---- the buffer ------------------------------------------------------------

    @property
    def full(self) -> bool:
        return self._events_queued >= self.capacity

    def offer(self, resp: Response) -> bool:
        """Queue an event response unless the buffer is full."""
        if self._events_queued >= self.capacity:
            self.blocked = True
            return False
        if self.closed:
            return True
        resp.counted = True
        self._buf.append(resp)
        self._events_queued += 1
        self._wake.set()
        return True

    def push(self, resp: Response) -> None:
        """Queue a control response (created, canceled, progress): never dropped."""
        if self.closed:
            return
        self._buf.append(resp)
        self._wake.set()
        if len(self._buf) >= 2 * self.capacity:
            self._room.clear()

    async def wait_room(self) -> None:
        """The request side waits here so a client that never reads cannot make
        control responses pile up."""
        await self._room.wait()

    def pop_nowait(self) -> Response | None:
        if not self._buf:
            return None
        resp = self._buf.popleft()
        if resp.counted:
            self._events_queued -= 1
        if len(self._buf) < self.capacity:
            self._room.set()
        if self.blocked and self._events_queued <= self.capacity // 2:
            self.blocked = False
            self._ws.kick()
        return resp

    async def get(self) -> Response | None:
        """The next response to send; None once the stream is closed."""
        while True:
            if self.closed:
                return None
            resp = self.pop_nowait()
            if resp is not None:
                return resp
            self._wake.clear()
            await self._wake.wait()


class WatchableStore:
    """``async with WatchableStore(store) as ws:`` runs the catch-up and progress
    tasks; leaving closes every stream."""

    def __init__(
        self, store: KVStore, *, progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        stream_buffer: int = STREAM_BUFFER, sync_interval: float = SYNC_INTERVAL,
        max_revs_per_sync: int = MAX_REVS_PER_SYNC,
    ) -> None:
        self.store = store
        self.progress_interval = progress_interval
        self.stream_buffer = stream_buffer
        self.sync_interval = sync_interval
        self.max_revs_per_sync = max_revs_per_sync
        self.max_catchup_bytes = MAX_CATCHUP_BYTES
        self._window = max_revs_per_sync  # revisions read per step, adapted to sizes
        self.synced = WatcherGroup()
        self.unsynced: set[Watcher] = set()
        self._streams: set[WatchStream] = set()
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        # counters for tests and metrics
        self.victims = 0  # synced watchers moved out because their stream was full
        self.sync_steps = 0

    # ---- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> WatchableStore:
        self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sync_loop(), name="watch-sync"),
            loop.create_task(self._progress_loop(), name="watch-progress"),
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for st in list(self._streams):
            st.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def new_stream(self) -> WatchStream:
        st = WatchStream(self, self.stream_buffer)
        if self._closed:
            st.closed = True
        else:
            self._streams.add(st)
        return st

    def kick(self) -> None:
        """Wake the catch-up task (a new unsynced watcher, or a stream drained)."""
        if self.unsynced:
            self._kick.set()

    def restore(self, store: KVStore) -> None:
        """The store was replaced (a snapshot from the leader, etcd's
        watchableStore.Restore): every synced watcher becomes unsynced at its
        next revision and catches up from the new store; one whose revision is
        now compacted gets the compacted cancel. Synced watchers had every
        event up to the old store's revision, so none is sent twice."""
        delivered = self.store.current_revision
        self.store = store
        for w in list(self.synced):
            self.synced.remove(w)
            w.state = Watcher.UNSYNCED
            w.min_rev = max(w.min_rev, delivered + 1)
            self.unsynced.add(w)
        if self.unsynced:
            self._kick.set()

    # ---- membership --------------------------------------------------------------

    def _add(self, w: Watcher) -> None:
        if w.min_rev > self.store.current_revision:
            w.state = Watcher.SYNCED
            self.synced.add(w)
        else:
            w.state = Watcher.UNSYNCED
            self.unsynced.add(w)
            self._kick.set()

    def _remove(self, w: Watcher) -> None:
        if w.state == Watcher.SYNCED:
            self.synced.remove(w)
        elif w.state == Watcher.UNSYNCED:
            self.unsynced.discard(w)
        w.state = Watcher.GONE

    # ---- the apply path ------------------------------------------------------------

    def notify(self, rev: int, events: list[Event]) -> None:
        """Called by the applier with the events of one write txn (revision ``rev``)."""
        synced = self.synced
        if not synced._all:  # (no watcher: the common case on the write path)
            return
        batches = synced.batches([WatchEvent(ev, ev.prev_kv) for ev in events])
        if not batches:
            return
        moved = False
        for w, evs in batches.items():
            if w.stream.offer(Response(w.id, rev, evs, prev_kv=w.prev_kv, fragment=w.fragment)):
                w.quiet = False
                continue
            # etcd's victim: from now on it catches up from the backend.
            synced.remove(w)
            w.state = Watcher.UNSYNCED
            w.min_rev = rev
            self.unsynced.add(w)
            self.victims += 1
            moved = True
        if moved:
            self._kick.set()

    # ---- catching up ------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        try:
            while True:
                if not self.unsynced:
                    self._kick.clear()
                    await self._kick.wait()
                    continue
                if self.sync_step():
                    await asyncio.sleep(0)
                    continue
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), self.sync_interval)
        except asyncio.CancelledError:
            raise
        except BaseException:
            # A broken invariant: make it loud and end every stream so clients
            # reconnect instead of waiting forever on a dead catch-up task.
            log.exception("watch catch-up task failed; closing all watch streams")
            for st in list(self._streams):
                st.close()
            raise

    def sync_step(self) -> bool:
        """One catch-up round (etcd's syncWatchers); True if anything moved."""
        self.sync_steps += 1
        store = self.store
        cur = store.current_revision
        compact = store.compact_revision
        progressed = False
        chosen: list[Watcher] = []
        for w in list(self.unsynced):
            st = w.stream
            if st.full:
                continue
            if w.min_rev < compact:
                # etcd: the watch is over; the client sees compact_revision
                # (header revision 0, no cancel_reason). Retried if the stream is full.
                if st.offer(Response(w.id, 0, canceled=True, compact_revision=compact)):
                    self.unsynced.discard(w)
                    w.state = Watcher.GONE  # its id stays taken until canceled, as in etcd
                    progressed = True
                continue
            if w.min_rev > cur:
                self.unsynced.discard(w)
                w.state = Watcher.SYNCED
                self.synced.add(w)
                progressed = True
                continue
            chosen.append(w)
            if len(chosen) >= MAX_WATCHERS_PER_SYNC:
                break
        if not chosen:
            return progressed
        lo = min(w.min_rev for w in chosen)
        hi = min(cur, lo + self._window - 1)
        try:
            raw = store.events(lo, hi)
        except CompactedError:  # pragma: no cover - checked above per watcher
            return progressed
        wevs = [WatchEvent(ev, None, known=False) for ev in raw]
        group = WatcherGroup()
        for w in chosen:
            group.add(w)
        batches = group.batches(wevs)
        if any(w.prev_kv for w in batches):
            self._resolve_prev(wevs)
        cut_at = 0
        for w in chosen:
            if w.min_rev > hi:
                continue
            evs = batches.get(w)
            upto = hi
            if evs:
                # A watcher that accepts fragments gets etcd's whole catch-up batch
                # (split into fragments on the wire); others get it cut at revision
                # boundaries so no message outgrows a default client's 4 MiB limit.
                if not w.fragment:
                    evs, upto = self._cut(evs, hi, w.prev_kv)
                if upto < hi:
                    cut_at = max(cut_at, upto)
                if not w.stream.offer(
                    Response(w.id, cur, evs, prev_kv=w.prev_kv, fragment=w.fragment)
                ):
                    continue  # stream filled up meanwhile: next round, same window
                w.quiet = False
            progressed = True
            w.min_rev = upto + 1
            if w.min_rev > cur:
                self.unsynced.discard(w)
                w.state = Watcher.SYNCED
                self.synced.add(w)
        self._adapt_window(lo, hi, cut_at)
        return progressed

    def _adapt_window(self, lo: int, hi: int, cut_at: int) -> None:
        if cut_at:
            self._window = max(16, (cut_at - lo + 1) * 2)
        elif hi - lo + 1 >= self._window:
            self._window = min(self.max_revs_per_sync, self._window * 2)

    def _cut(self, evs: list[WatchEvent], hi: int, prev_kv: bool) -> tuple[list[WatchEvent], int]:
        """The first revisions of ``evs`` that fit the catch-up byte budget (at
        least one whole revision) and the last revision they cover."""
        budget = self.max_catchup_bytes
        size = 0
        for i, we in enumerate(evs):
            kv = we.event.kv
            size += len(kv.key) + len(kv.value) + 32
            if prev_kv and we.prev is not None:
                size += len(we.prev.key) + len(we.prev.value) + 32
            if size > budget and i + 1 < len(evs):
                rev = kv.mod_revision
                j = i + 1
                while j < len(evs) and evs[j].event.kv.mod_revision == rev:
                    j += 1
                if j < len(evs):
                    return evs[:j], rev
        return evs, hi

    def _resolve_prev(self, wevs: list[WatchEvent]) -> None:
        """prev_kv of events read back from the backend: the previous event of the
        same key in this window, else a read at ``mod_revision - 1`` (etcd reads
        every one; a compacted previous revision leaves prev_kv empty, as there)."""
        last: dict[bytes, KeyValue | None] = {}
        store = self.store
        for we in wevs:
            ev = we.event
            kv = ev.kv
            key = kv.key
            if ev.type == _PUT and kv.version == 1:
                prev = None
            elif key in last:
                prev = last[key]
            else:
                try:
                    found = store.range(key, b"", rev=kv.mod_revision - 1).kvs
                except CompactedError:
                    found = []
                prev = found[0] if found else None
            we.prev = prev
            we.known = True
            last[key] = kv if ev.type == _PUT else None

    # ---- progress notifications -----------------------------------------------------

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            self.progress_tick()

    def progress_tick(self) -> None:
        """etcd: every interval, each progress_notify watcher that got no events
        since the last tick and is synced gets an empty response at the current
        revision (dropped if its stream is full)."""
        rev = self.store.current_revision
        for st in list(self._streams):
            for w in list(st.watchers.values()):
                if not w.progress_notify:
                    continue
                if w.quiet and w.state == Watcher.SYNCED:
                    st.offer(Response(w.id, rev))
                w.quiet = True
