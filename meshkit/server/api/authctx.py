"""Who is calling: the auth token of a gRPC call, and requests made as that user.

etcd reads the token from the ``token`` metadata (or ``authorization``, the
grpc-gateway's name); without one, the common name of a verified client
certificate is the user. Writes carry the user and the auth revision to the
applier in the request header; a request refused because the auth store
changed meanwhile (``revision of auth store is old``) is proposed again with
fresh credentials, as etcd's raftRequest does. Reads are checked and served in
one step of the event loop, so the auth store cannot change in between.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from meshkit._internal.errors import (
    AuthAdminDeniedError,
    AuthOldRevisionError,
    EtcdError,
    InvalidAuthTokenError,
    PermissionDeniedError,
)
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.server.auth import AuthInfo
from meshkit.server.etcdserver.server import EtcdServer
from meshkit.server.tls import client_cert_common_name

# How often a write is proposed again after the auth store changed under it.
MAX_AUTH_RETRIES = 5
TOKEN_KEYS = ("token", "authorization")

T = TypeVar("T")


def call_token(context: grpc.aio.ServicerContext) -> str | None:
    md = context.invocation_metadata() or ()
    for want in TOKEN_KEYS:
        for k, v in md:
            if k == want:
                return v if isinstance(v, str) else bytes(v).decode(errors="replace")
    return None


def auth_info(s: EtcdServer, context: grpc.aio.ServicerContext) -> AuthInfo | None:
    """The caller's user and auth revision; None without a token."""
    token = call_token(context)
    if token is None:
        # etcd's AuthInfoFromTLS: the common name of a verified client
        # certificate (only requested with --client-cert-auth) names the user.
        cn = client_cert_common_name(context)
        return AuthInfo(cn, s.auth.revision) if cn else None
    ai = s.auth.info_from_token(token)
    if ai is None:
        raise InvalidAuthTokenError()
    return ai


async def propose_as(s: EtcdServer, context: grpc.aio.ServicerContext, req: ipb.InternalRequest) -> Any:
    """``s.propose`` with the caller's credentials in the header."""
    for attempt in range(MAX_AUTH_RETRIES):
        ai = auth_info(s, context)
        req.header.username = ai.username if ai is not None else ""
        req.header.auth_revision = ai.revision if ai is not None else 0
        try:
            return await s.propose(req)
        except AuthOldRevisionError:
            if attempt == MAX_AUTH_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def read_as(s: EtcdServer, context: grpc.aio.ServicerContext,
            check: Callable[[AuthInfo | None], None], get: Callable[[], T]) -> T:
    """etcd's doSerialize: check the caller may read, then read (one loop step)."""
    # As etcd, a token that is not valid is refused even with auth disabled.
    check(auth_info(s, context))
    return get()


def check_admin(s: EtcdServer, context: grpc.aio.ServicerContext) -> None:
    """etcd's IsAdminPermitted for the member calls (etcd's gRPC errors)."""
    s.auth.check_admin(auth_info(s, context))


def check_admin_maintenance(s: EtcdServer, context: grpc.aio.ServicerContext) -> None:
    """etcd's authMaintenanceServer (Defragment, Snapshot, Hash, HashKV,
    MoveLeader): the auth package's own errors reach the client unmapped, as
    gRPC UNKNOWN with ``auth: ...`` text."""
    try:
        s.auth.check_admin(auth_info(s, context))
    except EtcdError as e:
        if isinstance(e, PermissionDeniedError):
            raise AuthAdminDeniedError() from e
        err = EtcdError("auth: " + e.detail.removeprefix("etcdserver: "))
        err.grpc_code = grpc.StatusCode.UNKNOWN  # type: ignore[misc]  # instance-level, as from_status
        raise err from e
