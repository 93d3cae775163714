"""`meshkit ctl` against the real etcdctl 3.4: same commands, same servers, same bytes.

Each scenario runs its steps through the real etcdctl on one fresh server and through
`meshkit ctl` on a twin fresh server of the same kind (the real etcd, then meshkit's),
and compares exit code, stdout and stderr of every step. Normalised: cluster/member
ids, terms, lease ids, ports, db sizes, `took` timings and the Go client library's own
log lines (`{"level":"warn",...}`), which differ between two servers or two runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.procs import ServerProc
from tests.tools.ctl.conftest import Twins
from tests.tools.ctl.harness import Result, normalise, normalise_pb, run, run_until

pytestmark = pytest.mark.etcd

Step = tuple[list[str], str | None]  # args, stdin


def S(*args: str, stdin: str | None = None) -> Step:
    return (list(args), stdin)


KV: list[Step] = [
    S("put", "a", "1"),
    S("put", "b", "x y"),
    S("put", "a", "2", "--prev-kv"),
    S("put", "a", "3", "--prev-kv", "-w", "json"),
    S("put", "c", stdin="from stdin"),
    S("put", "q", "<&>", "-w", "fields"),
    S("get", "a"),
    S("get", "a", "-w", "json"),
    S("get", "a", "-w", "fields"),
    S("get", "--prefix", ""),
    S("get", "a", "c"),
    S("get", "--from-key", "b", "--keys-only"),
    S("get", "--prefix", "", "--sort-by=MODIFY", "--order=DESCEND", "--limit", "2", "-w", "json"),
    S("get", "a", "--print-value-only"),
    S("get", "a", "--rev=2"),
    S("get", "b", "--hex"),
    S("get", "a", "--consistency=s", "-w", "fields"),
    S("del", "a", "--prev-kv"),
    S("del", "zz", "-w", "json"),
    S("del", "--prefix", "", "--prev-kv", "-w", "fields"),
    # usage and input errors
    S("get"),
    S("get", "a", "b", "c"),
    S("get", "--prefix", "--from-key", "a"),
    S("get", "a", "--bogus"),
    S("get", "a", "--rev=abc"),
    S("get", "a", "--rev"),
    S("get", "-x", "a"),
    S("put"),
    S("put", "a", "b", "--lease=zz"),
    S("put", "a", "--ignore-value", "b"),
    S("get", "a", "--consistency=x"),
    S("get", "a", "--order=up"),
    S("get", "a", "--sort-by=size"),
    S("get", "a", "--print-value-only", "-w", "json"),
    S("-w", "yaml", "get", "a"),
    S("-w", "table", "get", "a"),
    S("nosuch"),
    S("a"),
    S("del"),
    S("put", "k", "v", "--lease=1234"),
]

COMPACTION: list[Step] = [
    S("put", "a", "1"),
    S("put", "a", "2"),
    S("put", "a", "3"),
    S("compaction", "3"),
    S("compaction", "3"),
    S("compaction", "abc"),
    S("compaction"),
    S("get", "a", "--rev=2"),
    S("get", "a", "--rev=99"),
    S("compaction", "2", "--physical"),
    S("endpoint", "hashkv"),
    S("endpoint", "hashkv", "-w", "json"),
    S("endpoint", "hashkv", "-w", "fields"),
    S("endpoint", "hashkv", "-w", "table"),
    S("defrag"),
]

TXN_IN = 'value("b") = "x y"\n\nput c 1\nget b\ndel zz\n\nput d 2\n\n'
TXN: list[Step] = [
    S("put", "b", "x y"),
    S("txn", stdin=TXN_IN),
    S("txn", "-w", "json", stdin=TXN_IN),
    S("txn", "-w", "fields", stdin=TXN_IN),
    S("txn", stdin='mod("b") > "0"\nver("c") = "1"\ncreate("zz") = "0"\n\nput --prev-kv c "two words"\n\nget b\n\n'),
    S("txn", stdin='val("b") != "x y"\n\n\nget --prefix ""\ndel --prefix "" --prev-kv\n\n'),
    S("txn", "-i", stdin='value("c") = "two words"\n\nput e 5\n\n\n'),
    S("txn", stdin="bogus\n\n\n\n"),
    S("txn", stdin='ver("b") = "x"\n\n\n\n'),
    S("txn", stdin='size("b") = "1"\n\n\n\n'),
    S("txn", stdin="\nfrob a\n\n\n"),
    S("txn", stdin="\nput a\n\n\n"),
    S("txn", stdin="\nget a --bogus\n\n\n"),
    S("txn", stdin='value("b") = "x y"\n\nput c 1\n'),
    S("txn", "extra", stdin="\n\n\n"),
]

LEASE: list[Step] = [
    S("lease", "grant", "100"),
    S("lease", "grant", "100", "-w", "json"),
    S("lease", "grant", "100", "-w", "fields"),
    S("lease", "list"),
    S("lease", "list", "-w", "json"),
    S("lease", "list", "-w", "fields"),
    S("put", "k", "v", "--lease={lease}"),
    S("lease", "timetolive", "{lease}", "--keys"),
    S("lease", "timetolive", "{lease}", "--keys", "-w", "json"),
    S("lease", "timetolive", "{lease}", "-w", "fields"),
    S("lease", "keep-alive", "--once", "{lease}"),
    S("lease", "keep-alive", "--once", "{lease}", "-w", "json"),
    S("lease", "revoke", "{lease}"),
    S("lease", "revoke", "{lease}"),
    S("lease", "timetolive", "{lease}"),
    S("lease", "timetolive", "{lease}", "-w", "json"),
    S("lease", "keep-alive", "{lease}"),
    S("lease", "keep-alive", "--once", "{lease}"),
    S("get", "k"),
    S("lease", "grant"),
    S("lease", "grant", "abc"),
    S("lease", "revoke"),
    S("lease", "revoke", "zz"),
    S("lease", "timetolive"),
    S("lease", "keep-alive"),
]

CLUSTER: list[Step] = [
    S("member", "list"),
    S("member", "list", "-w", "json"),
    S("member", "list", "-w", "fields"),
    S("member", "list", "-w", "table"),
    S("endpoint", "status"),
    S("endpoint", "status", "-w", "json"),
    S("endpoint", "status", "-w", "fields"),
    S("endpoint", "status", "-w", "table"),
    S("endpoint", "status", "--cluster"),
    S("endpoint", "health"),
    S("endpoint", "health", "-w", "json"),
    S("endpoint", "health", "-w", "table"),
    S("endpoint", "health", "-w", "fields"),
    S("endpoint", "health", "--cluster"),
    S("alarm", "list"),
    S("alarm", "list", "-w", "json"),
    S("version"),
    S("lock"),
    S("elect"),
    S("elect", "-l"),
]


def _lease_from(out: str) -> str | None:
    parts = out.split()
    if len(parts) > 1 and parts[0] == "lease" and "granted" in out:
        return parts[1]
    return None


def run_sequence(tw: Twins, steps: list[Step], name: str) -> None:
    leases: dict[str, str] = {}
    mismatches: list[str] = []
    for args, stdin in steps:
        results: dict[str, Result] = {}
        for tool, sp in (("etcdctl", tw.ref), ("meshkit", tw.ours)):
            real_args = [a.replace("{lease}", leases.get(tool, "0")) for a in args]
            r = run(tool, sp, real_args, stdin=stdin)
            lease = _lease_from(r.out)
            if lease and args[:2] == ["lease", "grant"] and tool not in leases:
                leases[tool] = lease
            if "protobuf" in args and r.code == 0:
                r = Result(r.code, normalise_pb(args[0], r.raw_out), r.err)
            results[tool] = normalise(r, tw.ref, tw.ours)
        ref, ours = results["etcdctl"], results["meshkit"]
        if ref != ours:
            mismatches.append(f"{name} {args!r} stdin={stdin!r}\n  etcdctl: {ref}\n  meshkit: {ours}")
    assert not mismatches, f"{len(mismatches)} differences on {tw.kind}:\n" + "\n".join(mismatches)


def test_kv(twins: Twins) -> None:
    run_sequence(twins, KV, "kv")


def test_compaction_hashkv_defrag(twins: Twins) -> None:
    run_sequence(twins, COMPACTION, "compaction")


def test_txn(twins: Twins) -> None:
    run_sequence(twins, TXN, "txn")


def test_lease(twins: Twins) -> None:
    run_sequence(twins, LEASE, "lease")


def test_cluster_endpoint_alarm(twins: Twins) -> None:
    run_sequence(twins, CLUSTER, "cluster")


def test_protobuf(twins: Twins) -> None:
    run_sequence(twins, [S("put", "a", "1", "-w", "protobuf"), S("get", "a", "-w", "protobuf"),
                         S("txn", "-w", "protobuf", stdin='value("a") = "1"\n\nget a\nput b 2\n\n\n'),
                         S("del", "a", "-w", "protobuf")], "protobuf")


WATCHES: list[tuple[list[str], int]] = [
    (["watch", "--rev={rev}", "--prefix", "w"], 6),
    (["watch", "--rev={rev}", "--prev-kv", "w1", "-w", "json"], 1),
    (["watch", "--rev={rev}", "w1", "w3", "-w", "fields"], 12),
    (["watch", "--rev={rev}", "w1", "--", "sh", "-c",
      "echo got $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_REVISION"], 6),
]


def _revision(tool: str, sp: ServerProc) -> int:
    r = run(tool, sp, ["get", "nothing-here", "-w", "json"])
    assert r.code == 0, r
    return int(json.loads(r.out)["header"]["revision"])


def test_watch(twins: Twins, tmp_path: Path) -> None:
    writes = [["put", "w1", "a"], ["put", "w2", "b"], ["del", "w1"]]
    start = {}
    for tool, sp in (("etcdctl", twins.ref), ("meshkit", twins.ours)):
        start[tool] = _revision(tool, sp) + 1
        for w in writes:
            assert run(tool, sp, w).code == 0
    assert start["etcdctl"] == start["meshkit"]
    problems = []
    for i, (args, lines) in enumerate(WATCHES):
        got = {}
        for tool, sp in (("etcdctl", twins.ref), ("meshkit", twins.ours)):
            d = tmp_path / f"{tool}-{i}"
            d.mkdir()
            a = [x.replace("{rev}", str(start[tool])) for x in args]
            got[tool] = normalise(run_until(tool, sp, a, lines, d), twins.ref, twins.ours)
        assert got["etcdctl"].out.count("\n") >= 1, got  # the scenario shows something
        if got["etcdctl"] != got["meshkit"]:
            problems.append(f"{args}: etcdctl={got['etcdctl']} meshkit={got['meshkit']}")
    # errors, and a watch from a compacted revision (it ends by itself)
    for tool, sp in (("etcdctl", twins.ref), ("meshkit", twins.ours)):
        assert run(tool, sp, ["compaction", str(start[tool] + 1)]).code == 0
    rev = str(start["etcdctl"])
    for args in (["watch"], ["watch", "a", "--"], ["watch", f"--rev={rev}", "w1"],
                 ["watch", f"--rev={rev}", "w1", "-w", "json"], ["watch", "--rev=2", "--prefix", "a", "b"]):
        ref = normalise(run("etcdctl", twins.ref, args), twins.ref, twins.ours)
        ours = normalise(run("meshkit", twins.ours, args), twins.ref, twins.ours)
        if ref != ours:
            problems.append(f"{args}: etcdctl={ref} meshkit={ours}")
    assert not problems, "\n".join(problems)


def test_interactive_watch(twins: Twins, tmp_path: Path) -> None:
    start = {}
    for tool, sp in (("etcdctl", twins.ref), ("meshkit", twins.ours)):
        start[tool] = _revision(tool, sp) + 1
        for w in (["put", "iw", "1"], ["put", "iw", "2"]):
            assert run(tool, sp, w).code == 0
    got = {}
    for tool, sp in (("etcdctl", twins.ref), ("meshkit", twins.ours)):
        d = tmp_path / tool
        d.mkdir()
        feed = f"frob x\nwatch\nwatch --rev={start[tool]} iw\n"
        got[tool] = normalise(run_until(tool, sp, ["watch", "-i"], 6, d, stdin=feed), twins.ref, twins.ours)
    assert got["etcdctl"].out.count("\n") >= 6, got
    assert got["etcdctl"] == got["meshkit"]


def test_env_variables(twins: Twins) -> None:
    problems = []
    cases = [
        ({"ETCDCTL_ENDPOINTS": "{ep}"}, ["put", "e", "1"], False),
        ({"ETCDCTL_ENDPOINTS": "{ep}", "ETCDCTL_WRITE_OUT": "json"}, ["get", "e"], False),
        ({"ETCDCTL_ENDPOINTS": "{ep}"}, ["get", "e"], True),  # flag and variable: etcdctl refuses
        ({"ETCDCTL_ENDPOINTS": "{ep}", "ETCDCTL_FOO": "x"}, ["get", "e"], False),
    ]
    for env, args, with_flag in cases:
        got = {}
        for tool, sp in (("etcdctl", twins.ref), ("meshkit", twins.ours)):
            e = {k: v.replace("{ep}", sp.endpoint) for k, v in env.items()}
            a = ([f"--endpoints={sp.endpoint}"] if with_flag else []) + args
            got[tool] = normalise(run(tool, sp, a, env=e, endpoint=False), twins.ref, twins.ours)
        if got["etcdctl"] != got["meshkit"]:
            problems.append(f"{env} {args}: etcdctl={got['etcdctl']} meshkit={got['meshkit']}")
    assert not problems, "\n".join(problems)
