"""Value parsers shared by the tools' command lines (Go-style flags via goflags)."""

from __future__ import annotations

from collections.abc import Callable

from meshkit._internal.goflags import ValueError_, parse_duration_ns, parse_int
from meshkit._internal.logging import LEVELS


def as_str(text: str) -> str:
    return text


def seconds(text: str) -> float:
    """A Go duration (``30s``, ``1m30s``) or plain seconds (``30``)."""
    try:
        return float(parse_int(text))
    except ValueError_:
        return parse_duration_ns(text) / 1e9


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError_(f"must be one of {', '.join(allowed)}")
        return text

    return parse


def level(text: str) -> str:
    if text not in LEVELS:
        raise ValueError_(f"unknown level (one of {', '.join(LEVELS)})")
    return text
