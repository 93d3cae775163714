"""A command-line parser with the exact grammar of Go's ``flag`` package.

etcd parses its command line with Go's ``flag.FlagSet``; a drop-in must accept the
same spellings and reject the same mistakes with the same words:

* ``-name x``, ``--name x``, ``-name=x`` and ``--name=x`` are all one flag;
* a boolean flag takes no separate argument: ``--flag``, ``--flag=true``,
  ``--flag=false`` (``--flag false`` leaves ``false`` as a positional argument);
* parsing stops at the first non-flag argument, at ``-`` and after ``--``;
* ``-h``/``-help`` ask for help when no such flag is defined;
* a flag given twice keeps its last value.

Value parsers mirror Go's ``strconv``/``time`` rules (base prefixes and ``_`` in
integers, ``time.ParseDuration`` units), and their errors carry Go's texts, so a
message such as ``invalid value "abc" for flag -snapshot-count: parse error`` reads
exactly like etcd's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Flag",
    "FlagError",
    "FlagSet",
    "HelpRequested",
    "ParsedArgs",
    "ValueError_",
    "parse_bool",
    "parse_duration_ns",
    "parse_int",
    "parse_uint",
]


class ValueError_(Exception):
    """A value a flag parser refused; ``str()`` is the text Go would print after the colon."""


class FlagError(Exception):
    """The command line is malformed; ``str()`` is Go's message (exit status 2)."""


class HelpRequested(Exception):
    """``-h``/``-help``/``--help`` was given."""


# ---------------------------------------------------------------- value parsers

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(text: str) -> bool:
    """``strconv.ParseBool``."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError_("parse error")


_INT_BODY = {
    2: re.compile(r"[01]+(_[01]+)*"),
    8: re.compile(r"[0-7]+(_[0-7]+)*"),
    10: re.compile(r"[0-9]+(_[0-9]+)*"),
    16: re.compile(r"[0-9a-fA-F]+(_[0-9a-fA-F]+)*"),
}


def _parse_base0(text: str) -> int:
    """Magnitude of an unsigned integer literal as ``strconv.ParseUint(s, 0, ...)`` reads it."""
    s = text
    base = 10
    if len(s) >= 2 and s[0] == "0" and s[1] in "xXbBoO":
        base = {"x": 16, "b": 2, "o": 8}[s[1].lower()]
        s = s[2:]
        if s.startswith("_"):  # Go allows 0x_1F
            s = s[1:]
    elif len(s) >= 2 and s[0] == "0":
        base = 8
        s = s[1:].lstrip("_") or "0"
    if not s or not _INT_BODY[base].fullmatch(s):
        raise ValueError_("parse error")
    return int(s.replace("_", ""), base)


def parse_uint(text: str, bits: int = 64) -> int:
    """``strconv.ParseUint(s, 0, bits)`` as the flag package reports its errors."""
    if text.startswith(("+", "-")):
        raise ValueError_("parse error")
    value = _parse_base0(text)
    if value >= 1 << bits:
        raise ValueError_("value out of range")
    return value


def parse_int(text: str, bits: int = 64) -> int:
    """``strconv.ParseInt(s, 0, bits)``."""
    sign = 1
    body = text
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    value = sign * _parse_base0(body)
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise ValueError_("value out of range")
    return value


_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([a-zµμ]*)")


def parse_duration_ns(text: str) -> int:
    """``time.ParseDuration``: nanoseconds, with Go's error texts (``time: invalid duration "x"``)."""
    orig = text
    s = text
    neg = False
    if s[:1] in ("+", "-"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise ValueError_(f'time: invalid duration "{orig}"')
    total = 0
    while s:
        m = _DURATION_PART.match(s)
        assert m is not None  # the pattern can match empty
        number, unit = m.group(1), m.group(2)
        if number in ("", "."):
            raise ValueError_(f'time: invalid duration "{orig}"')
        if unit == "":
            raise ValueError_(f'time: missing unit in duration "{orig}"')
        if unit not in _UNITS_NS:
            raise ValueError_(f'time: unknown unit "{unit}" in duration "{orig}"')
        whole, _, frac = number.partition(".")
        scale = _UNITS_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // (10 ** len(frac))
        s = s[m.end() :]
    if total >= 1 << 63:
        raise ValueError_(f'time: invalid duration "{orig}"')
    return -total if neg else total


def format_duration_ns(ns: int) -> str:
    """A short Go-like rendering of a duration (``5s``, ``2h0m0s``) for help and docs."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, scale in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= scale:
                val = ns / scale
                return f"{sign}{val:g}{unit}"
    h, rem = divmod(ns, 3_600_000_000_000)
    m, rem = divmod(rem, 60_000_000_000)
    sec = rem / 1_000_000_000
    out = f"{sec:g}s"
    if h or m:
        out = f"{m}m" + out
    if h:
        out = f"{h}h" + out
    return sign + out


# ---------------------------------------------------------------- the flag set


@dataclass(frozen=True)
class Flag:
    """One flag: its name, whether it is boolean, and how its text becomes a value.

    ``parse`` raises :class:`ValueError_` with the text Go prints after the colon.
    """

    name: str
    parse: Callable[[str], Any]
    is_bool: bool = False


@dataclass(frozen=True)
class ParsedArgs:
    """What :meth:`FlagSet.parse` found: values in command-line order and the rest."""

    values: tuple[tuple[str, Any], ...]
    args: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)  # a repeated flag keeps its last value, as in Go


class FlagSet:
    """Go's ``flag.FlagSet`` with ``ContinueOnError``: errors raise instead of exiting."""

    def __init__(self, flags: Sequence[Flag]) -> None:
        self._flags = {f.name: f for f in flags}

    def __contains__(self, name: str) -> bool:
        return name in self._flags

    def parse(self, argv: Sequence[str]) -> ParsedArgs:
        values: list[tuple[str, Any]] = []
        i = 0
        n = len(argv)
        while i < n:
            s = argv[i]
            if len(s) < 2 or s[0] != "-":
                break  # first non-flag argument (including a lone "-")
            num_minuses = 1
            if s[1] == "-":
                num_minuses = 2
                if len(s) == 2:  # "--" terminates the flags
                    i += 1
                    break
            name = s[num_minuses:]
            if not name or name[0] == "-" or name[0] == "=":
                raise FlagError(f"bad flag syntax: {s}")
            i += 1
            has_value = False
            value = ""
            if "=" in name:
                name, value = name.split("=", 1)
                has_value = True
            flag = self._flags.get(name)
            if flag is None:
                if name in ("help", "h"):
                    raise HelpRequested()
                raise FlagError(f"flag provided but not defined: -{name}")
            if flag.is_bool:
                text = value if has_value else "true"
                try:
                    parsed = flag.parse(text)
                except ValueError_ as exc:
                    raise FlagError(f'invalid boolean value "{text}" for -{name}: {exc}') from None
            else:
                if not has_value:
                    if i < n:
                        value = argv[i]
                        i += 1
                    else:
                        raise FlagError(f"flag needs an argument: -{name}")
                try:
                    parsed = flag.parse(value)
                except ValueError_ as exc:
                    raise FlagError(f'invalid value "{value}" for flag -{name}: {exc}') from None
            values.append((name, parsed))
        return ParsedArgs(values=tuple(values), args=tuple(argv[i:]))


def closest_flag(name: str, candidates: Sequence[str]) -> str | None:
    """The defined flag a mistyped one most likely meant, for a "did you mean" hint."""
    import difflib

    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return found[0] if found else None
