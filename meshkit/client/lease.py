"""Lease keep-alive: renew at a third of the TTL over one LeaseKeepAlive stream.

The keeper knows when the lease expires if no renewal lands (time the last
successful renewal was *sent* + the TTL it returned: conservative). Every wait is
bounded by that instant, so the owner hears at once when the lease is lost:

* the server answers TTL <= 0 (revoked, expired, unknown), or
* no renewal succeeded before the expiry (the stream is re-opened on the next
  endpoint after a failure, until then).

It never keeps a dead lease: once lost, it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn

import grpc

from meshkit._internal.errors import EtcdError, InvalidAuthTokenError, MeshkitError
from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.client.errors import (
    ConnectionFailedError,
    LeaseLostError,
    translate,
    translate_status,
)

if TYPE_CHECKING:
    from meshkit.client.client import Client

_log = logging.getLogger(__name__)
_EOF = getattr(grpc.aio, "EOF")  # noqa: B009  # missing from grpc-stubs


class KeepAlive:
    """``async with client.keep_alive(lease_id) as ka``: renewals run while inside.

    ``ka.ttl`` is the TTL from the latest renewal; ``ka.lost`` is set when the lease
    is gone, and ``await ka.wait_lost()`` raises :class:`LeaseLostError` then.
    Entering performs the first renewal and raises ``LeaseLostError`` if the lease
    does not exist. Leaving stops the renewals (it does not revoke the lease).
    """

    def __init__(self, client: Client, lease_id: int) -> None:
        self._client = client
        self.lease_id = lease_id
        self.ttl = -1
        self.renewals = 0
        self.lost = asyncio.Event()
        self.reason = ""
        self.expiry: float | None = None  # loop time the lease ends at if not renewed
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KeepAlive:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._task is not None:
            return
        self._client._keepalives.add(self)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"meshkit-keepalive-{self.lease_id:x}")
        await self._first.wait()
        if self.lost.is_set():
            await self.close()
            raise LeaseLostError(self.lease_id, self.reason)

    async def close(self) -> None:
        """Stop renewing (idempotent)."""
        self._client._keepalives.discard(self)
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_lost(self) -> NoReturn:
        """Wait until the lease is lost, then raise :class:`LeaseLostError`."""
        await self.lost.wait()
        raise LeaseLostError(self.lease_id, self.reason)

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.ttl = -1
            self.lost.set()
        self._first.set()

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except MeshkitError as e:
            self._lose(f"keep-alive failed: {e}")
        except Exception as e:  # an unexpected failure still means "not kept alive"
            _log.exception("keep-alive of lease %x failed", self.lease_id)
            self._lose(f"keep-alive failed: {e!r}")

    async def _loop(self) -> None:
        client = self._client
        pool = client._pool
        loop = asyncio.get_running_loop()
        started = loop.time()
        pause = 0.05
        failed_once = False

        def left() -> float:
            """Seconds until the lease would expire (or the first renewal's deadline)."""
            end = self.expiry if self.expiry is not None else started + client.timeout
            return end - loop.time()

        while True:
            if left() <= 0:
                self._lose("not renewed before its TTL ran out" if self.expiry is not None
                           else "no endpoint answered the first renewal")
                return
            ep = pool.current
            if not await pool.ready(ep, min(client.dial_timeout, max(left(), 0.001)),
                                    wait_failed=failed_once):
                pool.advance(ep)
                failed_once = True
                await asyncio.sleep(min(pause, max(left(), 0)))
                pause = min(pause * 2, 0.5)
                continue
            err: MeshkitError | None = None
            call = None
            try:
                md = await client._metadata(ep, loop.time() + max(left(), 0.001))
                call = pool.stubs(ep).lease.LeaseKeepAlive(metadata=md)
                while True:
                    sent_at = loop.time()
                    await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=self.lease_id))
                    try:
                        resp = await asyncio.wait_for(call.read(), max(left(), 0.001))
                    except TimeoutError:
                        err = ConnectionFailedError("no keep-alive answer", endpoint=ep)
                        break
                    if resp is _EOF:
                        err = ConnectionFailedError("keep-alive stream closed", endpoint=ep)
                        break
                    if resp.TTL <= 0:
                        self._lose("the server answered TTL 0 (lease revoked or expired)")
                        return
                    self.ttl = resp.TTL
                    self.expiry = sent_at + resp.TTL
                    self.renewals += 1
                    self._first.set()
                    pause = 0.05
                    failed_once = False
                    await asyncio.sleep(resp.TTL / 3)
                    if self.lost.is_set():
                        return
            except grpc.aio.AioRpcError as e:
                err = translate(e, ep)
            except asyncio.InvalidStateError:  # write() on a stream that already ended
                assert call is not None
                code = await call.code()
                err = translate_status(code, await call.details() or "", ep)
                if code == grpc.StatusCode.CANCELLED or code == grpc.StatusCode.OK:
                    err = ConnectionFailedError(f"keep-alive stream ended ({code.name})", endpoint=ep)
            except ConnectionFailedError as e:
                err = e
            finally:
                if call is not None:
                    call.cancel()
            if isinstance(err, InvalidAuthTokenError):
                client._token = None
                continue
            if isinstance(err, ConnectionFailedError) or (
                isinstance(err, EtcdError) and err.grpc_code == grpc.StatusCode.UNAVAILABLE
            ):
                pool.advance(ep)
                failed_once = True
                await asyncio.sleep(min(pause, max(left(), 0)))
                pause = min(pause * 2, 0.5)
                continue
            if err is not None:
                raise err
