"""`etcdctl lock` / `etcdctl elect` and the v3lock / v3election gRPC services:
the same scenario against the real etcd and `meshkit server`, compared."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import grpc

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc as pg
from meshkit.api.v3electionpb import v3election_pb2 as ep
from meshkit.api.v3electionpb import v3election_pb2_grpc as eg
from meshkit.api.v3lockpb import v3lock_pb2 as lp
from meshkit.api.v3lockpb import v3lock_pb2_grpc as lg
from tests.client.conftest import wait_serving
from tests.compat.conftest import Pair
from tests.compat.etcdctl import etcdctl, normalise
from tests.support.procs import ETCDCTL

# Lease ids (random per cluster) appear in hex in lock/election keys and in decimal.
_HEX_KEY = re.compile(r"/[0-9a-f]{8,16}\b")


def _norm(text: str) -> str:
    return _HEX_KEY.sub("/<lease>", normalise(text))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def _popen(endpoint: str, *args: str) -> subprocess.Popen[bytes]:
    assert ETCDCTL is not None
    return subprocess.Popen([ETCDCTL, f"--endpoints={endpoint}", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())


def _finish(p: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> str:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate(timeout=5)
    return out.decode()


def _both(pair: Pair, scenario) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    wait_serving(pair.etcd.endpoint)
    wait_serving(pair.meshkit.endpoint)
    return scenario(pair.etcd.endpoint), scenario(pair.meshkit.endpoint)


def _lock_exec(ep_: str) -> list[str]:
    r = etcdctl(ep_, "lock", "L", "--", "sh", "-c", "echo key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV; exit 3")
    after = etcdctl(ep_, "get", "--prefix", "L")
    ok = etcdctl(ep_, "lock", "L", "echo", "again")
    return [_norm(x) for x in (str(r.code), r.out, r.err, after.out, str(ok.code), ok.out)]


def test_lock_exec_command(pair: Pair) -> None:
    e, m = _both(pair, _lock_exec)
    assert m == e
    assert m[0] == "1" and m[1] == "key=L/<lease> rev=2\n" and "exit status 3" in m[2]
    assert m[3] == "" and m[4] == "0" and m[5] == "again\n"


def _lock_contention(ep_: str) -> list[str]:
    events: list[str] = []
    holder = _popen(ep_, "lock", "L")
    assert holder.stdout is not None
    events.append("holder:" + _norm(holder.stdout.readline().decode()).strip())
    waiter = _popen(ep_, "lock", "L", "--", "sh", "-c", "echo waiter-in $ETCD_LOCK_REV")
    time.sleep(1.0)
    events.append(f"waiter-running:{waiter.poll() is None}")
    events.append("keys:" + _norm(etcdctl(ep_, "get", "--prefix", "L", "--keys-only").out).replace("\n\n", " "))
    _finish(holder)
    out = waiter.communicate(timeout=10)[0].decode()
    events.append("waiter:" + out.strip())
    events.append("left:" + etcdctl(ep_, "get", "--prefix", "L", "--keys-only").out)
    return events


def test_lock_excludes_until_released(pair: Pair) -> None:
    e, m = _both(pair, _lock_contention)
    assert m == e
    assert m[0] == "holder:L/<lease>" and m[1] == "waiter-running:True"
    assert m[3] == "waiter:waiter-in 4"  # the revision after the holder's delete and m[4] == "left:"


def _elect(ep_: str) -> list[str]:
    obs = _popen(ep_, "elect", "-l", "E")
    time.sleep(0.5)
    c1 = _popen(ep_, "elect", "E", "p1")
    time.sleep(0.7)
    c2 = _popen(ep_, "elect", "E", "p2")
    time.sleep(0.7)
    out1 = _finish(c1)
    time.sleep(1.0)
    out2 = _finish(c2)
    time.sleep(0.5)
    seen = _finish(obs)
    return [_norm(out1), _norm(out2), _norm(seen)]


def test_elect_and_observe(pair: Pair) -> None:
    e, m = _both(pair, _elect)
    assert m == e
    assert m[0] == "E/<lease>\np1\n"
    assert m[1] == "E/<lease>\np2\n"
    assert m[2] == "E/<lease>\np1\nE/<lease>\np2\n"


def _grpc_transcript(ep_: str) -> list[str]:
    """The services called directly, edge cases included."""
    out: list[str] = []
    with grpc.insecure_channel(ep_) as ch:
        L, E, LS = lg.LockStub(ch), eg.ElectionStub(ch), pg.LeaseStub(ch)

        def t(name: str, fn, req, timeout: float = 3.0) -> object:  # type: ignore[no-untyped-def]
            try:
                r = fn(req, timeout=timeout)
            except grpc.RpcError as err:
                out.append(f"{name} ERR {err.code()} {err.details()!r}")  # type: ignore[attr-defined]
                return None
            h = r.header
            text = str(r).replace("\n", " ")
            text = text.replace(str(h.cluster_id), "<cid>").replace(str(h.member_id), "<mid>")
            out.append(f"{name} OK {text}")
            return r

        g = LS.LeaseGrant(pb.LeaseGrantRequest(TTL=30))
        lease = g.ID
        t("lock-nolease", L.Lock, lp.LockRequest(name=b"a", lease=12345))
        t("lock", L.Lock, lp.LockRequest(name=b"a", lease=lease))
        t("lock-same-lease", L.Lock, lp.LockRequest(name=b"a", lease=lease))
        g2 = LS.LeaseGrant(pb.LeaseGrantRequest(TTL=30))
        t("lock-contended", L.Lock, lp.LockRequest(name=b"a", lease=g2.ID), timeout=0.5)
        time.sleep(0.3)  # the canceled waiter's key is removed after the client gave up
        t("lock-left", pg.KVStub(ch).Range, pb.RangeRequest(key=b"a/", range_end=b"a0", keys_only=True))
        t("unlock", L.Unlock, lp.UnlockRequest(key=b"a/%x" % lease))
        t("unlock-missing", L.Unlock, lp.UnlockRequest(key=b"nope"))
        t("unlock-empty", L.Unlock, lp.UnlockRequest(key=b""))
        t("leader-none", E.Leader, ep.LeaderRequest(name=b"e"))
        t("campaign-nolease", E.Campaign, ep.CampaignRequest(name=b"e", lease=999, value=b"v"))
        c = t("campaign", E.Campaign, ep.CampaignRequest(name=b"e", lease=lease, value=b"v"))
        t("campaign-again", E.Campaign, ep.CampaignRequest(name=b"e", lease=lease, value=b"w"))
        t("campaign-contended", E.Campaign, ep.CampaignRequest(name=b"e", lease=g2.ID, value=b"x"), timeout=0.5)
        time.sleep(0.3)
        t("leader", E.Leader, ep.LeaderRequest(name=b"e"))
        assert c is not None
        ld = c.leader  # type: ignore[attr-defined]
        t("proclaim", E.Proclaim, ep.ProclaimRequest(leader=ld, value=b"z"))
        t("proclaim-noleader", E.Proclaim, ep.ProclaimRequest(value=b"x"))
        t("proclaim-stale", E.Proclaim, ep.ProclaimRequest(
            leader=ep.LeaderKey(name=b"e", key=ld.key, rev=ld.rev + 100, lease=lease), value=b"x"))
        t("resign-noleader", E.Resign, ep.ResignRequest())
        t("resign-stale", E.Resign, ep.ResignRequest(leader=ep.LeaderKey(name=b"e", key=b"e/zz", rev=5)))
        obs = E.Observe(ep.LeaderRequest(name=b"e"), timeout=1.5)
        out.append("observe " + str(next(obs).kv).replace("\n", " "))
        t("proclaim-2", E.Proclaim, ep.ProclaimRequest(leader=ld, value=b"z2"))
        t("resign", E.Resign, ep.ResignRequest(leader=ld))
        t("campaign-2", E.Campaign, ep.CampaignRequest(name=b"e", lease=g2.ID, value=b"next"))
        try:
            for r in obs:
                out.append("observe " + str(r.kv).replace("\n", " "))
        except grpc.RpcError as err:
            out.append(f"observe end {err.code()}")  # type: ignore[attr-defined]
    text = "\n".join(out)
    # A wait cut by the caller's deadline: whether the server's context or the
    # client's timer fires first is a race on either server (etcd answers
    # UNKNOWN 'context deadline exceeded' or the client sees DEADLINE_EXCEEDED).
    text = text.replace("StatusCode.UNKNOWN 'context deadline exceeded'", "<deadline>")
    text = text.replace("StatusCode.DEADLINE_EXCEEDED 'Deadline Exceeded'", "<deadline>")
    for v in {lease, g2.ID}:
        text = text.replace(str(v), "<lease>").replace(f"{v:x}", "<leasehex>")
    return text.split("\n")


def test_lock_and_election_services_answer_like_etcd(pair: Pair) -> None:
    e, m = _both(pair, _grpc_transcript)
    assert m == e
    joined = "\n".join(m)
    assert "lock-nolease ERR StatusCode.UNKNOWN 'etcdserver: requested lease not found'" in joined
    assert "leader-none ERR StatusCode.UNKNOWN 'election: no leader'" in joined
    assert "proclaim-stale ERR StatusCode.UNKNOWN 'election: not leader'" in joined
    assert "proclaim-noleader ERR StatusCode.UNKNOWN '\"leader\" field must be provided'" in joined
    assert "lock-contended ERR <deadline>" in joined
    assert "campaign-contended ERR <deadline>" in joined
    observed = [line for line in m if line.startswith("observe key")]
    assert [re.search(r'value: "(\w+)"', x).group(1) for x in observed] == ["z", "z2", "next"]  # type: ignore[union-attr]
