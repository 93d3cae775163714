"""Access rules (forbid/read, wildcard, exact beats wildcard, deeper beats shallower)
and X-Forwarded-For believed only from trusted proxies."""

from __future__ import annotations

import json

import pytest

from meshkit.client import Client
from meshkit.metad import MetadConfig, caller_ip
from tests.tools.metad.conftest import MAPPING, NODES, callers, config, eventually, running_metad

RULES = {
    "127.0.0.2": [
        {"path": "/nodes", "mode": 1},          # read everything under /nodes ...
        {"path": "/nodes/*/name", "mode": 0},   # ... but no node's name ...
        {"path": "/nodes/1/name", "mode": 1},   # ... except node 1's (exact beats wildcard)
        {"path": "/nodes/6", "mode": 0},        # nothing of node 6 ...
        {"path": "/nodes/6/label/key3", "mode": 1},  # ... but this (deeper beats shallower)
    ],
}


async def test_rules_decide_what_a_host_reads(client: Client, prefix: str) -> None:
    async with running_metad(client, config(prefix)) as m, \
            callers("127.0.0.1", "127.0.0.2", "127.0.0.3") as (admin, c2, c3):
        for path, body in (("/v1/data", NODES), ("/v1/mapping", MAPPING), ("/v1/rule", RULES)):
            r = await admin.request("PUT", m.manage_port, path, data=json.dumps(body))
            assert r.status == 200, r.text
        r = await c2.get(m.port, "/nodes", accept="application/json")
        assert json.loads(r.body) == {
            "1": {"ip": "192.168.1.1", "name": "nn_node1"},
            "2": {"ip": "192.168.1.2"},
            "3": {"ip": "192.168.1.3"},
            "6": {"label": {"key3": "value3"}},
        }
        assert (await c2.get(m.port, "/nodes/6/ip")).status == 404
        # /self goes through the same rules: node 2's name is forbidden now
        assert (await c2.get(m.port, "/self")).text == "/node/ip\t192.168.1.2\n"
        # a host without rules still reads only what its mapping links to
        assert (await c3.get(m.port, "/nodes/1")).status == 404
        r = await admin.get(m.manage_port, "/v1/rule?hosts=127.0.0.2", accept="application/json")
        assert r.body.startswith(b'{"127.0.0.2":[{"path":"/nodes","mode":1},')
        # stored rules that do not parse deny the host everything (fail closed)
        await client.put(f"/_metad/rule/{m.layout.group}/127.0.0.3", "not json")

        async def denied() -> bool:
            return (await c3.get(m.port, "/self/node/ip")).status == 404
        await eventually(denied)


def test_caller_ip_believes_forwarded_only_from_trusted_proxies() -> None:
    import ipaddress

    trusted = [ipaddress.ip_network("127.0.0.9/32"), ipaddress.ip_network("10.0.0.0/8")]
    assert caller_ip("127.0.0.2", ["127.0.0.3"], trusted) == "127.0.0.2"
    assert caller_ip("127.0.0.9", ["127.0.0.3"], trusted) == "127.0.0.3"
    # the right-most address that is not a trusted proxy: the left part may be forged
    assert caller_ip("127.0.0.9", ["127.0.0.3, 127.0.0.4, 10.1.2.3"], trusted) == "127.0.0.4"
    assert caller_ip("127.0.0.9", ["10.1.1.1", "10.2.2.2"], trusted) == "10.1.1.1"
    assert caller_ip("::ffff:127.0.0.2", [], trusted) == "127.0.0.2"
    with pytest.raises(Exception, match="not an IP"):
        caller_ip("127.0.0.9", ["evil"], trusted)


def test_xff_needs_trusted_proxies() -> None:
    problems = MetadConfig(xff=True).validate()
    assert any("--trusted-proxy" in p for p in problems)
    assert any("loopback" in p for p in MetadConfig(manage_listen="0.0.0.0:9611").validate())
    assert MetadConfig(xff=True, trusted_proxies=("127.0.0.9/32",)).validate() == []


async def test_spoofed_forwarded_for_is_ignored(client: Client, prefix: str) -> None:
    cfg = config(prefix, xff=True, trusted_proxies=("127.0.0.9/32",))
    async with running_metad(client, cfg) as m, \
            callers("127.0.0.1", "127.0.0.2", "127.0.0.9") as (admin, c2, proxy):
        for path, body in (("/v1/data", NODES), ("/v1/mapping", MAPPING)):
            assert (await admin.request("POST", m.manage_port, path, data=json.dumps(body))).status == 200
        spoof = {"X-Forwarded-For": "127.0.0.3"}
        # an untrusted caller claiming to be 127.0.0.3 still gets its own /self
        r = await c2.get(m.port, "/self/node/ip", headers=spoof)
        assert r.text == "192.168.1.2"
        # the trusted proxy speaks for 127.0.0.3
        r = await proxy.get(m.port, "/self/node/ip", headers=spoof)
        assert r.text == "192.168.1.3"
        # a forged left part behind the proxy does not count
        r = await proxy.get(m.port, "/self/node/ip", headers={"X-Forwarded-For": "127.0.0.3, 127.0.0.2"})
        assert r.text == "192.168.1.2"
        r = await proxy.get(m.port, "/self", headers={"X-Forwarded-For": "garbage"})
        assert r.status == 400
