"""Go's text renderings that etcdctl's output is made of.

``quote`` is ``strconv.Quote`` (``%q``); ``json_value`` is ``encoding/json`` applied
to a gogo-protobuf message (json tag = proto field name, ``omitempty``, bytes as
base64, a oneof as ``{"Response":{"ResponsePut":...}}``); ``duration`` is
``time.Duration.String``; and ``human_bytes`` is go-humanize's ``Bytes``.
"""

from __future__ import annotations

import base64
import math
import unicodedata
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_ESC = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


def _go_isprint(ch: str) -> bool:
    if ch == " ":
        return True
    cat = unicodedata.category(ch)
    return cat[0] in "LMNPS"


def quote(data: bytes | str) -> str:
    """``strconv.Quote(string(data))``."""
    b = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    out = ['"']
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            ch = chr(c)
            if ch in '"\\':
                out.append("\\" + ch)
            elif 0x20 <= c < 0x7F:
                out.append(ch)
            elif c in _ESC:
                out.append(_ESC[c])
            else:
                out.append(f"\\x{c:02x}")
            i += 1
            continue
        size = 2 if c >> 5 == 0b110 else 3 if c >> 4 == 0b1110 else 4 if c >> 3 == 0b11110 else 0
        ch = ""
        if size and i + size <= n:
            try:
                ch = b[i : i + size].decode("utf-8")
            except UnicodeDecodeError:
                ch = ""
        if not ch:
            out.append(f"\\x{c:02x}")
            i += 1
            continue
        cp = ord(ch)
        if _go_isprint(ch):
            out.append(ch)
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
        i += size
    out.append('"')
    return "".join(out)


def json_string(s: str | bytes) -> str:
    """``encoding/json`` string encoding (HTML-safe, invalid UTF-8 as U+FFFD)."""
    if isinstance(s, bytes):
        s = s.decode("utf-8", "replace")
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "<>&" or c in (0x2028, 0x2029):
            out.append(f"\\u{c:04x}")
        elif c < 0x20:
            out.append({10: "\\n", 13: "\\r", 9: "\\t"}.get(c, f"\\u{c:04x}"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


def _scalar(fd: Any, v: Any) -> str:
    t = fd.type
    if t == FieldDescriptor.TYPE_BYTES:
        return '"' + base64.b64encode(v).decode() + '"'
    if t == FieldDescriptor.TYPE_STRING:
        return json_string(v)
    if t == FieldDescriptor.TYPE_BOOL:
        return "true" if v else "false"
    if t == FieldDescriptor.TYPE_MESSAGE:
        return json_value(v)
    return str(int(v))


def _repeated(fd: Any) -> bool:
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)  # older protobuf


def json_value(msg: Message) -> str:
    """A gogo-generated struct of ``msg`` through ``json.Marshal``."""
    parts: list[str] = []
    seen_oneofs: set[str] = set()
    for fd in msg.DESCRIPTOR.fields:
        oneof = fd.containing_oneof
        if oneof is not None:
            if oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(oneof.name)
            which = msg.WhichOneof(oneof.name)
            if which is None:
                parts.append(f'"{_camel(oneof.name)}":null')
            else:
                inner_fd = msg.DESCRIPTOR.fields_by_name[which]
                inner = _scalar(inner_fd, getattr(msg, which))
                parts.append(f'"{_camel(oneof.name)}":{{"{_camel(which)}":{inner}}}')
            continue
        v = getattr(msg, fd.name)
        if _repeated(fd):
            if len(v) == 0:
                continue
            parts.append(f'"{fd.name}":[' + ",".join(_scalar(fd, x) for x in v) + "]")
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if not msg.HasField(fd.name):
                continue
        elif not v:
            continue
        parts.append(f'"{fd.name}":{_scalar(fd, v)}')
    return "{" + ",".join(parts) + "}"


def duration(seconds: float) -> str:
    """``time.Duration(ns).String()``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = abs(ns)
    if u < 1_000_000_000:
        if u < 1000:
            s = f"{u}ns"
        elif u < 1_000_000:
            s = _frac(u, 1000) + "µs"
        else:
            s = _frac(u, 1_000_000) + "ms"
    else:
        h, rem = divmod(u, 3_600_000_000_000)
        m, rem = divmod(rem, 60_000_000_000)
        s = _frac(rem, 1_000_000_000) + "s"
        if h:
            s = f"{h}h{m}m" + s
        elif m:
            s = f"{m}m" + s
    return ("-" if neg else "") + s


def _frac(v: int, unit: int) -> str:
    whole, frac = divmod(v, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


def human_bytes(n: int) -> str:
    """go-humanize ``Bytes`` (SI units)."""
    sizes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    if n < 10:
        return f"{n} B"
    e = math.floor(math.log(n) / math.log(1000))
    suffix = sizes[e]
    val = math.floor(n / (1000**e) * 10 + 0.5) / 10
    return (f"{val:.1f} {suffix}") if val < 10 else (f"{val:.0f} {suffix}")


def go_bytes_list(items: list[bytes]) -> str:
    """``fmt.Sprintf("%v", []string{...})``."""
    return "[" + " ".join(x.decode("utf-8", "surrogateescape") for x in items) + "]"
