"""AppConfig: live reload, callbacks, the cache file, compaction and cluster restarts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from meshkit.client import Client
from meshkit.configcenter import (
    AppConfig,
    ChangeStream,
    ConfigNotFoundError,
    ConfigStore,
    ConfigUnavailableError,
    ConfigVersion,
    load_cache,
)
from tests.client.proxy import TcpProxy
from tests.tools.configcenter.conftest import Cluster, unused_endpoint, wait_leader


def doc(n: int) -> str:
    return f"name: api\nstep: {n}\n"


async def next_n(stream: ChangeStream, n: int, within: float = 10.0) -> list[ConfigVersion]:
    out: list[ConfigVersion] = []
    async with asyncio.timeout(within):
        async for v in stream:
            out.append(v)
            if len(out) == n:
                return out
    return out


async def test_current_changes_and_callbacks(client: Client, app_name: str, tmp_path: Path) -> None:
    store = ConfigStore(client)
    v1 = await store.push(app_name, doc(1), "yaml")
    seen_sync: list[int] = []
    seen_async: list[int] = []
    cache = tmp_path / "cache" / "api.json"
    async with AppConfig(app_name, client=client, cache_file=cache) as app:
        assert (app.current, app.source, app.data) == (v1, "cluster", {"name": "api", "step": 1})
        assert load_cache(cache, app_name) == v1

        async def slow(v: ConfigVersion) -> None:
            await asyncio.sleep(0.01)
            seen_async.append(v.data["step"])

        def broken(v: ConfigVersion) -> None:
            raise RuntimeError("a buggy listener")

        app.on_change(lambda v: seen_sync.append(v.data["step"]))
        app.on_change(broken)
        app.on_change(slow)
        stream = app.changes(include_current=True)
        pushed = [await store.push(app_name, doc(n), "yaml") for n in (2, 3, 4)]
        got = await next_n(stream, 4)
        assert [v.data["step"] for v in got] == [1, 2, 3, 4]
        assert [v.revision for v in got[1:]] == [p.revision for p in pushed]
        await app.wait_for(lambda v: v.revision == pushed[-1].revision)
        assert seen_sync == seen_async == [2, 3, 4]  # the broken callback stopped nothing
        assert app.callback_errors == 3
        assert load_cache(cache, app_name) == pushed[-1]
        stream.close()
    assert not [v async for v in stream]  # ended


async def test_require_and_missing_config(client: Client, app_name: str) -> None:
    with pytest.raises(ConfigNotFoundError):
        async with AppConfig(app_name, client=client):
            pass
    async with AppConfig(app_name, client=client, require=False) as app:
        assert app.current is None
        stream = app.changes()
        v1 = await ConfigStore(client).push(app_name, doc(1), "yaml")
        assert await next_n(stream, 1) == [v1]
        assert app.current == v1


async def test_unreachable_without_cache_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigUnavailableError, match="cluster unreachable"):
        async with AppConfig("p/ns/api", endpoints=[unused_endpoint()], connect_timeout=0.3,
                             cache_file=tmp_path / "none.json"):
            pass


async def test_watch_hitting_compaction_rereads(shared_cluster: Cluster, client: Client,
                                                app_name: str) -> None:
    """The app's connection is cut while versions are published and compacted away: its
    resumed watch is refused as compacted, it re-reads and ends on the newest version."""
    store = ConfigStore(client)
    await store.push(app_name, doc(1), "yaml")
    proxy = await TcpProxy(shared_cluster.endpoint).start()
    try:
        async with Client([proxy.endpoint], timeout=2.0) as via_proxy, \
                AppConfig(app_name, client=via_proxy, retry_max=0.2) as app:
            stream = app.changes()
            v2 = await store.push(app_name, doc(2), "yaml")
            assert (await next_n(stream, 1))[0].revision == v2.revision
            proxy.refuse = True
            assert proxy.cut() >= 1
            await store.push(app_name, doc(3), "yaml")
            v4 = await store.push(app_name, doc(4), "yaml")
            await client.compact(v4.revision)
            proxy.refuse = False
            got = await next_n(stream, 1)
            assert [v.revision for v in got] == [v4.revision]  # v3 was compacted away
            assert app.current == v4 and app.rereads >= 1
            v5 = await store.push(app_name, doc(5), "yaml")  # and it watches again
            assert await next_n(stream, 1) == [v5]
    finally:
        proxy.refuse = True
        proxy.cut()
        if proxy._server is not None:
            proxy._server.close()


async def test_cluster_stop_and_restart(cluster: Cluster, tmp_path: Path) -> None:
    """The issue's check: the server is stopped while an app runs; the app keeps its config,
    a second instance starts from its cache file, and both catch up after the restart."""
    name = "prod/payments/api"
    cache1, cache2 = tmp_path / "app1.json", tmp_path / "app2.json"
    async with Client([cluster.endpoint], timeout=3.0) as admin:
        v1 = await ConfigStore(admin).push(name, doc(1), "yaml")
    # app2 ran once before and left its cache
    async with AppConfig(name, endpoints=[cluster.endpoint], cache_file=cache2):
        pass
    async with AppConfig(name, endpoints=[cluster.endpoint], cache_file=cache1,
                         retry_max=0.2) as app1:
        stream = app1.changes()
        v2 = await ConfigStore(app1._client).push(name, doc(2), "yaml")
        assert await next_n(stream, 1) == [v2]

        await asyncio.to_thread(cluster.stop)
        await asyncio.sleep(0.3)
        assert app1.current == v2 and app1.data["step"] == 2  # keeps its last config
        async with AppConfig(name, endpoints=[cluster.endpoint], cache_file=cache2,
                             connect_timeout=0.5, retry_max=0.2) as app2:
            assert (app2.current, app2.source) == (v1, "cache")
            stream2 = app2.changes()

            await asyncio.to_thread(cluster.start_again)
            await wait_leader(cluster.endpoint)
            # app2 catches up to what was published while it was away
            assert await next_n(stream2, 1, within=20) == [v2]
            assert app2.source == "cluster"
            async with Client([cluster.endpoint], timeout=3.0) as admin:
                v3 = await ConfigStore(admin).push(name, doc(3), "yaml")
            assert await next_n(stream, 1, within=20) == [v3]
            assert await next_n(stream2, 1, within=20) == [v3]
    assert load_cache(cache1, name) == v3 and load_cache(cache2, name) == v3
    assert json.loads(cache1.read_text())["revision"] == v3.revision


async def test_broken_or_deleted_record_keeps_the_last_config(client: Client, app_name: str) -> None:
    store = ConfigStore(client)
    v1 = await store.push(app_name, doc(1), "yaml")
    key = store.name(app_name).current_key
    async with AppConfig(app_name, client=client) as app:
        stream = app.changes()
        await client.put(key, b"not a record")  # hand-written garbage
        v2 = await store.push(app_name, doc(2), "yaml")  # replaced, still under CAS
        await client.delete(key)
        v3 = await store.push(app_name, doc(3), "yaml")  # the next push still works
        assert await next_n(stream, 2) == [v2, v3]
        assert (v2.version, v3.version, v3.base_revision) == (2, 3, 0)
        assert app.current == v3 and app.callback_errors == 0
    assert [v.version for v in await store.history(app_name)] == [v1.version, 2, 3]
