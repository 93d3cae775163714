"""meshkit's public asyncio etcd v3 client.

    from meshkit.client import Client
    async with Client(["127.0.0.1:2379"]) as c:
        await c.put(b"k", b"v")
"""

from meshkit._internal.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    EtcdError,
    FutureRevError,
    LeaseNotFoundError,
    MeshkitError,
    RequestTooLargeError,
    TooManyOpsError,
)
from meshkit.client.client import Client
from meshkit.client.errors import (
    ClientError,
    ConnectionFailedError,
    LeaseLostError,
    MessageTooLargeError,
    NoEndpointAvailableError,
    RequestTimeoutError,
    WatchCanceledError,
    WatchCompactedError,
)
from meshkit.client.lease import KeepAlive
from meshkit.client.txn import Cmp, Compare, CompareTarget, Op, Operation, Txn
from meshkit.client.types import (
    CompactResult,
    DeleteResult,
    Event,
    EventType,
    GetResult,
    KeyValue,
    LeaseGrantResult,
    LeaseRevokeResult,
    LeasesResult,
    LeaseTimeToLiveResult,
    Member,
    MemberListResult,
    PutResult,
    ResponseHeader,
    StatusResult,
    TxnResult,
    WatchResponse,
)
from meshkit.client.watch import Watcher

__all__ = [
    "Client",
    "ClientError",
    "Cmp",
    "CompactResult",
    "CompactedError",
    "Compare",
    "CompareTarget",
    "ConnectionFailedError",
    "DeleteResult",
    "DuplicateKeyError",
    "EmptyKeyError",
    "EtcdError",
    "Event",
    "EventType",
    "FutureRevError",
    "GetResult",
    "KeepAlive",
    "KeyValue",
    "LeaseGrantResult",
    "LeaseLostError",
    "LeaseNotFoundError",
    "LeaseRevokeResult",
    "LeaseTimeToLiveResult",
    "LeasesResult",
    "Member",
    "MemberListResult",
    "MeshkitError",
    "MessageTooLargeError",
    "NoEndpointAvailableError",
    "Op",
    "Operation",
    "PutResult",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ResponseHeader",
    "StatusResult",
    "TooManyOpsError",
    "Txn",
    "TxnResult",
    "WatchCanceledError",
    "WatchCompactedError",
    "WatchResponse",
    "Watcher",
]
