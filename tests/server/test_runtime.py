"""meshkit.server.runtime: grpc.aio's per-call fast paths keep grpc's behaviour."""

from __future__ import annotations

import asyncio
import gc

import grpc
import pytest

from meshkit.server import runtime


async def test_wait_one_future_like_asyncio_wait() -> None:
    w = runtime._AsyncioForGrpc(asyncio).wait
    loop = asyncio.get_running_loop()
    f: asyncio.Future[int] = loop.create_future()
    loop.call_later(0.01, f.set_exception, ValueError("x"))
    done, pending = await w({f: None}.keys(), return_when=asyncio.FIRST_COMPLETED)
    assert done == {f} and pending == set()
    assert isinstance(f.exception(), ValueError)  # not raised by wait
    done, pending = await w([f])  # already done
    assert done == {f}


async def test_wait_cancelled_leaves_no_callback() -> None:
    w = runtime._AsyncioForGrpc(asyncio).wait
    f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    t = asyncio.ensure_future(w([f]))
    await asyncio.sleep(0)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert not f.done()
    assert f.remove_done_callback(lambda _: None) == 0
    assert f._callbacks in (None, [])  # type: ignore[attr-defined]


async def test_wait_several_or_timeout_is_asyncio_wait() -> None:
    w = runtime._AsyncioForGrpc(asyncio).wait
    loop = asyncio.get_running_loop()
    a: asyncio.Future[int] = loop.create_future()
    b: asyncio.Future[int] = loop.create_future()
    a.set_result(1)
    done, pending = await w([a, b], return_when=asyncio.FIRST_COMPLETED)
    assert done == {a} and pending == {b}
    done, pending = await w([b], timeout=0.01)
    assert done == set() and pending == {b}


async def test_grpc_aio_server_with_fast_paths() -> None:
    assert runtime.install_grpc_aio_fast_paths()
    assert runtime.install_grpc_aio_fast_paths()  # idempotent
    from grpc._cython import cygrpc

    assert isinstance(cygrpc.asyncio, runtime._AsyncioForGrpc)
    seen: list[str] = []

    async def unary(req: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
        seen.append("unary")
        await asyncio.sleep(0)
        return req + b"!"

    def sync_unary(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        seen.append("sync")
        return req + b"?"

    async def stream(req: bytes, ctx: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        for i in range(3):
            yield b"%d" % i

    async def fail(req: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
        await ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "no")
        raise AssertionError

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {
        "U": grpc.unary_unary_rpc_method_handler(unary),
        "S": grpc.unary_unary_rpc_method_handler(sync_unary),
        "St": grpc.unary_stream_rpc_method_handler(stream),
        "F": grpc.unary_unary_rpc_method_handler(fail),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            for _ in range(3):
                assert await ch.unary_unary("/t.T/U")(b"a", timeout=5) == b"a!"
                assert await ch.unary_unary("/t.T/S")(b"b", timeout=5) == b"b?"
            got = [m async for m in ch.unary_stream("/t.T/St")(b"", timeout=5)]
            assert got == [b"0", b"1", b"2"]
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await ch.unary_unary("/t.T/F")(b"", timeout=5)
            assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            # a call cancelled by the client while the handler waits
            call = ch.unary_unary("/t.T/U")(b"c", timeout=5)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
    finally:
        await server.stop(None)
    assert seen.count("sync") == 3 and seen.count("unary") >= 3


def test_tune_gc_sets_thresholds() -> None:
    before = gc.get_threshold()
    try:
        runtime.tune_gc(5000, 15, 12)
        assert gc.get_threshold() == (5000, 15, 12)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
