"""Turning domain errors into etcd's gRPC statuses.

The code/message table itself is ``meshkit._internal.errors`` (shared with the
client); this module is the one place the server applies it to a call.
"""

from __future__ import annotations

from typing import NoReturn

import grpc

from meshkit._internal.errors import EtcdError


async def abort(context: grpc.aio.ServicerContext, err: EtcdError) -> NoReturn:
    await context.abort(err.grpc_code, err.detail)
    raise AssertionError("context.abort returned")  # grpc.aio always raises
