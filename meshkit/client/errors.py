"""Client-only errors, and the translation of a gRPC failure into meshkit's classes.

etcd's own errors (``CompactedError``, ``FutureRevError``, ...) come from the one
shared table in :mod:`meshkit._internal.errors`; this module only adds what a client
sees that no server ever sends: connection failures, time-outs, a compacted watch,
a lost lease.
"""

from __future__ import annotations

import grpc

from meshkit._internal.errors import EtcdError, MeshkitError, RequestTooLargeError, from_status

__all__ = [
    "ClientError",
    "ConnectionFailedError",
    "EtcdError",
    "LeaseLostError",
    "MessageTooLargeError",
    "NoEndpointAvailableError",
    "RequestTimeoutError",
    "WatchCanceledError",
    "WatchCompactedError",
    "translate",
]


class ClientError(MeshkitError):
    """An error found by the client itself rather than sent by an etcd server."""


class ConnectionFailedError(ClientError):
    """The transport failed (refused, reset, closed) while talking to ``endpoint``."""

    def __init__(self, detail: str, *, endpoint: str = "", sent: bool = True) -> None:
        super().__init__(f"{endpoint}: {detail}" if endpoint else detail)
        self.detail = detail
        self.endpoint = endpoint
        # False when the failure happened before the request left the client
        # (no connection could be made), which makes a mutation safe to retry.
        self.sent = sent


class NoEndpointAvailableError(ClientError):
    """No endpoint answered before the call's deadline; ``errors`` holds the last one per endpoint."""

    def __init__(self, message: str, *, errors: dict[str, BaseException] | None = None) -> None:
        super().__init__(message)
        self.errors = dict(errors or {})


class RequestTimeoutError(ClientError, TimeoutError):
    """The call's deadline passed (gRPC DEADLINE_EXCEEDED, not an etcd server time-out)."""


class MessageTooLargeError(ClientError, RequestTooLargeError):  # type: ignore[misc,valid-type]
    """A gRPC message over a transport size limit (the client sends at most 2 MiB, like etcd's).

    A subclass of etcd's ``RequestTooLargeError``, so one ``except`` catches a request
    refused by the client's limit, the server's gRPC limit, or etcd's max-request-bytes.
    """


class WatchCanceledError(ClientError):
    """The server canceled a watch for a reason other than compaction."""

    def __init__(self, reason: str, *, watch_id: int = -1) -> None:
        super().__init__(reason or "watch canceled by the server")
        self.reason = reason
        self.watch_id = watch_id


class WatchCompactedError(ClientError):
    """A watch cannot (re)start: the revision it needs has been compacted.

    Re-list the keys at a current revision and watch again from there + 1.
    """

    def __init__(self, compact_revision: int, *, watch_id: int = -1) -> None:
        super().__init__(
            f"watch canceled: required revision has been compacted (compact revision {compact_revision})"
        )
        self.compact_revision = compact_revision
        self.watch_id = watch_id


class LeaseLostError(ClientError):
    """A kept-alive lease is gone: revoked, expired, or not renewed before its TTL ran out."""

    def __init__(self, lease_id: int, reason: str) -> None:
        super().__init__(f"lease {lease_id:x} lost: {reason}")
        self.lease_id = lease_id
        self.reason = reason


# Texts gRPC core uses when no connection could be made at all: the request was
# never written to a socket.
_NOT_SENT_MARKERS = (
    "failed to connect to all addresses",
    "DNS resolution failed",
    "name resolution",
    "Failed to connect to remote host",
    "Connection refused",
    "Endpoint is unavailable",  # the client channel is closed or never connected
)


def not_sent(details: str) -> bool:
    """Whether an UNAVAILABLE status text means the request never left the client."""
    return any(m.lower() in details.lower() for m in _NOT_SENT_MARKERS)


def translate(err: grpc.aio.AioRpcError, endpoint: str = "") -> MeshkitError:
    """Turn one gRPC failure into meshkit's error class.

    etcd's server errors (every ``etcdserver: ...`` text) go through the shared
    table; transport failures become :class:`ConnectionFailedError`, deadlines
    :class:`RequestTimeoutError`.
    """
    return translate_status(err.code(), err.details() or "", endpoint)


def translate_status(code: grpc.StatusCode, details: str, endpoint: str = "") -> MeshkitError:
    """:func:`translate` for a status already taken apart (e.g. a finished stream's)."""
    if details.startswith("etcdserver:"):
        return from_status(code, details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ConnectionFailedError(details or "unavailable", endpoint=endpoint, sent=not not_sent(details))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimeoutError(f"{endpoint}: {details or 'deadline exceeded'}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than" in details.lower():
        return MessageTooLargeError(f"{endpoint}: {details}")
    return from_status(code, details)
