"""Keys and values are bytes: how the dashboard moves them through URLs and JSON and shows them.

Every key and value travels as base64 (URL-safe in query strings) and is shown as text
built from it: UTF-8 when it decodes, else with ``\\xNN`` escapes and a flag saying so.
The browser puts these strings into the page with ``textContent`` only.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import yaml

__all__ = [
    "BadParameter",
    "b64",
    "bytes_view",
    "from_b64",
    "key_text",
    "pretty",
    "value_text",
]

PRETTY_LIMIT = 256 * 1024  # larger values are not parsed for pretty printing


class BadParameter(ValueError):
    """A request parameter the dashboard cannot use (answered with 400)."""


def b64(data: bytes) -> str:
    """URL-safe base64 without padding: what the pages put in query strings."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def from_b64(text: str, what: str = "key") -> bytes:
    """Decode :func:`b64` (standard alphabet and padding accepted too)."""
    t = text.strip().replace("-", "+").replace("_", "/")
    t += "=" * (-len(t) % 4)
    try:
        return base64.b64decode(t.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise BadParameter(f"{what} is not base64") from None


def _escape_controls(text: str, keep: str) -> str:
    out = []
    for ch in text:
        o = ord(ch)
        if (o < 0x20 and ch not in keep) or o == 0x7F or 0x80 <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    return "".join(out)


def key_text(key: bytes) -> str:
    """A key as one line of text: as it is when it is UTF-8 without control characters;
    else with control characters and invalid bytes as ``\\xNN`` (and ``\\`` doubled)."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return _bytes_escaped(key, keep="")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
        return _escape_controls(text, keep="")
    return text


def _bytes_escaped(data: bytes, keep: str = "\n\t") -> str:
    parts: list[str] = []
    i = 0
    while i < len(data):
        try:
            parts.append(_escape_controls(data[i:].decode("utf-8"), keep))
            break
        except UnicodeDecodeError as e:
            parts.append(_escape_controls(data[i:i + e.start].decode("utf-8"), keep))
            parts.extend(f"\\x{b:02x}" for b in data[i + e.start:i + e.end])
            i += e.end
    return "".join(parts)


def value_text(value: bytes) -> tuple[str, bool]:
    """(text to show, whether the value is UTF-8). UTF-8 values are shown as they are
    (newlines and tabs kept); others with ``\\xNN`` escapes."""
    try:
        return value.decode("utf-8"), True
    except UnicodeDecodeError:
        return _bytes_escaped(value), False


def bytes_view(data: bytes, *, limit: int | None = None) -> dict[str, Any]:
    """JSON for one value: ``text`` to show, ``b64`` (exact bytes), ``utf8``, ``size``,
    ``cut`` when only the first ``limit`` bytes are included."""
    cut = limit is not None and len(data) > limit
    part = data[:limit] if cut and limit is not None else data
    text, utf8 = value_text(part)
    if cut and not utf8:
        # a cut may split a character: judge UTF-8-ness on the whole value
        try:
            data.decode("utf-8")
            text, utf8 = part.decode("utf-8", errors="ignore"), True
        except UnicodeDecodeError:
            pass
    return {"text": text, "b64": b64(part), "utf8": utf8, "size": len(data), "cut": cut}


def pretty(value: bytes) -> dict[str, str] | None:
    """``{"format": "json"|"yaml", "text": ...}`` when the value is a JSON document or a
    YAML mapping/sequence, pretty printed; None otherwise (or when too large)."""
    if len(value) > PRETTY_LIMIT:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    stripped = text.strip()
    if not stripped:
        return None
    try:
        doc = json.loads(stripped)
    except (json.JSONDecodeError, RecursionError):
        pass
    else:
        if isinstance(doc, dict | list):
            return {"format": "json", "text": json.dumps(doc, indent=2, ensure_ascii=False)}
        return None
    try:
        doc = yaml.safe_load(stripped)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    if isinstance(doc, dict | list) and doc:
        try:
            out = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True,
                                 default_flow_style=False, width=100)
        except (yaml.YAMLError, RecursionError, ValueError):
            return None
        return {"format": "yaml", "text": out}
    return None
