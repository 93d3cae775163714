"""One consistent view of a resource's keys (confd's memkv) and how it is read from etcd.

:func:`fetch` reads every key prefix of a resource in read-only transactions at ONE
revision (the first transaction's; later ones ask for that revision explicitly, as
confd's etcdv3 backend does, at most 128 ranges per transaction), so a template never
mixes two states of the cluster. Keys are matched like confd: ``/a`` covers ``/a``
itself and ``/a/...``, not ``/ab``; the resource prefix is stripped.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meshkit._internal.errors import CompactedError
from meshkit.client import Client, GetResult, Op
from meshkit.confd.errors import MissingKeyError
from meshkit.confd.resource import join_key

__all__ = ["MAX_TXN_OPS", "KVPair", "Snapshot", "fetch", "key_matches", "snapshot_from"]

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


@dataclass(frozen=True, slots=True)
class KVPair:
    """A key and its value; ``Key``/``Value`` are the names confd's templates use."""

    key: str
    value: str

    @property
    def Key(self) -> str:  # confd's template field name
        return self.key

    @property
    def Value(self) -> str:  # confd's template field name
        return self.value


def key_matches(origin: str, key: str) -> bool:
    """confd's filter: the key itself or anything below it (``/a`` does not cover ``/ab``)."""
    if key == origin:
        return True
    return key.startswith(origin if origin.endswith("/") else origin + "/")


def _terms(p: str) -> list[str]:
    return [t for t in posixpath.normpath("/" + p).split("/") if t]


@dataclass(frozen=True)
class Snapshot:
    """The keys of one resource at one ``revision`` (store keys: prefix stripped)."""

    revision: int
    data: Mapping[str, str] = field(default_factory=dict)

    # -- memkv --

    def exists(self, key: str) -> bool:
        return join_key(key) in self.data

    def get(self, key: str) -> KVPair:
        k = join_key(key)
        if k not in self.data:
            raise MissingKeyError(k)
        return KVPair(k, self.data[k])

    def gets(self, pattern: str) -> list[KVPair]:
        """Pairs whose key matches the glob ``pattern`` (Go's path.Match: ``*`` stops at ``/``)."""
        return [KVPair(k, self.data[k]) for k in sorted(self.data) if _path_match(pattern, k)]

    def getv(self, key: str) -> str:
        return self.get(key).value

    def getvs(self, pattern: str) -> list[str]:
        return sorted(p.value for p in self.gets(pattern))

    def ls(self, path: str) -> list[str]:
        """Names directly under ``path`` (keys and directories), sorted."""
        base = join_key(path)
        prefix = _terms(base)
        names: set[str] = set()
        for k in self.data:
            if k == base:
                names.add(posixpath.basename(k))
                continue
            terms = _terms(k)
            if len(terms) > len(prefix) and terms[: len(prefix)] == prefix:
                names.add(terms[len(prefix)])
        return sorted(names)

    def lsdir(self, path: str) -> list[str]:
        """Names directly under ``path`` that have keys below them, sorted."""
        prefix = _terms(join_key(path))
        names: set[str] = set()
        for k in self.data:
            terms = _terms(k)
            if len(terms) > len(prefix) + 1 and terms[: len(prefix)] == prefix:
                names.add(terms[len(prefix)])
        return sorted(names)


def _path_match(pattern: str, key: str) -> bool:
    """Go's ``path.Match``: like fnmatch but ``*`` and ``?`` never cross a ``/``."""
    pt, kt = pattern.split("/"), key.split("/")
    if len(pt) != len(kt):
        return False
    return all(fnmatch.fnmatchcase(k, p) for p, k in zip(pt, kt, strict=True))


def _decode(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


async def fetch(client: Client, keys: Sequence[str], *, strip_prefix: str = "/",
                revision: int = 0) -> Snapshot:
    """Read every key prefix in ``keys`` (full etcd keys) at one revision.

    With ``revision=0`` the revision is the current one (the first transaction's).
    A compaction between two transactions (possible only past 128 keys) restarts the
    read at the current revision; a requested ``revision`` that was compacted raises
    ``CompactedError``.
    """
    for _attempt in range(3):
        try:
            return await _fetch_once(client, keys, strip_prefix, revision)
        except CompactedError:
            if revision:
                raise
    return await _fetch_once(client, keys, strip_prefix, revision)


async def _fetch_once(client: Client, keys: Sequence[str], strip_prefix: str,
                      revision: int) -> Snapshot:
    ordered = list(dict.fromkeys(keys))
    rev = revision
    values: dict[str, str] = {}
    strip = join_key(strip_prefix)
    for start in range(0, max(len(ordered), 1), MAX_TXN_OPS):
        chunk = ordered[start : start + MAX_TXN_OPS]
        ops = [Op.get(k, prefix=True, revision=rev) for k in chunk]
        result = await client.txn().then(*ops).commit()
        if rev == 0:
            rev = result.header.revision
        for origin, resp in zip(chunk, result.responses, strict=True):
            assert isinstance(resp, GetResult)
            for kv in resp.kvs:
                k = _decode(kv.key)
                if key_matches(origin, k):
                    values[_store_key(k, strip)] = _decode(kv.value)
    if not ordered:
        result = await client.txn().commit()
        rev = rev or result.header.revision
    return Snapshot(rev, values)


def _store_key(key: str, strip: str) -> str:
    """confd: ``path.Join("/", strings.TrimPrefix(key, prefix))``."""
    if strip != "/" and key.startswith(strip):
        key = key[len(strip):]
    return join_key(key)


def snapshot_from(values: Iterable[tuple[str, str]], revision: int = 0) -> Snapshot:
    """A snapshot from plain pairs (templates rendered without a cluster, e.g. in tests)."""
    return Snapshot(revision, {join_key(k): v for k, v in values})
