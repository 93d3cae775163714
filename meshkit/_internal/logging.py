"""Logging setup for meshkit's processes, from etcd's ``--log-level``/``--logger``/``--log-outputs``.

Only the standard library: one handler on the ``meshkit`` logger. ``capnslog``
gives etcd 3.4's default line format (``2006-01-02 15:04:05.000000 I | pkg: msg``),
``zap`` one JSON object per line. Nothing secret is ever logged: callers log names
and paths, never passwords, tokens or private keys, and :func:`redact` masks
credentials in URLs before they are logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from typing import IO

__all__ = ["LEVELS", "configure_logging", "get_logger", "redact"]

# etcd's levels -> logging's; panic and fatal log as CRITICAL.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
_CAPNS_LETTER = {
    logging.DEBUG: "D",
    logging.INFO: "I",
    logging.WARNING: "W",
    logging.ERROR: "E",
    logging.CRITICAL: "C",
}
_ZAP_LEVEL = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
_HANDLER_MARK = "_meshkit_handler"
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """Mask ``user:password@`` in URLs inside ``text``."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def _package(name: str) -> str:
    parts = name.split(".")
    return parts[-1] if len(parts) > 1 else name


class CapnslogFormatter(logging.Formatter):
    """``2006-01-02 15:04:05.000000 I | package: message`` (UTC like etcd in containers)."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        micros = int((record.created % 1) * 1_000_000)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{micros:06d}"
        letter = _CAPNS_LETTER.get(record.levelno, "I")
        line = f"{stamp} {letter} | {_package(record.name)}: {redact(record.getMessage())}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)
        return line


class ZapJSONFormatter(logging.Formatter):
    """One JSON object per line with zap's production keys (level, ts, caller, msg)."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        millis = int((record.created % 1) * 1000)
        out: dict[str, object] = {
            "level": _ZAP_LEVEL.get(record.levelno, "info"),
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{millis:03d}Z",
            "caller": f"{_package(record.name)}/{record.module}.py:{record.lineno}",
            "msg": redact(record.getMessage()),
        }
        if record.exc_info and record.levelno >= logging.ERROR:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _stream_for(output: str) -> IO[str]:
    if output == "stdout":
        return sys.stdout
    if output in ("default", "stderr"):
        return sys.stderr
    return open(output, "a", encoding="utf-8")  # a file path (zap only)


def configure_logging(
    level: str = "info",
    logger: str = "capnslog",
    outputs: Sequence[str] = ("default",),
) -> logging.Logger:
    """Point the ``meshkit`` logger at ``outputs`` with etcd's format; idempotent.

    ``level``/``logger``/``outputs`` are assumed validated (ServerConfig.validate()).
    """
    root = logging.getLogger("meshkit")
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            if handler.stream not in (sys.stdout, sys.stderr):  # type: ignore[attr-defined]
                handler.close()
    formatter: logging.Formatter = ZapJSONFormatter() if logger == "zap" else CapnslogFormatter()
    for output in outputs or ("default",):
        handler = logging.StreamHandler(_stream_for(output))
        setattr(handler, _HANDLER_MARK, True)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    root.propagate = False
    return root


def get_logger(name: str) -> logging.Logger:
    """``meshkit.<name>`` (e.g. ``get_logger("etcdmain")``)."""
    return logging.getLogger(f"meshkit.{name}" if not name.startswith("meshkit") else name)
