"""The Lessor: leases, the keys attached to them and when they expire.

Pure: no asyncio, no wall clock of its own (a :class:`~meshkit._internal.clock.Clock`
is injected), no Raft. It follows etcd 3.4's ``lease.lessor``:

* Grant/Revoke change state only when a committed log entry is applied, so every
  member holds the same leases. The granted TTL is raised to ``min_ttl`` (derived
  from the election timeout) and capped by :data:`MAX_LEASE_TTL`.
* Only the *primary* (the leader's lessor) tracks expiry; a non-primary lessor
  keeps every lease "forever" (expiry = +inf). Becoming leader promotes the
  lessor: every lease gets a fresh TTL plus ``extend`` (the election timeout), so
  a member that was down or a leader change never causes a mass expiry; above
  :data:`LEASE_REVOKE_RATE` expiries per second, expiries are spread out as etcd does.
* Expiry is *found* here (:meth:`Lessor.find_expired`) but applied elsewhere: the
  leader proposes the revocations through the log. A lease found expired is
  offered again only after :data:`EXPIRED_RETRY_INTERVAL` if its revocation did
  not land.
* The expiry queue is a heap with lazy deletion: a renewal pushes a new entry and
  the stale one is skipped when it reaches the top (rebuilt when it grows too
  large).
* Persistence (optional): with a backend, a grant writes ``(id -> ttl,
  remaining)`` into the ``lease`` bucket and a revoke deletes it, in the
  backend's open batch, i.e. the same transaction as the data of that log entry.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from meshkit._internal.clock import Clock
from meshkit._internal.errors import LeaseExistError, LeaseNotFoundError, LeaseTTLTooLargeError
from meshkit.server.backend import Backend

# etcd's lease.MaxLeaseTTL.
MAX_LEASE_TTL = 9_000_000_000
# etcd's leaseRevokeRate: revocations per second the primary asks for at most.
LEASE_REVOKE_RATE = 1000
# etcd's expiredLeaseRetryInterval.
EXPIRED_RETRY_INTERVAL = 3.0
# etcd checks for expired leases every 500 ms.
EXPIRY_CHECK_INTERVAL = 0.5
NO_LEASE = 0
BUCKET = "lease"

_INT64 = struct.Struct(">q")
_VALUE = struct.Struct(">qq")  # (ttl, remaining ttl)
_FOREVER = math.inf


def min_ttl_seconds(election_ms: int, heartbeat_ms: int) -> int:
    """etcd: ``ceil(((3 * electionTicks) / 2) * heartbeat)`` in whole seconds
    (the tick product is an integer division, as in Go)."""
    ticks = max(1, election_ms // max(1, heartbeat_ms))
    return max(1, math.ceil((3 * ticks) // 2 * heartbeat_ms / 1000))


def lease_key(lease_id: int) -> bytes:
    return _INT64.pack(lease_id)


@dataclass(eq=False)
class Lease:
    id: int
    ttl: int
    # Persisted remaining TTL from a checkpoint (0: none); used on promotion.
    remaining_ttl: int = 0
    expiry: float = _FOREVER
    keys: set[bytes] = field(default_factory=set)
    # The time of this lease's one valid entry in the expiry heap.
    heap_time: float = _FOREVER
    # Grant order, to break ties in listings.
    seq: int = 0

    def remaining(self, now: float) -> float:
        """Seconds left; +inf on a non-primary lessor (etcd: MaxInt64 duration)."""
        return self.expiry - now

    def refresh(self, now: float, extend: float = 0.0) -> None:
        base = self.remaining_ttl if self.remaining_ttl > 0 else self.ttl
        self.expiry = now + extend + base


class Lessor:
    def __init__(self, clock: Clock, *, min_ttl: int = 1, backend: Backend | None = None) -> None:
        self.clock = clock
        self.min_ttl = min_ttl
        self._backend = backend
        self._leases: dict[int, Lease] = {}
        self._heap: list[tuple[float, int]] = []
        self._primary = False
        self._seq = 0

    # ------------------------------------------------------------------ state
    @property
    def is_primary(self) -> bool:
        return self._primary

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def lookup(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def leases(self) -> list[Lease]:
        """Every lease, soonest expiry first (etcd sorts by remaining time)."""
        return sorted(self._leases.values(), key=lambda le: (le.expiry, le.seq))

    # ---------------------------------------------------------- apply (log order)
    def grant(self, lease_id: int, ttl: int) -> Lease:
        """Grant; raises LeaseNotFoundError for id 0, LeaseTTLTooLargeError,
        LeaseExistError, exactly in etcd's order. A TTL below the minimum
        (zero and negative included) is raised to it."""
        if lease_id == NO_LEASE:
            raise LeaseNotFoundError()
        if ttl > MAX_LEASE_TTL:
            raise LeaseTTLTooLargeError()
        if lease_id in self._leases:
            raise LeaseExistError()
        ttl = max(ttl, self.min_ttl)
        self._seq += 1
        le = Lease(lease_id, ttl, seq=self._seq)
        if self._primary:
            le.refresh(self.clock.monotonic())
            self._schedule(le, le.expiry)
        self._leases[lease_id] = le
        if self._backend is not None:
            self._backend.bucket_put(BUCKET, lease_key(lease_id), _VALUE.pack(le.ttl, le.remaining_ttl))
        return le

    def revoke(self, lease_id: int) -> Lease:
        """Forget the lease (the caller deletes its keys first, in one write txn)."""
        le = self._leases.pop(lease_id, None)
        if le is None:
            raise LeaseNotFoundError()
        if self._backend is not None:
            self._backend.bucket_delete(BUCKET, lease_key(lease_id))
        self._maybe_compact_heap()
        return le

    def checkpoint(self, lease_id: int, remaining_ttl: int) -> None:
        """Record a remaining TTL (etcd's optional lease checkpointing)."""
        le = self._leases.get(lease_id)
        if le is None:
            return
        le.remaining_ttl = remaining_ttl
        if self._backend is not None:
            self._backend.bucket_put(BUCKET, lease_key(lease_id), _VALUE.pack(le.ttl, le.remaining_ttl))

    def attach(self, lease_id: int, key: bytes) -> None:
        le = self._leases.get(lease_id)
        if le is not None:
            le.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        le = self._leases.get(lease_id)
        if le is not None:
            le.keys.discard(key)

    # ------------------------------------------------------- leader-only parts
    def renew(self, lease_id: int) -> int:
        """Renew on the primary; returns the granted TTL. Raises
        LeaseNotFoundError for an unknown lease and :class:`LeaseExpiredError` for
        one that expired but whose revocation has not been applied yet (etcd
        makes the renewal wait for that revocation, then answers not found)."""
        if not self._primary:
            raise NotPrimaryError()
        le = self._leases.get(lease_id)
        if le is None:
            raise LeaseNotFoundError()
        now = self.clock.monotonic()
        if le.remaining(now) <= 0:
            raise LeaseExpiredError(lease_id)
        le.remaining_ttl = 0
        le.refresh(now)
        self._schedule(le, le.expiry)
        return le.ttl

    def promote(self, extend: float) -> None:
        """Become primary: every lease expires ``extend`` + its TTL from now,
        spread so no more than 3/4 of the revoke rate expire in any second."""
        self._primary = True
        now = self.clock.monotonic()
        for le in self._leases.values():
            le.refresh(now, extend)
        ordered = sorted(self._leases.values(), key=lambda le: (le.expiry, le.seq))
        if len(ordered) >= LEASE_REVOKE_RATE:
            target = (3 * LEASE_REVOKE_RATE) // 4
            base = ordered[0].remaining(now)
            next_window = base + 1.0
            expires = 0
            for le in ordered:
                remaining = le.remaining(now)
                if remaining > next_window:
                    base = remaining
                    next_window = base + 1.0
                    expires = 1
                    continue
                expires += 1
                if expires <= target:
                    continue
                delay = expires / target - (remaining - base)
                next_window = base + delay
                le.refresh(now, delay + extend)
        self._heap = [(le.expiry, le.id) for le in self._leases.values()]
        for le in self._leases.values():
            le.heap_time = le.expiry
        heapq.heapify(self._heap)

    def demote(self) -> None:
        """Stop being primary: every lease lives forever until promoted again."""
        self._primary = False
        for le in self._leases.values():
            le.expiry = _FOREVER
            le.heap_time = _FOREVER
        self._heap = []

    def find_expired(self, limit: int = LEASE_REVOKE_RATE // 2) -> list[int]:
        """Ids of up to ``limit`` expired leases, soonest first. Each is offered
        again after EXPIRED_RETRY_INTERVAL unless revoked meanwhile."""
        if not self._primary:
            return []
        now = self.clock.monotonic()
        heap = self._heap
        out: list[int] = []
        while heap and len(out) < limit:
            t, lid = heap[0]
            le = self._leases.get(lid)
            if le is None or le.heap_time != t:
                heapq.heappop(heap)  # stale: revoked or renewed since
                continue
            if now < t:
                break
            heapq.heappop(heap)
            self._schedule(le, now + EXPIRED_RETRY_INTERVAL)
            out.append(lid)
        return out

    # ----------------------------------------------------------- recovery
    def recover(self, items: Iterable[tuple[bytes, int]] | None = None, *,
                backend: Backend | None = None) -> None:
        """Reload leases from the backend bucket and their keys from
        ``(key, lease)`` pairs of the live keys. Leases are non-primary (forever)
        until :meth:`promote`. ``backend``: from now on use this one (a snapshot
        from the leader replaced the database)."""
        if backend is not None:
            self._backend = backend
        self._leases.clear()
        self._heap = []
        self._primary = False
        if self._backend is not None:
            for k, v in self._backend.bucket_items(BUCKET):
                lid = _INT64.unpack(k)[0]
                ttl, remaining = _VALUE.unpack(v)
                self._seq += 1
                self._leases[lid] = Lease(lid, ttl, remaining_ttl=remaining, seq=self._seq)
        for key, lid in items or ():
            self.attach(lid, key)

    # ----------------------------------------------------------- internals
    def _schedule(self, le: Lease, t: float) -> None:
        le.heap_time = t
        heapq.heappush(self._heap, (t, le.id))
        self._maybe_compact_heap()

    def _maybe_compact_heap(self) -> None:
        if len(self._heap) > 2 * len(self._leases) + 1024:
            self._heap = [(le.heap_time, le.id) for le in self._leases.values() if le.heap_time != _FOREVER]
            heapq.heapify(self._heap)

    def __iter__(self) -> Iterator[Lease]:
        return iter(self._leases.values())


class NotPrimaryError(Exception):
    """A renewal reached a lessor that is not the leader's."""


class LeaseExpiredError(Exception):
    """The lease expired; its revocation is on its way through the log."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:x} expired")
        self.lease_id = lease_id
