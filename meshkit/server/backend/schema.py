"""The one place that names the backend's tables, columns and meta keys.

The backend is a single SQLite database file (WAL journal). Tables:

``kv``
    etcd's ``key`` bucket: one row per revision, primary key ``(main, sub)``,
    ``WITHOUT ROWID`` so rows are stored clustered in revision order (an ordered
    scan is the restore path). ``tombstone`` is 1 for a delete marker; such a row
    carries only ``key`` and ``mod_rev`` (= ``main``), like etcd's tombstone
    value ``KeyValue{Key: key}``.

``meta``
    etcd's ``meta`` bucket. Integer values are stored as 8-byte big-endian signed
    blobs. Keys: ``consistent_index`` (last applied Raft index covered by the
    data), ``compact_rev`` (etcd's ``finishedCompactRev``: the last compaction
    whose physical deletion finished), ``scheduled_compact_rev``
    (etcd's ``scheduledCompactRev``), ``schema_version``.

``bucket``
    A generic ``(name, key) -> value`` store for the other server components
    (lease, auth, members, ...), written in the same SQLite transaction as the
    kv data, so it is covered by the same ``consistent_index``. Use one ``name``
    per etcd bucket (``"lease"``, ``"authUsers"``, ``"members"`` ...).
"""

from __future__ import annotations

SCHEMA_VERSION = 1

KV_TABLE = "kv"
META_TABLE = "meta"
BUCKET_TABLE = "bucket"

# meta keys
META_CONSISTENT_INDEX = "consistent_index"
META_COMPACT_REV = "compact_rev"
META_SCHEDULED_COMPACT_REV = "scheduled_compact_rev"
META_SCHEMA_VERSION = "schema_version"

# Column order used by every kv row tuple that crosses the backend API.
KV_COLUMNS = (
    "main",
    "sub",
    "key",
    "create_rev",
    "mod_rev",
    "version",
    "value",
    "lease",
    "tombstone",
)

DDL = (
    f"""CREATE TABLE IF NOT EXISTS {KV_TABLE} (
        main INTEGER NOT NULL,
        sub INTEGER NOT NULL,
        key BLOB NOT NULL,
        create_rev INTEGER NOT NULL,
        mod_rev INTEGER NOT NULL,
        version INTEGER NOT NULL,
        value BLOB NOT NULL,
        lease INTEGER NOT NULL,
        tombstone INTEGER NOT NULL,
        PRIMARY KEY (main, sub)
    ) WITHOUT ROWID""",
    f"""CREATE TABLE IF NOT EXISTS {META_TABLE} (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID""",
    f"""CREATE TABLE IF NOT EXISTS {BUCKET_TABLE} (
        name TEXT NOT NULL,
        key BLOB NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (name, key)
    ) WITHOUT ROWID""",
)

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA cache_size=-8192",  # 8 MiB page cache (the OS page cache does the rest)
    "PRAGMA temp_store=MEMORY",
)

SQL_INSERT_KV = (
    f"INSERT INTO {KV_TABLE} (main, sub, key, create_rev, mod_rev, version, value, lease, tombstone)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_DELETE_KV = f"DELETE FROM {KV_TABLE} WHERE main = ? AND sub = ?"
SQL_GET_KV = (
    f"SELECT main, sub, key, create_rev, mod_rev, version, value, lease, tombstone FROM {KV_TABLE}"
    " WHERE main = ? AND sub = ?"
)
SQL_SCAN_KV = (
    f"SELECT main, sub, key, create_rev, mod_rev, version, value, lease, tombstone FROM {KV_TABLE}"
    " WHERE main >= ? AND main <= ? ORDER BY main, sub"
)
SQL_GET_META = f"SELECT value FROM {META_TABLE} WHERE name = ?"
SQL_PUT_META = f"INSERT OR REPLACE INTO {META_TABLE} (name, value) VALUES (?, ?)"
SQL_GET_BUCKET = f"SELECT value FROM {BUCKET_TABLE} WHERE name = ? AND key = ?"
SQL_PUT_BUCKET = f"INSERT OR REPLACE INTO {BUCKET_TABLE} (name, key, value) VALUES (?, ?, ?)"
SQL_DELETE_BUCKET = f"DELETE FROM {BUCKET_TABLE} WHERE name = ? AND key = ?"
SQL_SCAN_BUCKET = f"SELECT key, value FROM {BUCKET_TABLE} WHERE name = ? ORDER BY key"
