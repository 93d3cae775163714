"""The Auth service and its enforcement on an in-process member, through gRPC."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshkit.api.authpb import auth_pb2 as apb
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc as rpc
from meshkit.api.v3lockpb import v3lock_pb2 as lpb
from meshkit.api.v3lockpb import v3lock_pb2_grpc as lrpc
from meshkit.server.embed import EmbeddedServer

P = apb.Permission
ROOT_PW = "s3cret-root-pw"
ALICE_PW = "alice-pw-plaintext"


@dataclass
class Conn:
    srv: EmbeddedServer
    ch: grpc.aio.Channel
    kv: rpc.KVStub
    auth: rpc.AuthStub
    lease: rpc.LeaseStub
    watch: rpc.WatchStub
    maint: rpc.MaintenanceStub
    cluster: rpc.ClusterStub

    async def token(self, name: str, pw: str) -> list[tuple[str, str]]:
        resp = await self.auth.Authenticate(pb.AuthenticateRequest(name=name, password=pw))
        return [("token", resp.token)]


@asynccontextmanager
async def serve(data: Path, **overrides: Any) -> AsyncIterator[Conn]:
    srv = EmbeddedServer.for_test(data, 0, bcrypt_cost=4, **overrides)
    async with srv, grpc.aio.insecure_channel(srv.endpoint) as ch:
        yield Conn(srv, ch, rpc.KVStub(ch), rpc.AuthStub(ch), rpc.LeaseStub(ch), rpc.WatchStub(ch),
                   rpc.MaintenanceStub(ch), rpc.ClusterStub(ch))


async def setup_auth(c: Conn) -> None:
    a = c.auth
    await a.UserAdd(pb.AuthUserAddRequest(name="root", password=ROOT_PW))
    await a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
    await a.UserAdd(pb.AuthUserAddRequest(name="alice", password=ALICE_PW))
    await a.RoleAdd(pb.AuthRoleAddRequest(name="app"))
    await a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
        name="app", perm=P(permType=P.READWRITE, key=b"/app/", range_end=b"/app0")))
    await a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
        name="app", perm=P(permType=P.READ, key=b"/ro/", range_end=b"/ro0")))
    await a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="alice", role="app"))
    await a.AuthEnable(pb.AuthEnableRequest())


async def denied(call: Any, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED,
                 text: str = "etcdserver: permission denied") -> None:
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await call
    assert (ei.value.code(), ei.value.details()) == (code, text)


async def test_enforcement_everywhere(tmp_path: Path) -> None:
    async with serve(tmp_path / "m") as c:
        await setup_auth(c)
        root = await c.token("root", ROOT_PW)
        alice = await c.token("alice", ALICE_PW)
        assert re.fullmatch(r"[A-Za-z]{16}\.\d+", alice[0][1])  # etcd's simple token
        await c.kv.Put(pb.PutRequest(key=b"/ro/k", value=b"v"), metadata=root)
        await c.kv.Put(pb.PutRequest(key=b"/app/k", value=b"v"), metadata=alice)
        got = await c.kv.Range(pb.RangeRequest(key=b"/ro/k"), metadata=alice)
        assert got.kvs[0].value == b"v"
        # the grpc-gateway's header name works too
        await c.kv.Range(pb.RangeRequest(key=b"/ro/k"), metadata=[("authorization", alice[0][1])])

        await denied(c.kv.Range(pb.RangeRequest(key=b"/x")), grpc.StatusCode.INVALID_ARGUMENT,
                     "etcdserver: user name is empty")
        await denied(c.kv.Range(pb.RangeRequest(key=b"/x"), metadata=[("token", "bogus.1")]),
                     grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
        await denied(c.auth.Authenticate(pb.AuthenticateRequest(name="alice", password="wrong")),
                     grpc.StatusCode.INVALID_ARGUMENT,
                     "etcdserver: authentication failed, invalid user ID or password")
        await denied(c.kv.Range(pb.RangeRequest(key=b"/x"), metadata=alice))
        await denied(c.kv.Range(pb.RangeRequest(key=b"/", range_end=b"\0"), metadata=alice))
        await denied(c.kv.Put(pb.PutRequest(key=b"/ro/k", value=b"w"), metadata=alice))
        await denied(c.kv.DeleteRange(pb.DeleteRangeRequest(key=b"/ro/k"), metadata=alice))
        # Txn: compares, every op and nested txns, read-only or not.
        nested = pb.TxnRequest(success=[pb.RequestOp(request_txn=pb.TxnRequest(
            success=[pb.RequestOp(request_put=pb.PutRequest(key=b"/ro/k", value=b"w"))]))])
        await denied(c.kv.Txn(nested, metadata=alice))
        await denied(c.kv.Txn(pb.TxnRequest(compare=[pb.Compare(key=b"/secret")]), metadata=alice))
        await denied(c.kv.Txn(pb.TxnRequest(failure=[pb.RequestOp(
            request_range=pb.RangeRequest(key=b"/secret"))]), metadata=alice))
        ok = await c.kv.Txn(pb.TxnRequest(compare=[pb.Compare(key=b"/ro/k", value=b"v",
                                                              target=pb.Compare.VALUE)],
                                          success=[pb.RequestOp(request_put=pb.PutRequest(key=b"/app/t"))]),
                            metadata=alice)
        assert ok.succeeded
        assert (await c.kv.Range(pb.RangeRequest(key=b"/ro/k"), metadata=root)).kvs[0].value == b"v"

        # Leases: revoke needs write on every attached key; time-to-live with keys needs read.
        lid = (await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=100), metadata=root)).ID
        await c.kv.Put(pb.PutRequest(key=b"/secret", value=b"x", lease=lid), metadata=root)
        await denied(c.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lid), metadata=alice))
        await denied(c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lid, keys=True), metadata=alice))
        await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lid), metadata=alice)
        # ... and a lease holding such keys cannot be attached to more keys by her.
        await denied(c.kv.Put(pb.PutRequest(key=b"/app/l", lease=lid), metadata=alice))
        await c.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lid), metadata=root)

        # Watch: a create without read permission is canceled at once (etcd 3.4's answer).
        call = c.watch.Watch(metadata=alice)
        await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"/secret")))
        resp = await call.read()
        assert (resp.watch_id, resp.created, resp.canceled, resp.cancel_reason) == (
            -1, True, True, "rpc error: code = PermissionDenied desc = etcdserver: permission denied")
        await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"/app/", range_end=b"/app0")))
        resp = await call.read()
        assert resp.created and not resp.canceled
        call.cancel()

        # Admin only: maintenance answers with the auth package's error (as etcd 3.4).
        await denied(c.maint.Defragment(pb.DefragmentRequest(), metadata=alice),
                     grpc.StatusCode.UNKNOWN, "auth: permission denied")
        await denied(c.maint.HashKV(pb.HashKVRequest(), metadata=alice),
                     grpc.StatusCode.UNKNOWN, "auth: permission denied")
        await denied(c.maint.Defragment(pb.DefragmentRequest()),
                     grpc.StatusCode.UNKNOWN, "auth: user name is empty")
        await c.maint.Defragment(pb.DefragmentRequest(), metadata=root)
        await denied(c.cluster.MemberAdd(pb.MemberAddRequest(peerURLs=["http://127.0.0.1:1"]), metadata=alice))
        await c.cluster.MemberList(pb.MemberListRequest(), metadata=alice)
        await c.maint.Status(pb.StatusRequest(), metadata=alice)
        await denied(c.auth.UserList(pb.AuthUserListRequest(), metadata=alice))
        assert list((await c.auth.UserGet(pb.AuthUserGetRequest(name="alice"), metadata=alice)).roles) == ["app"]
        await c.auth.RoleGet(pb.AuthRoleGetRequest(role="app"), metadata=alice)

        # Lock: its key is written as the caller.
        locks = lrpc.LockStub(c.ch)
        await denied(locks.Lock(lpb.LockRequest(name=b"/secret-lock"), metadata=alice),
                     grpc.StatusCode.UNKNOWN)
        got_lock = await locks.Lock(lpb.LockRequest(name=b"/app/lock"), metadata=alice)
        assert got_lock.key.startswith(b"/app/lock/")
        await locks.Unlock(lpb.UnlockRequest(key=got_lock.key), metadata=alice)

        status = await c.auth.AuthStatus(pb.AuthStatusRequest(), metadata=root)
        assert status.enabled and status.authRevision > 1
        await c.auth.AuthDisable(pb.AuthDisableRequest(), metadata=root)
        await c.kv.Range(pb.RangeRequest(key=b"/secret"))


async def test_stale_token_revision_and_role_changes(tmp_path: Path) -> None:
    async with serve(tmp_path / "m") as c:
        await setup_auth(c)
        root = await c.token("root", ROOT_PW)
        alice = await c.token("alice", ALICE_PW)
        await c.kv.Put(pb.PutRequest(key=b"/app/a", value=b"1"), metadata=alice)
        # A permission change takes effect on the next request of a live token.
        await c.auth.RoleRevokePermission(pb.AuthRoleRevokePermissionRequest(
            role="app", key=b"/app/", range_end=b"/app0"), metadata=root)
        await denied(c.kv.Put(pb.PutRequest(key=b"/app/a", value=b"2"), metadata=alice))
        # A changed password drops the user's tokens.
        await c.auth.UserChangePassword(pb.AuthUserChangePasswordRequest(name="alice", password="new"),
                                        metadata=root)
        await denied(c.kv.Range(pb.RangeRequest(key=b"/ro/x"), metadata=alice),
                     grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
        fresh = await c.token("alice", "new")
        await c.kv.Range(pb.RangeRequest(key=b"/ro/x"), metadata=fresh)


async def test_state_survives_restart(tmp_path: Path) -> None:
    async with serve(tmp_path / "m") as c:
        await setup_auth(c)
    async with serve(tmp_path / "m") as c:
        await denied(c.kv.Range(pb.RangeRequest(key=b"/app/x")), grpc.StatusCode.INVALID_ARGUMENT,
                     "etcdserver: user name is empty")
        alice = await c.token("alice", ALICE_PW)
        await c.kv.Range(pb.RangeRequest(key=b"/app/x"), metadata=alice)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_passwords_only_as_bcrypt_hashes_never_logged(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "m"
    async with serve(data) as c:
        await setup_auth(c)
        root = await c.token("root", ROOT_PW)
        await c.auth.UserChangePassword(pb.AuthUserChangePasswordRequest(name="alice", password="changed-pw-x"),
                                        metadata=root)
        await denied(c.auth.Authenticate(pb.AuthenticateRequest(name="alice", password="wrong-pw-y")),
                     grpc.StatusCode.INVALID_ARGUMENT,
                     "etcdserver: authentication failed, invalid user ID or password")
        c.srv.etcd.store.commit()
        users = dict(c.srv.etcd.backend.bucket_items("authUsers"))
    for name in (b"root", b"alice"):
        u = apb.User.FromString(users[name])
        assert re.fullmatch(rb"\$2[aby]\$04\$[./A-Za-z0-9]{53}", u.password), u.password  # --bcrypt-cost
    secrets = [ROOT_PW, ALICE_PW, "changed-pw-x", "wrong-pw-y"]
    blobs = [p.read_bytes() for p in _files(data)]  # backend db + its WAL, raft WAL, snapshots
    assert blobs
    for s in secrets:
        assert not any(s.encode() in b for b in blobs), f"{s} stored in plain text"
        assert s not in caplog.text, f"{s} logged"


async def test_jwt_tokens_served(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    spec = f"jwt,pub-key={pub},priv-key={priv},sign-method=ES256,ttl=10m"
    async with serve(tmp_path / "m", auth_token=spec) as c:
        await setup_auth(c)
        alice = await c.token("alice", ALICE_PW)
        assert alice[0][1].count(".") == 2  # header.claims.signature
        await c.kv.Put(pb.PutRequest(key=b"/app/j", value=b"1"), metadata=alice)
        await denied(c.kv.Put(pb.PutRequest(key=b"/x", value=b"1"), metadata=alice))
        root = await c.token("root", ROOT_PW)
        await c.auth.RoleAdd(pb.AuthRoleAddRequest(name="other"), metadata=root)
        # A signed token carries its auth revision: once the store moved on it is old.
        await denied(c.kv.Range(pb.RangeRequest(key=b"/app/j"), metadata=alice),
                     grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
        again = await c.token("alice", ALICE_PW)
        await c.kv.Range(pb.RangeRequest(key=b"/app/j"), metadata=again)


class _FakeCall:
    def __init__(self, md: list[tuple[str, str]], cn: bytes | None) -> None:
        self._md, self._cn = md, cn

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._md

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [self._cn]} if self._cn else {}


async def test_client_certificate_common_name_is_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshkit.server import tls
    from meshkit.server.api.authctx import auth_info
    from meshkit.server.auth import AuthInfo

    # The fake calls stand for TLS connections: certificates are only looked
    # at once this process serves TLS.
    monkeypatch.setattr(tls, "_tls_serving", True)
    async with serve(tmp_path / "m") as c:
        await setup_auth(c)
        s = c.srv.etcd
        assert auth_info(s, _FakeCall([], b"alice")) == AuthInfo("alice", s.auth.revision)  # type: ignore[arg-type]
        assert auth_info(s, _FakeCall([], None)) is None  # type: ignore[arg-type]
        # A token wins over the certificate, as in etcd.
        tok = (await c.token("root", ROOT_PW))[0][1]
        got = auth_info(s, _FakeCall([("token", tok)], b"alice"))  # type: ignore[arg-type]
        assert got is not None and got.username == "root"
