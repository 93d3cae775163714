"""etcd v3 MVCC: revisions, key index, tree index and the KV store."""

from meshkit.server.mvcc.index import TreeIndex
from meshkit.server.mvcc.key_index import Generation, KeyIndex, RevisionNotFound
from meshkit.server.mvcc.kv import Event, EventType, KeyValue, RangeResult
from meshkit.server.mvcc.revision import Revision, bytes_to_rev, rev_to_bytes
from meshkit.server.mvcc.store import KVStore, TxnWrite

__all__ = [
    "Event",
    "EventType",
    "Generation",
    "KVStore",
    "KeyIndex",
    "KeyValue",
    "RangeResult",
    "Revision",
    "RevisionNotFound",
    "TreeIndex",
    "TxnWrite",
    "bytes_to_rev",
    "rev_to_bytes",
]
