"""etcdserverpb.Auth: the 17 RPCs, as etcd 3.4's ``v3rpc/auth.go`` and
``EtcdServer.Auth*``.

Every request goes through the log with the caller's credentials in its header;
the auth applier decides (admin-only calls, a user reading itself...). The API
layer does what must not reach the log: passwords are bcrypt-hashed here (in a
worker thread, cost ``--bcrypt-cost``) and only the hash is proposed;
Authenticate checks the password here and proposes the user name and a random
token prefix. Passwords are never logged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import bcrypt
import grpc

from meshkit._internal.errors import AuthFailedError, EtcdError
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.server.api.authctx import propose_as
from meshkit.server.api.errors import abort
from meshkit.server.etcdserver.server import EtcdServer

# Authenticate is proposed again when the auth store changed between the
# password check and the apply (etcd loops on the same condition).
MAX_AUTHENTICATE_ROUNDS = 5


def hash_password(password: str, cost: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def password_matches(password: str, hashed: bytes) -> bool:
    try:
        return bool(bcrypt.checkpw(password.encode(), hashed))
    except ValueError:  # not a bcrypt hash (a user without password)
        return False


class AuthService(rpc_pb2_grpc.AuthServicer):
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    async def _call(self, context: grpc.aio.ServicerContext, req: ipb.InternalRequest) -> Any:
        s = self.s
        try:
            resp = await propose_as(s, context, req)
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp

    async def AuthEnable(self, request: pb.AuthEnableRequest, context: grpc.aio.ServicerContext) -> pb.AuthEnableResponse:
        return await self._call(context, ipb.InternalRequest(auth_enable=request))  # type: ignore[no-any-return]

    async def AuthDisable(self, request: pb.AuthDisableRequest, context: grpc.aio.ServicerContext) -> pb.AuthDisableResponse:
        return await self._call(context, ipb.InternalRequest(auth_disable=request))  # type: ignore[no-any-return]

    async def AuthStatus(self, request: pb.AuthStatusRequest, context: grpc.aio.ServicerContext) -> pb.AuthStatusResponse:
        return await self._call(context, ipb.InternalRequest(auth_status=request))  # type: ignore[no-any-return]

    async def Authenticate(self, request: pb.AuthenticateRequest,
                           context: grpc.aio.ServicerContext) -> pb.AuthenticateResponse:
        s = self.s
        try:
            await s.linearizable_barrier()
            for attempt in range(MAX_AUTHENTICATE_ROUNDS):
                checked = s.auth.revision
                hashed = s.auth.password_hash(request.name)
                if not await asyncio.to_thread(password_matches, request.password, hashed):
                    raise AuthFailedError()
                internal = ipb.AuthenticateInternal(name=request.name, simple_token=s.auth.tokens.gen_prefix())
                resp: pb.AuthenticateResponse = await s.propose(ipb.InternalRequest(authenticate=internal))
                if checked == s.auth.revision or attempt == MAX_AUTHENTICATE_ROUNDS - 1:
                    break
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp

    async def UserAdd(self, request: pb.AuthUserAddRequest, context: grpc.aio.ServicerContext) -> pb.AuthUserAddResponse:
        req = pb.AuthUserAddRequest(name=request.name, options=request.options)
        if not request.options.no_password:
            req.hashedPassword = await asyncio.to_thread(hash_password, request.password, self.s.settings.bcrypt_cost)
        return await self._call(context, ipb.InternalRequest(auth_user_add=req))  # type: ignore[no-any-return]

    async def UserGet(self, request: pb.AuthUserGetRequest, context: grpc.aio.ServicerContext) -> pb.AuthUserGetResponse:
        return await self._call(context, ipb.InternalRequest(auth_user_get=request))  # type: ignore[no-any-return]

    async def UserList(self, request: pb.AuthUserListRequest, context: grpc.aio.ServicerContext) -> pb.AuthUserListResponse:
        return await self._call(context, ipb.InternalRequest(auth_user_list=request))  # type: ignore[no-any-return]

    async def UserDelete(self, request: pb.AuthUserDeleteRequest,
                         context: grpc.aio.ServicerContext) -> pb.AuthUserDeleteResponse:
        return await self._call(context, ipb.InternalRequest(auth_user_delete=request))  # type: ignore[no-any-return]

    async def UserChangePassword(self, request: pb.AuthUserChangePasswordRequest,
                                 context: grpc.aio.ServicerContext) -> pb.AuthUserChangePasswordResponse:
        hashed = await asyncio.to_thread(hash_password, request.password, self.s.settings.bcrypt_cost)
        req = pb.AuthUserChangePasswordRequest(name=request.name, hashedPassword=hashed)
        return await self._call(context, ipb.InternalRequest(auth_user_change_password=req))  # type: ignore[no-any-return]

    async def UserGrantRole(self, request: pb.AuthUserGrantRoleRequest,
                            context: grpc.aio.ServicerContext) -> pb.AuthUserGrantRoleResponse:
        return await self._call(context, ipb.InternalRequest(auth_user_grant_role=request))  # type: ignore[no-any-return]

    async def UserRevokeRole(self, request: pb.AuthUserRevokeRoleRequest,
                             context: grpc.aio.ServicerContext) -> pb.AuthUserRevokeRoleResponse:
        return await self._call(context, ipb.InternalRequest(auth_user_revoke_role=request))  # type: ignore[no-any-return]

    async def RoleAdd(self, request: pb.AuthRoleAddRequest, context: grpc.aio.ServicerContext) -> pb.AuthRoleAddResponse:
        return await self._call(context, ipb.InternalRequest(auth_role_add=request))  # type: ignore[no-any-return]

    async def RoleGet(self, request: pb.AuthRoleGetRequest, context: grpc.aio.ServicerContext) -> pb.AuthRoleGetResponse:
        return await self._call(context, ipb.InternalRequest(auth_role_get=request))  # type: ignore[no-any-return]

    async def RoleList(self, request: pb.AuthRoleListRequest, context: grpc.aio.ServicerContext) -> pb.AuthRoleListResponse:
        return await self._call(context, ipb.InternalRequest(auth_role_list=request))  # type: ignore[no-any-return]

    async def RoleDelete(self, request: pb.AuthRoleDeleteRequest,
                         context: grpc.aio.ServicerContext) -> pb.AuthRoleDeleteResponse:
        return await self._call(context, ipb.InternalRequest(auth_role_delete=request))  # type: ignore[no-any-return]

    async def RoleGrantPermission(self, request: pb.AuthRoleGrantPermissionRequest,
                                  context: grpc.aio.ServicerContext) -> pb.AuthRoleGrantPermissionResponse:
        return await self._call(  # type: ignore[no-any-return]
            context, ipb.InternalRequest(auth_role_grant_permission=request))

    async def RoleRevokePermission(self, request: pb.AuthRoleRevokePermissionRequest,
                                   context: grpc.aio.ServicerContext) -> pb.AuthRoleRevokePermissionResponse:
        return await self._call(  # type: ignore[no-any-return]
            context, ipb.InternalRequest(auth_role_revoke_permission=request))
