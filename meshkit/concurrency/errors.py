"""Errors of the concurrency recipes (all under ``MeshkitError``)."""

from __future__ import annotations

from meshkit._internal.errors import MeshkitError


class ConcurrencyError(MeshkitError):
    """Root of the recipes' own errors."""


class SessionLostError(ConcurrencyError):
    """The session's lease is gone (revoked, expired, or no longer renewed)."""

    def __init__(self, lease_id: int, reason: str = "") -> None:
        super().__init__(f"session lease {lease_id:x} lost" + (f": {reason}" if reason else ""))
        self.lease_id = lease_id
        self.reason = reason


class SessionExpiredError(SessionLostError):
    """etcd's ``mutex: session is expired``: the waiter's key vanished while it waited."""


class LockTimeoutError(ConcurrencyError, TimeoutError):
    """``lock()``/``acquire()`` gave up after its timeout; the critical section was not entered
    and the waiter's key has been removed."""


class LockLostError(ConcurrencyError):
    """A guarded write found the lock key gone or re-created: this holder's token is stale."""

    def __init__(self, key: bytes, token: int) -> None:
        super().__init__(f"lock {key!r} with token {token} is no longer held")
        self.key = key
        self.token = token


class NotHeldError(ConcurrencyError):
    """An operation that needs the lock was called while it is not held."""


class NotLeaderError(ConcurrencyError):
    """etcd's ``election: not leader``."""


class NoLeaderError(ConcurrencyError):
    """etcd's ``election: no leader``."""


class STMConflictError(ConcurrencyError):
    """An STM transaction still conflicted after its last allowed attempt."""
