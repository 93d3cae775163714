"""Running one command through the real etcdctl and through `meshkit ctl`, and normalising."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import ETCDCTL, ServerProc

CTL = [sys.executable, "-c",
       "import sys; from meshkit.cli.ctl import main; sys.exit(main(sys.argv[1:]))"]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str
    raw_out: bytes = b""


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    env.update(extra or {})
    return env


def argv_for(tool: str, sp: ServerProc, args: list[str], endpoint: bool = True) -> list[str]:
    assert ETCDCTL is not None
    base = [ETCDCTL] if tool == "etcdctl" else list(CTL)
    return base + ([f"--endpoints={sp.endpoint}"] if endpoint else []) + args


def run(tool: str, sp: ServerProc, args: list[str], stdin: str | None = None,
        env: dict[str, str] | None = None, endpoint: bool = True, timeout: float = 20) -> Result:
    p = subprocess.run(argv_for(tool, sp, args, endpoint), input=(stdin or "").encode(),
                       capture_output=True, env=env_for(env), timeout=timeout)
    return Result(p.returncode, decode(p.stdout), decode(p.stderr), p.stdout)


def run_until(tool: str, sp: ServerProc, args: list[str], lines: int, tmp: Path,
              stdin: str | None = None, timeout: float = 8.0) -> Result:
    """A long-running command (watch, lock): wait for ``lines`` stdout lines or its exit, then SIGTERM."""
    out, err = tmp / f"{tool}.out", tmp / f"{tool}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(argv_for(tool, sp, args), stdout=fo, stderr=fe, env=env_for(),
                                stdin=subprocess.PIPE)
    assert proc.stdin is not None
    if stdin:
        proc.stdin.write(stdin.encode())
        proc.stdin.flush()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if out.read_bytes().count(b"\n") >= lines:
            time.sleep(0.3)  # anything printed right after
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        code = -999  # killed by us: the exit code says nothing
    else:
        code = proc.returncode
    proc.stdin.close()
    return Result(code, decode(out.read_bytes()), decode(err.read_bytes()))


def decode(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


# ---- normalisation: only what differs between two servers or two runs -----------------

_ZAP = re.compile(r'^\{"level":"(warn|info)".*\n', re.M)  # the Go client library's own log lines
_CAPNS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} ", re.M)
_JSON_IDS = re.compile(r'"(cluster_id|member_id|raft_term|ID|leader|id|dbSize|dbSizeInUse|raftIndex|raftTerm|raftAppliedIndex|leases)":(\d+|\[[^\]]*\])')
_FIELDS_IDS = re.compile(r'"(ClusterID|MemberID|RaftTerm|ID|Leader|DBSize|RaftIndex|RaftAppliedIndex)" : (\d+)')
_TOOK = re.compile(r"(took = |\"took\":\"|\"Took\" : |\| +)(\d+(\.\d+)?(ns|µs|ms|s))")
_HEX16 = re.compile(r"\b[0-9a-f]{16}\b")
_HEXID = re.compile(r"\b[0-9a-f]{13,16}\b")
_SIZE = re.compile(r"\b\d+(\.\d)? (B|kB|MB)\b")
_PORT = re.compile(r"127\.0\.0\.1:\d+|localhost:\d+")
_REMAINING = re.compile(r'remaining\(\d+s\)|"ttl":\d+(?=,"granted-ttl")|"TTL" : \d+(?=\n"GrantedTTL")')
_TABLE_PAD = re.compile(r"(?<=[|+])[ -]+(?=[|+])")


def normalise(r: Result, *servers: ServerProc) -> Result:
    def n(t: str) -> str:
        for sp in servers:
            t = t.replace(sp.endpoint, "<ep>")
        t = _ZAP.sub("", t)
        t = _CAPNS.sub("<ts> ", t)
        t = _JSON_IDS.sub(lambda m: f'"{m.group(1)}":<n>', t)
        t = _FIELDS_IDS.sub(lambda m: f'"{m.group(1)}" : <n>', t)
        t = _TOOK.sub(lambda m: m.group(1) + "<took>", t)
        t = _HEX16.sub("<hex>", t)
        t = _HEXID.sub("<hex>", t)
        t = _SIZE.sub("<size>", t)
        t = _PORT.sub("<addr>", t)
        t = _REMAINING.sub("<ttl-left>", t)  # seconds left on a lease depend on when it ran
        if t.startswith("+-"):  # table widths follow id and timing lengths (widths: test_printers.py)
            t = _TABLE_PAD.sub(lambda m: "-" if "-" in m.group(0) else " ", t)
            t = re.sub(" +", " ", t)
        return t

    return Result(r.code, n(r.out), n(r.err))


def normalise_pb(kind: str, raw: bytes) -> str:
    """A protobuf answer decoded, ids and term zeroed (they differ between two servers)."""
    from meshkit.api.etcdserverpb import rpc_pb2 as pb

    cls = {"get": pb.RangeResponse, "put": pb.PutResponse, "del": pb.DeleteRangeResponse,
           "txn": pb.TxnResponse}[kind]
    msg = cls.FromString(raw)
    msg.header.cluster_id = msg.header.member_id = msg.header.raft_term = 0
    return repr(msg)
