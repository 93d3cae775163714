"""`meshkit ctl lock` / `elect` against the real etcdctl 3.4: same scenario, same output.

Each scenario is played once with the real etcdctl against one fresh server and once
with `meshkit ctl` against its twin (the real etcd, then `meshkit server`), the two
plays side by side in threads. What each process printed, and how it ended, must
match: lock holders and waiters, release by SIGTERM and SIGINT, exec mode
(`ETCD_LOCK_KEY` / `ETCD_LOCK_REV`, the command's output, its exit status),
`--ttl`, candidates and observers of an election, every output format. Lease ids
(in keys, in json/protobuf) are normalised besides the harness's ids and ports.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import ServerProc
from tests.tools.ctl.conftest import Twins
from tests.tools.ctl.harness import Result, argv_for, decode, env_for, normalise, run

pytestmark = pytest.mark.etcd

_B64_KEY = re.compile(r'"key":"([A-Za-z0-9+/=]*)"')
_LEASE_NUM = re.compile(r'"lease":\d+')
_FIELDS_LEASE = re.compile(r'"Lease" : \d+')
_HEXED = re.compile(r"(?:\\x[0-9a-f]{2})+")
_LEASE_HEX = re.compile(r"/[0-9a-f]{1,16}\b")


def _leases_out(r: Result) -> Result:
    """Lease ids out of fields output and of --hex keys (decoded, their lease part replaced)."""
    def n(t: str) -> str:
        t = _FIELDS_LEASE.sub('"Lease" : <n>', t)
        return _HEXED.sub(lambda m: "hex(" + _LEASE_HEX.sub("/<lease>", bytes.fromhex(
            m.group(0).replace("\\x", "")).decode("utf-8", "replace")) + ")", t)

    return Result(r.code, n(r.out), n(r.err))


def _json_keys(text: str) -> str:
    """Decode base64 keys (they hold the lease id) so the hex normalisation reaches them."""
    return _LEASE_NUM.sub('"lease":<n>', _B64_KEY.sub(
        lambda m: '"key":' + json.dumps(base64.b64decode(m.group(1)).decode("utf-8", "replace")), text))


def _pb_range(raw: bytes) -> str:
    from google.protobuf.message import DecodeError

    from meshkit.api.etcdserverpb import rpc_pb2

    try:
        msg = rpc_pb2.RangeResponse.FromString(raw)
    except DecodeError:  # e.g. a "%" in an id mangled as fmt.Printf would
        return f"not a RangeResponse: {raw!r}"
    msg.header.cluster_id = msg.header.member_id = msg.header.raft_term = 0
    for kv in msg.kvs:
        kv.lease = 0
        kv.key = kv.key.rsplit(b"/", 1)[0] + b"/<lease>"
    return repr(msg)


class Proc:
    """One long-running command with its output in files."""

    def __init__(self, tool: str, sp: ServerProc, args: list[str], tmp: Path, name: str,
                 env: dict[str, str] | None = None) -> None:
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.out, "wb") as fo, open(self.err, "wb") as fe:
            self.p = subprocess.Popen(argv_for(tool, sp, args), stdout=fo, stderr=fe,
                                      stdin=subprocess.DEVNULL, env=env_for(env))

    def lines(self) -> int:
        return self.out.read_bytes().count(b"\n")

    def wait_lines(self, n: int, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lines() >= n:
                return True
            if self.p.poll() is not None:
                return self.lines() >= n
            time.sleep(0.05)
        return False

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> Result:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            code = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
            code = -999  # did not end on the signal
        raw = self.out.read_bytes()
        return Result(code, decode(raw), decode(self.err.read_bytes()), raw)


Play = Callable[[str, ServerProc, Path], dict[str, Any]]


def play_both(tw: Twins, tmp: Path, play: Play, expect: dict[str, Any]) -> None:
    """Run ``play`` for both tools at once; what they saw must be equal after normalising,
    and the real etcdctl's play must have gone as ``expect`` says (no vacuous equality)."""

    def one(tool: str, sp: ServerProc) -> dict[str, Any]:
        d = tmp / tool
        d.mkdir()
        base = _revision(tool, sp)
        seen = play(tool, sp, d)
        return {k: _relative(normalise(_leases_out(v), tw.ref, tw.ours), base) if isinstance(v, Result) else v
                for k, v in seen.items()}

    with ThreadPoolExecutor(2) as pool:
        ref_f = pool.submit(one, "etcdctl", tw.ref)
        ours = one("meshkit", tw.ours)
        ref = ref_f.result()
    wrong = {k: ref.get(k) for k, v in expect.items()
             if (ref.get(k).code if isinstance(ref.get(k), Result) else ref.get(k)) != v}
    assert not wrong, f"the etcdctl play did not go as planned: {wrong}"
    diffs = [f"{k}:\n  etcdctl: {ref.get(k)}\n  meshkit: {ours.get(k)}"
             for k in sorted(set(ref) | set(ours)) if ref.get(k) != ours.get(k)]
    assert not diffs, f"{len(diffs)} differences on {tw.kind}:\n" + "\n".join(diffs)


_REVS = re.compile(r'("(?:revision|create_revision|mod_revision)":|"(?:Revision|CreateRevision|ModRevision)" : |'
                   r"\brev=|revision: )(\d+)")


def _relative(r: Result, base: int) -> Result:
    """Revisions as offsets from where the play began (earlier tests moved the store on)."""
    def rel(t: str) -> str:
        return _REVS.sub(lambda m: f"{m.group(1)}+{int(m.group(2)) - base}", t)

    return Result(r.code, rel(r.out), rel(r.err))


# Polling and bookkeeping go through the real etcdctl (cheap), whichever tool plays.


def _revision(tool: str, sp: ServerProc) -> int:
    r = run("etcdctl", sp, ["get", "no-such-key", "-w", "json"])
    assert r.code == 0, r
    return int(json.loads(r.out)["header"]["revision"])


def wait_until(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _count(tool: str, sp: ServerProc, prefix: str) -> int:
    r = run("etcdctl", sp, ["get", "--prefix", prefix, "--keys-only"])
    return len([x for x in r.out.splitlines() if x])


def _leases(tool: str, sp: ServerProc) -> set[str]:
    """The ids of the live leases (other tests' leases run out meanwhile: compare sets)."""
    r = run("etcdctl", sp, ["lease", "list"])
    assert r.code == 0, r
    return set(r.out.split()[3:])


def _keys(tool: str, sp: ServerProc, prefix: str) -> Result:
    return run(tool, sp, ["get", "--prefix", prefix, "--keys-only"])


# ---------------------------------------------------------------- lock


def test_lock_hold_wait_release(twins: Twins, tmp_path: Path) -> None:
    def play(tool: str, sp: ServerProc, d: Path) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        leases = _leases(tool, sp)
        a = Proc(tool, sp, ["lock", "L", "--ttl", "30"], d, "a")
        seen["a holds"] = a.wait_lines(2)
        b = Proc(tool, sp, ["lock", "L", "--ttl", "30"], d, "b")
        seen["b queued"] = wait_until(lambda: _count(tool, sp, "L/") == 2)
        time.sleep(0.3)
        seen["b waits"] = b.lines()
        seen["two queued"] = _keys(tool, sp, "L/")
        seen["a on SIGTERM"] = a.stop(signal.SIGTERM)
        seen["b takes over"] = b.wait_lines(2)
        seen["one queued"] = _keys(tool, sp, "L/")
        seen["b on SIGINT"] = b.stop(signal.SIGINT)
        seen["none queued"] = _keys(tool, sp, "L/")
        # etcdctl leaves its sessions' leases to run out (no revoke)
        seen["leases left"] = len(_leases(tool, sp) - leases)
        return seen

    play_both(twins, tmp_path, play, {
        "a holds": True, "b queued": True, "b waits": 0, "a on SIGTERM": 0, "b takes over": True,
        "b on SIGINT": 0, "leases left": 2})


@pytest.mark.slow
def test_lock_waiter_interrupted_and_formats(twins: Twins, tmp_path: Path) -> None:
    def play(tool: str, sp: ServerProc, d: Path) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        a = Proc(tool, sp, ["lock", "W", "-w", "json"], d, "a")
        seen["a holds"] = a.wait_lines(1)
        b = Proc(tool, sp, ["lock", "W"], d, "b")
        seen["b queued"] = wait_until(lambda: _count(tool, sp, "W/") == 2)
        seen["b while waiting"] = b.stop(signal.SIGINT)  # context canceled, its key withdrawn
        seen["one queued"] = _keys(tool, sp, "W/")
        a_res = a.stop(signal.SIGTERM)
        seen["a json"] = Result(a_res.code, _json_keys(a_res.out), a_res.err)
        f = Proc(tool, sp, ["lock", "W", "-w", "fields"], d, "f")
        f.wait_lines(10)
        seen["fields"] = f.stop(signal.SIGTERM)
        pb = Proc(tool, sp, ["lock", "W", "-w", "protobuf"], d, "pb")
        time.sleep(0.5)
        pb.wait_lines(1)  # binary: a newline shows up somewhere in it
        time.sleep(1.0)
        pb_res = pb.stop(signal.SIGTERM)
        seen["protobuf"] = Result(pb_res.code, _pb_range(pb_res.raw_out) if pb_res.raw_out else "", pb_res.err)
        hx = Proc(tool, sp, ["lock", "W", "--hex"], d, "hx")
        hx.wait_lines(2)
        seen["hex"] = hx.stop(signal.SIGINT)
        # table is refused after the key was shown; the key stays until its lease runs out
        seen["table"] = run(tool, sp, ["lock", "T", "--ttl", "6", "-w", "table"])
        seen["table key left"] = _keys(tool, sp, "T/")
        seen["table key expires"] = wait_until(lambda: _count(tool, sp, "T/") == 0, 30)
        return seen

    play_both(twins, tmp_path, play, {
        "a holds": True, "b queued": True, "b while waiting": 1, "a json": 0, "fields": 0,
        "protobuf": 0, "hex": 0, "table": 4, "table key expires": True})


_SHOW = 'echo "key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV args=$*"; echo to-stderr >&2'


@pytest.mark.slow
def test_lock_exec(twins: Twins, tmp_path: Path) -> None:
    script = tmp_path / "not-a-program"
    script.write_bytes(b"\x00\x01junk")
    script.chmod(0o755)

    steps: list[tuple[list[str], dict[str, str] | None]] = [
        (["lock", "X", "--", "sh", "-c", _SHOW, "sh", "a b", "c"], None),
        (["lock", "X", "--ttl", "5", "--", "sh", "-c", "exit 3"], None),
        (["lock", "X", "--", "sh", "-c", "kill -TERM $$"], None),
        (["lock", "X", "--", "sh", "-c", 'echo "$ETCD_LOCK_KEY"'], {"ETCD_LOCK_KEY": "preset"}),
        (["lock", "X", "--ttl", "0", "--", "true"], None),
        (["lock", "X", "--ttl", "-1", "echo", "hi"], None),
        (["lock", "X", "no-such-command-here"], None),
        (["lock", "X", "/nonexistent/cmd"], None),
        (["lock", "X", "/etc/passwd"], None),  # not executable
        (["lock", "X", str(script)], None),  # executable, not a program
        (["lock", "X", "sh", "-c", "true"], None),  # -c is etcdctl's flag here: refused
        (["lock", "X", "--ttl", "abc", "true"], None),
        (["lock"], None),
        (["lock", "--help"], None),
        (["get", "--prefix", "X/"], None),
    ]

    def play(tool: str, sp: ServerProc, d: Path) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for i, (args, env) in enumerate(steps):
            seen[f"{i} {args}"] = run(tool, sp, args, env=env)
        return seen

    play_both(twins, tmp_path, play, {f"{i} {args}": code for i, ((args, _), code) in enumerate(
        zip(steps, [0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 128, 0, 0], strict=True))})


# ---------------------------------------------------------------- elect


def test_elect_candidates_and_observers(twins: Twins, tmp_path: Path) -> None:
    def play(tool: str, sp: ServerProc, d: Path) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        leases = _leases(tool, sp)
        obs = Proc(tool, sp, ["elect", "-l", "E"], d, "obs")
        # observing an election with no leader yet (its session's lease shows it started)
        seen["obs started"] = wait_until(lambda: bool(_leases(tool, sp) - leases))
        time.sleep(0.5)
        c1 = Proc(tool, sp, ["elect", "E", "p1"], d, "c1")
        seen["c1 elected"] = c1.wait_lines(2)
        seen["obs sees c1"] = obs.wait_lines(2)
        c2 = Proc(tool, sp, ["elect", "E", "p2"], d, "c2")
        seen["c2 queued"] = wait_until(lambda: _count(tool, sp, "E/") == 2)
        time.sleep(0.3)
        seen["c2 waits"] = c2.lines()
        seen["c1 on SIGTERM"] = c1.stop(signal.SIGTERM)  # resigns
        seen["c2 elected"] = c2.wait_lines(2)
        seen["obs sees c2"] = obs.wait_lines(4)
        obs_json = Proc(tool, sp, ["elect", "-l", "E", "-w", "json"], d, "obsj")
        seen["json obs sees c2"] = obs_json.wait_lines(1)
        c3 = Proc(tool, sp, ["elect", "E", "p3", "-w", "fields"], d, "c3")
        seen["c3 queued"] = wait_until(lambda: _count(tool, sp, "E/") == 2)
        seen["c2 on SIGINT"] = c2.stop(signal.SIGINT)
        seen["c3 elected"] = c3.wait_lines(5)
        seen["obs sees c3"] = obs.wait_lines(6)
        seen["json obs sees c3"] = obs_json.wait_lines(2)
        seen["c3 on SIGTERM"] = c3.stop(signal.SIGTERM)
        seen["obs on SIGINT"] = obs.stop(signal.SIGINT)
        j = obs_json.stop(signal.SIGTERM)
        seen["json obs"] = Result(j.code, _json_keys(j.out), j.err)
        seen["keys left"] = _keys(tool, sp, "E/")
        return seen

    play_both(twins, tmp_path, play, {
        "obs started": True, "c1 elected": True, "obs sees c1": True, "c2 queued": True, "c2 waits": 0,
        "c1 on SIGTERM": 0, "c2 elected": True, "obs sees c2": True, "json obs sees c2": True,
        "c3 queued": True, "c2 on SIGINT": 0, "c3 elected": True, "obs sees c3": True,
        "json obs sees c3": True, "c3 on SIGTERM": 0, "obs on SIGINT": 0, "json obs": 0})


def test_elect_interrupted_campaign_and_errors(twins: Twins, tmp_path: Path) -> None:
    def play(tool: str, sp: ServerProc, d: Path) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        c1 = Proc(tool, sp, ["elect", "F", "one", "-w", "json"], d, "c1")
        seen["c1 elected"] = c1.wait_lines(1)
        c2 = Proc(tool, sp, ["elect", "F", "two"], d, "c2")
        seen["c2 queued"] = wait_until(lambda: _count(tool, sp, "F/") == 2)
        seen["c2 while waiting"] = c2.stop(signal.SIGINT)  # context canceled, resigned
        seen["one candidate"] = _keys(tool, sp, "F/")
        r = c1.stop(signal.SIGINT)
        seen["c1 json"] = Result(r.code, _json_keys(r.out), r.err)
        for args in (["elect"], ["elect", "-l"], ["elect", "a"], ["elect", "-l", "a", "b"],
                     ["elect", "a", "b", "c"], ["elect", "--help"], ["elect", "a", "b", "--bogus"],
                     ["elect", "a", "b", "-w", "table"], ["get", "--prefix", "a/", "--keys-only"]):
            seen[str(args)] = run(tool, sp, args)
        # the table run left its key with a 60 s lease: revoke it, so the store stays in step
        kvs = json.loads(run(tool, sp, ["get", "--prefix", "a/", "-w", "json"]).out).get("kvs", [])
        for kv in kvs:
            run(tool, sp, ["lease", "revoke", f"{kv['lease']:x}"])
        seen["a/ after revoke"] = _keys(tool, sp, "a/")
        return seen

    play_both(twins, tmp_path, play, {
        "c1 elected": True, "c2 queued": True, "c2 while waiting": 1, "c1 json": 0, "['elect']": 128,
        "['elect', 'a', 'b', '-w', 'table']": 4})
