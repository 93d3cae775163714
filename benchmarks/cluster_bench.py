"""Side-by-side cluster benchmark: a 3-member meshkit cluster against a 3-member
real etcd 3.4 cluster on loopback (not a test).

Both clusters run at once; the same load processes (kv_bench's) alternate
between them. Clients talk to one member (``--target leader``, the default, or
``follower``: puts are then forwarded to the leader, and each linearizable read
is a ReadIndex round with it). For put and linearizable range at the given
client counts it prints throughput, p50/p99 latency, CPU per operation summed
over the three members, and the ratios meshkit/etcd.

    python benchmarks/cluster_bench.py                # about 2 minutes
    python benchmarks/cluster_bench.py --clients 64 --duration 5 --target follower
    python benchmarks/cluster_bench.py --json out.json

Six server processes and the load generator share this machine's cores, so
the figures are for comparison between the two, not absolute.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from _common import ETCD_BIN, LOOPBACK, ServerProc, WorkDir, wait_range_ok
from kv_bench import Agg, LoadPool, _populate_range_keys, forget, one_round, print_header, print_row

from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

OPS = ("put", "range")


class MemberProc(ServerProc):
    """One member of a 3-member cluster, started with etcd's static-bootstrap flags."""

    def __init__(self, kind: str, workdir: Path, name: str, prefix: list[str] | None) -> None:
        super().__init__(kind, workdir, name, python_prefix=prefix)
        self.member_name = name
        self.initial_cluster = ""

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    def argv(self) -> list[str]:
        client = f"http://{LOOPBACK}:{self.client_port}"
        flags = [
            "--name", self.member_name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", f"bench-{self.kind}",
            "--initial-cluster-state", "new",
        ]
        if self.kind == "etcd":
            return [ETCD_BIN, *flags]
        prefix = self.python_prefix or [sys.executable, "-m"]
        return [*prefix, "meshkit", "server", *flags]

    def launch(self) -> None:
        self._log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self.proc = subprocess.Popen(self.argv(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)


class ClusterTarget:
    """Three members; ``address`` is the member the load goes to, CPU is summed
    over all three (the whole cluster's cost of an operation)."""

    def __init__(self, kind: str, workdir: Path, prefix: list[str] | None = None) -> None:
        self.kind = kind
        self.name = kind
        self.members = [MemberProc(kind, workdir, f"{kind}-{i}", prefix) for i in range(3)]
        ic = ",".join(f"{m.member_name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = ic
        self.address = ""
        self.leader_name = ""

    def start(self, target: str, timeout: float = 60.0) -> float:
        t0 = time.perf_counter()
        for m in self.members:
            m.launch()
        for m in self.members:
            wait_range_ok(m, t0, timeout)
        dt = time.perf_counter() - t0
        lead = self.leader(timeout)
        chosen = lead if target == "leader" else next(m for m in self.members if m is not lead)
        self.address = chosen.address
        self.leader_name = lead.member_name
        return dt

    def leader(self, timeout: float) -> MemberProc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with grpc.insecure_channel(self.members[0].address) as ch:
                st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
            for m in self.members:
                with grpc.insecure_channel(m.address) as ch:
                    mst = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
                if mst.header.member_id == st.leader and st.leader:
                    return m
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind}: no leader within {timeout}s")

    def cpu_seconds(self) -> float:
        return sum(m.cpu_seconds() for m in self.members)

    def rss_mib(self) -> float:
        return sum(m.rss_mib() for m in self.members)

    def stop(self) -> None:
        for m in self.members:
            m.stop(signal.SIGTERM)


def run(a: argparse.Namespace, pool: LoadPool, clusters: list[ClusterTarget]) -> list[dict[str, Any]]:
    etcd, mesh = clusters
    for c in clusters:
        t = c.start(a.target)
        print(f"  {c.kind:8s} 3 members up in {t:.2f}s, leader {c.leader_name}, load to {c.address}",
              flush=True)
    for c in clusters:
        _populate_range_keys(c, a.value_size)  # type: ignore[arg-type]
    print()
    print_header()
    rows = []
    for op in [o for o in a.ops.split(",") if o]:
        for c in clusters:  # warm-up
            one_round(pool, c, op, max(a.clients_list), min(1.0, a.duration), a.value_size, None)  # type: ignore[arg-type]
        for clients in a.clients_list:
            aggs = {c.name: Agg() for c in clusters}
            order: list[ClusterTarget] = []
            for rep in range(a.reps):
                order += [etcd, mesh] if rep % 2 == 0 else [mesh, etcd]
            for c in order:
                one_round(pool, c, op, clients, a.duration, a.value_size, aggs[c.name])  # type: ignore[arg-type]
            row = {"op": op, "clients": clients,
                   "etcd": aggs["etcd"].summary(), "meshkit": aggs["meshkit"].summary()}
            rows.append(row)
            print_row(row, flush=True)
    for c in clusters:
        forget(pool, c)  # type: ignore[arg-type]
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per round")
    ap.add_argument("--reps", type=int, default=2, help="rounds per cluster per row, alternating")
    ap.add_argument("--clients", default="1,16,64", help="concurrent clients per row")
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma list of {', '.join(OPS)}")
    ap.add_argument("--target", choices=("leader", "follower"), default="leader",
                    help="the member the clients talk to")
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="load generator processes")
    ap.add_argument("--json", nargs="?", const="-", metavar="PATH",
                    help="dump results as JSON to PATH (or stdout)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dirs and logs")
    ap.add_argument("--meshkit-prefix", default="", help="argv before 'meshkit server' (default: python -m)")
    a = ap.parse_args(argv)
    a.clients_list = [int(c) for c in a.clients.split(",") if c]
    bad = [o for o in a.ops.split(",") if o and o not in OPS]
    if bad:
        ap.error(f"unknown ops {bad}")
    if not a.clients_list or min(a.clients_list) < 1 or a.duration <= 0 or a.reps < 1 or a.workers < 1:
        ap.error("clients, duration, reps and workers must be positive")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t_start = time.monotonic()
    pool = LoadPool(a.workers)
    clusters: list[ClusterTarget] = []
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                               "args": {k: v for k, v in vars(a).items() if k != "json"}}
    try:
        with WorkDir(keep=a.keep) as workdir:
            print(f"cluster_bench: {os.cpu_count()} cpus, 3+3 members, {a.workers} load processes, "
                  f"{a.duration:g}s rounds x {a.reps} per cluster, load to the {a.target}; "
                  f"work dir {workdir}")
            print("put = 256 B value on 10,000 keys; range = one key of 1,000 (linearizable)")
            print("CPU = CPU time per op summed over the 3 members")
            prefix = shlex.split(a.meshkit_prefix) or None
            clusters = [ClusterTarget("etcd", workdir), ClusterTarget("meshkit", workdir, prefix)]
            results["rows"] = run(a, pool, clusters)
            for c in clusters:
                c.stop()
            clusters = []
            results["wall_s"] = time.monotonic() - t_start
            print(f"\ntotal wall time {results['wall_s']:.0f}s")
            if a.keep:
                print(f"kept {workdir}")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for c in clusters:
            c.stop()
        pool.close()
    if a.json:
        text = json.dumps(results, indent=2, default=float)
        if a.json == "-":
            print(text)
        else:
            Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
