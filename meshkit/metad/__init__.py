"""Metad for etcd v3: the ``/self`` metadata proxy, wire-compatible with yunify/metad.

A caller asks "who am I?" over plain HTTP and gets its own metadata, found by its IP
through the mapping, from an in-memory mirror fed by a snapshot and a watch (so
requests never reach the cluster). Built on the public v3 API only
(:mod:`meshkit.client`): it runs against meshkit's server and a real etcd.

    async with Client(endpoints) as client, Metad(client, MetadConfig(listen=...)) as m:
        await m.wait_ready()

See ``docs/metad.md``.
"""

from meshkit.metad.config import MetadConfig
from meshkit.metad.errors import (
    BadRequestError,
    ConflictError,
    MetadError,
    NotReadyError,
    TooLargeError,
)
from meshkit.metad.mirror import Changes, Mirror
from meshkit.metad.paths import KeyLayout
from meshkit.metad.render import negotiate, render, to_json, to_text, to_yaml
from meshkit.metad.server import Metad, caller_ip
from meshkit.metad.tree import FORBID, READ, Rule
from meshkit.metad.writer import Writer

__all__ = [
    "FORBID",
    "READ",
    "BadRequestError",
    "Changes",
    "ConflictError",
    "KeyLayout",
    "Metad",
    "MetadConfig",
    "MetadError",
    "Mirror",
    "NotReadyError",
    "Rule",
    "TooLargeError",
    "Writer",
    "caller_ip",
    "negotiate",
    "render",
    "to_json",
    "to_text",
    "to_yaml",
]
