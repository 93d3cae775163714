"""etcdctl's exit codes and the error that carries one to ``main``."""

from __future__ import annotations

import grpc

from meshkit.client.raw import RpcFailure

EXIT_SUCCESS = 0
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3
EXIT_BAD_FEATURE = 4
EXIT_INTERRUPTED = 5
EXIT_IO = 6
EXIT_BAD_ARGS = 128


class CtlExit(Exception):
    """Stop with ``code``; ``message`` (if any) is printed as ``Error: <message>``."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or "")
        self.code = code
        self.message = message


_GO_CODE = {
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def rpc_text(e: RpcFailure) -> str:
    """The text Go's clientv3 gives this failure (etcd's own errors are their message)."""
    if e.details.startswith("etcdserver:") or e.details.startswith("etcdserver "):
        return e.details
    if e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "context deadline exceeded"
    if e.code == grpc.StatusCode.CANCELLED:
        return "context canceled"
    return f"rpc error: code = {_GO_CODE.get(e.code, e.code.name)} desc = {e.details}"
