"""One published version of a config, and its JSON form in etcd and in the cache file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from meshkit.client import KeyValue
from meshkit.configcenter.documents import FORMATS, Format
from meshkit.configcenter.errors import DocumentError

__all__ = ["RECORD_KIND", "ConfigVersion"]

RECORD_KIND = "meshkit.config/v1"


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """A published version: the document (as pushed, and parsed) and who/when/why.

    ``revision`` is the etcd revision at which it was published (the key of ``diff``
    and ``rollback``); ``version`` counts the publishes of this config from 1.
    ``rollback_of`` is the revision a rollback restored, else 0.
    """

    name: str
    version: int
    revision: int
    format: Format
    text: str
    data: dict[str, Any] = field(compare=False)
    author: str
    message: str
    time: str
    base_revision: int
    rollback_of: int = 0

    def to_record(self) -> dict[str, Any]:
        """The stored form (without ``revision``: etcd assigns it at commit)."""
        return {
            "kind": RECORD_KIND, "name": self.name, "version": self.version, "format": self.format,
            "text": self.text, "data": self.data, "author": self.author, "message": self.message,
            "time": self.time, "base_revision": self.base_revision, "rollback_of": self.rollback_of,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_record(), ensure_ascii=False, sort_keys=True,
                          separators=(",", ":")).encode()

    @classmethod
    def from_record(cls, rec: Any, revision: int, source: str) -> ConfigVersion:
        if not isinstance(rec, dict) or rec.get("kind") != RECORD_KIND:
            raise DocumentError(source, f"not a {RECORD_KIND} record")
        try:
            fmt = rec["format"]
            if fmt not in FORMATS or not isinstance(rec["data"], dict):
                raise TypeError("format/data")
            return cls(
                name=str(rec["name"]), version=int(rec["version"]), revision=revision,
                format=fmt, text=str(rec["text"]), data=rec["data"], author=str(rec["author"]),
                message=str(rec["message"]), time=str(rec["time"]),
                base_revision=int(rec["base_revision"]), rollback_of=int(rec.get("rollback_of", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DocumentError(source, f"broken {RECORD_KIND} record ({e})") from None

    @classmethod
    def from_kv(cls, kv: KeyValue) -> ConfigVersion:
        source = kv.key.decode(errors="replace")
        try:
            rec = json.loads(kv.value)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DocumentError(source, f"value is not a JSON record ({e})") from None
        return cls.from_record(rec, kv.mod_revision, source)

    def summary(self) -> dict[str, Any]:
        """Everything but the document: what ``history`` lists."""
        return {
            "name": self.name, "version": self.version, "revision": self.revision,
            "time": self.time, "author": self.author, "message": self.message,
            "format": self.format, "base_revision": self.base_revision,
            "rollback_of": self.rollback_of,
        }
