"""The member driver: Raft, WAL, store and applier wired into one write path.

Every write is a Raft proposal. One coroutine (``_raft_loop``) owns the Raft
node: it feeds it queued proposals, ticks and peer messages, then handles each
Ready in order — save hard state and entries to the WAL and fsync once for the
whole batch (group commit), hand messages to the transport, apply committed
entries to the store in log order, answer the waiting requests, advance. While
one fsync runs in a worker thread, new proposals queue up and go into the next
batch, so batches grow with load instead of fsyncs.

The store persists the log index it applied (the consistent index) in the same
backend transaction as the data, so a restart replays only the WAL tail after
it. Every ``snapshot_count`` applied entries the backend is made durable, a
snapshot mark is written and older WAL segments are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.errors import (
    EtcdError,
    MeshkitError,
    NoLeaderError,
    RequestTooLargeError,
    StoppedError,
    TimeoutError_,
)
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.server.apply import Applier
from meshkit.server.backend import Backend
from meshkit.server.etcdserver import ids
from meshkit.server.etcdserver.compactor import Compactor
from meshkit.server.lease import (
    EXPIRY_CHECK_INTERVAL,
    LEASE_REVOKE_RATE,
    LeaseExpiredError,
    Lessor,
    NotPrimaryError,
    min_ttl_seconds,
)
from meshkit.server.mvcc import KVStore
from meshkit.server.mvcc.watchable import WatchableStore
from meshkit.server.raft import (
    ConfChange,
    ConfState,
    EntryType,
    HardState,
    MemoryStorage,
    ProposalDroppedError,
    RaftConfig,
    RaftNode,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from meshkit.server.snap import Snapshotter
from meshkit.server.wal import WAL, SnapshotMark

log = logging.getLogger("meshkit.server")

# Entries kept in memory behind a snapshot so a slow follower can catch up from
# the log instead of needing a full snapshot (etcd's SnapshotCatchUpEntries).
CATCH_UP_ENTRIES = 5000
# How often the backend batch is committed (etcd's default backend batch interval).
BACKEND_COMMIT_INTERVAL = 0.1
REQUEST_TIMEOUT = 7.0
_META = struct.Struct(">QQ")


@dataclass(frozen=True)
class MemberInfo:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(slots=True)
class _Waiter:
    future: asyncio.Future[Any]
    request: ipb.InternalRequest
    deadline: float


@dataclass
class ServerSettings:
    """What the driver needs from the server configuration."""

    name: str
    data_dir: Path
    wal_dir: Path | None
    initial_cluster: tuple[tuple[str, str], ...]
    initial_cluster_token: str
    advertise_peer_urls: tuple[str, ...]
    advertise_client_urls: tuple[str, ...]
    snapshot_count: int = 100_000
    heartbeat_ms: int = 100
    election_ms: int = 1000
    max_request_bytes: int = 1_572_864
    max_txn_ops: int = 128
    auto_compaction_mode: str = "periodic"
    auto_compaction_period_s: float = 0.0  # periodic mode; 0 disables
    auto_compaction_revisions: int = 0  # revision mode; 0 disables
    grpc_keepalive_min_time_ms: int = 5000
    grpc_keepalive_interval_ms: int = 2 * 3600 * 1000
    grpc_keepalive_timeout_ms: int = 20_000
    # etcd's --experimental-watch-progress-notify-interval (10 min)
    watch_progress_notify_interval_s: float = 600.0
    extra: dict[str, Any] = field(default_factory=dict)


class EtcdServer:
    """One etcd member. ``async with EtcdServer(settings) as s:`` starts it."""

    def __init__(self, settings: ServerSettings, *, rand: random.Random | None = None,
                 clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or RealClock()
        self._rand = rand or random.Random()
        self.member_dir = settings.data_dir / "member"
        self.wal_dir = settings.wal_dir or (self.member_dir / "wal")
        self.snapshotter = Snapshotter(self.member_dir / "snap")
        self.member_id = 0
        self.cluster_id = 0
        self.members: dict[int, MemberInfo] = {}
        self.applied_index = 0
        self.committed_index = 0
        self._snapshot_index = 0
        self._waiters: dict[int, _Waiter] = {}
        self._next_id = self._rand.getrandbits(40) << 16
        self._proposals: list[bytes] = []
        self._wake = asyncio.Event()
        self._ticks = 0
        self._closing = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._last_backend_commit = 0.0
        self._leader_ready = asyncio.Event()
        self._apply_hooks: list[Callable[[], None]] = []
        self._single_voter_cache: bool | None = None
        self.wal: WAL
        self.store: KVStore
        self.backend: Backend
        self.applier: Applier
        self.node: RaftNode
        self.storage: MemoryStorage

    # ---- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> EtcdServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        s = self.settings
        self.member_dir.mkdir(parents=True, exist_ok=True)
        (self.member_dir / "snap").mkdir(parents=True, exist_ok=True)
        self.backend = Backend.open(self.member_dir / "snap" / "db")
        self.store = KVStore(self.backend)
        # Leases come back from the backend with their keys from the store; they
        # live "forever" until this member, as leader, promotes the lessor.
        self.lessor = Lessor(self.clock, min_ttl=min_ttl_seconds(s.election_ms, s.heartbeat_ms),
                             backend=self.backend)
        self.lessor.recover(self.store.leased_keys())
        self._lease_applied = asyncio.Event()
        self._apply_hooks.append(self._notify_lease_waiters)
        self.applier = Applier(self.store, lessor=self.lessor)
        # Watchers get every write txn's events as it is applied.
        self.watchable = WatchableStore(self.store, progress_interval=s.watch_progress_notify_interval_s)
        self.applier.on_events = self.watchable.notify
        self.watchable.start()
        self.storage = MemoryStorage()
        if WAL.exists(self.wal_dir):
            self._restart()
        else:
            self._bootstrap()
        cfg = RaftConfig(
            id=self.member_id,
            election_tick=max(1, s.election_ms // s.heartbeat_ms),
            heartbeat_tick=1,
            pre_vote=True,
            check_quorum=True,
            applied=self.applied_index,
        )
        self.node = RaftNode(cfg, self.storage, rand=self._rand)
        if self._single_voter():
            # A lone voter needs no election timeout to know it wins.
            self.node.campaign()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._raft_loop(), name="raft-loop"),
            loop.create_task(self._ticker(), name="raft-ticker"),
            loop.create_task(self._lease_expiry_loop(), name="lease-expiry"),
        ]
        self._wake.set()
        self.compactor = Compactor(
            mode=s.auto_compaction_mode,
            period_s=s.auto_compaction_period_s,
            revisions=s.auto_compaction_revisions,
            current_revision=lambda: self.store.current_revision,
            compact=lambda rev: self.propose(ipb.InternalRequest(compaction=pb.CompactionRequest(revision=rev))),
            is_leader=self.is_leader,
            clock=self.clock,
        )
        await self.compactor.__aenter__()
        try:
            await asyncio.wait_for(self._leader_ready.wait(), timeout=max(10.0, s.election_ms / 100))
        except TimeoutError:
            log.warning("no leader elected yet; serving will wait for one")

    def _bootstrap(self) -> None:
        s = self.settings
        peers: dict[str, list[str]] = {}
        for name, url in s.initial_cluster:
            peers.setdefault(name, []).append(url)
        for name, urls in peers.items():
            mid = ids.member_id(urls, s.initial_cluster_token)
            self.members[mid] = MemberInfo(
                mid, name, tuple(urls), s.advertise_client_urls if name == s.name else ()
            )
        self.member_id = ids.member_id(peers.get(s.name, list(s.advertise_peer_urls)), s.initial_cluster_token)
        if self.member_id not in self.members:
            self.members[self.member_id] = MemberInfo(
                self.member_id, s.name, s.advertise_peer_urls, s.advertise_client_urls
            )
        self.cluster_id = ids.cluster_id(self.members)
        # Membership is the data dir's from now on (etcd ignores --initial-cluster
        # on restart); it is durable before the WAL that marks the dir as used.
        self._save_members()
        self.backend.sync()
        self.wal = WAL.create(self.wal_dir, _META.pack(self.member_id, self.cluster_id))
        self.storage.bootstrap(ConfState(voters=tuple(sorted(self.members))))
        self.applied_index = self.store.consistent_index
        log.info("bootstrapped member %x in cluster %x", self.member_id, self.cluster_id)

    def _restart(self) -> None:
        mark = self.snapshotter.load_newest()
        self.wal, replay = WAL.open(
            self.wal_dir, from_snapshot=SnapshotMark(mark.index, mark.term) if mark else None
        )
        if replay.truncated_bytes:
            log.warning("wal: truncated a torn tail of %d bytes", replay.truncated_bytes)
        self.member_id, self.cluster_id = _META.unpack(replay.metadata[: _META.size])
        if mark is not None:
            self.storage.apply_snapshot(Snapshot(metadata=mark))
            self._snapshot_index = mark.index
        hs = replay.hard_state
        applied = self.store.consistent_index
        last = replay.entries[-1].index if replay.entries else (mark.index if mark else 0)
        if applied > hs.commit:
            # The store can only have applied committed entries; a crash between
            # applying and recording the commit index leaves hard state behind.
            hs = HardState(term=hs.term, vote=hs.vote, commit=min(applied, last))
        self.storage.set_hard_state(hs)
        self.storage.append(replay.entries)
        self._load_members()
        if mark is None and not replay.entries and hs.is_empty():
            # Crashed after creating the WAL but before the bootstrap entries
            # were persisted: bootstrap again, nothing was ever acknowledged.
            self.storage.bootstrap(ConfState(voters=tuple(sorted(self.members))))
        self.applied_index = applied
        self.committed_index = hs.commit
        log.info(
            "restarted member %x: applied %d, %d wal entries to replay",
            self.member_id, applied, max(0, last - applied),
        )

    def _save_members(self) -> None:
        for m in self.members.values():
            self.backend.bucket_put("members", struct.pack(">Q", m.id), json.dumps({
                "name": m.name, "peerURLs": list(m.peer_urls),
                "clientURLs": list(m.client_urls), "isLearner": m.is_learner,
            }).encode())

    def _load_members(self) -> None:
        s = self.settings
        for key, raw in self.backend.bucket_items("members"):
            (mid,) = struct.unpack(">Q", key)
            d = json.loads(raw)
            self.members[mid] = MemberInfo(mid, d["name"], tuple(d["peerURLs"]),
                                           tuple(d["clientURLs"]), bool(d["isLearner"]))
        if self.member_id not in self.members:
            raise MeshkitError(
                f"member {self.member_id:x} is not in the membership stored in {self.member_dir}"
            )
        # Like etcd's publish at start: this member's name and client URLs are
        # what it was started with now (peer URLs change only via MemberUpdate).
        me = self.members[self.member_id]
        self.members[self.member_id] = MemberInfo(
            me.id, s.name, me.peer_urls, s.advertise_client_urls, me.is_learner
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._wake.set()
        with contextlib.suppress(Exception):
            await self.compactor.close()
        with contextlib.suppress(Exception):
            await self.watchable.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for w in self._waiters.values():
            if not w.future.done():
                w.future.set_exception(StoppedError())
        self._waiters.clear()
        with contextlib.suppress(Exception):
            self.store.set_consistent_index(self.applied_index)
            self.store.commit()
        with contextlib.suppress(Exception):
            self.store.close()
        with contextlib.suppress(Exception):
            self.wal.close()

    # ---- requests --------------------------------------------------------------

    @property
    def term(self) -> int:
        return int(self.node.term)

    @property
    def leader_id(self) -> int:
        return int(self.node.lead)

    def is_leader(self) -> bool:
        return bool(self.node.role == StateRole.LEADER)

    # ---- leases ----------------------------------------------------------------

    def new_lease_id(self) -> int:
        """A lease id as etcd picks one: the next request id, as a positive int63."""
        while True:
            lid = self._next_id & ((1 << 63) - 1)
            self._next_id += 1
            if lid:
                return lid

    async def lease_renew(self, lease_id: int) -> int:
        """Renew on the leader; returns the granted TTL. An expired lease whose
        revocation is in flight waits for it and then is not found, as in etcd."""
        deadline = 0.0
        while True:
            if self._closing:
                raise StoppedError()
            if not self.is_leader():
                # etcd forwards the renewal to the leader over the peer HTTP API.
                raise NotImplementedError("keep-alive on a follower comes with the Raft cluster issue")
            try:
                return self.lessor.renew(lease_id)
            except (LeaseExpiredError, NotPrimaryError):
                # Wait for the revocation (or the promotion) to be applied.
                now = asyncio.get_running_loop().time()
                deadline = deadline or now + REQUEST_TIMEOUT
                left = deadline - now
                if left <= 0:
                    raise TimeoutError_() from None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lease_applied.wait(), min(left, EXPIRY_CHECK_INTERVAL))

    def _notify_lease_waiters(self) -> None:
        ev = self._lease_applied
        self._lease_applied = asyncio.Event()
        ev.set()

    async def _lease_expiry_loop(self) -> None:
        """Leader only: propose the revocation of expired leases every 500 ms,
        at most etcd's revoke rate. Every member then deletes the same keys at
        the same revision."""
        while True:
            await self.clock.sleep(EXPIRY_CHECK_INTERVAL)
            if self._closing or not self.is_leader():
                continue
            expired = self.lessor.find_expired(int(LEASE_REVOKE_RATE * EXPIRY_CHECK_INTERVAL))
            if expired:
                try:
                    await self.propose(ipb.InternalRequest(lease_expire=ipb.LeaseExpireRequest(ids=expired)))
                except EtcdError as e:  # retried after the lessor's retry interval
                    log.warning("revoking %d expired leases failed: %s", len(expired), e)

    def _single_voter(self) -> bool:
        # Cached: every linearizable read asks. Refreshed when membership changes.
        if self._single_voter_cache is None:
            voters = self.node.conf_state().voters
            self._single_voter_cache = len(voters) == 1 and self.member_id in voters
        return self._single_voter_cache

    async def propose(self, req: ipb.InternalRequest) -> Any:
        """Put a request through the log; returns what applying it returned."""
        if self._closing:
            raise StoppedError()
        rid = self._next_id
        self._next_id += 1
        req.header.id = rid
        data = req.SerializeToString()
        if len(data) > self.settings.max_request_bytes:
            raise RequestTooLargeError()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        # No timer per request: the ticker fails the overdue ones (_expire_waiters).
        self._waiters[rid] = _Waiter(fut, req, loop.time() + REQUEST_TIMEOUT)
        self._proposals.append(data)
        self._wake.set()
        try:
            return await fut
        finally:
            self._waiters.pop(rid, None)

    def _expire_waiters(self, now: float) -> None:
        # Waiters are inserted in deadline order (one timeout for all), so the
        # scan stops at the first that is not overdue.
        for w in list(self._waiters.values()):
            if w.deadline > now:
                break
            if not w.future.done():
                w.future.set_exception(TimeoutError_())

    async def linearizable_barrier(self) -> None:
        """Return once this member's store reflects every write acknowledged
        anywhere in the cluster before the call.

        A lone voter is the whole quorum and acknowledges a write only after
        applying it, so its applied state already qualifies.
        """
        if self._closing:
            raise StoppedError()
        if self._single_voter() and self.is_leader():
            return
        raise NotImplementedError("linearizable reads across several members come with the Raft cluster issue")

    def header(self, h: pb.ResponseHeader, revision: int = 0) -> None:
        h.cluster_id = self.cluster_id
        h.member_id = self.member_id
        h.raft_term = self.node.term
        if not h.revision:
            h.revision = revision or self.store.current_revision

    # ---- the raft loop ---------------------------------------------------------

    async def _ticker(self) -> None:
        interval = self.settings.heartbeat_ms / 1000.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            self._ticks += 1
            self._wake.set()
            if self._waiters:
                self._expire_waiters(loop.time())

    async def _raft_loop(self) -> None:
        node = self.node
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while self._ticks:
                self._ticks -= 1
                node.tick()
            if self._proposals:
                self._feed_proposals()
            while node.has_ready():
                rd = node.ready()
                if rd.soft_state is not None and node.role == StateRole.LEADER:
                    self._leader_ready.set()
                if rd.soft_state is not None and node.role != StateRole.LEADER and self.lessor.is_primary:
                    self.lessor.demote()
                if rd.hard_state is not None or rd.entries:
                    self.wal.save(rd.hard_state, rd.entries)
                    if rd.must_sync:
                        # In a worker thread so requests keep flowing into the next
                        # batch meanwhile; an inline fsync measured better at one
                        # client but halved throughput at 16-64 (batches shrink).
                        await asyncio.to_thread(self.wal.sync)
                if rd.entries:
                    self.storage.append(rd.entries)
                if rd.hard_state is not None:
                    self.storage.set_hard_state(rd.hard_state)
                    self.committed_index = rd.hard_state.commit
                if rd.committed_entries:
                    self._apply(rd.committed_entries)
                node.advance(rd)
                if self._proposals:
                    # What queued up during the fsync forms the next batch.
                    self._feed_proposals()
            if node.role == StateRole.LEADER:
                self._leader_ready.set()
            self._maybe_commit_backend()
            self._maybe_snapshot()

    def _feed_proposals(self) -> None:
        props, self._proposals = self._proposals, []
        try:
            self.node.propose_many(props)
        except ProposalDroppedError:
            for data in props:
                self._fail_proposal(data)

    def _fail_proposal(self, data: bytes) -> None:
        req = ipb.InternalRequest.FromString(data)
        w = self._waiters.get(req.header.id)
        if w is not None and not w.future.done():
            w.future.set_exception(NoLeaderError())

    def _apply(self, entries: list[Any]) -> None:
        applier = self.applier
        for e in entries:
            if e.index <= self.applied_index:
                continue
            if e.type == EntryType.CONF_CHANGE:
                # Bootstrap entries (the initial members) arrive here too; adding
                # and removing members at run time comes with the cluster issue.
                self.node.apply_conf_change(ConfChange.decode(e.data))
                self._single_voter_cache = None
            elif not e.data:
                # The new leader's empty entry: promote the lessor once this
                # member has applied the previous terms (etcd: Promote(electionTimeout)).
                if self.is_leader():
                    self.lessor.promote(self.settings.election_ms / 1000.0)
            else:
                req = ipb.InternalRequest.FromString(e.data)
                waiter = self._waiters.get(req.header.id)
                try:
                    result = self._dispatch(applier, req)
                except EtcdError as err:
                    if waiter is not None and not waiter.future.done():
                        waiter.future.set_exception(err)
                else:
                    if waiter is not None and not waiter.future.done():
                        waiter.future.set_result(result)
            self.applied_index = e.index
        self.store.set_consistent_index(self.applied_index)
        for hook in self._apply_hooks:
            hook()

    @staticmethod
    def _dispatch(applier: Applier, req: ipb.InternalRequest) -> Any:
        kind = req.WhichOneof("request")
        if kind == "put":
            return applier.put(req.put)
        if kind == "delete_range":
            return applier.delete_range(req.delete_range)
        if kind == "txn":
            return applier.txn(req.txn)
        if kind == "compaction":
            return applier.compact(req.compaction)
        if kind == "lease_grant":
            return applier.lease_grant(req.lease_grant)
        if kind == "lease_revoke":
            return applier.lease_revoke(req.lease_revoke)
        if kind == "lease_expire":
            return applier.lease_expire(req.lease_expire)
        if kind == "lease_checkpoint":
            return applier.lease_checkpoint(req.lease_checkpoint)
        raise NotImplementedError(f"applying {kind!r} requests is not implemented yet")

    def _maybe_commit_backend(self) -> None:
        now = time.monotonic()
        if now - self._last_backend_commit >= BACKEND_COMMIT_INTERVAL:
            self.store.commit()
            self._last_backend_commit = now

    def _maybe_snapshot(self) -> None:
        if self.applied_index - self._snapshot_index < self.settings.snapshot_count:
            return
        index = self.applied_index
        term = self.storage.term(index)
        self.store.commit()
        self.backend.sync()
        meta = SnapshotMetadata(index=index, term=term, conf_state=ConfState(voters=tuple(sorted(self.members))))
        self.snapshotter.save(meta)
        self.wal.save_snapshot(SnapshotMark(index, term))
        self.wal.release_to(index)
        self.storage.create_snapshot(index, meta.conf_state, b"")
        if index > CATCH_UP_ENTRIES:
            self.storage.compact(index - CATCH_UP_ENTRIES)
        self._snapshot_index = index
        log.info("snapshot at index %d (term %d); wal released", index, term)
