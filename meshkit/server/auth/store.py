"""AuthStore: users, roles, permissions and the auth revision, as etcd 3.4's.

State lives in the backend buckets etcd uses (``authUsers``, ``authRoles``:
authpb protobufs by name; ``auth``: ``authEnabled`` and ``authRevision``), is
changed only by applying committed log entries, and is therefore the same on
every member. Passwords are bcrypt hashes made by the API layer before the
request is proposed: the log, the backend and the logs never see plain text.

Every change that succeeds bumps the auth revision (it starts at 1). A request
carries the revision its token was checked at; an older one is refused with
``revision of auth store is old`` and the API layer retries it.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable

from meshkit._internal.errors import (
    AuthFailedError,
    AuthNotEnabledError,
    AuthOldRevisionError,
    InvalidAuthMgmtError,
    PermissionDeniedError,
    PermissionNotGrantedError,
    RoleAlreadyExistError,
    RoleEmptyError,
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
from meshkit.server.auth.tokens import AuthInfo, TokenProvider
from meshkit.server.backend import Backend

ROOT_USER = "root"
ROOT_ROLE = "root"

BUCKET_AUTH = "auth"
BUCKET_USERS = "authUsers"
BUCKET_ROLES = "authRoles"
KEY_ENABLED = b"authEnabled"
KEY_REVISION = b"authRevision"

_READ, _WRITE, _READWRITE = apb.Permission.READ, apb.Permission.WRITE, apb.Permission.READWRITE
_REV = struct.Struct(">Q")

# An interval [start, end); end None is "to the end of the key space".
Interval = tuple[bytes, bytes | None]


def _interval(key: bytes, range_end: bytes) -> Interval:
    if range_end == b"\0":
        return (key, None)
    if not range_end:
        return (key, key + b"\0")
    return (key, range_end)


def _merge(ivs: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for s, e in sorted(ivs, key=lambda iv: iv[0]):
        if out:
            ps, pe = out[-1]
            if pe is None or s <= pe:
                out[-1] = (ps, None if (pe is None or e is None) else max(pe, e))
                continue
        out.append((s, e))
    return out


def _covers(merged: list[Interval], key: bytes, range_end: bytes) -> bool:
    if not range_end:
        # a point: inside some interval
        for s, e in merged:
            if s <= key and (e is None or key < e):
                return True
        return False
    start, end = _interval(key, range_end)
    for s, e in merged:
        if s <= start and (e is None or (end is not None and end <= e)):
            return True
    return False


class AuthStore:
    def __init__(self, backend: Backend, tokens: TokenProvider) -> None:
        self.backend = backend
        self.tokens = tokens
        self._perm_cache: dict[str, tuple[list[Interval], list[Interval]]] = {}
        self.users: dict[str, apb.User] = {}
        self.roles: dict[str, apb.Role] = {}
        for k, v in backend.bucket_items(BUCKET_USERS):
            self.users[k.decode()] = apb.User.FromString(v)
        for k, v in backend.bucket_items(BUCKET_ROLES):
            self.roles[k.decode()] = apb.Role.FromString(v)
        en = backend.bucket_get(BUCKET_AUTH, KEY_ENABLED)
        self.enabled = en == b"\x01"
        rev = backend.bucket_get(BUCKET_AUTH, KEY_REVISION)
        self.revision = _REV.unpack(rev)[0] if rev else 0
        if self.revision == 0:
            self._commit_revision()  # etcd: a new store starts at revision 1
        if self.enabled:
            tokens.enable()

    # ---- persistence ------------------------------------------------------------

    def _commit_revision(self) -> None:
        self.revision += 1
        self.backend.bucket_put(BUCKET_AUTH, KEY_REVISION, _REV.pack(self.revision))
        self._perm_cache.clear()

    def _put_user(self, u: apb.User) -> None:
        self.users[u.name.decode()] = u
        self.backend.bucket_put(BUCKET_USERS, bytes(u.name), u.SerializeToString())

    def _put_role(self, r: apb.Role) -> None:
        self.roles[r.name.decode()] = r
        self.backend.bucket_put(BUCKET_ROLES, bytes(r.name), r.SerializeToString())

    def _set_enabled(self, on: bool) -> None:
        self.enabled = on
        self.backend.bucket_put(BUCKET_AUTH, KEY_ENABLED, b"\x01" if on else b"\x00")

    # ---- reading tokens and passwords (API layer) -----------------------------------

    def info_from_token(self, token: str) -> AuthInfo | None:
        return self.tokens.info(token, self.revision)

    def password_hash(self, name: str) -> bytes:
        """What Authenticate checks the password against (etcd's CheckPassword
        before the bcrypt comparison): refused when auth is off or the user
        cannot log in with a password."""
        if not self.enabled:
            raise AuthNotEnabledError()
        u = self.users.get(name)
        if u is None or u.options.no_password:
            raise AuthFailedError()
        return bytes(u.password)

    # ---- permission checks ----------------------------------------------------------

    def _perms(self, username: str) -> tuple[list[Interval], list[Interval]]:
        cached = self._perm_cache.get(username)
        if cached is not None:
            return cached
        reads: list[Interval] = []
        writes: list[Interval] = []
        u = self.users.get(username)
        for rn in (u.roles if u is not None else ()):
            role = self.roles.get(rn)
            if role is None:
                continue
            for p in role.keyPermission:
                iv = _interval(bytes(p.key), bytes(p.range_end))
                if p.permType in (_READ, _READWRITE):
                    reads.append(iv)
                if p.permType in (_WRITE, _READWRITE):
                    writes.append(iv)
        got = (_merge(reads), _merge(writes))
        self._perm_cache[username] = got
        return got

    def _op_permitted(self, ai: AuthInfo | None, key: bytes, range_end: bytes, write: bool) -> None:
        """etcd's isOpPermitted."""
        if not self.enabled:
            return
        if ai is None or ai.revision == 0:
            raise UserEmptyError()
        if ai.revision < self.revision:
            raise AuthOldRevisionError()
        u = self.users.get(ai.username)
        if u is None:
            raise PermissionDeniedError()
        if ROOT_ROLE in u.roles:
            return
        reads, writes = self._perms(ai.username)
        if not _covers(writes if write else reads, key, range_end):
            raise PermissionDeniedError()

    def check_range(self, ai: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        self._op_permitted(ai, key, range_end, write=False)

    def check_put(self, ai: AuthInfo | None, key: bytes) -> None:
        self._op_permitted(ai, key, b"", write=True)

    def check_delete(self, ai: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        self._op_permitted(ai, key, range_end, write=True)

    def check_admin(self, ai: AuthInfo | None) -> None:
        """etcd's IsAdminPermitted."""
        if not self.enabled:
            return
        if ai is None or not ai.username:
            raise UserEmptyError()
        u = self.users.get(ai.username)
        if u is None:
            raise UserNotFoundError()
        if ROOT_ROLE not in u.roles:
            raise PermissionDeniedError()

    def check_txn(self, ai: AuthInfo | None, r: pb.TxnRequest) -> None:
        """etcd's checkTxnAuth: every compare needs read, every op its own
        permission; nested txns are checked the same way, all branches."""
        if not self.enabled:
            return
        for c in r.compare:
            self.check_range(ai, c.key, c.range_end)
        for op in (*r.success, *r.failure):
            kind = op.WhichOneof("request")
            if kind == "request_range":
                self.check_range(ai, op.request_range.key, op.request_range.range_end)
            elif kind == "request_put":
                self.check_put(ai, op.request_put.key)
                if op.request_put.prev_kv:
                    self.check_range(ai, op.request_put.key, b"")
            elif kind == "request_delete_range":
                d = op.request_delete_range
                if d.prev_kv:
                    self.check_range(ai, d.key, d.range_end)
                self.check_delete(ai, d.key, d.range_end)
            elif kind == "request_txn":
                self.check_txn(ai, op.request_txn)

    def has_role(self, username: str, role: str) -> bool:
        u = self.users.get(username)
        return u is not None and role in u.roles

    # ---- applying auth requests (committed log entries) -----------------------------

    def auth_enable(self) -> pb.AuthEnableResponse:
        if not self.enabled:
            root = self.users.get(ROOT_USER)
            if root is None:
                raise RootUserNotExistError()
            if ROOT_ROLE not in root.roles:
                raise RootRoleNotExistError()
            self._set_enabled(True)
            self.tokens.enable()
            self._commit_revision()
        return pb.AuthEnableResponse()

    def auth_disable(self) -> pb.AuthDisableResponse:
        if self.enabled:
            self._set_enabled(False)
            self.tokens.disable()
            self._commit_revision()
        return pb.AuthDisableResponse()

    def auth_status(self) -> pb.AuthStatusResponse:
        return pb.AuthStatusResponse(enabled=self.enabled, authRevision=self.revision)

    def authenticate(self, name: str, simple_token: str, index: int) -> pb.AuthenticateResponse:
        if not self.enabled:
            raise AuthNotEnabledError()
        u = self.users.get(name)
        if u is None or u.options.no_password:
            raise AuthFailedError()
        # The password was checked by the API layer (etcd does the same).
        token = self.tokens.assign(name, self.revision, simple_token, index)
        return pb.AuthenticateResponse(token=token)

    def user_add(self, r: pb.AuthUserAddRequest) -> pb.AuthUserAddResponse:
        if not r.name:
            raise UserEmptyError()
        if r.name in self.users:
            raise UserAlreadyExistError()
        u = apb.User(name=r.name.encode(), options=apb.UserAddOptions(no_password=r.options.no_password))
        if not r.options.no_password:
            u.password = r.hashedPassword.encode()
        self._put_user(u)
        self._commit_revision()
        return pb.AuthUserAddResponse()

    def user_delete(self, r: pb.AuthUserDeleteRequest) -> pb.AuthUserDeleteResponse:
        if self.enabled and r.name == ROOT_USER:
            raise InvalidAuthMgmtError()
        if r.name not in self.users:
            raise UserNotFoundError()
        del self.users[r.name]
        self.backend.bucket_delete(BUCKET_USERS, r.name.encode())
        self._commit_revision()
        self.tokens.invalidate_user(r.name)
        return pb.AuthUserDeleteResponse()

    def user_change_password(self, r: pb.AuthUserChangePasswordRequest) -> pb.AuthUserChangePasswordResponse:
        u = self.users.get(r.name)
        if u is None:
            raise UserNotFoundError()
        nu = apb.User()
        nu.CopyFrom(u)
        nu.password = r.hashedPassword.encode()
        self._put_user(nu)
        self._commit_revision()
        self.tokens.invalidate_user(r.name)
        return pb.AuthUserChangePasswordResponse()

    def user_grant_role(self, r: pb.AuthUserGrantRoleRequest) -> pb.AuthUserGrantRoleResponse:
        u = self.users.get(r.user)
        if u is None:
            raise UserNotFoundError()
        if r.role != ROOT_ROLE and r.role not in self.roles:
            raise RoleNotFoundError()
        if r.role in u.roles:
            return pb.AuthUserGrantRoleResponse()  # etcd ignores a repeated grant
        nu = apb.User()
        nu.CopyFrom(u)
        roles = list(nu.roles)
        bisect.insort(roles, r.role)
        del nu.roles[:]
        nu.roles.extend(roles)
        self._put_user(nu)
        self._commit_revision()
        return pb.AuthUserGrantRoleResponse()

    def user_revoke_role(self, r: pb.AuthUserRevokeRoleRequest) -> pb.AuthUserRevokeRoleResponse:
        if self.enabled and r.name == ROOT_USER and r.role == ROOT_ROLE:
            raise InvalidAuthMgmtError()
        u = self.users.get(r.name)
        if u is None:
            raise UserNotFoundError()
        if r.role not in u.roles:
            raise RoleNotGrantedError()
        nu = apb.User()
        nu.CopyFrom(u)
        roles = [x for x in nu.roles if x != r.role]
        del nu.roles[:]
        nu.roles.extend(roles)
        self._put_user(nu)
        self._commit_revision()
        return pb.AuthUserRevokeRoleResponse()

    def user_get(self, r: pb.AuthUserGetRequest) -> pb.AuthUserGetResponse:
        u = self.users.get(r.name)
        if u is None:
            raise UserNotFoundError()
        return pb.AuthUserGetResponse(roles=list(u.roles))

    def user_list(self) -> pb.AuthUserListResponse:
        return pb.AuthUserListResponse(users=sorted(self.users))

    def role_add(self, r: pb.AuthRoleAddRequest) -> pb.AuthRoleAddResponse:
        if not r.name:
            raise RoleEmptyError()
        if r.name in self.roles:
            raise RoleAlreadyExistError()
        self._put_role(apb.Role(name=r.name.encode()))
        self._commit_revision()
        return pb.AuthRoleAddResponse()

    def role_delete(self, r: pb.AuthRoleDeleteRequest) -> pb.AuthRoleDeleteResponse:
        if self.enabled and r.role == ROOT_ROLE:
            raise InvalidAuthMgmtError()
        if r.role not in self.roles:
            raise RoleNotFoundError()
        del self.roles[r.role]
        self.backend.bucket_delete(BUCKET_ROLES, r.role.encode())
        for name in sorted(self.users):
            u = self.users[name]
            if r.role in u.roles:
                nu = apb.User()
                nu.CopyFrom(u)
                roles = [x for x in nu.roles if x != r.role]
                del nu.roles[:]
                nu.roles.extend(roles)
                self._put_user(nu)
        self._commit_revision()
        return pb.AuthRoleDeleteResponse()

    def role_get(self, r: pb.AuthRoleGetRequest) -> pb.AuthRoleGetResponse:
        role = self.roles.get(r.role)
        if role is None:
            raise RoleNotFoundError()
        return pb.AuthRoleGetResponse(perm=list(role.keyPermission))

    def role_list(self) -> pb.AuthRoleListResponse:
        return pb.AuthRoleListResponse(roles=sorted(self.roles))

    def role_grant_permission(self, r: pb.AuthRoleGrantPermissionRequest) -> pb.AuthRoleGrantPermissionResponse:
        role = self.roles.get(r.name)
        if role is None:
            raise RoleNotFoundError()
        nr = apb.Role()
        nr.CopyFrom(role)
        perms = list(nr.keyPermission)
        for p in perms:
            if p.key == r.perm.key and p.range_end == r.perm.range_end:
                p.permType = r.perm.permType
                break
        else:
            perms.append(apb.Permission(permType=r.perm.permType, key=r.perm.key, range_end=r.perm.range_end))
            perms.sort(key=lambda p: bytes(p.key))
        del nr.keyPermission[:]
        nr.keyPermission.extend(perms)
        self._put_role(nr)
        self._commit_revision()
        return pb.AuthRoleGrantPermissionResponse()

    def role_revoke_permission(self, r: pb.AuthRoleRevokePermissionRequest) -> pb.AuthRoleRevokePermissionResponse:
        role = self.roles.get(r.role)
        if role is None:
            raise RoleNotFoundError()
        kept = [p for p in role.keyPermission if not (p.key == r.key and p.range_end == r.range_end)]
        if len(kept) == len(role.keyPermission):
            raise PermissionNotGrantedError()
        nr = apb.Role(name=role.name, keyPermission=kept)
        self._put_role(nr)
        self._commit_revision()
        return pb.AuthRoleRevokePermissionResponse()
