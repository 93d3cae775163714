"""The manage API: GET, POST (replace), PUT (merge), DELETE (?subs=) on data and
mapping, rules, /health, /metrics; bad input gets a clear 4xx and changes nothing."""

from __future__ import annotations

import json

from meshkit.client import Client
from meshkit.metad import Metad
from tests.tools.metad.conftest import callers, config, running_metad
from tests.tools.metad.test_api import load


async def _keys(client: Client, m: Metad) -> list[tuple[bytes, bytes]]:
    out = []
    for base in (m.layout.base("data"), f"/_metad/mapping/{m.layout.group}/",
                 f"/_metad/rule/{m.layout.group}/"):
        out += [(kv.key, kv.value) for kv in (await client.get(base, prefix=True)).kvs]
    return out


async def test_put_merges_post_replaces_delete_subs(metad: Metad, client: Client, prefix: str) -> None:
    await load(metad)
    mp = metad.manage_port
    async with callers("127.0.0.1") as (a,):
        r = await a.request("PUT", mp, "/v1/data/nodes/2", data=json.dumps({"zone": "a", "n": 3}))
        assert r.status == 200
        # the answer comes once the mirror shows the write (read your writes)
        r = await a.get(mp, "/v1/data/nodes/2", accept="application/json")
        assert json.loads(r.body) == {"ip": "192.168.1.2", "name": "node2", "zone": "a", "n": "3"}
        r = await a.request("POST", mp, "/v1/data/nodes/2", data=json.dumps({"ip": "10.0.0.2"}))
        assert r.status == 200
        assert json.loads((await a.get(mp, "/v1/data/nodes/2", accept="application/json")).body) \
            == {"ip": "10.0.0.2"}
        assert [kv.key for kv in (await client.get(f"{prefix}/nodes/2", prefix=True)).kvs] \
            == [f"{prefix}/nodes/2/ip".encode()]
        r = await a.request("DELETE", mp, "/v1/data/nodes?subs=1,3")
        assert r.status == 200
        r = await a.get(mp, "/v1/data/nodes", accept="application/json")
        assert sorted(json.loads(r.body)) == ["2", "6"]
        r = await a.request("DELETE", mp, "/v1/data/nodes/6")
        assert (await a.get(mp, "/v1/data/nodes/6")).status == 404
        # mapping: merge one host, GET it back, delete it
        r = await a.request("PUT", mp, "/v1/mapping/127.0.0.4", data=json.dumps({"node": "/nodes/2"}))
        assert r.status == 200
        r = await a.get(mp, "/v1/mapping/127.0.0.4", accept="application/json")
        assert r.body == b'{"node":"/nodes/2"}'
        async with callers("127.0.0.4") as (c4,):
            assert (await c4.get(metad.port, "/self/node/ip")).text == "10.0.0.2"
        r = await a.request("DELETE", mp, "/v1/mapping/127.0.0.4")
        assert (await a.get(mp, "/v1/mapping/127.0.0.4")).status == 404
        # rules
        r = await a.request("POST", mp, "/v1/rule",
                            data=json.dumps({"127.0.0.4": [{"path": "/", "mode": 1}]}))
        assert r.status == 200
        r = await a.get(mp, "/v1/rule", accept="application/json")
        assert json.loads(r.body) == {"127.0.0.4": [{"path": "/", "mode": 1}]}
        raw = (await client.get(f"/_metad/rule/{metad.layout.group}/127.0.0.4")).value
        assert raw == b'[{"path":"/","mode":1}]'
        r = await a.request("DELETE", mp, "/v1/rule?hosts=127.0.0.4")
        assert json.loads((await a.get(mp, "/v1/rule", accept="application/json")).body) == {}
        # version header on manage answers
        assert int(r.headers["X-Metad-Version"]) == metad.mirror.version


async def test_bad_manage_input_is_4xx_and_changes_nothing(client: Client, prefix: str) -> None:
    async with running_metad(client, config(prefix, max_txn_ops=12)) as m, \
            callers("127.0.0.1") as (a,):
        await load(m)
        before = await _keys(client, m)
        mp = m.manage_port
        cases = [
            ("PUT", "/v1/data/nodes", "{not json", 400, "invalid json"),
            ("PUT", "/v1/data/nodes", json.dumps({"a/b": "x"}), 400, "one path component"),
            ("PUT", "/v1/data/nodes", json.dumps({"..": "x"}), 400, "not allowed"),
            ("POST", "/v1/data", json.dumps("just a string"), 400, "needs a path"),
            ("POST", "/v1/data", json.dumps({f"k{i}": "v" for i in range(20)}), 413, "limit is 12"),
            ("POST", "/v1/mapping", json.dumps({"not-an-ip": {"x": "/nodes/1"}}), 400, "should be an IP"),
            ("PUT", "/v1/mapping/127.0.0.2", json.dumps({"node": "nodes/2"}), 400, "data path"),
            ("PUT", "/v1/mapping/127.0.0.2", json.dumps({"node": 5}), 400, "data path"),
            ("PUT", "/v1/mapping/127.0.0.2", json.dumps("/nodes/1"), 400, "JSON object"),
            ("PUT", "/v1/rule", json.dumps({"127.0.0.2": [{"path": "/x", "mode": 7}]}), 400, "mode"),
            ("PUT", "/v1/rule", json.dumps({"127.0.0.2": [{"path": "x", "mode": 1}]}), 400, "path"),
            ("PUT", "/v1/rule", json.dumps({"127.0.0.2": [{"path": "/x", "mode": 1},
                                                          {"path": "/x/", "mode": 0}]}), 400, "twice"),
            ("PUT", "/v1/rule", json.dumps({"host": []}), 400, "IP address"),
            ("PUT", "/v1/rule", json.dumps([]), 400, "JSON object"),
            ("DELETE", "/v1/rule", None, 400, "hosts"),
            ("DELETE", "/v1/data/nodes?subs=a/b", None, 400, "not a path"),
            ("PATCH", "/v1/data/nodes", "{}", 405, "Method Not Allowed"),
        ]
        for method, path, body, status, text in cases:
            r = await a.request(method, mp, path, data=body)
            assert r.status == status, (method, path, r.status, r.text)
            assert text in r.text, (method, path, r.text)
        r = await a.request("PUT", mp, "/v1/data/x", data="x" * (2 << 20))
        assert r.status == 413
        assert await _keys(client, m) == before


async def test_health_and_metrics(metad: Metad) -> None:
    async with callers("127.0.0.1", "127.0.0.2") as (a, c):
        r = await a.get(metad.manage_port, "/health")
        assert r.status == 200 and json.loads(r.body)["status"] == "up"
        await c.get(metad.port, "/self")
        r = await a.get(metad.manage_port, "/metrics")
        assert 'metad_requests_total{api="data",code="404"} 1' in r.text
        assert "metad_ready 1" in r.text
