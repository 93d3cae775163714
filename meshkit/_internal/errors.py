"""The one table of etcd's errors: gRPC status code and exact message.

The server raises these classes from its domain code and the gRPC layer turns
them into statuses with ``grpc_code``/``message``; the client turns a status back
into the same class through :func:`from_status`. Messages are etcd 3.4's, byte for
byte, because clients (etcdctl among them) match on the text.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class MeshkitError(Exception):
    """Root of every error meshkit raises on purpose."""


class EtcdError(MeshkitError):
    """An error that crosses the wire as an etcd gRPC status."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    message: ClassVar[str] = ""

    def __init__(self, message: str | None = None) -> None:
        # Instances may carry a different text (an unknown server error seen by
        # the client); the class keeps etcd's canonical one.
        self.detail = message if message is not None else self.message
        super().__init__(self.detail)


def _define(name: str, code: grpc.StatusCode, message: str) -> type[EtcdError]:
    cls = type(name, (EtcdError,), {"grpc_code": code, "message": message, "__module__": __name__})
    return cls


_C = grpc.StatusCode


class CompactedError(EtcdError):
    grpc_code = _C.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision has been compacted"

    def __init__(self, message: str | None = None, *, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class FutureRevError(EtcdError):
    grpc_code = _C.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision is a future revision"


EmptyKeyError = _define("EmptyKeyError", _C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KeyNotFoundError = _define("KeyNotFoundError", _C.INVALID_ARGUMENT, "etcdserver: key not found")
ValueProvidedError = _define("ValueProvidedError", _C.INVALID_ARGUMENT, "etcdserver: value is provided")
LeaseProvidedError = _define("LeaseProvidedError", _C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TTLZeroError = _define("TTLZeroError", _C.INVALID_ARGUMENT, "etcdserver: ttl is 0")
TooManyOpsError = _define("TooManyOpsError", _C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DuplicateKeyError = _define("DuplicateKeyError", _C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
NoSpaceError = _define("NoSpaceError", _C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")

LeaseNotFoundError = _define("LeaseNotFoundError", _C.NOT_FOUND, "etcdserver: requested lease not found")
LeaseExistError = _define("LeaseExistError", _C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LeaseTTLTooLargeError = _define("LeaseTTLTooLargeError", _C.OUT_OF_RANGE, "etcdserver: too large lease TTL")

MemberExistError = _define("MemberExistError", _C.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PeerURLExistError = _define("PeerURLExistError", _C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MemberNotEnoughStartedError = _define("MemberNotEnoughStartedError", _C.FAILED_PRECONDITION, "etcdserver: re-configuration failed due to not enough started members")
MemberBadURLsError = _define("MemberBadURLsError", _C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MemberNotFoundError = _define("MemberNotFoundError", _C.NOT_FOUND, "etcdserver: member not found")
MemberNotLearnerError = _define("MemberNotLearnerError", _C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
LearnerNotReadyError = _define("LearnerNotReadyError", _C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member which is in sync with leader")
TooManyLearnersError = _define("TooManyLearnersError", _C.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster")

RequestTooLargeError = _define("RequestTooLargeError", _C.INVALID_ARGUMENT, "etcdserver: request is too large")
TooManyRequestsError = _define("TooManyRequestsError", _C.RESOURCE_EXHAUSTED, "etcdserver: too many requests")

RootUserNotExistError = _define("RootUserNotExistError", _C.FAILED_PRECONDITION, "etcdserver: root user does not exist")
RootRoleNotExistError = _define("RootRoleNotExistError", _C.FAILED_PRECONDITION, "etcdserver: root user does not have root role")
UserAlreadyExistError = _define("UserAlreadyExistError", _C.FAILED_PRECONDITION, "etcdserver: user name already exists")
UserEmptyError = _define("UserEmptyError", _C.INVALID_ARGUMENT, "etcdserver: user name is empty")
UserNotFoundError = _define("UserNotFoundError", _C.FAILED_PRECONDITION, "etcdserver: user name not found")
RoleAlreadyExistError = _define("RoleAlreadyExistError", _C.FAILED_PRECONDITION, "etcdserver: role name already exists")
RoleNotFoundError = _define("RoleNotFoundError", _C.FAILED_PRECONDITION, "etcdserver: role name not found")
RoleEmptyError = _define("RoleEmptyError", _C.INVALID_ARGUMENT, "etcdserver: role name is empty")
AuthFailedError = _define("AuthFailedError", _C.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")
PermissionDeniedError = _define("PermissionDeniedError", _C.PERMISSION_DENIED, "etcdserver: permission denied")
RoleNotGrantedError = _define("RoleNotGrantedError", _C.FAILED_PRECONDITION, "etcdserver: role is not granted to the user")
PermissionNotGrantedError = _define("PermissionNotGrantedError", _C.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role")
AuthNotEnabledError = _define("AuthNotEnabledError", _C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
InvalidAuthTokenError = _define("InvalidAuthTokenError", _C.UNAUTHENTICATED, "etcdserver: invalid auth token")
InvalidAuthMgmtError = _define("InvalidAuthMgmtError", _C.INVALID_ARGUMENT, "etcdserver: invalid auth management")
AuthOldRevisionError = _define("AuthOldRevisionError", _C.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
# etcd's maintenance and member services answer a non-admin with the auth
# package's own error (not the v3rpc one): gRPC UNKNOWN and this text.
AuthAdminDeniedError = _define("AuthAdminDeniedError", _C.UNKNOWN, "auth: permission denied")

NoLeaderError = _define("NoLeaderError", _C.UNAVAILABLE, "etcdserver: no leader")
NotLeaderError = _define("NotLeaderError", _C.FAILED_PRECONDITION, "etcdserver: not leader")
LeaderChangedError = _define("LeaderChangedError", _C.UNAVAILABLE, "etcdserver: leader changed")
NotCapableError = _define("NotCapableError", _C.UNAVAILABLE, "etcdserver: not capable")
StoppedError = _define("StoppedError", _C.UNAVAILABLE, "etcdserver: server stopped")
TimeoutError_ = _define("TimeoutError_", _C.UNAVAILABLE, "etcdserver: request timed out")
TimeoutDueToLeaderFailError = _define("TimeoutDueToLeaderFailError", _C.UNAVAILABLE, "etcdserver: request timed out, possibly due to previous leader failure")
TimeoutDueToConnectionLostError = _define("TimeoutDueToConnectionLostError", _C.UNAVAILABLE, "etcdserver: request timed out, possibly due to connection lost")
UnhealthyError = _define("UnhealthyError", _C.UNAVAILABLE, "etcdserver: unhealthy cluster")
CorruptError = _define("CorruptError", _C.DATA_LOSS, "etcdserver: corrupt cluster")
NotSupportedForLearnerError = _define("NotSupportedForLearnerError", _C.UNAVAILABLE, "etcdserver: rpc not supported for learner")
TimeoutLeaderTransferError = _define("TimeoutLeaderTransferError", _C.UNAVAILABLE, "etcdserver: request timed out, leader transfer took too long")
BadLeaderTransfereeError = _define("BadLeaderTransfereeError", _C.FAILED_PRECONDITION, "etcdserver: bad leader transferee")

_BY_MESSAGE: dict[str, type[EtcdError]] = {
    cls.message: cls
    for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, EtcdError) and cls.message
}


def from_status(code: grpc.StatusCode, details: str | None) -> EtcdError:
    """The error class etcd means by this status; a plain EtcdError when unknown."""
    text = details or ""
    cls = _BY_MESSAGE.get(text)
    if cls is not None and cls.grpc_code == code:
        return cls()
    err = EtcdError(text)
    err.grpc_code = code  # type: ignore[misc]  # instance-level: an unlisted status
    return err
