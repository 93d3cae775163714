"""``Client``: the public asyncio client of etcd's v3 API (KV, Txn, Watch, Lease, status).

Failover and retry rule
-----------------------
Every call has one deadline (``timeout``, per call or the client's). Within it, the
call tries the current endpoint first and, on a retryable failure, the next ones in
turn (the endpoint that answers becomes the current one: the client is sticky).
A channel that is not yet connected is connected first (bounded by ``dial_timeout``);
one that cannot connect is skipped, and the request was then never sent.

* Idempotent calls (Range, a Txn whose branches only read, Status, MemberList,
  LeaseTimeToLive, Leases) are retried on any UNAVAILABLE: refused or dropped
  connection, ``etcdserver: no leader``, ``etcdserver: server stopped``, ...
* Mutations (Put, DeleteRange, a Txn that writes, Compact, LeaseGrant/Revoke) are
  retried only when the request provably never left the client: the endpoint could
  not be connected, or gRPC reports a connect failure. A failure after the request
  was sent (connection reset mid-call, a server-side UNAVAILABLE) is raised, since
  the write may have been applied.
* Nothing else is retried. When every endpoint failed and the deadline passed, the
  last etcd error is raised if there was one, else ``NoEndpointAvailableError``.
"""

# Per-call ``timeout=`` is the API etcd clients offer (a gRPC deadline), not an asyncio wait.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from meshkit._internal.errors import (
    AuthNotEnabledError,
    AuthOldRevisionError,
    EtcdError,
    InvalidAuthTokenError,
    MeshkitError,
)
from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.client.endpoints import EndpointPool, Stubs, parse_endpoint
from meshkit.client.errors import (
    ConnectionFailedError,
    NoEndpointAvailableError,
    RequestTimeoutError,
    translate,
)
from meshkit.client.kv import (
    KeyLike,
    SortOrder,
    SortTarget,
    delete_request,
    put_request,
    range_request,
)
from meshkit.client.lease import KeepAlive
from meshkit.client.txn import Cmp, Op, Txn
from meshkit.client.types import (
    CompactResult,
    DeleteResult,
    GetResult,
    LeaseGrantResult,
    LeaseRevokeResult,
    LeasesResult,
    LeaseTimeToLiveResult,
    MemberListResult,
    PutResult,
    ResponseHeader,
    StatusResult,
    TxnResult,
)
from meshkit.client.watch import FilterName, Watcher, WatchHub

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _retryable(err: MeshkitError, idempotent: bool) -> bool:
    if isinstance(err, ConnectionFailedError):
        return idempotent or not err.sent
    if isinstance(err, EtcdError) and err.grpc_code == _UNAVAILABLE:
        return idempotent
    return False


def credentials(flag: str | None = None) -> tuple[str | None, str | None]:
    """etcdctl's user rule: ``--user NAME[:PASSWORD]`` (else ``ETCDCTL_USER``); a name
    without a password takes ``ETCDCTL_PASSWORD``. ``(None, None)`` when no user is set."""
    text = flag or os.environ.get("ETCDCTL_USER")
    if not text:
        return None, None
    name, sep, pw = text.partition(":")
    return name, (pw if sep else os.environ.get("ETCDCTL_PASSWORD", ""))


class Client:
    """An etcd v3 client over one grpc.aio channel per endpoint.

    ``async with Client(["127.0.0.1:2379"]) as c: ...``; ``close()`` is idempotent.
    """

    cmp = Cmp
    op = Op

    def __init__(
        self,
        endpoints: str | Sequence[str] = ("127.0.0.1:2379",),
        *,
        timeout: float = 5.0,
        dial_timeout: float | None = None,
        keepalive_time: float = 30.0,
        keepalive_timeout: float = 10.0,
        user: str | None = None,
        password: str | None = None,
        ca_cert: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
    ) -> None:
        """``ca_cert``/``cert``/``key``: PEM files, as etcdctl's --cacert/--cert/--key;
        given any, every endpoint is dialed with TLS (https:// endpoints always are)."""
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.dial_timeout = dial_timeout if dial_timeout is not None else min(timeout, 2.0)
        if (cert is None) != (key is None):
            raise ValueError("give both cert and key, or neither")
        creds = None
        if ca_cert is not None or cert is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(ca_cert).read_bytes() if ca_cert is not None else None,
                private_key=Path(key).read_bytes() if key is not None else None,
                certificate_chain=Path(cert).read_bytes() if cert is not None else None,
            )
        self._pool = EndpointPool(endpoints, keepalive_time=keepalive_time,
                                  keepalive_timeout=keepalive_timeout, credentials=creds)
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self._user = user
        self._password = password
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        self._watch_hub: WatchHub | None = None
        self._keepalives: set[KeepAlive] = set()
        self._closed = False

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """A client for ``ETCDCTL_ENDPOINTS`` (comma-separated; default 127.0.0.1:2379),
        with ``ETCDCTL_USER`` ("name:password" or name plus ``ETCDCTL_PASSWORD``)."""
        eps = os.environ.get("ETCDCTL_ENDPOINTS", "127.0.0.1:2379")
        if "user" not in kwargs:
            name, password = credentials()
            if name:
                kwargs["user"], kwargs["password"] = name, password
        return cls(eps, **kwargs)

    # ---- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ka in list(self._keepalives):
            await ka.close()
        if self._watch_hub is not None:
            await self._watch_hub.close()
        await self._pool.close()

    @property
    def endpoints(self) -> list[str]:
        return list(self._pool.endpoints)

    @property
    def current_endpoint(self) -> str:
        return self._pool.current

    # ---- the call machinery --------------------------------------------------------

    async def _metadata(self, ep: str, deadline: float) -> tuple[tuple[str, str], ...] | None:
        if self._user is None:
            return None
        if self._token is None:
            async with self._auth_lock:
                if self._token is None:
                    await self._authenticate(ep, deadline)
        assert self._token is not None
        if not self._token:  # the server has auth off: no token, as clientv3
            return None
        return (("token", self._token),)

    async def _authenticate(self, ep: str, deadline: float) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            resp = await self._pool.stubs(ep).auth.Authenticate(
                rpc_pb2.AuthenticateRequest(name=self._user, password=self._password),
                timeout=max(remaining, 0.001),
            )
        except grpc.aio.AioRpcError as e:
            err = translate(e, ep)
            if isinstance(err, AuthNotEnabledError):
                # clientv3 dials without a token when the server has auth off
                self._token = ""
                return
            raise err from None
        self._token = resp.token

    async def _call(
        self,
        rpc: Callable[[Stubs], Any],
        request: Any,
        *,
        idempotent: bool,
        endpoint: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One unary call under the failover rule (see the module docstring)."""
        if self._closed:
            raise RuntimeError("the client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.timeout)
        errors: dict[str, BaseException] = {}
        last_etcd: EtcdError | None = None
        reauthed = False
        pause = 0.05
        first_round = True
        while True:
            order = [endpoint] if endpoint is not None else self._pool.rotation()
            for ep in order:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if not await self._pool.ready(ep, min(remaining, self.dial_timeout),
                                              wait_failed=not first_round):
                    errors[ep] = ConnectionFailedError("could not connect", endpoint=ep, sent=False)
                    self._pool.advance(ep)
                    continue
                err: MeshkitError = RequestTimeoutError(f"{ep}: deadline exceeded")
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        md = await self._metadata(ep, deadline)
                        resp = await rpc(self._pool.stubs(ep))(request, timeout=remaining, metadata=md)
                    except grpc.aio.AioRpcError as e:
                        err = translate(e, ep)
                    except ConnectionFailedError as e:  # from authenticate
                        err = e
                    else:
                        if endpoint is None:
                            self._pool.prefer(ep)
                        return resp
                    # A signed (JWT) token outdated by an auth change is renewed like an invalid one.
                    if (isinstance(err, InvalidAuthTokenError | AuthOldRevisionError) and self._user is not None
                            and not reauthed):
                        reauthed = True
                        self._token = None
                        continue  # same endpoint, fresh token
                    break
                if not _retryable(err, idempotent):
                    raise err from None
                errors[ep] = err
                if isinstance(err, EtcdError):
                    last_etcd = err
                self._pool.advance(ep)
            first_round = False
            remaining = deadline - loop.time()
            if remaining <= 0:
                if last_etcd is not None:
                    raise last_etcd
                if not errors:
                    raise RequestTimeoutError("deadline exceeded before the call could be made")
                detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
                raise NoEndpointAvailableError(f"no endpoint available ({detail})", errors=errors)
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.5)

    # ---- KV ----------------------------------------------------------------------

    async def get(
        self,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        revision: int = 0,
        limit: int = 0,
        sort_order: SortOrder | None = None,
        sort_target: SortTarget = "key",
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
        timeout: float | None = None,
    ) -> GetResult:
        req = range_request(
            key, range_end, prefix=prefix, from_key=from_key, revision=revision, limit=limit,
            sort_order=sort_order, sort_target=sort_target, serializable=serializable,
            keys_only=keys_only, count_only=count_only, min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision, min_create_revision=min_create_revision,
            max_create_revision=max_create_revision,
        )
        resp = await self._call(lambda s: s.kv.Range, req, idempotent=True, timeout=timeout)
        return GetResult.from_pb(resp)

    async def put(
        self, key: KeyLike, value: KeyLike, *, lease: int = 0, prev_kv: bool = False,
        ignore_value: bool = False, ignore_lease: bool = False, timeout: float | None = None,
    ) -> PutResult:
        req = put_request(key, value, lease=lease, prev_kv=prev_kv, ignore_value=ignore_value,
                          ignore_lease=ignore_lease)
        resp = await self._call(lambda s: s.kv.Put, req, idempotent=False, timeout=timeout)
        return PutResult.from_pb(resp)

    async def delete(
        self, key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False,
        from_key: bool = False, prev_kv: bool = False, timeout: float | None = None,
    ) -> DeleteResult:
        req = delete_request(key, range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv)
        resp = await self._call(lambda s: s.kv.DeleteRange, req, idempotent=False, timeout=timeout)
        return DeleteResult.from_pb(resp)

    def txn(self) -> Txn:
        """A transaction builder: ``await c.txn().if_(...).then(...).else_(...).commit()``."""
        return Txn(self._commit)

    async def _commit(self, txn: Txn, timeout: float | None = None) -> TxnResult:
        resp = await self._call(lambda s: s.kv.Txn, txn.to_pb(), idempotent=txn.read_only,
                                timeout=timeout)
        return TxnResult.from_pb(resp)

    async def compact(self, revision: int, *, physical: bool = False,
                      timeout: float | None = None) -> CompactResult:
        req = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        resp = await self._call(lambda s: s.kv.Compact, req, idempotent=False, timeout=timeout)
        return CompactResult(ResponseHeader.from_pb(resp.header))

    # ---- maintenance / cluster ----------------------------------------------------

    async def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> StatusResult:
        """Maintenance.Status of ``endpoint`` (no failover), or of whichever endpoint answers."""
        ep = None
        if endpoint is not None:
            ep = parse_endpoint(endpoint)
            if ep not in self._pool.endpoints:
                raise ValueError(f"{endpoint!r} is not one of the client's endpoints")
        resp = await self._call(lambda s: s.maintenance.Status, rpc_pb2.StatusRequest(),
                                idempotent=True, endpoint=ep, timeout=timeout)
        return StatusResult.from_pb(resp)

    async def member_list(self, *, timeout: float | None = None) -> MemberListResult:
        resp = await self._call(lambda s: s.cluster.MemberList, rpc_pb2.MemberListRequest(),
                                idempotent=True, timeout=timeout)
        return MemberListResult.from_pb(resp)

    # ---- lease -------------------------------------------------------------------

    async def grant(self, ttl: int, id: int = 0, *, timeout: float | None = None) -> LeaseGrantResult:
        req = rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=id)
        resp = await self._call(lambda s: s.lease.LeaseGrant, req, idempotent=False, timeout=timeout)
        if resp.error:
            raise EtcdError(resp.error)
        return LeaseGrantResult.from_pb(resp)

    async def revoke(self, id: int, *, timeout: float | None = None) -> LeaseRevokeResult:
        req = rpc_pb2.LeaseRevokeRequest(ID=id)
        resp = await self._call(lambda s: s.lease.LeaseRevoke, req, idempotent=False, timeout=timeout)
        for ka in list(self._keepalives):
            if ka.lease_id == id:
                ka._lose("revoked by this client")
        return LeaseRevokeResult(ResponseHeader.from_pb(resp.header))

    async def time_to_live(self, id: int, *, keys: bool = False,
                           timeout: float | None = None) -> LeaseTimeToLiveResult:
        req = rpc_pb2.LeaseTimeToLiveRequest(ID=id, keys=keys)
        resp = await self._call(lambda s: s.lease.LeaseTimeToLive, req, idempotent=True, timeout=timeout)
        return LeaseTimeToLiveResult.from_pb(resp)

    async def leases(self, *, timeout: float | None = None) -> LeasesResult:
        resp = await self._call(lambda s: s.lease.LeaseLeases, rpc_pb2.LeaseLeasesRequest(),
                                idempotent=True, timeout=timeout)
        return LeasesResult.from_pb(resp)

    def keep_alive(self, lease_id: int) -> KeepAlive:
        """``async with c.keep_alive(id) as ka:`` renews the lease at a third of its TTL.

        ``ka.ttl`` is the latest TTL; ``ka.lost`` (an asyncio.Event) is set and
        ``await ka.wait_lost()`` raises ``LeaseLostError`` as soon as the lease is gone.
        """
        return KeepAlive(self, lease_id)

    # ---- watch -------------------------------------------------------------------

    def watch(
        self,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: Sequence[FilterName] = (),
        progress_notify: bool = False,
        fragment: bool = False,
    ) -> Watcher:
        """An async iterator (and async context manager) of ``WatchResponse``.

        All watches of a client share one Watch stream; a watch resumes on the next
        endpoint after a failure from the revision after the last one delivered.
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._watch_hub is None:
            self._watch_hub = WatchHub(self)
        return self._watch_hub.add(
            key, range_end, prefix=prefix, from_key=from_key, start_revision=start_revision,
            prev_kv=prev_kv, filters=filters, progress_notify=progress_notify, fragment=fragment,
        )
