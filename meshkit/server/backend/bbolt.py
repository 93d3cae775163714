"""bbolt files: etcd's on-disk backend format, read and written in pure Python.

``etcdctl snapshot save`` stores what Maintenance.Snapshot streams: a bbolt
database with etcd's buckets followed by the sha256 of that database.
``etcdctl snapshot status`` and ``snapshot restore`` open it with bbolt, so
meshkit must write a file bbolt accepts (``tx.Check()`` included), and read the
files a real etcd writes (the migration path from etcd to meshkit).

The format (go.etcd.io/bbolt, little-endian as on amd64, page size 4096):

* every page starts with a 16-byte header: ``id u64, flags u16, count u16,
  overflow u32``; a page spans ``1 + overflow`` page-size blocks.
* pages 0 and 1 are meta pages: after the header ``magic 0xED0CDAED, version 2,
  pageSize, flags`` (u32 each), the root bucket ``(root pgid, sequence)``,
  the freelist pgid, the high-water mark ``pgid`` (pages in the file), ``txid``
  and an FNV-64a checksum of the 56 meta bytes before it. The valid meta with
  the highest txid wins.
* a freelist page lists free pgids (u64 each; a count of 0xFFFF means the real
  count is the first u64).
* a leaf page holds ``count`` 16-byte elements ``flags, pos, ksize, vsize``
  (u32 each; ``pos`` counts from the element itself to its key, the value
  follows the key); flag 1 marks a nested bucket whose value is
  ``(root pgid u64, sequence u64)``, followed by an inline page when root is 0.
* a branch page holds ``count`` 16-byte elements ``pos u32, ksize u32, pgid u64``
  whose key is the first key of the child.

The root bucket holds one nested bucket per etcd bucket; keys sort bytewise.

The writer builds every bucket as its own tree (no inline buckets, which bbolt
reads just as well), streams leaf pages to the output and writes the freelist
(empty) and both meta pages last. Its input is a consistent copy of meshkit's
sqlite backend (see :func:`snapshot_from_sqlite`), mapped to etcd's layouts:

* ``key``: ``main u64 BE, '_', sub u64 BE`` (+ ``t`` for a tombstone) ->
  marshalled ``mvccpb.KeyValue`` (a tombstone's value carries only the key);
* ``meta``: ``consistent_index`` (u64 BE), ``finishedCompactRev`` and
  ``scheduledCompactRev`` (17-byte revisions, sub 0);
* ``lease``: lease id (u64 BE) -> ``leasepb.Lease{ID, TTL, RemainingTTL}``;
* ``members``: hex member id -> JSON of etcd's ``membership.Member``;
* ``cluster``: ``clusterVersion`` -> ``3.4.0``;
* ``alarm``, ``auth``, ``authUsers``, ``authRoles``: copied from meshkit's
  generic bucket table under the same names (their writers keep etcd's layout);
* ``members_removed``: empty.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from meshkit.server.backend import schema
from meshkit.server.mvcc.hash import crc32c, marshal_kv

PAGE_SIZE = 4096
MAGIC = 0xED0CDAED
VERSION = 2

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01
PGID_NO_FREELIST = 0xFFFFFFFFFFFFFFFF

_PAGE_HDR = struct.Struct("<QHHI")  # id, flags, count, overflow
_META = struct.Struct("<IIIIQQQQQ")  # magic, version, pageSize, flags, root, seq, freelist, pgid, txid
_LEAF_ELEM = struct.Struct("<IIII")  # flags, pos, ksize, vsize
_BRANCH_ELEM = struct.Struct("<IIQ")  # pos, ksize, pgid
_BUCKET_HDR = struct.Struct("<QQ")  # root pgid, sequence
_U64 = struct.Struct("<Q")
_BE64 = struct.Struct(">Q")
_HDR = 16
_ELEM = 16

# etcd 3.4's buckets, in the order its backend creates them (bbolt sorts them).
ETCD_BUCKETS = (
    b"key", b"meta", b"lease", b"members", b"members_removed", b"cluster",
    b"alarm", b"auth", b"authUsers", b"authRoles",
)
# meshkit generic-table buckets copied byte for byte (kept in etcd's layout).
PASSTHROUGH_BUCKETS = ("alarm", "auth", "authUsers", "authRoles")
CLUSTER_VERSION = b"3.4.0"
SHA256_SIZE = 32


class BoltFormatError(ValueError):
    """The bytes are not a bbolt database this reader understands."""


def fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---------------------------------------------------------------------- reader
@dataclass
class BoltDB:
    """The buckets of a bbolt file: name -> [(key, value)] in key order."""

    buckets: dict[bytes, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    page_size: int = PAGE_SIZE
    txid: int = 0
    size: int = 0  # bytes in use (high-water mark * page size), bbolt's tx.Size()

    def get(self, bucket: bytes, key: bytes) -> bytes | None:
        for k, v in self.buckets.get(bucket, ()):
            if k == key:
                return v
        return None


def _read_meta(data: bytes, off: int) -> tuple[int, ...] | None:
    if len(data) < off + _HDR + _META.size + 8:
        return None
    _, flags, _, _ = _PAGE_HDR.unpack_from(data, off)
    raw = data[off + _HDR: off + _HDR + _META.size]
    fields = _META.unpack(raw)
    (checksum,) = _U64.unpack_from(data, off + _HDR + _META.size)
    if flags != META_PAGE or fields[0] != MAGIC or fields[1] != VERSION or fnv64a(raw) != checksum:
        return None
    return fields


# bbolt's errors (go.etcd.io/bbolt errors.go), as etcdctl prints them.
ERR_INVALID = "invalid database"
ERR_VERSION_MISMATCH = "version mismatch"
ERR_CHECKSUM = "checksum error"
ERR_FILE_SIZE_TOO_SMALL = "file size too small"


def _meta_validate(data: bytes, off: int) -> str | None:
    """bbolt's ``meta.validate()``: None if the meta page at ``off`` is usable,
    else its error text (magic, then version, then a non-zero checksum)."""
    magic, version = struct.unpack_from("<II", data, off + _HDR)
    if magic != MAGIC:
        return ERR_INVALID
    if version != VERSION:
        return ERR_VERSION_MISMATCH
    raw = data[off + _HDR: off + _HDR + _META.size]
    (checksum,) = _U64.unpack_from(data, off + _HDR + _META.size)
    if checksum != 0 and checksum != fnv64a(raw):
        return ERR_CHECKSUM
    return None


def check_open(data: bytes) -> None:
    """The checks bbolt's ``Open`` makes on a non-empty file before any page is read,
    in its order and with its error texts (raised as :class:`BoltFormatError`):
    the first 4 KiB must be readable (``invalid database``), the file must hold two
    pages of the page size meta 0 names (``file size too small``), and one meta page
    must validate (else meta 0's error: ``invalid database``, ``version mismatch``
    or ``checksum error``)."""
    first = 0x1000
    if len(data) < first:
        raise BoltFormatError(ERR_INVALID)
    page_size = PAGE_SIZE  # the OS page size bbolt falls back to
    if _meta_validate(data, 0) is None:
        page_size = struct.unpack_from("<I", data, _HDR + 8)[0]
    if len(data) < page_size * 2:
        raise BoltFormatError(ERR_FILE_SIZE_TOO_SMALL)
    err0 = _meta_validate(data, 0)
    err1 = _meta_validate(data, page_size)
    if err0 is not None and err1 is not None:
        raise BoltFormatError(err0)


def read_bbolt(data: bytes) -> BoltDB:
    """Parse a whole bbolt file (without a trailing sha256) into its buckets."""
    m0 = _read_meta(data, 0)
    ps0 = m0[2] if m0 else PAGE_SIZE
    m1 = _read_meta(data, ps0)
    metas = [m for m in (m0, m1) if m is not None]
    if not metas:
        raise BoltFormatError("no valid bbolt meta page (bad magic, version or checksum)")
    meta = max(metas, key=lambda m: m[8])
    page_size, root, hwm, txid = meta[2], meta[4], meta[7], meta[8]
    if page_size < 512 or page_size & (page_size - 1):
        raise BoltFormatError(f"bad bbolt page size {page_size}")
    if hwm * page_size > len(data):
        raise BoltFormatError(f"bbolt file truncated: {len(data)} bytes, high-water mark {hwm} pages")

    def page_at(pgid: int) -> int:
        if not 2 <= pgid < hwm:
            raise BoltFormatError(f"page id {pgid} out of range")
        return pgid * page_size

    def walk(buf: bytes, off: int, depth: int) -> Iterator[tuple[int, bytes, bytes]]:
        if depth > 64:
            raise BoltFormatError("bbolt tree too deep")
        _, flags, count, _ = _PAGE_HDR.unpack_from(buf, off)
        base = off + _HDR
        if flags & LEAF_PAGE:
            for i in range(count):
                e = base + i * _ELEM
                eflags, pos, ks, vs = _LEAF_ELEM.unpack_from(buf, e)
                k = bytes(buf[e + pos: e + pos + ks])
                v = bytes(buf[e + pos + ks: e + pos + ks + vs])
                yield eflags, k, v
        elif flags & BRANCH_PAGE:
            for i in range(count):
                e = base + i * _ELEM
                _, _, child = _BRANCH_ELEM.unpack_from(buf, e)
                yield from walk(data, page_at(child), depth + 1)
        else:
            raise BoltFormatError(f"page at offset {off} has unexpected flags {flags:#x}")

    db = BoltDB(page_size=page_size, txid=txid, size=hwm * page_size)
    for eflags, name, v in walk(data, page_at(root), 0):
        if not eflags & BUCKET_LEAF_FLAG:
            raise BoltFormatError(f"root bucket holds a plain key {name!r}")
        broot, _ = _BUCKET_HDR.unpack_from(v, 0)
        if broot == 0:  # inline bucket: a page follows the bucket header
            items = walk(v, _BUCKET_HDR.size, 1)
        else:
            items = walk(data, page_at(broot), 1)
        rows = []
        for f, k, val in items:
            if f & BUCKET_LEAF_FLAG:
                raise BoltFormatError(f"nested bucket {k!r} inside {name!r} is not an etcd layout")
            rows.append((k, val))
        db.buckets[name] = rows
    return db


def split_snapshot(blob: bytes) -> tuple[bytes, bytes | None]:
    """(db, sha256 or None) of a saved snapshot file, the way etcd tells them apart:
    a trailing hash leaves the size 32 bytes past a multiple of 512."""
    if len(blob) % 512 == SHA256_SIZE:
        return blob[:-SHA256_SIZE], blob[-SHA256_SIZE:]
    return blob, None


def verify_snapshot_hash(blob: bytes) -> bytes:
    """The db part of a snapshot file whose trailing sha256 matches; raises otherwise."""
    db, sha = split_snapshot(blob)
    if sha is None:
        raise BoltFormatError("snapshot missing hash")
    if hashlib.sha256(db).digest() != sha:
        raise BoltFormatError("expected sha256 does not match the snapshot's content")
    return db


@dataclass(frozen=True)
class SnapshotStatus:
    """What ``etcdctl snapshot status`` reports for a file."""

    hash: int
    revision: int
    total_key: int
    total_size: int


def snapshot_status(db: BoltDB) -> SnapshotStatus:
    """etcd's status: CRC-32C over every bucket name, key and value in order; the
    revision is the main revision of the last key in ``key``."""
    h = 0
    rev = 0
    total = 0
    for name in sorted(db.buckets):
        h = crc32c(name, h)
        for k, v in db.buckets[name]:
            h = crc32c(k, h)
            h = crc32c(v, h)
            if name == b"key":
                rev = _BE64.unpack_from(k, 0)[0]
            total += 1
    return SnapshotStatus(h, rev, total, db.size)


# etcd's ``mvcc.DefaultIgnores``: the consistent index may differ between members
# with the same data (it counts Raft entries, not data), so Hash leaves it out.
DEFAULT_HASH_IGNORES: frozenset[tuple[bytes, bytes]] = frozenset({(b"meta", b"consistent_index")})


def buckets_hash(buckets: Mapping[bytes, Iterable[tuple[bytes, bytes]]],
                 ignores: frozenset[tuple[bytes, bytes]] = DEFAULT_HASH_IGNORES) -> int:
    """etcd 3.4's ``backend.Hash(ignores)``: one CRC-32C (Castagnoli) over, for each
    bucket in name order, the bucket's name and then every key and value in key
    order, skipping the (bucket, key) pairs in ``ignores`` (a bucket's name counts
    even when it is empty). Each bucket's items must come in bytewise key order,
    as bbolt iterates them."""
    h = 0
    for name in sorted(buckets):
        h = crc32c(name, h)
        for k, v in buckets[name]:
            if (name, k) in ignores:
                continue
            h = crc32c(k, h)
            h = crc32c(v, h)
    return h


# ---------------------------------------------------------------------- writer
class _PageWriter:
    def __init__(self, out: BinaryIO, page_size: int) -> None:
        self.out = out
        self.ps = page_size
        self.next_pgid = 3  # 0, 1: meta; 2: freelist

    def write(self, flags: int, count: int, body: bytes, pgid: int | None = None) -> int:
        size = _HDR + len(body)
        npages = -(-size // self.ps)
        if pgid is None:
            pgid = self.next_pgid
            self.next_pgid += npages
        buf = _PAGE_HDR.pack(pgid, flags, count, npages - 1) + body
        self.out.seek(pgid * self.ps)
        self.out.write(buf + b"\0" * (npages * self.ps - len(buf)))
        return pgid


def _leaf_body(items: list[tuple[int, bytes, bytes]]) -> bytes:
    n = len(items)
    elems = bytearray()
    data = bytearray()
    for i, (flags, k, v) in enumerate(items):
        pos = (n - i) * _ELEM + len(data)
        elems += _LEAF_ELEM.pack(flags, pos, len(k), len(v))
        data += k
        data += v
    return bytes(elems + data)


def _branch_body(children: list[tuple[bytes, int]]) -> bytes:
    n = len(children)
    elems = bytearray()
    data = bytearray()
    for i, (k, pgid) in enumerate(children):
        pos = (n - i) * _ELEM + len(data)
        elems += _BRANCH_ELEM.pack(pos, len(k), pgid)
        data += k
    return bytes(elems + data)


def _write_tree(pw: _PageWriter, items: Iterable[tuple[int, bytes, bytes]]) -> int:
    """Write a B+tree of (flags, key, value) in key order; return its root pgid."""
    limit = pw.ps - _HDR
    level: list[tuple[bytes, int]] = []
    page: list[tuple[int, bytes, bytes]] = []
    used = 0
    last: bytes | None = None
    for flags, k, v in items:
        if last is not None and k <= last:
            raise ValueError(f"bbolt keys must be written in strictly increasing order ({k!r} after {last!r})")
        last = k
        need = _ELEM + len(k) + len(v)
        if page and used + need > limit:
            level.append((page[0][1], pw.write(LEAF_PAGE, len(page), _leaf_body(page))))
            page, used = [], 0
        page.append((flags, k, v))
        used += need
    if page or not level:
        level.append((page[0][1] if page else b"", pw.write(LEAF_PAGE, len(page), _leaf_body(page))))
    while len(level) > 1:
        upper: list[tuple[bytes, int]] = []
        group: list[tuple[bytes, int]] = []
        used = 0
        for k, pgid in level:
            need = _ELEM + len(k)
            if group and used + need > limit:
                upper.append((group[0][0], pw.write(BRANCH_PAGE, len(group), _branch_body(group))))
                group, used = [], 0
            group.append((k, pgid))
            used += need
        upper.append((group[0][0], pw.write(BRANCH_PAGE, len(group), _branch_body(group))))
        level = upper
    return level[0][1]


def write_bbolt(
    out: BinaryIO, buckets: Mapping[bytes, Iterable[tuple[bytes, bytes]]], *,
    page_size: int = PAGE_SIZE, txid: int = 1,
) -> int:
    """Write a bbolt database holding ``buckets`` (each iterable in strictly
    increasing key order) to the seekable ``out``; return its size in bytes."""
    pw = _PageWriter(out, page_size)
    roots: list[tuple[int, bytes, bytes]] = []
    for name in sorted(buckets):
        root = _write_tree(pw, ((0, k, v) for k, v in buckets[name]))
        roots.append((BUCKET_LEAF_FLAG, name, _BUCKET_HDR.pack(root, 0)))
    root_pgid = _write_tree(pw, roots)
    pw.write(FREELIST_PAGE, 0, b"", pgid=2)
    hwm = pw.next_pgid
    for pgid in (0, 1):
        m = _META.pack(MAGIC, VERSION, page_size, 0, root_pgid, 0, 2, hwm, txid)
        pw.write(META_PAGE, 0, m + _U64.pack(fnv64a(m)), pgid=pgid)
    out.seek(hwm * page_size)
    out.truncate()
    return hwm * page_size


# ------------------------------------------------------- meshkit <-> etcd layouts
def rev_key(main: int, sub: int, tombstone: bool = False) -> bytes:
    return _BE64.pack(main) + b"_" + _BE64.pack(sub) + (b"t" if tombstone else b"")


def parse_rev_key(k: bytes) -> tuple[int, int, bool]:
    if len(k) not in (17, 18) or k[8:9] != b"_" or (len(k) == 18 and k[17:] != b"t"):
        raise BoltFormatError(f"bad revision key {k!r}")
    return _BE64.unpack_from(k, 0)[0], _BE64.unpack_from(k, 9)[0], len(k) == 18


def _varint(v: int) -> bytes:
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def marshal_lease(lease_id: int, ttl: int, remaining_ttl: int) -> bytes:
    """``leasepb.Lease{ID=1, TTL=2, RemainingTTL=3}`` (zero fields omitted)."""
    out = bytearray()
    for num, v in ((1, lease_id), (2, ttl), (3, remaining_ttl)):
        if v:
            out += bytes([num << 3]) + _varint(v)
    return bytes(out)


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_varint_fields(data: bytes) -> dict[int, int | bytes]:
    """A flat protobuf message: field number -> int (varint) or bytes (length-delimited)."""
    out: dict[int, int | bytes] = {}
    i = 0
    n = len(data)
    while i < n:
        tag, i = _read_varint(data, i)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = _read_varint(data, i)
            out[num] = _signed(v)
        elif wt == 2:
            ln, i = _read_varint(data, i)
            if i + ln > n:
                raise BoltFormatError("truncated protobuf field")
            out[num] = data[i: i + ln]
            i += ln
        else:
            raise BoltFormatError(f"unexpected protobuf wire type {wt}")
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    v = 0
    shift = 0
    for _ in range(10):
        if i >= len(data):
            raise BoltFormatError("truncated varint")
        b = data[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7
    raise BoltFormatError("varint too long")


def etcd_member_json(member_id: int, name: str, peer_urls: list[str], client_urls: list[str],
                     is_learner: bool) -> bytes:
    """``json.Marshal(membership.Member)`` as etcd 3.4 stores it (omitempty fields dropped)."""
    d: dict[str, object] = {"id": member_id, "peerURLs": peer_urls}
    if is_learner:
        d["isLearner"] = True
    if name:
        d["name"] = name
    if client_urls:
        d["clientURLs"] = client_urls
    return json.dumps(d, separators=(",", ":")).encode()


def _meta_rows(conn: sqlite3.Connection) -> list[tuple[bytes, bytes]]:
    meta = {str(n): bytes(v) for n, v in conn.execute(f"SELECT name, value FROM {schema.META_TABLE}")}
    rows: dict[bytes, bytes] = {}
    if schema.META_CONSISTENT_INDEX in meta:
        rows[b"consistent_index"] = meta[schema.META_CONSISTENT_INDEX]
    for ours, theirs in ((schema.META_COMPACT_REV, b"finishedCompactRev"),
                         (schema.META_SCHEDULED_COMPACT_REV, b"scheduledCompactRev")):
        if ours in meta:
            rev = struct.unpack(">q", meta[ours])[0]
            if rev > 0:
                rows[theirs] = rev_key(rev, 0)
    return sorted(rows.items())


def _kv_rows(conn: sqlite3.Connection) -> Iterator[tuple[bytes, bytes]]:
    cur = conn.execute(
        f"SELECT main, sub, key, create_rev, mod_rev, version, value, lease, tombstone"
        f" FROM {schema.KV_TABLE} ORDER BY main, sub"
    )
    for _ in range(1 << 62):  # bounded: ends when the cursor is drained
        rows = cur.fetchmany(4096)
        if not rows:
            return
        for main, sub, key, create, mod, ver, value, lease, tomb in rows:
            if tomb:
                yield rev_key(main, sub, True), marshal_kv(bytes(key), 0, 0, 0, b"", 0)
            else:
                yield rev_key(main, sub), marshal_kv(bytes(key), create, mod, ver, bytes(value), lease)


def _bucket(conn: sqlite3.Connection, name: str) -> list[tuple[bytes, bytes]]:
    return [(bytes(k), bytes(v)) for k, v in conn.execute(schema.SQL_SCAN_BUCKET, (name,))]


def etcd_buckets(conn: sqlite3.Connection) -> dict[bytes, Iterable[tuple[bytes, bytes]]]:
    """etcd's buckets over a consistent (read-only) meshkit backend connection."""
    leases = []
    for k, v in _bucket(conn, "lease"):
        lid = struct.unpack(">q", k)[0]
        ttl, remaining = struct.unpack(">qq", v)
        leases.append((_BE64.pack(lid & 0xFFFFFFFFFFFFFFFF), marshal_lease(lid, ttl, remaining)))
    members = []
    for k, v in _bucket(conn, "members"):
        mid = struct.unpack(">Q", k)[0]
        d = json.loads(v)
        members.append((f"{mid:x}".encode(), etcd_member_json(
            mid, d["name"], list(d["peerURLs"]), list(d["clientURLs"]), bool(d["isLearner"]))))
    out: dict[bytes, Iterable[tuple[bytes, bytes]]] = {
        b"key": _kv_rows(conn),
        b"meta": _meta_rows(conn),
        b"lease": sorted(leases),
        b"members": sorted(members),
        b"members_removed": [],
        b"cluster": [(b"clusterVersion", CLUSTER_VERSION)],
    }
    for name in PASSTHROUGH_BUCKETS:
        out[name.encode()] = _bucket(conn, name)
    auth = dict(_bucket(conn, "auth"))
    # etcd's auth store commits revision 1 when it first opens a backend.
    auth.setdefault(b"authRevision", _BE64.pack(1))
    out[b"auth"] = sorted(auth.items())
    return out


def _open_image(db_image: bytes) -> sqlite3.Connection:
    """An in-memory connection over a serialized meshkit backend."""
    image = bytearray(db_image)
    if image[:16] == b"SQLite format 3\0" and image[18:20] == b"\x02\x02":
        # A WAL-mode image cannot be opened in memory: mark it rollback-journal
        # (the file format bytes at offsets 18 and 19; the pages are the same).
        image[18:20] = b"\x01\x01"
    conn = sqlite3.connect(":memory:")
    conn.deserialize(bytes(image))
    return conn


def snapshot_from_sqlite(db_image: bytes, out: BinaryIO) -> int:
    """Write etcd's bbolt snapshot of a serialized meshkit backend (``Backend.
    snapshot_bytes()``: a consistent copy) to ``out``; return the db size.
    Safe to run in a worker thread: it touches only its own copy."""
    conn = _open_image(db_image)
    try:
        return write_bbolt(out, etcd_buckets(conn))
    finally:
        conn.close()


def hash_from_sqlite(db_image: bytes) -> int:
    """Maintenance.Hash of a serialized meshkit backend: :func:`buckets_hash` over
    the etcd buckets a snapshot of it would hold (:func:`etcd_buckets`), with etcd's
    ignores. Members with the same applied state give the same value, and so does
    a real etcd whose bbolt buckets hold the same bytes. Thread-safe like
    :func:`snapshot_from_sqlite`."""
    conn = _open_image(db_image)
    try:
        return buckets_hash(etcd_buckets(conn))
    finally:
        conn.close()


def unmarshal_kv(data: bytes) -> tuple[bytes, int, int, int, bytes, int]:
    """``mvccpb.KeyValue`` bytes -> (key, create_revision, mod_revision, version, value, lease)."""
    f = parse_varint_fields(data)

    def num(n: int) -> int:
        v = f.get(n, 0)
        if not isinstance(v, int):
            raise BoltFormatError(f"KeyValue field {n} is not a varint")
        return v

    def blob(n: int) -> bytes:
        v = f.get(n, b"")
        if not isinstance(v, bytes):
            raise BoltFormatError(f"KeyValue field {n} is not bytes")
        return v

    return blob(1), num(2), num(3), num(4), blob(5), num(6)


def kv_rows(db: BoltDB) -> Iterator[tuple[int, int, bytes, int, int, int, bytes, int, int]]:
    """The ``key`` bucket as meshkit backend rows (schema.KV_COLUMNS order), in revision order."""
    for k, v in db.buckets.get(b"key", ()):
        main, sub, tomb = parse_rev_key(k)
        key, create, mod, ver, value, lease = unmarshal_kv(v)
        if tomb:
            yield (main, sub, key, 0, main, 0, b"", 0, 1)
        else:
            yield (main, sub, key, create, mod, ver, value, lease, 0)
