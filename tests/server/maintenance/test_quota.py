"""Quota and alarms (etcd 3.4 semantics), side by side with the real etcd.

A server started with a small --quota-backend-bytes is filled through the real
etcdctl until writes are refused; the NOSPACE alarm shows in `alarm list` and
`endpoint status`, reads and deletes still work, writes stay refused after
compaction + defrag until `alarm disarm`, and every key kept is intact."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.server.embed import EmbeddedServer
from tests.server.conftest import wait_ready
from tests.support.procs import ETCDCTL, require_reference_binaries, start_etcd, start_meshkit

NOSPACE = "etcdserver: mvcc: database space exceeded"
QUOTA = 1_000_000
VALUE = "x" * 4000


def ctl(endpoint: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None
    return subprocess.run([ETCDCTL, "--endpoints", endpoint, "--command-timeout=5s", *args],
                          capture_output=True, text=True, input=stdin, timeout=30,
                          env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})


def status(endpoint: str) -> dict:  # type: ignore[type-arg]
    r = ctl(endpoint, "endpoint", "status", "-w", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["Status"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["meshkit", "etcd"])
async def test_fill_quota_alarm_recover(kind: str, tmp_path: Path) -> None:
    require_reference_binaries()
    flags = ("--quota-backend-bytes", str(QUOTA))
    sp = start_meshkit(tmp_path, *flags) if kind == "meshkit" else start_etcd(tmp_path, *flags)
    try:
        await wait_ready(sp.endpoint)
        ep = sp.endpoint
        written = []
        for i in range(1000):  # 4 MB of values at most: far past the quota
            r = ctl(ep, "put", f"k{i:04d}", VALUE)
            if r.returncode != 0:
                assert f"Error: {NOSPACE}" in r.stderr
                refused = f"k{i:04d}"
                break
            written.append(f"k{i:04d}")
        else:
            pytest.fail("the quota never refused a write")
        assert len(written) > 100
        st = status(ep)
        member = st["header"]["member_id"]
        alarm = f"memberID:{member} alarm:NOSPACE "
        assert st["errors"] == [alarm]
        assert ctl(ep, "alarm", "list").stdout == alarm + "\n"
        # Reads, read-only txns and deletes go on; writes and lease grants are refused.
        assert ctl(ep, "get", written[0], "--print-value-only").stdout == VALUE + "\n"
        assert ctl(ep, "txn", stdin=f"\nget {written[1]}\n\n\n").returncode == 0
        r = ctl(ep, "lease", "grant", "100")
        assert r.returncode != 0 and NOSPACE in r.stderr
        gone = written[: len(written) // 2]
        for k in gone:
            assert ctl(ep, "del", k).stdout == "1\n"
        kept = written[len(written) // 2:]
        rev = status(ep)["header"]["revision"]
        assert ctl(ep, "compaction", str(rev)).returncode == 0
        assert ctl(ep, "defrag").returncode == 0
        assert status(ep)["dbSize"] < QUOTA
        # Still capped until the alarm is disarmed.
        r = ctl(ep, "put", "after", "v")
        assert r.returncode != 0 and NOSPACE in r.stderr
        r = ctl(ep, "alarm", "disarm")
        assert r.returncode == 0 and r.stdout == alarm + "\n"
        assert ctl(ep, "alarm", "list").stdout == ""
        assert status(ep).get("errors") is None
        assert ctl(ep, "put", "after", "v").stdout == "OK\n"
        out = ctl(ep, "get", "k", "--prefix", "--keys-only").stdout.split()
        if kind == "etcd" and out == [*kept, refused]:
            # etcd 3.4's quota applier applies a put and then answers NOSPACE when that
            # put crossed the quota (quotaApplierV3.Put): the refused write may be
            # stored. meshkit refuses it before applying (docs/compat.md).
            out.pop()
        assert out == kept
        for k in kept[:: max(1, len(kept) // 10)]:
            assert ctl(ep, "get", k, "--print-value-only").stdout == VALUE + "\n"
    finally:
        sp.stop()


async def test_alarm_rpc_semantics_and_persistence(tmp_path: Path) -> None:
    """ACTIVATE/GET/DEACTIVATE answer as etcd's applier; alarms survive a restart."""
    data = tmp_path / "d"
    async with EmbeddedServer.for_test(data, 0) as srv:
        async with grpc.aio.insecure_channel(srv.endpoint) as ch:
            m = rpc_pb2_grpc.MaintenanceStub(ch)
            mid = srv.etcd.member_id
            act = pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=mid, alarm=pb.NOSPACE)
            r = await m.Alarm(act)
            assert list(r.alarms) == [pb.AlarmMember(memberID=mid, alarm=pb.NOSPACE)]
            r = await m.Alarm(act)  # again: the existing alarm is answered
            assert list(r.alarms) == [pb.AlarmMember(memberID=mid, alarm=pb.NOSPACE)]
            r = await m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=7, alarm=pb.CORRUPT))
            r = await m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET, alarm=pb.CORRUPT))
            assert list(r.alarms) == [pb.AlarmMember(memberID=7, alarm=pb.CORRUPT)]
            r = await m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
            assert len(r.alarms) == 2
            kv = rpc_pb2_grpc.KVStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await kv.Put(pb.PutRequest(key=b"a", value=b"b"))
            assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert ei.value.details() == NOSPACE
            await kv.DeleteRange(pb.DeleteRangeRequest(key=b"a"))
            r = await m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=7, alarm=pb.CORRUPT))
            assert list(r.alarms) == [pb.AlarmMember(memberID=7, alarm=pb.CORRUPT)]
            r = await m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=7, alarm=pb.CORRUPT))
            assert list(r.alarms) == []
    async with EmbeddedServer.for_test(data, 0) as srv:
        async with grpc.aio.insecure_channel(srv.endpoint) as ch:
            m = rpc_pb2_grpc.MaintenanceStub(ch)
            st = await m.Status(pb.StatusRequest())
            assert list(st.errors) == [f"memberID:{mid} alarm:NOSPACE "]
            kv = rpc_pb2_grpc.KVStub(ch)
            with pytest.raises(grpc.aio.AioRpcError):
                await kv.Put(pb.PutRequest(key=b"a", value=b"b"))
            await m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=mid, alarm=pb.NOSPACE))
            await kv.Put(pb.PutRequest(key=b"a", value=b"b"))
