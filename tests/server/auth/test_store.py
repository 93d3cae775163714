"""AuthStore and token providers on their own: permissions, root rules, revisions,
persistence, simple token TTL, JWT tokens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshkit._internal.clock import FakeClock
from meshkit._internal.errors import (
    AuthFailedError,
    AuthNotEnabledError,
    AuthOldRevisionError,
    InvalidAuthMgmtError,
    PermissionDeniedError,
    PermissionNotGrantedError,
    RoleNotFoundError,
    RoleNotGrantedError,
    RootRoleNotExistError,
    RootUserNotExistError,
    UserAlreadyExistError,
    UserEmptyError,
    UserNotFoundError,
)
from meshkit.api.authpb import auth_pb2 as apb
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.server.auth import AuthInfo, AuthStore, TokenConfigError, new_token_provider
from meshkit.server.auth.tokens import SimpleTokens, parse_go_duration, parse_token_option
from meshkit.server.backend import Backend

P = apb.Permission


def _store(path: Path, clock: FakeClock | None = None) -> AuthStore:
    return AuthStore(Backend.open(path), SimpleTokens(clock or FakeClock()))


def _user(s: AuthStore, name: str, *roles: str) -> None:
    s.user_add(pb.AuthUserAddRequest(name=name, hashedPassword="$2b$04$notreallyahash"))
    for r in roles:
        if r != "root" and r not in s.roles:
            s.role_add(pb.AuthRoleAddRequest(name=r))
        s.user_grant_role(pb.AuthUserGrantRoleRequest(user=name, role=r))


def _grant(s: AuthStore, role: str, typ: int, key: bytes, end: bytes = b"") -> None:
    s.role_grant_permission(pb.AuthRoleGrantPermissionRequest(
        name=role, perm=P(permType=typ, key=key, range_end=end)))  # type: ignore[arg-type]


def _enabled(tmp_path: Path) -> AuthStore:
    s = _store(tmp_path / "db")
    _user(s, "root", "root")
    _user(s, "alice", "r1")
    _grant(s, "r1", P.READWRITE, b"/a/", b"/a0")       # prefix /a/
    _grant(s, "r1", P.READ, b"/b", b"/c")              # range
    _grant(s, "r1", P.READ, b"/c", b"/d")              # adjacent range: merged
    _grant(s, "r1", P.WRITE, b"/z", b"\0")             # from key
    _grant(s, "r1", P.READ, b"k1")                     # one key
    s.auth_enable()
    return s


def test_revision_starts_at_1_and_counts_changes(tmp_path: Path) -> None:
    s = _store(tmp_path / "db")
    assert s.revision == 1 and not s.enabled
    s.role_add(pb.AuthRoleAddRequest(name="r"))
    assert s.revision == 2
    with pytest.raises(UserNotFoundError):  # the user is looked up first, as etcd
        s.user_grant_role(pb.AuthUserGrantRoleRequest(user="x", role="nope"))
    _user(s, "x")
    rev = s.revision
    with pytest.raises(RoleNotFoundError):
        s.user_grant_role(pb.AuthUserGrantRoleRequest(user="x", role="nope"))
    assert s.revision == rev


def test_enable_needs_root_user_with_root_role(tmp_path: Path) -> None:
    s = _store(tmp_path / "db")
    with pytest.raises(RootUserNotExistError, match=r"^etcdserver: root user does not exist$"):
        s.auth_enable()
    _user(s, "root")
    with pytest.raises(RootRoleNotExistError, match=r"^etcdserver: root user does not have root role$"):
        s.auth_enable()
    s.user_grant_role(pb.AuthUserGrantRoleRequest(user="root", role="root"))  # no root role needed
    s.auth_enable()
    assert s.enabled
    rev = s.revision
    s.auth_enable()  # already enabled: nothing changes
    assert s.revision == rev


def test_root_rules_while_enabled(tmp_path: Path) -> None:
    s = _enabled(tmp_path)
    s.role_add(pb.AuthRoleAddRequest(name="root"))
    with pytest.raises(InvalidAuthMgmtError):
        s.user_delete(pb.AuthUserDeleteRequest(name="root"))
    with pytest.raises(InvalidAuthMgmtError):
        s.role_delete(pb.AuthRoleDeleteRequest(role="root"))
    with pytest.raises(InvalidAuthMgmtError):
        s.user_revoke_role(pb.AuthUserRevokeRoleRequest(name="root", role="root"))
    s.auth_disable()
    s.user_revoke_role(pb.AuthUserRevokeRoleRequest(name="root", role="root"))
    s.user_delete(pb.AuthUserDeleteRequest(name="root"))


def test_user_and_role_errors(tmp_path: Path) -> None:
    s = _store(tmp_path / "db")
    with pytest.raises(UserEmptyError):
        s.user_add(pb.AuthUserAddRequest(name=""))
    _user(s, "u")
    with pytest.raises(UserAlreadyExistError):
        _user(s, "u")
    with pytest.raises(UserNotFoundError):
        s.user_get(pb.AuthUserGetRequest(name="v"))
    with pytest.raises(RoleNotGrantedError):
        s.user_revoke_role(pb.AuthUserRevokeRoleRequest(name="u", role="r"))
    s.role_add(pb.AuthRoleAddRequest(name="r"))
    with pytest.raises(PermissionNotGrantedError):
        s.role_revoke_permission(pb.AuthRoleRevokePermissionRequest(role="r", key=b"k"))
    s.user_grant_role(pb.AuthUserGrantRoleRequest(user="u", role="r"))
    s.role_delete(pb.AuthRoleDeleteRequest(role="r"))
    assert list(s.user_get(pb.AuthUserGetRequest(name="u")).roles) == []


def test_permissions_as_etcd(tmp_path: Path) -> None:
    s = _enabled(tmp_path)
    alice = AuthInfo("alice", s.revision)
    root = AuthInfo("root", s.revision)
    s.check_range(alice, b"/a/x", b"")
    s.check_range(alice, b"/a/", b"/a0")
    s.check_put(alice, b"/a/x")
    s.check_range(alice, b"/b", b"/d")      # two adjacent ranges cover it
    s.check_range(alice, b"/b5", b"")
    s.check_range(alice, b"k1", b"")
    s.check_put(alice, b"zzz")               # from-key write
    s.check_delete(alice, b"/z", b"\0")
    for check in (
        lambda: s.check_range(alice, b"/a", b"/b"),      # wider than the prefix
        lambda: s.check_range(alice, b"/b", b"/e"),
        lambda: s.check_range(alice, b"zzz", b""),      # write only
        lambda: s.check_put(alice, b"/b5"),             # read only
        lambda: s.check_delete(alice, b"/a/", b"\0"),
        lambda: s.check_range(AuthInfo("ghost", s.revision), b"/a/x", b""),
    ):
        with pytest.raises(PermissionDeniedError, match=r"^etcdserver: permission denied$"):
            check()
    s.check_delete(root, b"", b"\0")
    with pytest.raises(UserEmptyError, match=r"^etcdserver: user name is empty$"):
        s.check_range(None, b"/a/x", b"")
    with pytest.raises(AuthOldRevisionError, match=r"^etcdserver: revision of auth store is old$"):
        s.check_range(AuthInfo("alice", s.revision - 1), b"/a/x", b"")
    # A permission change shows at once (the cache follows the revision).
    s.role_revoke_permission(pb.AuthRoleRevokePermissionRequest(role="r1", key=b"/a/", range_end=b"/a0"))
    with pytest.raises(PermissionDeniedError):
        s.check_put(AuthInfo("alice", s.revision), b"/a/x")


def test_txn_checks_compares_ops_and_nested_txns(tmp_path: Path) -> None:
    s = _enabled(tmp_path)
    ai = AuthInfo("alice", s.revision)
    ok = pb.TxnRequest(compare=[pb.Compare(key=b"/a/x")],
                       success=[pb.RequestOp(request_put=pb.PutRequest(key=b"/a/y"))])
    s.check_txn(ai, ok)
    for bad in (
        pb.TxnRequest(compare=[pb.Compare(key=b"/q")]),
        pb.TxnRequest(failure=[pb.RequestOp(request_range=pb.RangeRequest(key=b"/q"))]),
        pb.TxnRequest(success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"/b"))]),
        pb.TxnRequest(success=[pb.RequestOp(request_txn=pb.TxnRequest(
            success=[pb.RequestOp(request_put=pb.PutRequest(key=b"/q"))]))]),
    ):
        with pytest.raises(PermissionDeniedError):
            s.check_txn(ai, bad)


def test_state_persists_in_etcd_buckets(tmp_path: Path) -> None:
    s = _enabled(tmp_path)
    rev = s.revision
    s.backend.commit()
    s.backend.close()
    b = Backend.open(tmp_path / "db")
    names = {k for k, _ in b.bucket_items("authUsers")}
    assert names == {b"alice", b"root"}
    again = AuthStore(b, SimpleTokens(FakeClock()))
    assert again.enabled and again.revision == rev
    assert list(again.user_get(pb.AuthUserGetRequest(name="alice")).roles) == ["r1"]
    assert [bytes(p.key) for p in again.role_get(pb.AuthRoleGetRequest(role="r1")).perm] == [
        b"/a/", b"/b", b"/c", b"/z", b"k1"]


def test_authenticate_and_simple_token_ttl(tmp_path: Path) -> None:
    clock = FakeClock()
    s = _store(tmp_path / "db", clock)
    s.tokens.ttl = 10.0  # type: ignore[attr-defined]
    _user(s, "root", "root")
    with pytest.raises(AuthNotEnabledError):
        s.authenticate("root", "abc", 5)
    s.auth_enable()
    with pytest.raises(AuthFailedError):
        s.authenticate("nobody", "abc", 5)
    prefix = s.tokens.gen_prefix()
    assert re.fullmatch(r"[A-Za-z]{16}", prefix)
    token = s.authenticate("root", prefix, 42).token
    assert token == f"{prefix}.42"
    clock.advance(8)
    assert s.info_from_token(token) == AuthInfo("root", s.revision)  # use resets the TTL
    clock.advance(8)
    assert s.info_from_token(token) is not None
    clock.advance(11)
    assert s.info_from_token(token) is None
    t2 = s.authenticate("root", prefix, 43).token
    s.user_change_password(pb.AuthUserChangePasswordRequest(name="root", hashedPassword="$2b$04$x"))
    assert s.info_from_token(t2) is None  # a new password drops the user's tokens
    t3 = s.authenticate("root", prefix, 44).token
    s.auth_disable()
    assert s.info_from_token(t3) is None


def _keys(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    priv = tmp_path / f"{kind}.key"
    pub = tmp_path / f"{kind}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return pub, priv


@pytest.mark.parametrize(("kind", "method"), [("rsa", "RS256"), ("ec", "ES256")])
def test_jwt_tokens(tmp_path: Path, kind: str, method: str) -> None:
    import jwt

    pub, priv = _keys(tmp_path, kind)
    spec = f"jwt,pub-key={pub},priv-key={priv},sign-method={method},ttl=5m"
    tp = new_token_provider(spec, FakeClock())
    token = tp.assign("alice", 7, "", 3)
    claims = jwt.decode(token, pub.read_bytes(), algorithms=[method])
    assert claims["username"] == "alice" and claims["revision"] == 7 and "exp" in claims
    assert tp.info(token, 99) == AuthInfo("alice", 7)  # the token's own revision
    assert tp.info(token[:-4] + "AAAA", 99) is None
    # A member with only the public key verifies but cannot sign.
    verify_only = new_token_provider(f"jwt,pub-key={pub},sign-method={method}", FakeClock())
    assert verify_only.info(token, 1) == AuthInfo("alice", 7)
    with pytest.raises(TokenConfigError):
        verify_only.assign("alice", 7, "", 3)


def test_token_option_parsing() -> None:
    assert parse_token_option("simple") == ("simple", {})
    assert parse_go_duration("5m") == 300.0
    assert parse_go_duration("1h30m") == 5400.0
    for bad in ("jwt,pub-key=x", "jwt,sign-method=RS256,bogus=1", "magic", "jwt,novalue"):
        with pytest.raises(TokenConfigError):
            parse_token_option(bad)
    with pytest.raises(TokenConfigError):
        parse_go_duration("5 minutes")
