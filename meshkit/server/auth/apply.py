"""The auth step of the applier chain (etcd's authApplierV3).

Run on every committed request before the store applier, with the user name
and auth revision the API layer put into the request header, so every member
takes the same decision in log order. Auth requests themselves are applied here.
"""

from __future__ import annotations

from typing import Any

from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.server.auth.store import AuthStore
from meshkit.server.auth.tokens import AuthInfo
from meshkit.server.lease import Lessor

# Requests only a user with the root role may make once auth is enabled
# (etcd's needAdminPermission; UserGet and RoleGet are also allowed for
# oneself and one's own roles).
ADMIN_KINDS = frozenset({
    "auth_enable", "auth_disable", "auth_user_add", "auth_user_delete", "auth_user_change_password",
    "auth_user_grant_role", "auth_user_revoke_role", "auth_user_list", "auth_role_list",
    "auth_role_add", "auth_role_delete", "auth_role_grant_permission", "auth_role_revoke_permission",
})
AUTH_KINDS = ADMIN_KINDS | {"authenticate", "auth_status", "auth_user_get", "auth_role_get"}


def header_info(req: ipb.InternalRequest) -> AuthInfo:
    return AuthInfo(req.header.username, req.header.auth_revision)


def check_request(auth: AuthStore, req: ipb.InternalRequest, kind: str, lessor: Lessor | None) -> None:
    """Raise the error etcd answers when the request's user may not do this."""
    if not auth.enabled:
        return
    ai = header_info(req)
    if kind in ADMIN_KINDS:
        auth.check_admin(ai)
    elif kind == "auth_user_get":
        if req.auth_user_get.name != ai.username:
            auth.check_admin(ai)
    elif kind == "auth_role_get":
        if not auth.has_role(ai.username, req.auth_role_get.role):
            auth.check_admin(ai)
    elif kind == "put":
        r = req.put
        auth.check_put(ai, r.key)
        if r.lease and lessor is not None:
            # A lease attached to keys this user may not write cannot be
            # attached to more keys by it (it could not revoke the lease).
            le = lessor.lookup(r.lease)
            for key in sorted(le.keys) if le is not None else ():
                auth.check_put(ai, key)
        if r.prev_kv:
            auth.check_range(ai, r.key, b"")
    elif kind == "delete_range":
        d = req.delete_range
        auth.check_delete(ai, d.key, d.range_end)
        if d.prev_kv:
            auth.check_range(ai, d.key, d.range_end)
    elif kind == "txn":
        auth.check_txn(ai, req.txn)
    elif kind == "lease_revoke" and lessor is not None:
        le = lessor.lookup(req.lease_revoke.ID)
        for key in sorted(le.keys) if le is not None else ():
            auth.check_put(ai, key)


def apply_auth(auth: AuthStore, req: ipb.InternalRequest, kind: str, index: int) -> Any:
    if kind == "auth_enable":
        return auth.auth_enable()
    if kind == "auth_disable":
        return auth.auth_disable()
    if kind == "auth_status":
        return auth.auth_status()
    if kind == "authenticate":
        return auth.authenticate(req.authenticate.name, req.authenticate.simple_token, index)
    if kind == "auth_user_add":
        return auth.user_add(req.auth_user_add)
    if kind == "auth_user_delete":
        return auth.user_delete(req.auth_user_delete)
    if kind == "auth_user_get":
        return auth.user_get(req.auth_user_get)
    if kind == "auth_user_change_password":
        return auth.user_change_password(req.auth_user_change_password)
    if kind == "auth_user_grant_role":
        return auth.user_grant_role(req.auth_user_grant_role)
    if kind == "auth_user_revoke_role":
        return auth.user_revoke_role(req.auth_user_revoke_role)
    if kind == "auth_user_list":
        return auth.user_list()
    if kind == "auth_role_list":
        return auth.role_list()
    if kind == "auth_role_add":
        return auth.role_add(req.auth_role_add)
    if kind == "auth_role_delete":
        return auth.role_delete(req.auth_role_delete)
    if kind == "auth_role_get":
        return auth.role_get(req.auth_role_get)
    if kind == "auth_role_grant_permission":
        return auth.role_grant_permission(req.auth_role_grant_permission)
    if kind == "auth_role_revoke_permission":
        return auth.role_revoke_permission(req.auth_role_revoke_permission)
    raise NotImplementedError(f"applying auth request {kind!r} is not implemented")
