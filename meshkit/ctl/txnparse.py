"""etcdctl's txn input language: ``argify``, Go ``%q`` scanning, compares and request lines."""

from __future__ import annotations

import re

from meshkit.api.etcdserverpb import rpc_pb2

_ARG = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^'\"\t\n\f\r ][^\t\n\f\r ]*[^'\"\t\n\f\r ]?")
_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
               "\\": "\\", "'": "'", '"': '"'}


class ParseError(Exception):
    pass


def go_unquote(s: str) -> str:
    """``strconv.Unquote`` of a double- or back-quoted Go string (surrogateescape for raw bytes)."""
    if len(s) >= 2 and s[0] == s[-1] == "`":
        return s[1:-1]
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        raise ParseError("invalid syntax")
    body = s[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == '"' or c == "\n":
            raise ParseError("invalid syntax")
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise ParseError("invalid syntax")
        e = body[i]
        if e in _SIMPLE_ESC and e != "'":
            out += _SIMPLE_ESC[e].encode()
            i += 1
        elif e == "x":
            h = body[i + 1 : i + 3]
            if len(h) != 2 or not all(ch in "0123456789abcdefABCDEF" for ch in h):
                raise ParseError("invalid syntax")
            out.append(int(h, 16))
            i += 3
        elif e in "uU":
            n = 4 if e == "u" else 8
            h = body[i + 1 : i + 1 + n]
            if len(h) != n or not all(ch in "0123456789abcdefABCDEF" for ch in h):
                raise ParseError("invalid syntax")
            out += chr(int(h, 16)).encode("utf-8", "surrogatepass")
            i += 1 + n
        elif e in "01234567":
            o = body[i : i + 3]
            if len(o) != 3 or not all(ch in "01234567" for ch in o) or int(o, 8) > 255:
                raise ParseError("invalid syntax")
            out.append(int(o, 8))
            i += 3
        else:
            raise ParseError("invalid syntax")
    return out.decode("utf-8", "surrogateescape")


def argify(line: str) -> list[str]:
    """etcdctl's ``argify`` (including its single-quote slicing by the number of args)."""
    args = _ARG.findall(line)
    for i, a in enumerate(args):
        if not a:
            continue
        if a[0] == "'":
            end = len(args) - 1  # etcdctl slices by len(args), not len(args[i])
            if not 1 <= end <= len(a):
                raise ParseError(f"cannot parse quoted argument {a}")
            args[i] = a[1:end]
        elif a[0] == '"':
            try:
                args[i] = go_unquote(a)
            except ParseError:
                raise ParseError("unexpected EOF") from None
    return args


_Q = r"\"(?:[^\"\\\n]|\\.)*\"|`[^`]*`"
_CMP_KEY = re.compile(r"\s*(" + _Q + r")")
_CMP_REST = re.compile(r"\)\s*(\S+)\s*")
_CMP_VAL = re.compile(r"(" + _Q + r")")

_RESULT = {"=": rpc_pb2.Compare.EQUAL, "!=": rpc_pb2.Compare.NOT_EQUAL, "<": rpc_pb2.Compare.LESS,
           ">": rpc_pb2.Compare.GREATER}


def _gq(s: str) -> str:
    from meshkit.ctl.gofmt import quote

    return quote(s.encode("utf-8", "surrogateescape"))


def parse_compare(line: str) -> rpc_pb2.Compare:
    parts = line.split("(", 1)
    if len(parts) != 2:
        raise ParseError(f"malformed comparison: {line}")
    target, rest = parts
    key = op = val = ""
    n = 0
    m = _CMP_KEY.match(rest)
    if m:
        key = go_unquote(m.group(1))
        n = 1
        m2 = _CMP_REST.match(rest, m.end())
        if m2:
            op = m2.group(1)
            n = 2
            m3 = _CMP_VAL.match(rest, m2.end())
            if m3:
                val = go_unquote(m3.group(1))
                n = 3
    if n != 3:
        raise ParseError(f"malformed comparison: {line}; got {target}({_gq(key)}) {op} {_gq(val)}")
    if op not in _RESULT:
        raise ParseError(f"malformed comparison: {line} (unknown result op {op})")
    kb = key.encode("utf-8", "surrogateescape")
    cmp = rpc_pb2.Compare(key=kb, result=_RESULT[op])
    if target in ("ver", "version", "c", "create", "m", "mod"):
        try:
            from meshkit.ctl.flags import go_parse_int

            v = go_parse_int(val)
        except Exception:
            raise ParseError(f"invalid txn compare request: {line}") from None
        if target in ("ver", "version"):
            cmp.target, cmp.version = rpc_pb2.Compare.VERSION, v
        elif target in ("c", "create"):
            cmp.target, cmp.create_revision = rpc_pb2.Compare.CREATE, v
        else:
            cmp.target, cmp.mod_revision = rpc_pb2.Compare.MOD, v
    elif target in ("val", "value"):
        cmp.target, cmp.value = rpc_pb2.Compare.VALUE, val.encode("utf-8", "surrogateescape")
    elif target == "lease":
        raise ParseError(f"malformed comparison: {line} (lease compares are not supported by etcdctl 3.4)")
    else:
        raise ParseError(f"malformed comparison: {line} (unknown target {target})")
    return cmp
