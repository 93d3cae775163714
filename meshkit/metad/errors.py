"""metad's errors: one root under ``MeshkitError``; HTTP-facing ones carry their status."""

from __future__ import annotations

from meshkit._internal.errors import MeshkitError

__all__ = ["BadRequestError", "ConflictError", "MetadError", "NotReadyError", "TooLargeError"]


class MetadError(MeshkitError):
    """Root of the errors raised by :mod:`meshkit.metad`; ``status`` is the HTTP status."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(MetadError):
    """A bad path, query parameter, header or manage body (nothing was changed)."""

    status = 400


class TooLargeError(MetadError):
    """A manage write would need more operations than one transaction may hold."""

    status = 413

    def __init__(self, ops: int, limit: int) -> None:
        super().__init__(
            f"this update needs {ops} operations in one transaction; the limit is {limit} "
            "(--max-txn-ops, etcd's --max-txn-ops): split it")
        self.ops = ops
        self.limit = limit


class ConflictError(MetadError):
    """A replace kept racing with other writers of the same subtree; nothing was changed."""

    status = 409


class NotReadyError(MetadError):
    """The mirror has not loaded its first snapshot yet."""

    status = 503
