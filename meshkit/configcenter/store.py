"""``ConfigStore``: publish, read, list history, diff and roll back configs.

A push is one etcd transaction, guarded by compare-and-swap on the revision the push
was based on::

    if   mod_revision(<app>/@current) == base_revision
    and  create_revision(<app>/@history/<next version>) == 0
    then put <app>/@current = record ; put <app>/@history/<next version> = record
    else get <app>/@current

so two publishers starting from the same version cannot both win: the loser gets
``ConflictError`` naming the version that beat it, and nothing of its push is stored.
History keys are written once and never rewritten, so every published version stays
readable (and restorable) after etcd compacts its MVCC history.
"""

from __future__ import annotations

import datetime
import difflib
import getpass
import json
from pathlib import Path
from typing import Any

from meshkit.client import Client, Cmp, GetResult, Op
from meshkit.configcenter.documents import (
    Format,
    detect_format,
    load_schema,
    parse_document,
    validate,
)
from meshkit.configcenter.errors import (
    ConfigNotFoundError,
    ConflictError,
    DocumentError,
    RevisionNotFoundError,
)
from meshkit.configcenter.names import DEFAULT_PREFIX, ConfigName, namespace_prefix
from meshkit.configcenter.records import ConfigVersion

__all__ = ["MAX_RECORD_BYTES", "ConfigStore", "default_author", "read_text"]

# The record is written twice in one txn; etcd's default request limit is 1.5 MiB.
MAX_RECORD_BYTES = 512 * 1024


def default_author() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_text(path: str | Path) -> str:
    """A document or schema file as text (``DocumentError`` when unreadable or not UTF-8)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DocumentError(str(path), f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DocumentError(str(path), e.strerror or str(e)) from None


class ConfigStore:
    """The publisher's side of the config center, over any etcd v3 cluster.

    ``ConfigStore(client)`` holds no tasks; each method is one or two requests.
    Names are ``NAMESPACE/APP`` strings (``prod/payments/api``) or ``ConfigName``.
    """

    def __init__(self, client: Client, *, prefix: str = DEFAULT_PREFIX,
                 author: str | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.author = author if author is not None else default_author()

    def name(self, name: str | ConfigName) -> ConfigName:
        return name if isinstance(name, ConfigName) else ConfigName.parse(name, self.prefix)

    # ---- reading -----------------------------------------------------------------

    async def read_current(self, name: str | ConfigName, *,
                           timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline
                           ) -> tuple[ConfigVersion | None, int]:
        """(the published version or None, the cluster revision of the read)."""
        cn = self.name(name)
        r = await self.client.get(cn.current_key, timeout=timeout)
        return (ConfigVersion.from_kv(r.kvs[0]) if r.kvs else None), r.header.revision

    async def current(self, name: str | ConfigName) -> ConfigVersion:
        cv, _ = await self.read_current(name)
        if cv is None:
            raise ConfigNotFoundError(str(self.name(name)))
        return cv

    async def history(self, name: str | ConfigName) -> list[ConfigVersion]:
        """Every published version, oldest first (survives compaction: they are live keys)."""
        cn = self.name(name)
        r = await self.client.get(cn.history_prefix, prefix=True)
        return sorted((ConfigVersion.from_kv(kv) for kv in r.kvs), key=lambda v: v.revision)

    async def get(self, name: str | ConfigName, revision: int | None = None) -> ConfigVersion:
        """The current version, or the one published at ``revision``."""
        if revision is None:
            return await self.current(name)
        cn = self.name(name)
        versions = await self.history(cn)
        for v in versions:
            if v.revision == revision:
                return v
        if not versions:
            raise ConfigNotFoundError(str(cn))
        raise RevisionNotFoundError(str(cn), revision, [v.revision for v in versions])

    async def list(self, namespace: str) -> list[str]:
        """The configs published under ``namespace`` (its sub-namespaces included)."""
        pfx = namespace_prefix(namespace, self.prefix)
        r = await self.client.get(pfx, prefix=True, keys_only=True)
        suffix = b"/@current"
        names = [kv.key[len(self.prefix):-len(suffix)].decode()
                 for kv in r.kvs if kv.key.endswith(suffix)]
        return sorted(names)

    async def diff(self, name: str | ConfigName, rev1: int, rev2: int, *, context: int = 3) -> str:
        """A unified diff from the version at ``rev1`` to the one at ``rev2`` ("" when equal).

        The pushed texts are compared when both have the same format, else the parsed
        data rendered as sorted, indented JSON.
        """
        cn = self.name(name)
        versions = {v.revision: v for v in await self.history(cn)}
        known = sorted(versions)
        sides = []
        for rev in (rev1, rev2):
            if rev not in versions:
                if not versions:
                    raise ConfigNotFoundError(str(cn))
                raise RevisionNotFoundError(str(cn), rev, known)
            sides.append(versions[rev])
        a, b = sides
        if a.format == b.format:
            ta, tb = a.text, b.text
        else:
            ta = json.dumps(a.data, indent=2, sort_keys=True) + "\n"
            tb = json.dumps(b.data, indent=2, sort_keys=True) + "\n"
        lines = difflib.unified_diff(
            ta.splitlines(keepends=True), tb.splitlines(keepends=True),
            fromfile=f"{cn}@{a.revision} (version {a.version})",
            tofile=f"{cn}@{b.revision} (version {b.version})", n=context)
        return "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n"
                       for ln in lines)

    # ---- publishing --------------------------------------------------------------

    async def push(
        self,
        name: str | ConfigName,
        text: str,
        fmt: Format,
        *,
        schema: dict[str, Any] | None = None,
        message: str = "",
        author: str | None = None,
        base_revision: int | None = None,
        source: str = "<document>",
    ) -> ConfigVersion:
        """Parse, validate and publish ``text`` as the next version of ``name``.

        Refused before anything is sent (``DocumentError``, ``SchemaValidationError``)
        when the text does not parse or fails ``schema``. ``base_revision`` is the
        revision of the version this push was edited from (0: "nothing published
        yet"); None means "whatever is current when the push reads it". If another
        version was published since, ``ConflictError`` is raised and nothing is stored.
        """
        cn = self.name(name)
        data = parse_document(text, fmt, source)
        if schema is not None:
            validate(data, schema, source)
        return await self._publish(cn, text, fmt, data, message=message, author=author,
                                   base_revision=base_revision, rollback_of=0, source=source)

    async def push_file(
        self,
        name: str | ConfigName,
        path: str | Path,
        *,
        fmt: Format | None = None,
        schema_path: str | Path | None = None,
        message: str = "",
        author: str | None = None,
        base_revision: int | None = None,
    ) -> ConfigVersion:
        """``push`` of a file; the format comes from its extension unless given."""
        text = read_text(path)
        schema = load_schema(read_text(schema_path), str(schema_path)) if schema_path else None
        return await self.push(name, text, fmt or detect_format(path), schema=schema,
                               message=message, author=author, base_revision=base_revision,
                               source=str(path))

    async def rollback(
        self,
        name: str | ConfigName,
        revision: int,
        *,
        message: str | None = None,
        author: str | None = None,
        base_revision: int | None = None,
        schema: dict[str, Any] | None = None,
    ) -> ConfigVersion:
        """Publish the version published at ``revision`` again, as a new version.

        History stays linear (the rollback is itself a version, with ``rollback_of``
        set) and the same compare-and-swap guards it.
        """
        cn = self.name(name)
        old = await self.get(cn, revision)
        if schema is not None:
            validate(old.data, schema, f"{cn}@{revision}")
        msg = message if message is not None else f"rollback to revision {revision} (version {old.version})"
        return await self._publish(cn, old.text, old.format, old.data, message=msg, author=author,
                                   base_revision=base_revision, rollback_of=revision,
                                   source=f"{cn}@{revision}")

    async def _publish(
        self, cn: ConfigName, text: str, fmt: Format, data: dict[str, Any], *, message: str,
        author: str | None, base_revision: int | None, rollback_of: int, source: str,
    ) -> ConfigVersion:
        if base_revision is not None and base_revision < 0:
            raise ValueError("base_revision must be >= 0")
        # One consistent read: the current version and the newest history key (the
        # version counter survives a deleted @current).
        read = await (self.client.txn().then(
            Op.get(cn.current_key),
            Op.get(cn.history_prefix, prefix=True, keys_only=True, sort_order="descend", limit=1),
        ).commit())
        cur_r, hist_r = read.responses
        assert isinstance(cur_r, GetResult) and isinstance(hist_r, GetResult)
        prev: ConfigVersion | None = None
        if cur_r.kvs:
            try:
                prev = ConfigVersion.from_kv(cur_r.kvs[0])
            except DocumentError:
                prev = None  # a broken @current (written by hand) is replaced, still under CAS
        cur_rev = cur_r.kvs[0].mod_revision if cur_r.kvs else 0
        if base_revision is not None and base_revision != cur_rev:
            raise self._conflict(cn, base_revision, prev)
        last = int(hist_r.kvs[0].key[len(cn.history_prefix):]) if hist_r.kvs else 0
        version = max(last, prev.version if prev else 0) + 1
        cv = ConfigVersion(
            name=str(cn), version=version, revision=0, format=fmt, text=text, data=data,
            author=author if author is not None else self.author, message=message, time=_now(),
            base_revision=cur_rev, rollback_of=rollback_of,
        )
        value = cv.encode()
        if len(value) > MAX_RECORD_BYTES:
            raise DocumentError(source, f"too large: the stored record is {len(value)} bytes, "
                                f"the limit is {MAX_RECORD_BYTES}")
        hkey = cn.history_key(version)
        res = await (self.client.txn()
                     .if_(Cmp.mod(cn.current_key) == cur_rev, Cmp.create(hkey) == 0)
                     .then(Op.put(cn.current_key, value), Op.put(hkey, value))
                     .else_(Op.get(cn.current_key))
                     .commit())
        if not res.succeeded:
            now_r = res.responses[0]
            assert isinstance(now_r, GetResult)
            now = ConfigVersion.from_kv(now_r.kvs[0]) if now_r.kvs else None
            raise self._conflict(cn, cur_rev, now)
        return ConfigVersion(
            name=cv.name, version=cv.version, revision=res.header.revision, format=cv.format,
            text=cv.text, data=cv.data, author=cv.author, message=cv.message, time=cv.time,
            base_revision=cv.base_revision, rollback_of=cv.rollback_of,
        )

    @staticmethod
    def _conflict(cn: ConfigName, base: int, now: ConfigVersion | None) -> ConflictError:
        return ConflictError(
            str(cn), base_revision=base, current_revision=now.revision if now else 0,
            current_version=now.version if now else 0, current_author=now.author if now else "",
            current_message=now.message if now else "",
        )
