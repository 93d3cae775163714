"""The real `etcdctl watch` against the real etcd and meshkit: same writes, same output.

`etcdctl watch` runs until killed: each scenario starts it with Popen, runs the
writes with `etcdctl put/del/txn`, waits until the expected number of output
lines arrived (or the process exits by itself), then terminates it and compares
what it printed on the two servers (cluster/member ids and terms normalised).
Both servers are fresh, so revisions are the same and are compared too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.compat.conftest import Pair
from tests.compat.etcdctl import etcdctl, normalise
from tests.support.procs import ETCDCTL, ServerProc

pytestmark = pytest.mark.etcd

Write = tuple[str, ...] | tuple[tuple[str, ...], str]


@dataclass(frozen=True)
class Scenario:
    watch: tuple[str, ...]
    writes: tuple[Write, ...]
    min_lines: int  # stdout lines the real etcd prints at least (the scenario works)
    setup: tuple[Write, ...] = ()
    stdin: str | None = None  # interactive mode: fed after start, then kept open
    settle: float = 0.0  # wait before writing (watches "from now")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def _run_write(ep: str, w: Write) -> None:
    if w and isinstance(w[0], tuple):
        args, stdin = w  # type: ignore[misc]
    else:
        args, stdin = w, None
    out = etcdctl(ep, *args, stdin=stdin)  # type: ignore[arg-type]
    assert out.code == 0, out


def run_watch(sp: ServerProc, sc: Scenario, tmp: Path, lines: int | None = None,
              timeout: float = 15.0) -> tuple[str, str, int | None]:
    """Run the scenario; wait for ``lines`` stdout lines, or (lines=None) until the
    output has been quiet for a second after the writes."""
    assert ETCDCTL is not None
    for w in sc.setup:
        _run_write(sp.endpoint, w)
    out_path, err_path = tmp / "out.txt", tmp / "err.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [ETCDCTL, f"--endpoints={sp.endpoint}", *sc.watch],
            stdout=out, stderr=err, env=_env(),
            stdin=subprocess.PIPE if sc.stdin is not None else subprocess.DEVNULL,
        )
    try:
        if sc.stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(sc.stdin.encode())
            proc.stdin.flush()
        if sc.settle:
            time.sleep(sc.settle)
        for w in sc.writes:
            _run_write(sp.endpoint, w)
        deadline = time.monotonic() + timeout
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            n = out_path.read_bytes().count(b"\n")
            if lines is not None and n >= lines:
                time.sleep(0.3)  # anything extra would show up now
                break
            if n != last:
                last, quiet_since = n, time.monotonic()
            elif lines is None and time.monotonic() - quiet_since > 1.0:
                break
            time.sleep(0.05)
    finally:
        code = proc.poll()
        if code is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdin is not None:
            proc.stdin.close()
    return (normalise(out_path.read_text(errors="backslashreplace")),
            normalise(err_path.read_text(errors="backslashreplace")), code)


TXN_STDIN = "\n".join([
    "",  # no compares
    "put p/a 1",
    "put p/b 2",
    "del p/c",
    "",
    "",
]) + "\n"

# How etcd batches revisions into responses depends on when its catch-up loop
# runs, so the formats that print one block per response (json, fields) are used
# on pure history (written before the watch starts: one batch) or pure live
# traffic (the watch settles first: one response per revision); the simple
# format prints one block per event and is used on mixes.
SCENARIOS: dict[str, Scenario] = {
    "key-history-and-live": Scenario(
        ("watch", "k", "--rev=2"),
        setup=(("put", "k", "v0"),),
        writes=(("put", "k", "v1"), ("put", "other", "x"), ("del", "k"), ("put", "k", "v2")),
        min_lines=11,
    ),
    "key-json-history": Scenario(
        ("watch", "k", "--rev=2", "-w", "json"),
        setup=(("put", "k", "v0"), ("put", "k", "v1"), ("del", "k")),
        writes=(),
        min_lines=1,
    ),
    "key-json-live": Scenario(
        ("watch", "k", "-w", "json", "--prev-kv"),
        setup=(("put", "k", "v0"),),
        writes=(("put", "k", "v1"), ("del", "k")),
        min_lines=2,
        settle=1.0,
    ),
    "key-fields-history": Scenario(
        ("watch", "k", "--rev=1", "-w", "fields"),
        setup=(("put", "k", "v1"), ("put", "k", "v2"), ("del", "k")),
        writes=(),
        min_lines=25,
    ),
    "prefix-prev-kv-txn": Scenario(
        ("watch", "p/", "--prefix", "--prev-kv", "--rev=2"),
        setup=(("put", "p/c", "0"),),
        writes=(("put", "p/a", "0"), (("txn",), TXN_STDIN), ("del", "p/", "--prefix")),
        min_lines=25,
    ),
    "prefix-json-txn-one-response": Scenario(
        ("watch", "p/", "--prefix", "-w", "json"),
        setup=(("put", "p/c", "0"),),
        writes=((("txn",), TXN_STDIN), ("put", "q", "no"), ("put", "p/z", "1")),
        min_lines=2,
        settle=1.0,
    ),
    "range": Scenario(
        ("watch", "b", "d", "--rev=1"),
        writes=(("put", "a", "1"), ("put", "b", "2"), ("put", "c", "3"), ("put", "d", "4")),
        min_lines=6,
    ),
    "from-now": Scenario(
        ("watch", "n"),
        setup=(("put", "n", "old"),),
        writes=(("put", "n", "new"), ("del", "n")),
        min_lines=5,
        settle=1.0,
    ),
    "compacted-rev": Scenario(
        ("watch", "c", "--rev=2"),
        setup=(("put", "c", "1"), ("put", "c", "2"), ("put", "c", "3"), ("compaction", "3")),
        writes=(),
        min_lines=0,  # stderr: "watch was canceled (...compacted)", exit code 5
    ),
    "future-rev": Scenario(
        ("watch", "f", "--rev=4"),
        writes=(("put", "f", "1"), ("put", "f", "2"), ("put", "f", "3"), ("put", "f", "4")),
        min_lines=6,
    ),
    "interactive": Scenario(
        ("watch", "-i"),
        stdin="watch ik\nwatch --prefix ip --prev-kv\nwatch --rev=1 h\nbogus\n",
        setup=(("put", "h", "hist"),),
        writes=(("put", "ik", "a"), ("put", "ip/1", "b"), ("put", "ip/1", "c")),
        min_lines=3 + 3 + 3 + 5,
        settle=1.0,
    ),
    "interactive-progress": Scenario(
        ("watch", "-i"),
        stdin="watch ik\nwatch --prefix ip\nprogress\n",
        writes=(),
        min_lines=2,
        settle=1.0,
    ),
    "exec-command": Scenario(
        # ETCD_WATCH_REVISION is the response's header revision: live traffic only
        ("watch", "e", "--", "sh", "-c",
         "echo $ETCD_WATCH_REVISION $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE"),
        writes=(("put", "e", "1"), ("del", "e")),
        min_lines=8,
        settle=1.0,
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_etcdctl_watch_same_output(pair: Pair, tmp_path: Path, name: str) -> None:
    sc = SCENARIOS[name]
    (tmp_path / "etcd").mkdir()
    (tmp_path / "meshkit").mkdir()
    want = run_watch(pair.etcd, sc, tmp_path / "etcd")
    assert want[0].count("\n") >= sc.min_lines, want  # the scenario itself is right
    got = run_watch(pair.meshkit, sc, tmp_path / "meshkit", lines=want[0].count("\n"))
    assert got == want
