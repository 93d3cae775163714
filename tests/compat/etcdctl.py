"""Driving the real etcdctl against two servers and comparing what it prints."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from tests.support.procs import ETCDCTL

# Values that differ between two clusters for reasons that are not behaviour:
# ids derive from ports, terms from election history.
_JSON_IDS = re.compile(r'"(cluster_id|member_id|raft_term|ID)":(\d+)')
_FIELDS_IDS = re.compile(r'"(ClusterID|MemberID|RaftTerm)" : (\d+)')


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


_NOISE = re.compile(r'"(ts|target)":"[^"]*"')


def normalise(text: str) -> str:
    text = _NOISE.sub(lambda m: f'"{m.group(1)}":"<{m.group(1)}>"', text)
    text = _JSON_IDS.sub(lambda m: f'"{m.group(1)}":<{m.group(1)}>', text)
    text = _FIELDS_IDS.sub(lambda m: f'"{m.group(1)}" : <{m.group(1)}>', text)
    return text


def etcdctl(endpoint: str, *args: str, stdin: str | None = None, timeout: float = 20,
            raw: bool = False) -> Outcome:
    """Run etcdctl; unless ``raw``, ids, terms, timestamps and the endpoint are normalised."""
    assert ETCDCTL is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    p = subprocess.run(
        [ETCDCTL, f"--endpoints={endpoint}", "--command-timeout=10s", *args],
        input=stdin.encode() if stdin is not None else None,
        capture_output=True, env=env, timeout=timeout,
    )
    out = p.stdout
    if raw:
        return Outcome(p.returncode, out.decode(errors="backslashreplace"), p.stderr.decode(errors="backslashreplace"))
    if "protobuf" in args and p.returncode == 0:
        out = _normalise_protobuf(args, out)
    text_out = out.decode(errors="backslashreplace").replace(endpoint, "<endpoint>")
    text_err = p.stderr.decode(errors="backslashreplace").replace(endpoint, "<endpoint>")
    return Outcome(p.returncode, normalise(text_out), normalise(text_err))


def _normalise_protobuf(args: tuple[str, ...], raw: bytes) -> bytes:
    from meshkit.api.etcdserverpb import rpc_pb2 as pb

    kinds = {"get": pb.RangeResponse, "put": pb.PutResponse, "del": pb.DeleteRangeResponse, "txn": pb.TxnResponse}
    msg = kinds[args[0]].FromString(raw)
    msg.header.cluster_id = msg.header.member_id = msg.header.raft_term = 0
    return repr(msg).encode()
