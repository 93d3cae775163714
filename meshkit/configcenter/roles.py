"""Per-namespace etcd roles: read for apps, readwrite for publishers.

The config center has no permission system of its own: it uses etcd's auth, with one
pair of roles per namespace over the namespace's key prefix. ``role_commands`` gives the
exact ``etcdctl`` commands (``meshkit config roles NAMESPACE`` prints them).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from meshkit.configcenter.names import DEFAULT_PREFIX, namespace_prefix

__all__ = ["format_commands", "role_commands", "role_names"]


def role_names(namespace: str) -> tuple[str, str]:
    """(read role, write role) of a namespace: ``config-read:NS`` and ``config-write:NS``."""
    ns = namespace.strip("/")
    namespace_prefix(ns)  # validates the namespace
    return f"config-read:{ns}", f"config-write:{ns}"


def role_commands(
    namespace: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    readers: Sequence[str] = (),
    writers: Sequence[str] = (),
) -> list[list[str]]:
    """etcdctl argument lists (without ``etcdctl``) creating the namespace's two roles and
    granting them to existing users. Run them as root once auth is enabled (or before)."""
    key = namespace_prefix(namespace, prefix)
    read_role, write_role = role_names(namespace)
    cmds = [
        ["role", "add", read_role],
        ["role", "grant-permission", "--prefix=true", read_role, "read", key],
        ["role", "add", write_role],
        ["role", "grant-permission", "--prefix=true", write_role, "readwrite", key],
    ]
    cmds += [["user", "grant-role", u, read_role] for u in readers]
    cmds += [["user", "grant-role", u, write_role] for u in writers]
    return cmds


def format_commands(cmds: Sequence[Sequence[str]], etcdctl: str = "etcdctl") -> str:
    return "\n".join(shlex.join([etcdctl, *c]) for c in cmds) + "\n"
