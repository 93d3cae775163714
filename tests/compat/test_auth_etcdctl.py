"""The real etcdctl drives users, roles, permissions and auth against the real
etcd and meshkit; every step's exit code, stdout and stderr must be identical
(ids, terms, timestamps and the endpoint normalised, tests/compat/etcdctl.py).
"""

from __future__ import annotations

import pytest

from tests.compat.conftest import Pair
from tests.compat.etcdctl import Outcome, etcdctl

pytestmark = pytest.mark.etcd

ROOT = ("--user", "root:rootpw")
ALICE = ("--user", "alice:alicepw")

# (args, stdin)
Step = tuple[tuple[str, ...], str | None]

SETUP: list[Step] = [
    (("auth", "enable"), None),  # refused: no root user
    (("user", "add", "root:rootpw"), None),
    (("user", "add", "alice:alicepw"), None),
    (("user", "add", "alice:other"), None),
    (("user", "get", "alice"), None),
    (("user", "get", "nobody"), None),
    (("role", "add", "r1"), None),
    (("role", "add", "r1"), None),
    (("role", "add", "tmp"), None),
    (("role", "get", "root"), None),
    (("role", "get", "r1"), None),
    (("role", "grant-permission", "r1", "readwrite", "/a/", "--prefix"), None),
    (("role", "grant-permission", "r1", "read", "/b", "/c"), None),
    (("role", "grant-permission", "r1", "write", "/z", "--from-key"), None),
    (("role", "grant-permission", "r1", "read", "k1"), None),
    (("role", "grant-permission", "r1", "readwrite", "k1"), None),
    (("role", "grant-permission", "nope", "read", "k1"), None),
    (("role", "get", "r1"), None),
    (("role", "get", "r1", "-w", "json"), None),
    (("user", "grant-role", "alice", "r1"), None),
    (("user", "grant-role", "alice", "tmp"), None),
    (("user", "grant-role", "alice", "nope"), None),
    (("user", "grant-role", "nobody", "r1"), None),
    (("user", "get", "alice"), None),
    (("user", "get", "alice", "--detail"), None),
    (("user", "revoke-role", "alice", "tmp"), None),
    (("user", "revoke-role", "alice", "tmp"), None),
    (("role", "delete", "tmp"), None),
    (("role", "delete", "tmp"), None),
    (("user", "list"), None),
    (("role", "list"), None),
    (("role", "revoke-permission", "r1", "/zz"), None),
    (("role", "revoke-permission", "r1", "k1"), None),
    (("user", "add", "bob:bobpw"), None),
    (("user", "delete", "bob"), None),
    (("user", "delete", "bob"), None),
    (("put", "/b", "seen"), None),
    (("auth", "enable"), None),  # etcdctl creates the root role itself and retries
    (("auth", "enable"), None),
]

ENABLED: list[Step] = [
    (("get", "foo"), None),  # no user: user name is empty
    (("put", "/a/x", "1", *ALICE), None),
    (("put", "foo", "1", *ALICE), None),  # under the from-key write permission
    (("put", "/a/x", "1", "--user", "alice:bad"), None),
    (("put", "/a/x", "1", "--user", "nobody:pw"), None),
    (("put", "/q", "1", *ALICE), None),
    (("put", "/a/y", "1", "--prev-kv", *ALICE), None),
    (("get", "/a/x", *ALICE), None),
    (("get", "/a/", "--prefix", *ALICE), None),
    (("get", "/a", "--prefix", *ALICE), None),
    (("get", "/b", *ALICE), None),
    (("get", "/b", "/c", *ALICE), None),
    (("get", "/b", "/d", *ALICE), None),
    (("get", "foo", *ALICE), None),  # write-only
    (("del", "/a/x", *ALICE), None),
    (("del", "/b", *ALICE), None),
    (("del", "/a/", "--prefix", "--prev-kv", *ALICE), None),
    (("txn", *ALICE), 'value("/a/1") = "x"\n\nput /a/1 y\n\nput /a/2 z\n\n'),
    (("txn", *ALICE), 'value("/q") = "x"\n\nput /a/1 y\n\n\n'),
    (("txn", *ALICE), '\nget /b\n\nget /q\n\n'),
    (("txn", *ALICE), '\nget /b\n\n\n'),
    (("watch", "/q", *ALICE), None),
    (("get", "foo", *ROOT), None),
    (("put", "/q", "root", *ROOT), None),
    (("compaction", "2", *ALICE), None),  # etcd 3.4 does not check compaction
    (("defrag", *ALICE), None),
    (("endpoint", "hashkv", *ALICE), None),
    (("defrag",), None),
    (("member", "add", "x", "--peer-urls=http://127.0.0.1:1", *ALICE), None),
    (("role", "get", "r1", *ALICE), None),  # a user may read its own roles
    (("role", "get", "root", *ALICE), None),
    (("user", "get", "alice", *ALICE), None),  # and itself
    (("user", "get", "root", *ALICE), None),
    (("user", "list", *ALICE), None),
    (("role", "add", "r2", *ALICE), None),
    (("user", "list", *ROOT), None),
    (("user", "delete", "root", *ROOT), None),
    (("role", "delete", "root", *ROOT), None),
    (("user", "revoke-role", "root", "root", *ROOT), None),
    (("user", "passwd", "alice", "--interactive=false", *ROOT), "newpw\n"),
    (("get", "/a/1", *ALICE), None),
    (("get", "/a/1", "--user", "alice:newpw"), None),
    (("role", "revoke-permission", "r1", "/a/", "/a0", *ROOT), None),
    (("get", "/a/1", "--user", "alice:newpw"), None),
    (("auth", "disable", "--user", "alice:newpw"), None),
    (("auth", "disable", *ROOT), None),
    (("get", "/a/1"), None),
    (("get", "/a/1", "--user", "alice:newpw"), None),
    (("user", "delete", "alice"), None),
    (("role", "delete", "r1"), None),
    (("user", "list"), None),
    (("role", "list"), None),
]


def _run(endpoint: str, step: Step) -> Outcome:
    args, stdin = step
    return etcdctl(endpoint, *args, stdin=stdin)


def _compare(pair: Pair, steps: list[Step]) -> list[str]:
    diffs = []
    for step in steps:
        want = _run(pair.etcd.endpoint, step)
        got = _run(pair.meshkit.endpoint, step)
        if want != got:
            diffs.append(f"{step}:\n  etcd:    {want}\n  meshkit: {got}")
    return diffs


def test_user_role_auth_flow_same_as_etcd(pair: Pair) -> None:
    diffs = _compare(pair, SETUP + ENABLED)
    assert not diffs, "\n".join(diffs)
