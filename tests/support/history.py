"""Recording a history of register operations against a live cluster.

``run_load`` runs N concurrent clients (each its own ``meshkit.client.Client``,
pinned to one member or given several endpoints) doing random puts and
linearizable gets (plus compare-and-set txns and deletes on some keys) with unique
values, bounded in count and in time, and records every invocation and return with
``time.monotonic()`` for :mod:`tests.support.linearizability`.

Outcomes: a call that answered is recorded with its output. A write whose request
provably never left the client (no connection could be made) did not happen and is
left out; any other failed write (timeout, connection lost after sending, a server
error) has an unknown outcome (``ret = inf``). A failed read is left out.

``check_writes`` then reads the keys' whole MVCC history through a watch from
revision 1 and checks what the register model cannot see: every acknowledged write
is in the store at the revision its response named, no write happened twice, no
value appeared that nobody wrote, a write that was never sent is absent, a read's
value carries the mod_revision it was written at, and no read answers at a revision
older than a write acknowledged before the read was sent.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from meshkit.client import Client
from meshkit.client.errors import ConnectionFailedError, NoEndpointAvailableError
from meshkit.client.txn import Cmp, Op
from meshkit.client.types import EventType
from tests.support.linearizability import UNKNOWN, Operation, assert_linearizable

PREFIX = b"lin/"
REGISTERS = tuple(PREFIX + b"r%d" % i for i in range(4))  # put / get
CAS_KEYS = (PREFIX + b"c0",)  # put / get / cas / delete


def never_sent(err: BaseException) -> bool:
    """The request provably never left the client (the client's own rule for a
    mutation it may retry): no connection could be made to any endpoint tried."""
    if isinstance(err, ConnectionFailedError):
        return not err.sent
    if isinstance(err, NoEndpointAvailableError):
        return bool(err.errors) and all(
            isinstance(e, ConnectionFailedError) and not e.sent for e in err.errors.values())
    return False


@dataclass
class History:
    ops: list[Operation] = field(default_factory=list)
    # writes that never left their client: (key, value), to check they are absent
    not_sent: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    # ops that answered: id(op) -> the revision of the response header
    revisions: dict[int, int] = field(default_factory=dict)
    # gets that answered: id(op) -> mod_revision of the key-value read (0: absent)
    mod_revisions: dict[int, int] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    failed_reads: int = 0

    def ok_ops(self, kind: str | None = None) -> list[Operation]:
        return [o for o in self.ops if not o.unknown and (kind is None or o.kind == kind)]

    def unknown_ops(self) -> list[Operation]:
        return [o for o in self.ops if o.unknown]

    def acked_after(self, t: float, kinds: tuple[str, ...] = ("put", "cas", "delete")) -> int:
        """Writes acknowledged after monotonic time ``t`` (progress under a fault)."""
        return sum(1 for o in self.ops if not o.unknown and o.kind in kinds and o.ret > t)

    def summary(self) -> str:
        kinds = Counter(o.kind + ("?" if o.unknown else "") for o in self.ops)
        errs = ", ".join(f"{k} x{n}" for k, n in self.errors.most_common(4))
        return (f"{len(self.ops)} ops ({dict(sorted(kinds.items()))}), {len(self.not_sent)} writes "
                f"never sent, {self.failed_reads} failed reads; errors: {errs or 'none'}")

    # -- recording one call ------------------------------------------------------

    async def put(self, c: Client, client: int, key: bytes, value: bytes, info: str = "") -> None:
        t0 = time.monotonic()
        try:
            r = await c.put(key, value)
        except Exception as e:
            self._write_failed(e, Operation(client, "put", key, t0, math.inf, value=value,
                                            output=UNKNOWN, info=f"{info} {_err(e)}".strip()))
            return
        op = Operation(client, "put", key, t0, time.monotonic(), value=value,
                       info=f"{info} rev {r.header.revision}".strip())
        self.ops.append(op)
        self.revisions[id(op)] = r.header.revision

    async def get(self, c: Client, client: int, key: bytes, info: str = "",
                  serializable: bool = False) -> bytes | None:
        t0 = time.monotonic()
        try:
            r = await c.get(key, serializable=serializable)
        except Exception as e:
            self.failed_reads += 1
            self.errors[_err(e)] += 1
            raise
        value = r.kvs[0].value if r.kvs else None
        op = Operation(client, "get", key, t0, time.monotonic(), output=value,
                       info=f"{info} rev {r.header.revision}".strip())
        self.ops.append(op)
        self.revisions[id(op)] = r.header.revision
        self.mod_revisions[id(op)] = r.kvs[0].mod_revision if r.kvs else 0
        return value

    async def cas(self, c: Client, client: int, key: bytes, expect: bytes | None, value: bytes,
                  info: str = "") -> None:
        guard = Cmp.version(key) == 0 if expect is None else Cmp.value(key) == expect
        t0 = time.monotonic()
        try:
            r = await c.txn().if_(guard).then(Op.put(key, value)).commit()
        except Exception as e:
            self._write_failed(e, Operation(client, "cas", key, t0, math.inf, value=value, expect=expect,
                                            output=UNKNOWN, info=f"{info} {_err(e)}".strip()))
            return
        op = Operation(client, "cas", key, t0, time.monotonic(), value=value, expect=expect,
                       output=r.succeeded, info=f"{info} rev {r.header.revision}".strip())
        self.ops.append(op)
        self.revisions[id(op)] = r.header.revision

    async def delete(self, c: Client, client: int, key: bytes, info: str = "") -> None:
        t0 = time.monotonic()
        try:
            r = await c.delete(key)
        except Exception as e:
            self._write_failed(e, Operation(client, "delete", key, t0, math.inf, output=UNKNOWN,
                                            info=f"{info} {_err(e)}".strip()))
            return
        op = Operation(client, "delete", key, t0, time.monotonic(), output=r.deleted,
                       info=f"{info} rev {r.header.revision}".strip())
        self.ops.append(op)
        self.revisions[id(op)] = r.header.revision

    def _write_failed(self, err: BaseException, op: Operation) -> None:
        self.errors[_err(err)] += 1
        if never_sent(err):
            self.not_sent.append((op.key, op.value))
        else:
            self.ops.append(op)


def _err(e: BaseException) -> str:
    text = str(e).split("\n")[0]
    return f"{type(e).__name__}: {text[:80]}"


@dataclass
class Load:
    """N clients doing random register operations until ``stop``, the deadline or
    the op budget, whichever comes first."""

    endpoints: Sequence[Sequence[str]]  # one endpoint list per client (cycled)
    clients: int = 6
    duration: float = 5.0
    max_ops: int = 4000
    op_timeout: float = 2.0
    seed: int = 0
    registers: Sequence[bytes] = REGISTERS
    cas_keys: Sequence[bytes] = CAS_KEYS
    # serializable gets (may be stale, as etcd allows): only to show the checker
    # catching stale reads; the fault tests read linearizably
    serializable: bool = False
    read_only: bool = False  # gets only
    first_client: int = 0  # client numbers in the history: first_client, first_client + 1, ...
    history: History = field(default_factory=History)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    issued: int = 0
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Load:
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if self._task is not None:
            await self._task

    async def run(self) -> None:
        deadline = time.monotonic() + self.duration
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(
                Client(list(self.endpoints[w % len(self.endpoints)]), timeout=self.op_timeout))
                for w in range(self.clients)]
            await asyncio.gather(*(self._worker(self.first_client + w, c, deadline)
                                   for w, c in enumerate(clients)))

    async def done(self) -> None:
        """Until the clients stop on their own (deadline or op budget)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def wait_acked(self, n: int, after: float, limit: float) -> None:
        """Until ``n`` writes were acknowledged after monotonic time ``after``."""
        end = time.monotonic() + limit
        while self.history.acked_after(after) < n:
            ended = self._task is not None and self._task.done()
            if time.monotonic() > end or ended:
                why = "before the load ended" if ended else f"in {limit}s"
                raise AssertionError(
                    f"only {self.history.acked_after(after)} writes acknowledged {why} "
                    f"(wanted {n}): {self.history.summary()}")
            await asyncio.sleep(0.05)

    async def _worker(self, w: int, c: Client, deadline: float) -> None:
        rnd = random.Random(self.seed * 1000 + w)
        h = self.history
        last_read: dict[bytes, bytes | None] = {}
        keys = [*self.registers, *self.cas_keys]
        seq = 0
        ep = ",".join(c.endpoints) if len(c.endpoints) == 1 else "any"
        while not self.stop.is_set() and time.monotonic() < deadline and self.issued < self.max_ops:
            self.issued += 1
            seq += 1
            key = rnd.choice(keys)
            value = b"s%d-w%d-%d" % (self.seed, w, seq)
            r = 1.0 if self.read_only else rnd.random()
            n_before = len(h.ops)
            errors_before = sum(h.errors.values())
            if key in self.cas_keys and r < 0.25:
                await h.cas(c, w, key, last_read.get(key), value, ep)
            elif key in self.cas_keys and r < 0.30:
                await h.delete(c, w, key, ep)
            elif r < 0.55:
                await h.put(c, w, key, value, ep)
            else:
                with contextlib.suppress(Exception):
                    last_read[key] = await h.get(c, w, key, ep, serializable=self.serializable)
            if sum(h.errors.values()) != errors_before or len(h.ops) == n_before:
                await asyncio.sleep(0.05)  # a failure: do not spin on a dead endpoint


async def final_reads(history: History, endpoints: Sequence[str], keys: Sequence[bytes],
                      client: int = -1, limit: float = 15.0) -> None:
    """One linearizable read of every key, recorded, once the cluster answers
    (retried until ``limit``); part of the history, so the last acknowledged
    writes must be visible to it."""
    deadline = time.monotonic() + limit
    async with Client(list(endpoints), timeout=2.0) as c:
        for k in keys:
            while True:
                try:
                    await history.get(c, client, k, "final")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)


async def check_writes(history: History, endpoints: Sequence[str], prefix: bytes = PREFIX,
                       limit: float = 20.0) -> int:
    """Compare the writes of the history with the MVCC history of ``prefix`` (a
    watch from revision 1, up to a marker written last). Returns the number of
    events seen. Raises AssertionError naming the first discrepancy."""
    marker = prefix + b"~end"
    async with Client(list(endpoints), timeout=5.0) as c:
        end_rev = (await c.put(marker, b"end")).header.revision
        events: list[tuple[EventType, bytes, bytes, int]] = []

        async def collect() -> None:
            async with c.watch(prefix, prefix=True, start_revision=1) as w:
                async for resp in w:
                    for e in resp.events:
                        events.append((e.type, e.kv.key, e.kv.value, e.kv.mod_revision))
                    if events and events[-1][3] >= end_rev:
                        return

        await asyncio.wait_for(collect(), limit)
    revs = [e[3] for e in events]
    assert revs == sorted(revs), "watch events out of revision order"
    puts: dict[tuple[bytes, bytes | None], int] = {}
    for t, k, v, rev in events:
        if t == EventType.PUT and k != marker:
            assert (k, v) not in puts, f"value {v!r} written to {k!r} twice (revisions {puts[(k, v)]}, {rev})"
            puts[(k, v)] = rev
    for kv in history.not_sent:
        assert kv not in puts, f"a write the client never sent is in the store: {kv}"
    written = {(o.key, o.value) for o in history.ops if o.kind in ("put", "cas")}
    phantom = [kv for kv in puts if kv not in written]
    assert not phantom, f"values in the store that no client wrote: {phantom[:5]}"
    for o in history.ops:
        if o.unknown or o.kind not in ("put", "cas"):
            continue
        rev = history.revisions[id(o)]
        if o.kind == "cas" and o.output is False:
            assert (o.key, o.value) not in puts, f"a failed cas took effect: {o.describe()}"
            continue
        assert (o.key, o.value) in puts, f"an acknowledged write is not in the store: {o.describe()}"
        assert puts[(o.key, o.value)] == rev, (
            f"acknowledged at revision {rev} but stored at {puts[(o.key, o.value)]}: {o.describe()}")
    deletes = {rev for t, _, _, rev in events if t == EventType.DELETE}
    for o in history.ops:
        if o.kind == "delete" and not o.unknown and o.output == 1:
            assert history.revisions[id(o)] in deletes, f"an acknowledged delete is missing: {o.describe()}"
    # Reads against the store's revisions: a value read is the one written at the
    # mod_revision returned, within the revision of the response; and a read never
    # answers at a revision older than a write acknowledged before it was sent.
    acked = sorted((o.ret, history.revisions[id(o)]) for o in history.ops
                   if not o.unknown and o.kind != "get")
    rets = [r for r, _ in acked]
    best = list(itertools.accumulate((rev for _, rev in acked), max))
    for o in history.ops:
        if o.kind != "get" or o.unknown:
            continue
        rev, mod = history.revisions[id(o)], history.mod_revisions[id(o)]
        if isinstance(o.output, bytes):
            written_at = puts.get((o.key, o.output))
            assert written_at == mod, (
                f"read {o.output!r} at mod_revision {mod}, written at {written_at}: {o.describe()}")
        assert mod <= rev, f"read a key modified at {mod} in a response at revision {rev}: {o.describe()}"
        i = bisect.bisect_left(rets, o.call)
        if i:
            assert rev >= best[i - 1], (
                f"a read answered at revision {rev} after a write was acknowledged at {best[i - 1]}: "
                f"{o.describe()}")
    return len(events)


async def verify(history: History, members: dict[str, str], keys: Sequence[bytes] = (*REGISTERS, *CAS_KEYS),
                 ) -> str:
    """After the load: a last linearizable read of every key through each member
    (``name -> endpoint``; recorded, so each must see the latest acknowledged
    writes), then the linearizability check and :func:`check_writes`. Returns a
    one-line summary; raises AssertionError with the explanation on a failure."""
    for i, ep in enumerate(members.values()):
        await final_reads(history, [ep], keys, client=-1 - i)
    res = assert_linearizable(history.ops)
    events = await check_writes(history, list(members.values()))
    return f"{history.summary()} | {res.summary()} | {events} store events match"
