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

Several members: Raft messages leave through the transport (after the entries
and hard state of their Ready are durable) and arrive in ``receive``, to be
stepped by the loop. A follower forwards proposals to the leader as one
MsgProp per batch (the leader proposes their entries); with no leader they wait
for one until their deadline. Linearizable reads share ReadIndex rounds: every
read waiting when a round starts is answered by it. Lease renewals and
time-to-live are forwarded to the leader over the transport. Membership changes
are conf-change entries whose context carries the member; every member applies
them to its member list (kept in the backend bucket "members") and transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.errors import (
    BadLeaderTransfereeError,
    EtcdError,
    LearnerNotReadyError,
    MemberBadURLsError,
    MemberExistError,
    MemberNotEnoughStartedError,
    MemberNotFoundError,
    MemberNotLearnerError,
    MeshkitError,
    NoSpaceError,
    NotLeaderError,
    PeerURLExistError,
    RequestTooLargeError,
    StoppedError,
    TimeoutError_,
    TimeoutLeaderTransferError,
    TooManyLearnersError,
    UnhealthyError,
    from_status,
)
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.api.meshkitpb import raft_pb2 as rpb
from meshkit.server.apply import Applier
from meshkit.server.auth import AuthStore, new_token_provider
from meshkit.server.auth.apply import AUTH_KINDS, apply_auth, check_request
from meshkit.server.backend import Backend
from meshkit.server.etcdserver import ids
from meshkit.server.etcdserver.alarms import (
    DEFAULT_QUOTA_BYTES,
    KV_OVERHEAD,
    AlarmStore,
    capped_refuses,
    quota_cost,
)
from meshkit.server.etcdserver.compactor import Compactor
from meshkit.server.etcdserver.metrics import ServerMetrics
from meshkit.server.etcdserver.syncer import SyncThread
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
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftConfig,
    RaftError,
    RaftNode,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from meshkit.server.snap import Snapshotter
from meshkit.server.tls import TLSInfo
from meshkit.server.transport import GrpcTransport, PeerUnreachableError, Transport
from meshkit.server.wal import WAL, SnapshotMark

log = logging.getLogger("meshkit.server")

# Entries kept in memory behind a snapshot so a slow follower can catch up from
# the log instead of needing a full snapshot (etcd's SnapshotCatchUpEntries).
CATCH_UP_ENTRIES = 5000
# How often the backend batch is committed (etcd's default backend batch interval).
BACKEND_COMMIT_INTERVAL = 0.1
REQUEST_TIMEOUT = 7.0
_META = struct.Struct(">QQ")
# etcd's maxLearners and the share of the leader's log a learner must have
# before it may be promoted (readyPercent).
MAX_LEARNERS = 1
# etcd's HealthInterval: a member must have been connected this long to count.
HEALTH_INTERVAL = 5.0
LEARNER_READY_PERCENT = 0.9
_CODES = {c.value[0]: c for c in grpc.StatusCode}
# The store applier's method for each kind of request it applies.
_APPLY: dict[str, Callable[[Applier, Any], Any]] = {
    "put": Applier.put,
    "delete_range": Applier.delete_range,
    "txn": Applier.txn,
    "compaction": Applier.compact,
    "lease_grant": Applier.lease_grant,
    "lease_revoke": Applier.lease_revoke,
    "lease_expire": Applier.lease_expire,
    "lease_checkpoint": Applier.lease_checkpoint,
}


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
    request: Any
    deadline: float


@dataclass(slots=True)
class _ReadRound:
    ctx: bytes
    waiters: list[tuple[asyncio.Future[None], float]]
    started: float


class MemberRemovedError(StoppedError):  # type: ignore[misc,valid-type]
    """This member was removed from the cluster (etcd exits with this text)."""

    message = "the member has been permanently removed from the cluster"


class MemberIDRemovedError(MemberNotFoundError):  # type: ignore[misc,valid-type]
    """A membership change names a member removed before (etcd's
    membership.ErrIDRemoved, "membership: ID removed", checked first when the
    change is applied). etcd's togRPCError answers it as ErrGRPCMemberNotFound,
    so clients see "etcdserver: member not found"; only a MemberPromote a follower
    forwards tells it apart (see ``handle_call`` and ``_promote_through_leader``)."""

    internal_message = "membership: ID removed"


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_snapshot_db(incoming: Path, db: Path) -> None:
    """Put a received snapshot db in place of the (closed) live one. The old
    db's sqlite side files must go first: a -wal left behind would be replayed
    into the new file."""
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    os.replace(incoming, db)
    _fsync_dir(db.parent)


def finish_snapshot_install(snap_dir: Path, newest_index: int | None) -> None:
    """At start, before the backend is opened: complete a snapshot install a
    crash interrupted (the newest mark's ``.snap.db`` is still there) and drop
    received dbs no mark refers to."""
    for f in snap_dir.glob("*.snap.db"):
        try:
            index = int(f.name.split(".", 1)[0], 16)
        except ValueError:
            continue
        if newest_index is not None and index == newest_index:
            log.warning("finishing the install of the snapshot at index %d", index)
            _move_snapshot_db(f, snap_dir / "db")
        else:
            f.unlink()


def member_to_json(m: MemberInfo) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "peerURLs": list(m.peer_urls),
            "clientURLs": list(m.client_urls), "isLearner": m.is_learner}


def member_from_json(d: dict[str, Any]) -> MemberInfo:
    return MemberInfo(int(d["id"]), d["name"], tuple(d["peerURLs"]), tuple(d["clientURLs"]),
                      bool(d["isLearner"]))


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
    initial_cluster_state: str = "new"
    # Peer listen addresses; empty: no peer listener (a lone member started by
    # a test). A cluster of several members needs them (or an injected transport).
    listen_peer: tuple[tuple[str, int], ...] = ()
    strict_reconfig_check: bool = True
    snapshot_count: int = 100_000
    # Entries kept behind a snapshot for slow followers (etcd's
    # --experimental-snapshot-catchup-entries); a follower further behind
    # is sent the whole database.
    snapshot_catchup_entries: int = CATCH_UP_ENTRIES
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
    # --quota-backend-bytes in force (0: no quota, as etcd's negative setting)
    quota_backend_bytes: int = DEFAULT_QUOTA_BYTES
    # --peer-cert-file, --peer-key-file, --peer-trusted-ca-file, --peer-client-cert-auth
    peer_tls: TLSInfo | None = None
    # --auth-token (simple | jwt,...), --bcrypt-cost, --auth-token-ttl
    auth_token: str = "simple"
    bcrypt_cost: int = 10
    auth_token_ttl_s: float = 300.0
    extra: dict[str, Any] = field(default_factory=dict)


class EtcdServer:
    """One etcd member. ``async with EtcdServer(settings) as s:`` starts it."""

    def __init__(self, settings: ServerSettings, *, rand: random.Random | None = None,
                 clock: Clock | None = None, transport: Transport | None = None) -> None:
        self.settings = settings
        self.transport: Transport = transport or GrpcTransport(settings.listen_peer, tls=settings.peer_tls)
        self._inbox: list[Message] = []
        self._actions: list[Callable[[], None]] = []
        self._held: list[tuple[int, bytes]] = []
        self._read_waiting: list[tuple[asyncio.Future[None], float]] = []
        self._read_round: _ReadRound | None = None
        self._read_ready: list[tuple[int, list[tuple[asyncio.Future[None], float]]]] = []
        self._read_seq = 0
        self._removed = False
        # Set once this member knows it was removed from the cluster (it applied
        # its removal, or a peer refused it): `meshkit server` then exits 0, as etcd.
        self.removed = asyncio.Event()
        self._removed_ids: set[int] | None = None  # members removed, loaded lazily
        self._publish_needed = False
        self._conf_lock = asyncio.Lock()
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
        # This member's proposals in flight by their entry bytes: applying one
        # of them uses the request object it was made from instead of parsing
        # the entry again (the bytes object itself comes back from the log).
        self._mine: dict[bytes, _Waiter] = {}
        self._syncer: SyncThread | None = None
        self._next_id = self._rand.getrandbits(40) << 16
        self._proposals: list[tuple[int, bytes]] = []
        self._wake = asyncio.Event()
        self._ticks = 0
        self._closing = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._last_backend_commit = 0.0
        self._leader_ready = asyncio.Event()
        self._apply_hooks: list[Callable[[], None]] = []
        self._single_voter_cache: bool | None = None
        self.metrics = ServerMetrics()
        self.db_size = 0  # backend size, refreshed at each backend commit (the quota's view)
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
        newest = self.snapshotter.load_newest()
        finish_snapshot_install(self.member_dir / "snap", newest.index if newest else None)
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
        self.auth = AuthStore(self.backend, new_token_provider(s.auth_token, self.clock, s.auth_token_ttl_s))
        self.alarms = AlarmStore(self.backend)
        self.db_size = self.backend.size()
        # Watchers get every write txn's events as it is applied.
        self.watchable = WatchableStore(self.store, progress_interval=s.watch_progress_notify_interval_s)
        self.applier.on_events = self.watchable.notify
        self.watchable.start()
        self.storage = MemoryStorage()
        if WAL.exists(self.wal_dir):
            self._restart()
        elif s.initial_cluster_state == "existing":
            await self._join()
        else:
            self._bootstrap()
        cfg = RaftConfig(
            id=self.member_id,
            election_tick=max(1, s.election_ms // s.heartbeat_ms),
            heartbeat_tick=1,
            pre_vote=True,
            check_quorum=True,
            applied=self.applied_index,
            # (the membership stored with the applied index: the log also holds
            # changes refused when applied, which must not count again)
            conf_state=ConfState(
                voters=tuple(sorted(m.id for m in self.members.values() if not m.is_learner)),
                learners=tuple(sorted(m.id for m in self.members.values() if m.is_learner)),
            ),
        )
        self.node = RaftNode(cfg, self.storage, rand=self._rand)
        await self.transport.start(self)
        for m in self.members.values():
            if m.id != self.member_id:
                self.transport.set_peer(m.id, m.peer_urls)
        if self._single_voter():
            # A lone voter needs no election timeout to know it wins.
            self.node.campaign()
        loop = asyncio.get_running_loop()
        self._syncer = SyncThread(self._timed_wal_sync, loop)
        self._tasks = [
            loop.create_task(self._raft_loop(), name="raft-loop"),
            loop.create_task(self._ticker(), name="raft-ticker"),
            loop.create_task(self._lease_expiry_loop(), name="lease-expiry"),
        ]
        if self._publish_needed:
            self._tasks.append(loop.create_task(self._publish(), name="publish"))
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
        if not self._single_voter():
            # Several members: serve at once (as etcd); requests wait for a leader.
            return
        try:
            await asyncio.wait_for(self._leader_ready.wait(), timeout=max(10.0, s.election_ms / 100))
        except TimeoutError:
            log.warning("no leader elected yet; serving will wait for one")

    def _bootstrap(self) -> None:
        s = self.settings
        peers: dict[str, list[str]] = {}
        for name, url in s.initial_cluster:
            peers.setdefault(name, []).append(url)
        several = len(peers) > 1
        for name, urls in peers.items():
            mid = ids.member_id(urls, s.initial_cluster_token)
            # With several members, each publishes its own client URLs through
            # the log once there is a leader (etcd's publish).
            self.members[mid] = MemberInfo(
                mid, name, tuple(urls),
                s.advertise_client_urls if name == s.name and not several else (),
            )
        self.member_id = ids.member_id(peers.get(s.name, list(s.advertise_peer_urls)), s.initial_cluster_token)
        if self.member_id not in self.members:
            self.members[self.member_id] = MemberInfo(
                self.member_id, s.name, s.advertise_peer_urls, s.advertise_client_urls
            )
        self.cluster_id = ids.cluster_id(self.members)
        if several:
            self._publish_needed = True
        # Membership is the data dir's from now on (etcd ignores --initial-cluster
        # on restart); it is durable before the WAL that marks the dir as used.
        self._save_members()
        self.backend.sync()
        self.wal = WAL.create(self.wal_dir, _META.pack(self.member_id, self.cluster_id))
        self.storage.bootstrap(ConfState(voters=tuple(sorted(self.members))))
        self.applied_index = self.store.consistent_index
        if several:
            me = self.members[self.member_id]
            self.members[self.member_id] = MemberInfo(me.id, s.name, me.peer_urls, s.advertise_client_urls)
        log.info("bootstrapped member %x in cluster %x", self.member_id, self.cluster_id)

    async def _join(self) -> None:
        """--initial-cluster-state existing: this member was added with MemberAdd;
        learn the cluster id, the members and its own id from a running member."""
        s = self.settings
        mine = {u for n, u in s.initial_cluster if n == s.name} or set(s.advertise_peer_urls)
        others = [u for n, u in s.initial_cluster if n != s.name]
        if not others:
            raise MeshkitError("--initial-cluster-state existing needs the other members in --initial-cluster")
        try:
            resp = await self.transport.fetch_members(
                others, rpb.PeerRequest(members=rpb.MembersRequest()), timeout=5.0)
        except PeerUnreachableError as e:
            raise MeshkitError(f"cannot fetch cluster info from peer urls: {e}") from e
        self.cluster_id = resp.cluster_id
        for m in resp.members:
            self.members[m.ID] = MemberInfo(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)
        found = [m for m in self.members.values() if set(m.peer_urls) == mine]
        if not found:
            raise MeshkitError(
                f"member with peer URLs {','.join(sorted(mine))} has not been added to cluster "
                f"{self.cluster_id:x} (add it with 'etcdctl member add' first)"
            )
        self.member_id = found[0].id
        self._save_members()
        self.backend.sync()
        self.wal = WAL.create(self.wal_dir, _META.pack(self.member_id, self.cluster_id))
        self.applied_index = self.store.consistent_index
        me = self.members[self.member_id]
        self.members[self.member_id] = MemberInfo(me.id, s.name, me.peer_urls, s.advertise_client_urls,
                                                  me.is_learner)
        self._publish_needed = True
        log.info("joining cluster %x as member %x", self.cluster_id, self.member_id)

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
            self._save_member(m)

    def _save_member(self, m: MemberInfo) -> None:
        self.backend.bucket_put("members", struct.pack(">Q", m.id), json.dumps({
            "name": m.name, "peerURLs": list(m.peer_urls),
            "clientURLs": list(m.client_urls), "isLearner": m.is_learner,
        }).encode())

    def _load_members(self) -> None:
        s = self.settings
        self.members.clear()
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
        if len(self.members) > 1 and (me.name, me.client_urls) != (s.name, s.advertise_client_urls):
            self._publish_needed = True
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
        if self._syncer is not None:
            # (the raft loop is gone: no fsync is awaited any more)
            self._syncer.close()
        with contextlib.suppress(Exception):
            await self.transport.close()
        for w in self._waiters.values():
            if not w.future.done():
                w.future.set_exception(StoppedError())
        self._waiters.clear()
        self._fail_reads(StoppedError)
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
                resp = await self._call_leader(rpb.PeerRequest(lease_renew=lease_id))
                if resp is not None:
                    return int(resp.ttl)
                continue
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

    async def lease_time_to_live(self, lease_id: int, keys: bool) -> pb.LeaseTimeToLiveResponse:
        """The leader's view of a lease (forwarded to it from a follower); TTL -1 if unknown."""
        while not self.is_leader():
            resp = await self._call_leader(
                rpb.PeerRequest(lease_time_to_live=rpb.LeaseTimeToLive(id=lease_id, keys=keys)))
            if resp is not None:
                return resp.time_to_live
        le = self.lessor.lookup(lease_id)
        if le is None:
            return pb.LeaseTimeToLiveResponse(ID=lease_id, TTL=-1)
        remaining = le.remaining(self.clock.monotonic())
        # Go's int64(d.Seconds()) truncates toward zero.
        ttl = int(remaining) if remaining != float("inf") else 2**63 // 10**9
        out = pb.LeaseTimeToLiveResponse(ID=le.id, TTL=ttl, grantedTTL=le.ttl)
        if keys:
            out.keys.extend(sorted(le.keys))
        return out

    async def _call_leader(self, req: rpb.PeerRequest, deadline: float | None = None) -> rpb.PeerResponse | None:
        """Send a request to the leader; None when this member is the leader now.
        Waits for a leader and retries an unreachable one until ``deadline`` (the
        loop's time; by default the request timeout from now)."""
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + REQUEST_TIMEOUT
        pause = self.settings.heartbeat_ms / 1000.0
        while True:
            if self._closing:
                raise StoppedError()
            lead = self.leader_id
            if lead == self.member_id and self.is_leader():
                return None
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError_()
            if lead:
                try:
                    resp = await self.transport.call(lead, req, timeout=left)
                except (PeerUnreachableError, TimeoutError):
                    pass
                else:
                    if resp.error_code:
                        raise from_status(_CODES[resp.error_code], resp.error_message)
                    return resp
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))

    # ---- peers -----------------------------------------------------------------

    def receive(self, msgs: list[Message]) -> None:
        """Raft messages from the transport; stepped by the raft loop."""
        if self._closing:
            return
        self._inbox.extend(msgs)
        self._wake.set()

    def report_unreachable(self, member_id: int) -> None:
        if not self._closing:
            self._actions.append(lambda: self.node.report_unreachable(member_id))
            self._wake.set()

    def report_snapshot(self, member_id: int, failed: bool) -> None:
        if not self._closing:
            self._actions.append(lambda: self.node.report_snapshot(member_id, failed))
            self._wake.set()

    def member_removed(self, member_id: int) -> bool:
        """Whether ``member_id`` was removed from the cluster (etcd's IsIDRemoved):
        the transport refuses its messages, which tells it."""
        if self._removed_ids is None:
            self._removed_ids = {struct.unpack(">Q", k)[0] for k, _ in self.backend.bucket_items("members_removed")}
        return member_id in self._removed_ids

    def report_removed(self, by: int) -> None:
        """Peer ``by`` refused this member's messages: it was removed from the cluster."""
        if not self._closing:
            self._mark_removed()

    async def handle_call(self, req: rpb.PeerRequest) -> rpb.PeerResponse:
        """A request another member forwarded to this one."""
        kind = req.WhichOneof("request")
        out = rpb.PeerResponse()
        try:
            if kind == "members":
                out.cluster_id = self.cluster_id
                for m in sorted(self.members.values(), key=lambda m: m.id):
                    out.members.add(ID=m.id, name=m.name, peerURLs=list(m.peer_urls),
                                    clientURLs=list(m.client_urls), isLearner=m.is_learner)
            elif kind == "lease_renew":
                if not self.is_leader():
                    raise NotLeaderError()
                out.ttl = await self.lease_renew(req.lease_renew)
            elif kind == "lease_time_to_live":
                if not self.is_leader():
                    raise NotLeaderError()
                r = req.lease_time_to_live
                out.time_to_live.CopyFrom(await self.lease_time_to_live(r.id, r.keys))
            elif kind == "promote":
                if not self.is_leader():
                    raise NotLeaderError()
                try:
                    await self.member_promote(req.promote.id)
                except MemberIDRemovedError:
                    # etcd's peer promote handler answers only ErrIDNotFound,
                    # ErrMemberNotLearner and ErrLearnerNotReady as themselves; any
                    # other error is an internal one to the follower, which retries.
                    raise EtcdError(MemberIDRemovedError.internal_message) from None
            else:
                raise NotImplementedError(f"peer request {kind!r} is not implemented")
        except EtcdError as e:
            out.error_code = e.grpc_code.value[0]
            out.error_message = e.detail
        return out

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
        if self._removed:  # (the more telling reason, also once closed)
            raise MemberRemovedError()
        if self._closing:
            raise StoppedError()
        settings = self.settings
        rid = self._next_id
        self._next_id = rid + 1
        req.header.id = rid
        data = req.SerializeToString()
        quota = settings.quota_backend_bytes
        # What a request may add (quota_cost) is its keys and values plus
        # KV_OVERHEAD per put, and each put takes at least 4 bytes of the
        # request: only a backend that close to the quota needs the exact cost.
        if quota > 0 and self.db_size + KV_OVERHEAD + (KV_OVERHEAD // 4 + 1) * len(data) >= quota:
            cost = quota_cost(req)
            # etcd's quotaKVServer/quotaLeaseServer: a request that would grow the
            # backend past the quota raises NOSPACE (cluster-wide, via the log).
            if cost and self.db_size + cost >= quota:
                await self._raise_nospace()
                raise NoSpaceError()
        if len(data) > settings.max_request_bytes:
            raise RequestTooLargeError()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        # No timer per request: the ticker fails the overdue ones (_expire_waiters).
        self._waiters[rid] = self._mine[data] = _Waiter(fut, req, loop.time() + REQUEST_TIMEOUT)
        self._proposals.append((rid, data))
        self._wake.set()
        try:
            return await fut
        finally:
            self._waiters.pop(rid, None)
            self._mine.pop(data, None)

    async def _raise_nospace(self) -> None:
        if self.alarms.nospace:
            return
        log.warning("database space exceeded (%d bytes, quota %d): raising the NOSPACE alarm",
                    self.db_size, self.settings.quota_backend_bytes)
        with contextlib.suppress(EtcdError):
            await self.propose(ipb.InternalRequest(alarm=pb.AlarmRequest(
                action=pb.AlarmRequest.ACTIVATE, memberID=self.member_id, alarm=pb.NOSPACE)))

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
        applying it, so its applied state already qualifies. Otherwise the read
        joins the next ReadIndex round (one round answers every read waiting
        when it starts) and returns once this member applied up to its index.
        """
        if self._removed:  # (the more telling reason, also once closed)
            raise MemberRemovedError()
        if self._closing:
            raise StoppedError()
        if self._single_voter() and self.is_leader():
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._read_waiting.append((fut, loop.time() + REQUEST_TIMEOUT))
        self._wake.set()
        await fut

    def _start_read_round(self, now: float) -> None:
        if self._read_round is not None or not self._read_waiting or not self.node.lead:
            return
        self._read_seq += 1
        ctx = struct.pack(">QQ", self.member_id, self._read_seq)
        try:
            self.node.read_index(ctx)
        except ProposalDroppedError:
            return
        self._read_round = _ReadRound(ctx, self._read_waiting, now)
        self._read_waiting = []

    def _read_states(self, states: list[Any]) -> None:
        r = self._read_round
        for st in states:
            if r is not None and st.ctx == r.ctx:
                self._read_ready.append((st.index, r.waiters))
                self._read_round = r = None

    def _release_reads(self) -> None:
        if not self._read_ready:
            return
        keep = []
        for index, waiters in self._read_ready:
            if index <= self.applied_index:
                for fut, _ in waiters:
                    if not fut.done():
                        fut.set_result(None)
            else:
                keep.append((index, waiters))
        self._read_ready = keep

    def _expire_reads(self, now: float) -> None:
        """Fail overdue reads; retry a round the leader never answered (it may
        have changed) after an election timeout."""
        def alive(ws: list[tuple[asyncio.Future[None], float]]) -> list[tuple[asyncio.Future[None], float]]:
            out = []
            for fut, deadline in ws:
                if fut.done():
                    continue
                if deadline <= now:
                    fut.set_exception(TimeoutError_())
                else:
                    out.append((fut, deadline))
            return out
        self._read_waiting = alive(self._read_waiting)
        r = self._read_round
        if r is not None:
            r.waiters = alive(r.waiters)
            if not r.waiters or now - r.started > self.settings.election_ms / 1000.0:
                self._read_round = None
                self._read_waiting = r.waiters + self._read_waiting
        self._read_ready = [(i, alive(ws)) for i, ws in self._read_ready]

    def _fail_reads(self, err: type[EtcdError]) -> None:
        groups = [self._read_waiting, *(ws for _, ws in self._read_ready)]
        if self._read_round is not None:
            groups.append(self._read_round.waiters)
        for ws in groups:
            for fut, _ in ws:
                if not fut.done():
                    fut.set_exception(err())
        self._read_waiting, self._read_ready, self._read_round = [], [], None

    # ---- membership ------------------------------------------------------------

    def is_learner(self) -> bool:
        me = self.members.get(self.member_id)
        return bool(me is not None and me.is_learner)

    # etcd 3.4's strict reconfiguration check (--strict-reconfig-check): "started"
    # members are those that published their name (membership.Member.IsStarted),
    # "connected" ones those the transport has had active since a time
    # (etcdserver/util.go), HEALTH_INTERVAL (5 s) ago for the health rules.

    def _voting_members(self) -> list[MemberInfo]:
        return [m for m in self.members.values() if not m.is_learner]

    def _connected_since(self, member_id: int, since: float) -> bool:
        """etcd's isConnectedSince: active since before ``since``."""
        t = self.transport.active_since(member_id)
        return t is not None and t < since

    def _num_connected_since(self, since: float, members: list[MemberInfo]) -> int:
        """etcd's numConnectedSince (this member counts as connected)."""
        return sum(1 for m in members if m.id == self.member_id or self._connected_since(m.id, since))

    def _health_since(self) -> float:
        return asyncio.get_running_loop().time() - HEALTH_INTERVAL

    def _may_add_member(self, is_learner: bool) -> None:
        """etcd's mayAddMember: IsReadyToAddVotingMember, then isConnectedFullySince."""
        if not self.settings.strict_reconfig_check:
            return
        voters = self._voting_members()
        if not is_learner:
            nmembers = 1 + len(voters)
            nstarted = sum(1 for m in voters if m.name)
            # (1 started of 2: adding a member to a one-member cluster to restore it)
            if not (nstarted == 1 and nmembers == 2) and nstarted < nmembers // 2 + 1:
                log.warning("rejecting member add; started member will be less than quorum")
                raise MemberNotEnoughStartedError()
        if self._num_connected_since(self._health_since(), voters) != len(voters):
            log.warning("rejecting member add; not connected to every voting member for %.0fs",
                        HEALTH_INTERVAL)
            raise UnhealthyError()

    def _may_remove_member(self, member_id: int) -> None:
        """etcd's mayRemoveMember."""
        if not self.settings.strict_reconfig_check:
            return
        m = self.members.get(member_id)
        if m is not None and m.is_learner:
            return  # no quorum to protect
        others = [v for v in self._voting_members() if v.id != member_id]
        if sum(1 for v in others if v.name) < len(others) // 2 + 1:
            log.warning("rejecting member remove; started member will be less than quorum")
            raise MemberNotEnoughStartedError()
        if member_id != self.member_id and self.transport.active_since(member_id) is None:
            return  # a member that is down is not part of the active quorum
        voters = self._voting_members()
        active = self._num_connected_since(self._health_since(), voters)
        if active - 1 < 1 + (len(voters) - 1) // 2:
            log.warning("rejecting member remove; reconfigure breaks active quorum (%d active peers)", active)
            raise UnhealthyError()

    def _may_promote_member(self) -> None:
        """etcd's IsReadyToPromoteMember (after the leader's learner-ready check)."""
        if not self.settings.strict_reconfig_check:
            return
        voters = self._voting_members()
        # the learner counts for the future quorum, and as started
        nmembers = 1 + len(voters)
        nstarted = 1 + sum(1 for m in voters if m.name)
        if nstarted < nmembers // 2 + 1:
            log.warning("rejecting member promote; started member will be less than quorum")
            raise MemberNotEnoughStartedError()

    def _mark_removed(self) -> None:
        """This member was removed from the cluster: refuse requests from now on and
        tell whoever awaits ``removed`` (`meshkit server` stops, as etcd's server does)."""
        if self.removed.is_set():
            return
        self._removed = True
        log.error("the member has been permanently removed from the cluster")
        log.info("the data-dir used by this member must be removed.")
        self.removed.set()

    async def member_add(self, peer_urls: list[str], is_learner: bool) -> tuple[MemberInfo, list[MemberInfo]]:
        for u in peer_urls:
            if not u.startswith(("http://", "https://")) or "://" not in u or not u.split("://", 1)[1]:
                raise MemberBadURLsError()
        if not peer_urls:
            raise MemberBadURLsError()
        mid = ids.member_id(peer_urls, f"{self.settings.initial_cluster_token}{time.time_ns()}")
        m = MemberInfo(mid, "", tuple(peer_urls), (), is_learner)
        self._may_add_member(is_learner)
        # (etcd checks this when the change is applied, after the checks above)
        if is_learner and sum(1 for x in self.members.values() if x.is_learner) >= MAX_LEARNERS:
            raise TooManyLearnersError()
        cc_type = ConfChangeType.ADD_LEARNER_NODE if is_learner else ConfChangeType.ADD_NODE
        members = await self._propose_conf_change(cc_type, mid, member_to_json(m))
        return m, members

    # As etcd's RemoveMember, UpdateMember and promoteMember, these check only the
    # quorum rules before proposing: whether the member exists, was removed or is a
    # learner is decided when the change is applied (``_validate_conf_change``),
    # in log order, so two racing changes cannot both pass.

    async def member_remove(self, member_id: int) -> list[MemberInfo]:
        self._may_remove_member(member_id)
        return await self._propose_conf_change(ConfChangeType.REMOVE_NODE, member_id, None)

    async def member_update(self, member_id: int, peer_urls: list[str]) -> list[MemberInfo]:
        # (name, client URLs and learner flag are the stored member's when applied)
        upd = MemberInfo(member_id, "", tuple(peer_urls), ())
        return await self._propose_conf_change(ConfChangeType.UPDATE_NODE, member_id, member_to_json(upd))

    async def member_promote(self, member_id: int) -> list[MemberInfo]:
        """Promote a learner; only the leader knows whether it is in sync, so a
        follower forwards the request (as etcd does)."""
        if not self.is_leader():
            members = await self._promote_through_leader(member_id)
            if members is not None:
                return members
        progress = self.node.status().progress
        pr = progress.get(member_id)
        mine = progress.get(self.member_id)
        # etcd's isLearnerReady: the learner's match against the leader's own; a
        # member Raft does not know passes (the apply decides).
        leader_match = mine.match if mine is not None else self.committed_index
        if pr is not None and pr.match < leader_match * LEARNER_READY_PERCENT:
            raise LearnerNotReadyError()
        self._may_promote_member()
        promoted = MemberInfo(member_id, "", (), ())
        return await self._propose_conf_change(ConfChangeType.ADD_NODE, member_id, member_to_json(promoted),
                                               promote=True)

    async def _promote_through_leader(self, member_id: int) -> list[MemberInfo] | None:
        """etcd's PromoteMember on a follower: ask the leader until it answers, it
        refuses for good (not found, not a learner, not ready), or the request times
        out; any other refusal (etcd's peer handler answers it as an internal error,
        "membership: ID removed" among them) is asked again. None if this member
        leads by now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_TIMEOUT
        req = rpb.PeerRequest(promote=rpb.PromoteRequest(id=member_id))
        while True:
            try:
                resp = await self._call_leader(req, deadline)
                break
            except (LearnerNotReadyError, MemberNotFoundError, MemberNotLearnerError, StoppedError, TimeoutError_):
                raise
            except EtcdError as e:
                if self._closing:
                    raise StoppedError() from None
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError_() from None
                log.warning("failed to promote member %x through the leader: %s; retrying", member_id, e.detail)
                await asyncio.sleep(min(self.settings.heartbeat_ms / 1000.0, left))
        if resp is None:
            return None
        # The leader applied the promotion; answer once this member has too
        # (etcd's follower answers with the leader's member list).
        deadline = loop.time() + REQUEST_TIMEOUT
        while (p := self.members.get(member_id)) is not None and p.is_learner:
            left = deadline - loop.time()
            if left <= 0 or self._closing:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lease_applied.wait(), left)
        return sorted(self.members.values(), key=lambda m: m.id)

    async def _propose_conf_change(self, cc_type: ConfChangeType, member_id: int,
                                   member: dict[str, Any] | None, *, promote: bool = False) -> list[MemberInfo]:
        if self._removed:  # (the more telling reason, also once closed)
            raise MemberRemovedError()
        if self._closing:
            raise StoppedError()
        if member_id == 0:
            # (raft.None, never a member: etcd proposes the change and refuses it
            # when applied, ErrIDNotFound; this Raft takes no change for id 0)
            raise MemberNotFoundError()
        async with self._conf_lock:
            rid = self._next_id
            self._next_id += 1
            ctx = json.dumps({"rid": rid, "member": member, "promote": promote}).encode()
            cc = ConfChange(cc_type, member_id, ctx)
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[Any] = loop.create_future()
            self._waiters[rid] = _Waiter(fut, cc, loop.time() + REQUEST_TIMEOUT)
            self._proposals.append((rid, b""))
            self._wake.set()
            try:
                result: list[MemberInfo] = await fut
                return result
            finally:
                self._waiters.pop(rid, None)

    async def move_leader(self, target: int) -> None:
        """Hand leadership to ``target`` (this member must lead), as etcd's MoveLeader."""
        if not self.is_leader():
            raise NotLeaderError()
        m = self.members.get(target)
        if m is None or m.is_learner:
            raise BadLeaderTransfereeError()
        if target == self.member_id:
            return
        self._actions.append(lambda: self.node.transfer_leadership(target))
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_TIMEOUT
        while self.leader_id != target:
            if self._closing:
                raise StoppedError()
            if loop.time() > deadline:
                raise TimeoutLeaderTransferError()
            await asyncio.sleep(self.settings.heartbeat_ms / 1000.0)

    async def _publish(self) -> None:
        """Publish this member's name and client URLs through the log, retrying
        until it is applied (etcd's publish at start)."""
        s = self.settings
        req = ipb.MemberAttrRequest(member_id=self.member_id, name=s.name,
                                    client_urls=list(s.advertise_client_urls))
        while not self._closing:
            try:
                await self.propose(ipb.InternalRequest(member_attr=req))
                log.info("published member %x (%s, %s)", self.member_id, s.name, ",".join(s.advertise_client_urls))
                return
            except EtcdError as e:
                log.info("publishing member attributes: %s; retrying", e)
                await asyncio.sleep(s.election_ms / 1000.0)

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
            now = loop.time()
            if self._waiters:
                self._expire_waiters(now)
            if self._read_waiting or self._read_round is not None or self._read_ready:
                self._expire_reads(now)

    async def _raft_loop(self) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while self._ticks:
                self._ticks -= 1
                node.tick()
            if self._actions:
                actions, self._actions = self._actions, []
                for act in actions:
                    act()
            if self._inbox:
                self._step_inbox()
            if self._proposals or (self._held and node.lead):
                self._feed_proposals()
            if self._read_waiting:
                self._start_read_round(loop.time())
            while node.has_ready():
                rd = node.ready()
                if rd.soft_state is not None and node.role == StateRole.LEADER:
                    self._leader_ready.set()
                if rd.soft_state is not None:
                    self.metrics.saw_leader(rd.soft_state.lead)
                if rd.soft_state is not None and node.role != StateRole.LEADER and self.lessor.is_primary:
                    self.lessor.demote()
                # A leader replicates while it persists (etcd's raftNode; Raft
                # thesis §10.2.1): its entries commit only once followers have
                # persisted them, and nothing is applied or answered before its
                # own fsync below. Others answer only after persisting.
                leading = node.role == StateRole.LEADER
                if leading and rd.messages:
                    self._send(rd.messages)
                if not rd.snapshot.is_empty():
                    await self._install_snapshot(rd.snapshot)
                if rd.hard_state is not None or rd.entries:
                    self.wal.save(rd.hard_state, rd.entries)
                    if rd.must_sync:
                        # In the sync thread so requests keep flowing into the next
                        # batch meanwhile; an inline fsync measured better at one
                        # client but halved throughput at 16-64 (batches shrink).
                        assert self._syncer is not None
                        await self._syncer.sync()
                if rd.entries:
                    self.storage.append(rd.entries)
                if rd.hard_state is not None:
                    self.storage.set_hard_state(rd.hard_state)
                    self.committed_index = rd.hard_state.commit
                if rd.messages and not leading:
                    # After the entries and hard state they depend on are durable.
                    self._send(rd.messages)
                if rd.committed_entries:
                    self._apply(rd.committed_entries)
                if rd.read_states:
                    self._read_states(rd.read_states)
                node.advance(rd)
                if self._inbox:
                    self._step_inbox()
                if self._proposals:
                    # What queued up during the fsync forms the next batch.
                    self._feed_proposals()
                if self._read_waiting:
                    self._start_read_round(loop.time())
            if node.role == StateRole.LEADER:
                self._leader_ready.set()
            self._release_reads()
            self._maybe_commit_backend()
            self._maybe_snapshot()

    def _timed_wal_sync(self) -> None:
        t0 = time.perf_counter()
        self.wal.sync()
        self.metrics.wal_fsync_seconds.observe(time.perf_counter() - t0)

    def _step_inbox(self) -> None:
        msgs, self._inbox = self._inbox, []
        node = self.node
        for m in msgs:
            if m.type == MessageType.MsgProp:
                self._forwarded_proposal(m)
                continue
            try:
                node.step(m)
            except RaftError as e:
                log.debug("dropped %s from %x: %s", m.type.name, m.frm, e)

    def _forwarded_proposal(self, m: Message) -> None:
        """Entries a follower forwarded: proposed here if this member leads, else
        dropped (the follower's request times out, as in etcd)."""
        node = self.node
        try:
            normal = [e.data for e in m.entries if e.type == EntryType.NORMAL]
            if normal:
                node.propose_many(normal)
            for e in m.entries:
                if e.type == EntryType.CONF_CHANGE:
                    node.propose_conf_change(ConfChange.decode(e.data))
        except (ProposalDroppedError, ValueError) as e:
            log.debug("dropped a forwarded proposal from %x: %s", m.frm, e)

    def _send(self, msgs: list[Message]) -> None:
        for i, m in enumerate(msgs):
            if m.type == MessageType.MsgSnap:
                msgs[i] = self._merged_snapshot(m)
        self.transport.send(msgs)

    def _merged_snapshot(self, m: Message) -> Message:
        """The core's MsgSnap with the backend database as data, at the applied
        index (etcd's createMergedSnapshotMessage): the db already holds
        everything applied, so the snapshot describes exactly that point."""
        index = self.applied_index
        term = self.storage.term(index)
        meta = SnapshotMetadata(index=index, term=term, conf_state=self.node.conf_state())
        self.store.set_consistent_index(index)
        data = self.backend.snapshot_bytes()
        log.info("sending a snapshot at index %d (%d bytes) to %x", index, len(data), m.to)
        return Message(MessageType.MsgSnap, to=m.to, frm=m.frm, term=m.term,
                       snapshot=Snapshot(meta, data))

    async def _install_snapshot(self, snap: Snapshot) -> None:
        """This follower fell behind the leader's compacted log: replace the
        backend with the database the leader sent (etcd's applySnapshot).

        Crash-safe order: the db is written and fsynced as
        ``snap/<index>.snap.db``, then the WAL snapshot record, then the snapshot
        mark file; only then is it moved over the live db. A restart that finds
        the newest mark's ``.snap.db`` still there finishes the move
        (:func:`finish_snapshot_install`); one that finds only the ``.snap.db``
        (no mark) discards it and is caught up by the leader again."""
        md = snap.metadata
        if md.index <= self.applied_index:
            raise RaftError(f"snapshot at {md.index} is not ahead of applied index {self.applied_index}")
        snap_dir = self.member_dir / "snap"
        incoming = snap_dir / f"{md.index:016x}.snap.db"
        log.info("installing a snapshot at index %d (term %d, %d bytes)", md.index, md.term, len(snap.data))
        await asyncio.to_thread(_write_durably, incoming, snap.data)
        # The WAL needs the record before any entry after the gap is appended.
        self.wal.save_snapshot(SnapshotMark(md.index, md.term))
        self.snapshotter.save(md)
        # Swap: nothing else runs on the loop until the new store is in place.
        self.backend.close(commit=False)
        _move_snapshot_db(incoming, snap_dir / "db")
        backend = Backend.open(snap_dir / "db")
        if backend.consistent_index != md.index:
            raise RaftError(
                f"snapshot db applied up to {backend.consistent_index}, its metadata says {md.index}"
            )
        self.backend = backend
        self.store = KVStore(backend)
        self.lessor.recover(self.store.leased_keys(), backend=backend)
        self.applier.store = self.store
        # (etcd's restoreAlarms) the alarms the leader had when it sent the db
        self.alarms = AlarmStore(backend)
        self.db_size = backend.size()
        # Synced watchers catch up from the new store (or get the compacted cancel).
        self.watchable.restore(self.store)
        self.storage.apply_snapshot(Snapshot(metadata=md))
        self._reload_members()
        self._single_voter_cache = None
        self.applied_index = md.index
        self.committed_index = max(self.committed_index, md.index)
        self._snapshot_index = md.index
        for hook in self._apply_hooks:
            hook()
        log.info("installed the snapshot at index %d: revision %d", md.index, self.store.current_revision)

    def _reload_members(self) -> None:
        """The member list from a newly installed db, mirrored into the transport."""
        me = self.members.get(self.member_id)
        members: dict[int, MemberInfo] = {}
        for key, raw in self.backend.bucket_items("members"):
            (mid,) = struct.unpack(">Q", key)
            d = json.loads(raw)
            members[mid] = MemberInfo(mid, d["name"], tuple(d["peerURLs"]),
                                      tuple(d["clientURLs"]), bool(d["isLearner"]))
        for mid in set(self.members) - set(members):
            if mid != self.member_id:
                self.transport.remove_peer(mid)
        self._removed_ids = None  # (the db's members_removed, read again when asked)
        if self.member_id not in members:
            log.warning("this member (%x) is not in the snapshot's membership: removed", self.member_id)
            self._mark_removed()
        elif me is not None:
            new = members[self.member_id]
            members[self.member_id] = MemberInfo(new.id, me.name, new.peer_urls, me.client_urls,
                                                 new.is_learner)
        self.members = members
        for m in members.values():
            if m.id != self.member_id:
                self.transport.set_peer(m.id, m.peer_urls)

    def _feed_proposals(self) -> None:
        props = self._held + self._proposals if self._held else self._proposals
        self._held, self._proposals = [], []
        waiters = self._waiters
        node = self.node
        normal: list[bytes] = []
        confs: list[tuple[int, ConfChange]] = []
        for rid, data in props:
            w = waiters.get(rid)
            if w is None or w.future.done():
                continue  # timed out meanwhile
            if data:
                normal.append(data)
            else:
                confs.append((rid, w.request))
        if node.role == StateRole.LEADER:
            try:
                if normal:
                    node.propose_many(normal)
                    normal = []
                while confs:
                    if not node.propose_conf_change(confs[0][1]):
                        break  # another change is pending: retry after it applies
                    confs.pop(0)
            except ProposalDroppedError:
                pass  # leadership transfer in progress: hold them
            except ValueError as e:
                rid = confs.pop(0)[0]
                w = waiters.get(rid)
                if w is not None and not w.future.done():
                    w.future.set_exception(UnhealthyError(f"etcdserver: {e}"))
        elif node.lead:
            ents = tuple(Entry(0, 0, EntryType.NORMAL, d) for d in normal)
            ents += tuple(Entry(0, 0, EntryType.CONF_CHANGE, cc.encode()) for _, cc in confs)
            if ents:
                self.transport.send([Message(MessageType.MsgProp, to=node.lead, frm=self.member_id,
                                             entries=ents)])
            return
        # No leader (or a transfer or conf change in progress): hold until then.
        if normal or confs:
            byrid = {d: rid for rid, d in props if d}
            self._held = [(byrid[d], d) for d in normal] + [(rid, b"") for rid, _ in confs]

    def _apply(self, entries: list[Any]) -> None:
        applier = self.applier
        mine = self._mine
        applied = self.applied_index
        for e in entries:
            if e.index <= applied:
                continue
            data = e.data
            if e.type == EntryType.CONF_CHANGE:
                self._apply_conf_change(ConfChange.decode(data))
                self._single_voter_cache = None
            elif not data:
                # The new leader's empty entry: promote the lessor once this
                # member has applied the previous terms (etcd: Promote(electionTimeout)).
                if self.is_leader():
                    self.lessor.promote(self.settings.election_ms / 1000.0)
            else:
                waiter = mine.pop(data, None)
                if waiter is not None:
                    # Proposed here: the request these very bytes were made from.
                    req = waiter.request
                else:
                    req = ipb.InternalRequest.FromString(data)
                    waiter = self._waiters.get(req.header.id)
                try:
                    kind = req.WhichOneof("request")
                    apply = _APPLY.get(kind)  # type: ignore[arg-type]
                    if apply is not None and not self.alarms.nospace and not self.auth.enabled:
                        # The common case: a store request, no alarm, auth off.
                        result: Any = apply(applier, getattr(req, kind))  # type: ignore[arg-type]
                    elif kind == "member_attr":
                        self._apply_member_attr(req.member_attr)
                        result = None
                    elif kind == "alarm":
                        result = self.alarms.apply(req.alarm)
                    elif self.alarms.nospace and capped_refuses(req):
                        raise NoSpaceError()  # etcd's capped applier
                    else:
                        # etcd's auth applier: the header's user, in log order.
                        check_request(self.auth, req, kind, self.lessor)  # type: ignore[arg-type]
                        if kind in AUTH_KINDS:
                            result = apply_auth(self.auth, req, kind, e.index)  # type: ignore[arg-type]
                        else:
                            result = self._dispatch(applier, req)
                except EtcdError as err:
                    if waiter is not None and not waiter.future.done():
                        waiter.future.set_exception(err)
                else:
                    if waiter is not None and not waiter.future.done():
                        waiter.future.set_result(result)
            self.applied_index = applied = e.index
        self.store.set_consistent_index(applied)
        for hook in self._apply_hooks:
            hook()

    def _apply_member_attr(self, r: ipb.MemberAttrRequest) -> None:
        m = self.members.get(r.member_id)
        if m is None:
            return
        upd = MemberInfo(m.id, r.name, m.peer_urls, tuple(r.client_urls), m.is_learner)
        self.members[m.id] = upd
        self._save_member(upd)

    def _apply_conf_change(self, cc: ConfChange) -> None:
        """Every member applies a membership change the same way, in log order.
        Bootstrap entries carry no context (their members are known already)."""
        ctx = json.loads(cc.context) if cc.context else {}
        waiter = self._waiters.get(ctx.get("rid", -1))
        member = member_from_json(ctx["member"]) if ctx.get("member") else None
        t = cc.type
        old = self.members.get(cc.node_id)
        promote = t == ConfChangeType.ADD_NODE and ctx.get(
            # (entries written before the flag: a learner's ADD_NODE was a promotion)
            "promote", old is not None and old.is_learner and member is not None and not member.is_learner)
        err = self._validate_conf_change(cc, member, promote) if ctx else None
        if err is not None:
            if waiter is not None and not waiter.future.done():
                waiter.future.set_exception(err)
            return
        try:
            self.node.apply_conf_change(cc)
        except ValueError as e:
            raise RaftError(f"cannot apply conf change {cc}: {e}") from e
        if ctx:
            if t == ConfChangeType.REMOVE_NODE:
                self.members.pop(cc.node_id, None)
                key = struct.pack(">Q", cc.node_id)
                self.backend.bucket_delete("members", key)
                # (etcd's members_removed bucket: its traffic is refused from now on)
                self.backend.bucket_put("members_removed", key, b"removed")
                if self._removed_ids is not None:
                    self._removed_ids.add(cc.node_id)
                if cc.node_id == self.member_id:
                    log.warning("this member (%x) was removed from the cluster", self.member_id)
                    self._mark_removed()
                else:
                    self.transport.remove_peer(cc.node_id)
            elif member is not None:
                if promote and old is not None:
                    member = MemberInfo(old.id, old.name, old.peer_urls, old.client_urls, False)
                elif old is not None:
                    # update: the stored name, client URLs and learner flag stay
                    member = MemberInfo(old.id, old.name, member.peer_urls, old.client_urls, old.is_learner)
                self.members[cc.node_id] = member
                self._save_member(member)
                if cc.node_id != self.member_id:
                    self.transport.set_peer(cc.node_id, member.peer_urls)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_result(sorted(self.members.values(), key=lambda m: m.id))

    def _validate_conf_change(self, cc: ConfChange, member: MemberInfo | None, promote: bool) -> EtcdError | None:
        """etcd's ValidateConfigurationChange, when the change is applied: a removed
        member's id first, then what each kind of change needs."""
        mid = cc.node_id
        if self.member_removed(mid):
            return MemberIDRemovedError()
        old = self.members.get(mid)
        t = cc.type
        if t in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
            if promote:
                if old is None:
                    return MemberNotFoundError()
                if not old.is_learner:
                    return MemberNotLearnerError()
                return None
            if old is not None:
                return MemberExistError()
            urls = {u for m in self.members.values() for u in m.peer_urls}
            if member is not None and urls & set(member.peer_urls):
                return PeerURLExistError()
            if (member is not None and member.is_learner
                    and sum(1 for m in self.members.values() if m.is_learner) + 1 > MAX_LEARNERS):
                return TooManyLearnersError()
            return None
        if old is None:
            return MemberNotFoundError()
        if t == ConfChangeType.UPDATE_NODE and member is not None:
            urls = {u for m in self.members.values() if m.id != mid for u in m.peer_urls}
            if urls & set(member.peer_urls):
                return PeerURLExistError()
        return None

    @staticmethod
    def _dispatch(applier: Applier, req: ipb.InternalRequest) -> Any:
        kind = req.WhichOneof("request")
        apply = _APPLY.get(kind)  # type: ignore[arg-type]
        if apply is None:
            raise NotImplementedError(f"applying {kind!r} requests is not implemented yet")
        return apply(applier, getattr(req, kind))  # type: ignore[arg-type]

    def _maybe_commit_backend(self) -> None:
        now = time.monotonic()
        if now - self._last_backend_commit >= BACKEND_COMMIT_INTERVAL:
            self.store.commit()
            self._last_backend_commit = now
            self.db_size = self.backend.size()

    def _maybe_snapshot(self) -> None:
        if self.applied_index - self._snapshot_index < self.settings.snapshot_count:
            return
        index = self.applied_index
        term = self.storage.term(index)
        self.store.commit()
        self.backend.sync()
        meta = SnapshotMetadata(index=index, term=term, conf_state=self.node.conf_state())
        self.snapshotter.save(meta)
        self.wal.save_snapshot(SnapshotMark(index, term))
        self.wal.release_to(index)
        self.storage.create_snapshot(index, meta.conf_state, b"")
        # (after a snapshot was installed the log may already start later)
        cut = index - self.settings.snapshot_catchup_entries
        if cut >= self.storage.first_index():
            self.storage.compact(cut)
        self._snapshot_index = index
        log.info("snapshot at index %d (term %d); wal released", index, term)
