"""Manage-API writes: each request is ONE etcd transaction, so it applies whole or not at all.

metad replaced a subtree with a delete followed by separate put transactions (a
reader could see it empty, a failure left it half-written); here a replace reads
the subtree, then in one txn deletes the keys that go and puts the new ones,
guarded by ``mod_revision < read revision + 1`` on the subtree (retried a few
times on a race, then 409). A write needing more operations than a txn may hold
is refused with 413 before anything is sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from meshkit.client import Client, Cmp, DeleteResult, Op, Operation
from meshkit.client.kv import prefix_end
from meshkit.metad.errors import BadRequestError, ConflictError, TooLargeError
from meshkit.metad.paths import META_ROOT, KeyLayout, Kind, Parts, canonical_ip, join, split_path
from meshkit.metad.tree import Rule, parse_rules

__all__ = ["Writer", "body_leaves", "check_mapping"]

_REPLACE_ATTEMPTS = 3


def _scalar(v: Any) -> str:
    """A JSON scalar as metad stores it (Go's fmt of the decoded value)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise BadRequestError("numbers must be finite")
        text = format(Decimal(repr(v)), "f")
        return text[:-2] if text.endswith(".0") else text
    raise BadRequestError(f"unsupported JSON value {v!r}")


def body_leaves(value: Any, base: Parts = ()) -> list[tuple[Parts, str]]:
    """The keys a JSON body writes under ``base`` (objects nest, lists index 0, 1, ...).

    Every object key must be one valid path component (no '/', '.', '..', empty).
    """
    if isinstance(value, Mapping):
        out: list[tuple[Parts, str]] = []
        for k, v in value.items():
            if not isinstance(k, str) or not k or "/" in k or split_path(k) != (k,):
                raise BadRequestError(f"invalid key {k!r} under {join(base)}: a key is one "
                                      "path component (no '/', '.', '..' or control characters)")
            out.extend(body_leaves(v, (*base, k)))
        return out
    if isinstance(value, list):
        out = []
        for i, v in enumerate(value):
            out.extend(body_leaves(v, (*base, str(i))))
        return out
    if not base:
        raise BadRequestError("a value needs a path: PUT/POST it at /v1/data/{path}")
    return [(base, _scalar(value))]


def check_mapping(parts: Parts, value: Any) -> None:
    """metad's mapping rules: first level is an IP, leaves are data paths ('/...')."""

    def check_tree(v: Any, where: Parts) -> None:
        if isinstance(v, Mapping):
            for k, sub in v.items():
                if not isinstance(k, str) or "/" in k:
                    raise BadRequestError(f"mapping key {k!r} under {join(where)} must not be a path")
                check_tree(sub, (*where, k))
        elif isinstance(v, str) and v.startswith("/"):
            split_path(v, what="mapped data path")
        else:
            raise BadRequestError(f"mapping value at {join(where)} must be a data path "
                                  "starting with '/'")

    if not parts:
        if not isinstance(value, Mapping):
            raise BadRequestError("mapping data should be a JSON object of IP -> mapping")
        for ip, sub in value.items():
            if canonical_ip(str(ip)) != ip:
                raise BadRequestError(f"mapping's first level key should be an IP, got {ip!r}")
            if not isinstance(sub, Mapping):
                raise BadRequestError(f"the mapping of {ip} should be a JSON object")
            check_tree(sub, (ip,))
        return
    if canonical_ip(parts[0]) != parts[0]:
        raise BadRequestError(f"mapping's first level key should be an IP, got {parts[0]!r}")
    if len(parts) == 1 and not isinstance(value, Mapping):
        raise BadRequestError(f"the mapping of {parts[0]} should be a JSON object")
    check_tree(value, parts)


class Writer:
    """Writes data, mapping and rules of one group through the public client."""

    def __init__(self, client: Client, layout: KeyLayout, *, max_txn_ops: int = 128,
                 timeout: float = 5.0) -> None:
        self.client = client
        self.layout = layout
        self.max_txn_ops = max_txn_ops
        self.timeout = timeout

    # ---- ranges -----------------------------------------------------------------------

    def _subtree_ranges(self, kind: Kind, parts: Parts) -> list[tuple[bytes, bytes]]:
        """(key, range_end) pairs covering a subtree; range_end b"" is one key."""
        if parts:
            key = self.layout.key(kind, parts)
            return [(key, b""), (key + b"/", prefix_end(key + b"/"))]
        base = self.layout.base(kind).encode()
        if kind == "data" and self.layout.prefix == "":
            meta = META_ROOT.encode()  # the data root shares "/" with /_metad/
            return [(base, meta), (prefix_end(meta), prefix_end(base))]
        return [(base, prefix_end(base))]

    def _check_path(self, kind: Kind, parts: Parts) -> None:
        if kind == "data" and self.layout.data_is_reserved(parts):
            raise BadRequestError("/_metad is reserved for metad's mapping and rules")

    async def _current(self, kind: Kind, parts: Parts) -> tuple[int, set[bytes]]:
        ops = [Op.get(k, end or None, keys_only=True) for k, end in self._subtree_ranges(kind, parts)]
        res = await self.client.txn().then(*ops).commit()
        keys: set[bytes] = set()
        for r in res.responses:
            keys.update(kv.key for kv in r.kvs)  # type: ignore[union-attr]
        return res.header.revision, keys

    def _limit(self, n: int) -> None:
        if n > self.max_txn_ops:
            raise TooLargeError(n, self.max_txn_ops)

    # ---- trees (data, mapping) --------------------------------------------------------------

    async def put(self, kind: Kind, parts: Parts, value: Any, *, replace: bool) -> int:
        """POST (replace) or PUT (merge) a JSON value at ``parts``; the txn's revision,
        or 0 when nothing was written."""
        self._check_path(kind, parts)
        if kind == "mapping":
            check_mapping(parts, value)
        leaves = body_leaves(value, parts)
        if kind == "data":
            for p, _v in leaves:
                self._check_path(kind, p)
        puts = {self.layout.key(kind, p): v for p, v in leaves}
        if not replace:
            if not puts:
                return 0
            self._limit(len(puts))
            res = await self.client.txn().then(*(Op.put(k, v) for k, v in puts.items())).commit()
            return res.header.revision
        for _attempt in range(_REPLACE_ATTEMPTS):
            rev, current = await self._current(kind, parts)
            gone = sorted(current - puts.keys())
            self._limit(len(puts) + len(gone))
            guards = [Cmp.mod(k, end or None).lt(rev + 1) for k, end in self._subtree_ranges(kind, parts)]
            ops: list[Operation] = [Op.delete(k) for k in gone]
            ops += [Op.put(k, v) for k, v in puts.items()]
            if not ops:
                return 0
            res = await self.client.txn().if_(*guards).then(*ops).commit()
            if res.succeeded:
                return res.header.revision
        raise ConflictError(f"{join(parts)} kept changing while being replaced; nothing was changed")

    async def delete(self, kind: Kind, parts: Parts, subs: list[str] | None = None) -> int:
        """Delete a subtree, or only its children named in ``subs``; the txn's revision
        when something was deleted, else 0."""
        self._check_path(kind, parts)
        targets: list[Parts]
        if subs:
            targets = []
            for s in subs:
                s = s.strip()
                if not s:
                    continue
                if "/" in s or split_path(s) != (s,):
                    raise BadRequestError(f"sub {s!r} must be one path component, not a path")
                targets.append((*parts, s))
        else:
            targets = [parts]
        ranges = [r for t in targets for r in self._subtree_ranges(kind, t)]
        if not ranges:
            return 0
        self._limit(len(ranges))
        res = await self.client.txn().then(*(Op.delete(k, end or None) for k, end in ranges)).commit()
        deleted = sum(r.deleted for r in res.responses if isinstance(r, DeleteResult))
        return res.header.revision if deleted else 0

    # ---- rules ---------------------------------------------------------------------------------

    @staticmethod
    def parse_rule_body(body: Any) -> dict[str, list[Rule]]:
        if not isinstance(body, Mapping) or not body:
            raise BadRequestError('rules body must be a JSON object {"<ip>": [{"path": "/x", "mode": 1}]}')
        out: dict[str, list[Rule]] = {}
        for host, raw in body.items():
            ip = canonical_ip(str(host))
            if ip is None or ip != host:
                raise BadRequestError(f"rule host must be an IP address, got {host!r}")
            try:
                out[ip] = parse_rules(raw)
            except (ValueError, BadRequestError) as e:
                raise BadRequestError(f"rules of {host}: {e}") from None
        return out

    async def put_rules(self, rules: dict[str, list[Rule]]) -> int:
        from meshkit.metad.render import Struct, to_json

        self._limit(len(rules))
        ops = [Op.put(self.layout.key("rule", (h,)), to_json([Struct(r.as_dict()) for r in rs]))
               for h, rs in rules.items()]
        res = await self.client.txn().then(*ops).commit()
        return res.header.revision

    async def delete_rules(self, hosts: list[str]) -> int:
        keys = []
        for h in hosts:
            ip = canonical_ip(h)
            if ip is None:
                raise BadRequestError(f"rule host must be an IP address, got {h!r}")
            keys.append(self.layout.key("rule", (ip,)))
        self._limit(len(keys))
        res = await self.client.txn().then(*(Op.delete(k) for k in keys)).commit()
        deleted = sum(r.deleted for r in res.responses if isinstance(r, DeleteResult))
        return res.header.revision if deleted else 0
