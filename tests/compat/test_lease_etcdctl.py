"""The real etcdctl drives the same lease scenarios against the real etcd and meshkit.

Every step's exit code, stdout and stderr must be identical once cluster/member
ids and terms are normalised (tests/compat/etcdctl.py) and lease ids, which
each server picks at random, are mapped to placeholders in order of appearance
(``<L1>``, ``<L2>``...). A step's arguments may name an earlier lease as
``{L1}``: each server gets its own id there.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from dataclasses import dataclass, field

import pytest

from tests.compat.conftest import Pair
from tests.compat.etcdctl import Outcome, etcdctl, normalise
from tests.support.procs import ETCDCTL, ServerProc

pytestmark = pytest.mark.etcd

_GRANTED = re.compile(r"lease ([0-9a-f]{16}) granted")
_GRANTED_ID = re.compile(r'"ID" ?: ?(-?\d+)')
_KEYS_SIMPLE = re.compile(r"attached keys\(\[([^\]]*)\]\)")
_KEYS_JSON = re.compile(r'"keys":\[([^\]]*)\]')


@dataclass
class Ids:
    """One server's lease ids, in order of appearance."""

    order: list[int] = field(default_factory=list)

    def learn(self, text: str) -> None:
        found = [int(m.group(1), 16) for m in _GRANTED.finditer(text)]
        found += [int(m.group(1)) for m in _GRANTED_ID.finditer(text)]
        for lid in found:
            if lid not in self.order:
                self.order.append(lid)

    def subst(self, arg: str) -> str:
        for i, lid in enumerate(self.order, 1):
            arg = arg.replace(f"{{L{i}}}", f"{lid:x}")
        return arg

    def normalise(self, text: str) -> str:
        text = _KEYS_SIMPLE.sub(lambda m: f"attached keys([{' '.join(sorted(m.group(1).split()))}])", text)
        text = _KEYS_JSON.sub(lambda m: '"keys":[' + ",".join(sorted(m.group(1).split(","))) + "]", text)
        for i, lid in sorted(enumerate(self.order, 1), key=lambda p: -len(str(p[1]))):
            text = text.replace(f"{lid:016x}", f"<L{i}>").replace(str(lid), f"<L{i}>")
        return text


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def run(sp: ServerProc, ids: Ids, *args: str) -> Outcome:
    assert ETCDCTL is not None
    argv = [ids.subst(a) for a in args]
    p = subprocess.run(
        [ETCDCTL, f"--endpoints={sp.endpoint}", "--command-timeout=10s", *argv],
        capture_output=True, env=_env(), timeout=20, text=True,
    )
    if argv[:2] == ["lease", "grant"]:
        ids.learn(p.stdout)
    out = ids.normalise(p.stdout).replace(sp.endpoint, "<endpoint>")
    err = ids.normalise(p.stderr).replace(sp.endpoint, "<endpoint>")
    return Outcome(p.returncode, normalise(out), normalise(err))


# A remaining TTL depends on how long the steps before took on each server: one
# second apart is timing, not behaviour.
_REMAINING = re.compile(r'(remaining\(|"ttl":|"TTL" : )(\d+)')


def _same(e: Outcome, m: Outcome) -> bool:
    if e == m:
        return True
    ev = [int(x.group(2)) for x in _REMAINING.finditer(e.out)]
    mv = [int(x.group(2)) for x in _REMAINING.finditer(m.out)]
    blank = lambda t: _REMAINING.sub(lambda x: x.group(1) + "N", t)  # noqa: E731
    return (
        (e.code, blank(e.out), e.err) == (m.code, blank(m.out), m.err)
        and len(ev) == len(mv)
        and all(abs(a - b) <= 1 for a, b in zip(ev, mv, strict=True))
    )


def both(pair: Pair, ids: tuple[Ids, Ids], *args: str) -> Outcome:
    e = run(pair.etcd, ids[0], *args)
    m = run(pair.meshkit, ids[1], *args)
    assert _same(e, m), f"etcdctl {' '.join(args)}: {m} != {e}"
    return e


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


SCENARIO: list[tuple[str, ...]] = [
    ("lease", "grant", "1"),  # the minimum TTL: 2 s with etcd's default election timeout
    ("lease", "timetolive", "{L1}"),
    ("lease", "revoke", "{L1}", "-w", "json"),  # (before it can expire on either server)
    ("lease", "grant", "300"),
    ("lease", "grant", "600", "-w", "json"),
    ("lease", "grant", "500", "-w", "fields"),
    ("lease", "grant", "9000000001"),
    ("lease", "grant", "9000000000"),
    ("put", "k1", "v1", "--lease={L2}"),
    ("put", "k2", "v2", "--lease={L2}"),
    ("put", "k3", "v3", "--lease={L3}", "-w", "json"),
    ("put", "k4", "v4", "--lease=1234abcd"),
    ("get", "k", "--prefix", "-w", "json"),
    ("lease", "timetolive", "{L2}"),
    ("lease", "timetolive", "{L2}", "--keys"),
    ("lease", "timetolive", "{L2}", "--keys", "-w", "json"),
    ("lease", "timetolive", "{L3}", "--keys", "-w", "fields"),
    ("lease", "timetolive", "1234abcd"),
    ("lease", "timetolive", "1234abcd", "--keys", "-w", "json"),
    ("lease", "list"),
    ("lease", "list", "-w", "json"),
    ("lease", "keep-alive", "--once", "{L2}"),
    ("lease", "keep-alive", "--once", "1234abcd"),
    ("put", "k2", "moved", "--lease={L3}"),
    ("put", "k1", "no-lease"),
    ("lease", "timetolive", "{L2}", "--keys"),
    ("lease", "timetolive", "{L3}", "--keys"),
    ("lease", "revoke", "{L3}"),
    ("get", "", "--from-key", "-w", "json"),
    ("lease", "revoke", "{L3}"),
    ("lease", "timetolive", "{L3}", "--keys", "-w", "json"),
    ("lease", "keep-alive", "--once", "{L3}"),
    ("lease", "list"),
]


def test_lease_commands(pair: Pair) -> None:
    ids = (Ids(), Ids())
    for step in SCENARIO:
        both(pair, ids, *step)


def _keep_alive_lines(sp: ServerProc, ids: Ids, lease: str, n: int) -> tuple[list[str], int | None]:
    assert ETCDCTL is not None
    env = _env()
    p = subprocess.Popen(
        [ETCDCTL, f"--endpoints={sp.endpoint}", "lease", "keep-alive", ids.subst(lease)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    lines: list[str] = []
    try:
        assert p.stdout is not None
        for _ in range(n):
            line = p.stdout.readline()
            if not line:
                break
            lines.append(ids.normalise(line.rstrip("\n")))
    finally:
        if p.poll() is None:
            p.terminate()
        code = p.wait(10)
    return lines, code


def test_keep_alive_streams_renewals(pair: Pair) -> None:
    ids = (Ids(), Ids())
    both(pair, ids, "lease", "grant", "3")
    both(pair, ids, "put", "ka", "v", "--lease={L1}")
    got = [_keep_alive_lines(sp, i, "{L1}", 2)[0] for sp, i in zip((pair.etcd, pair.meshkit), ids, strict=True)]
    assert got[0] == ["lease <L1> keepalived with TTL(3)"] * 2
    assert got[1] == got[0]
    both(pair, ids, "lease", "timetolive", "{L1}", "--keys")
    both(pair, ids, "lease", "revoke", "{L1}")
    # On a revoked lease keep-alive reports it and exits by itself.
    gone = [_keep_alive_lines(sp, i, "{L1}", 5) for sp, i in zip((pair.etcd, pair.meshkit), ids, strict=True)]
    assert gone[0] == (["lease <L1> expired or revoked."], 0)
    assert gone[1] == gone[0]
    both(pair, ids, "get", "ka")


def test_expiry_deletes_the_keys(pair: Pair) -> None:
    import time

    ids = (Ids(), Ids())
    both(pair, ids, "lease", "grant", "2")
    both(pair, ids, "put", "e1", "v", "--lease={L1}")
    both(pair, ids, "put", "e2", "v", "--lease={L1}")
    both(pair, ids, "put", "plain", "v")
    deadline = time.monotonic() + 8
    for sp in (pair.etcd, pair.meshkit):
        while etcdctl(sp.endpoint, "get", "e", "--prefix", "--count-only", "-w", "json").out.find('"count"') >= 0:
            assert time.monotonic() < deadline, f"keys of an expired lease still there on {sp.endpoint}"
            time.sleep(0.1)
    both(pair, ids, "get", "", "--from-key", "-w", "json")  # both deleted in one revision (5)
    both(pair, ids, "lease", "timetolive", "{L1}")
    both(pair, ids, "lease", "keep-alive", "--once", "{L1}")
    both(pair, ids, "lease", "list")
