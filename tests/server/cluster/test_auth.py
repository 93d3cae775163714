"""Auth through the log: every member holds the same users, roles and tokens."""

from __future__ import annotations

import grpc
import pytest

from meshkit.api.authpb import auth_pb2 as apb
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc as rpc
from tests.server.cluster.conftest import Cluster

P = apb.Permission


async def test_auth_state_and_tokens_on_every_member(cluster3: Cluster) -> None:
    c = cluster3
    leader = await c.wait_leader()
    followers = [m for m in c.members if m is not leader]
    async with grpc.aio.insecure_channel(followers[0].endpoint) as ch:
        auth, kv = rpc.AuthStub(ch), rpc.KVStub(ch)
        await auth.UserAdd(pb.AuthUserAddRequest(name="root", password="rootpw"))
        await auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.UserAdd(pb.AuthUserAddRequest(name="bob", password="bobpw"))
        await auth.RoleAdd(pb.AuthRoleAddRequest(name="r"))
        await auth.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
            name="r", perm=P(permType=P.READWRITE, key=b"/bob/", range_end=b"/bob0")))
        await auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="bob", role="r"))
        await auth.AuthEnable(pb.AuthEnableRequest())
        token = (await auth.Authenticate(pb.AuthenticateRequest(name="bob", password="bobpw"))).token
        await kv.Put(pb.PutRequest(key=b"/bob/k", value=b"v"), metadata=[("token", token)])
    # The token was registered by applying the entry: every member knows it.
    for m in c.members:
        assert m.server is not None
        s = m.server.etcd
        assert s.auth.enabled and sorted(s.auth.users) == ["bob", "root"]
        assert s.auth.revision == c.members[0].server.etcd.auth.revision  # type: ignore[union-attr]
        async with grpc.aio.insecure_channel(m.endpoint) as ch:
            kv = rpc.KVStub(ch)
            got = await kv.Range(pb.RangeRequest(key=b"/bob/k"), metadata=[("token", token)])
            assert got.kvs[0].value == b"v"
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await kv.Range(pb.RangeRequest(key=b"/other"), metadata=[("token", token)])
            assert ei.value.details() == "etcdserver: permission denied"
