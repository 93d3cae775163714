"""KV through the public client: every Range/Put/DeleteRange option."""

from __future__ import annotations

import pytest

from meshkit.client import Client, GetResult, KeyValue, PutResult, ResponseHeader


async def test_put_get_roundtrip_and_types(client: Client) -> None:
    r = await client.put(b"k", b"v")
    assert isinstance(r, PutResult)
    assert isinstance(r.header, ResponseHeader)
    assert r.header.revision >= 2 and r.header.cluster_id and r.header.member_id and r.header.raft_term
    assert r.prev_kv is None
    g = await client.get(b"k")
    assert isinstance(g, GetResult)
    assert g.count == 1 and not g.more
    kv = g.kvs[0]
    assert kv == KeyValue(b"k", b"v", r.header.revision, r.header.revision, 1, 0)
    assert g.value == b"v"
    with pytest.raises(AttributeError):
        kv.value = b"x"  # type: ignore[misc]  # frozen


async def test_str_keys_and_values_are_utf8(client: Client) -> None:
    await client.put("clé", "välue")
    g = await client.get("clé")
    assert g.kvs[0].key == "clé".encode() and g.kvs[0].value == "välue".encode()
    assert (await client.get(b"missing")).kvs == []
    assert (await client.get(b"missing")).value is None
    with pytest.raises(TypeError):
        await client.put(1, b"x")  # type: ignore[arg-type]


async def test_put_prev_kv_and_versions(client: Client) -> None:
    first = await client.put(b"k", b"1")
    r = await client.put(b"k", b"2", prev_kv=True)
    assert r.prev_kv is not None and r.prev_kv.value == b"1" and r.prev_kv.version == 1
    kv = (await client.get(b"k")).kvs[0]
    assert kv.version == 2 and kv.create_revision == first.header.revision
    assert kv.mod_revision == r.header.revision


async def test_put_ignore_value_and_ignore_lease(client: Client) -> None:
    lease = await client.grant(30)
    await client.put(b"k", b"v", lease=lease.id)
    await client.put(b"k", b"", ignore_value=True)  # keeps the value, drops nothing else
    kv = (await client.get(b"k")).kvs[0]
    assert kv.value == b"v" and kv.lease == 0  # lease not ignored -> detached
    await client.put(b"k", b"v", lease=lease.id)
    await client.put(b"k", b"w", ignore_lease=True)
    kv = (await client.get(b"k")).kvs[0]
    assert kv.value == b"w" and kv.lease == lease.id
    await client.revoke(lease.id)


async def _fill(client: Client) -> list[int]:
    revs = []
    for k, v in [(b"a", b"3"), (b"b", b"1"), (b"b", b"11"), (b"c", b"2"), (b"d", b"0"), (b"e", b"4")]:
        revs.append((await client.put(k, v)).header.revision)
    return revs


async def test_ranges_prefix_range_end_from_key(client: Client) -> None:
    await _fill(client)
    await client.put(b"pre/1", b"x")
    await client.put(b"pre/2", b"y")
    await client.put(b"prf", b"z")
    assert [kv.key for kv in (await client.get(b"b", b"d")).kvs] == [b"b", b"c"]
    assert [kv.key for kv in (await client.get(b"pre/", prefix=True)).kvs] == [b"pre/1", b"pre/2"]
    assert [kv.key for kv in (await client.get(b"d", from_key=True)).kvs] == [
        b"d", b"e", b"pre/1", b"pre/2", b"prf"]
    everything = await client.get(b"", prefix=True)
    assert everything.count == 8
    assert (await client.get(b"", from_key=True)).count == 8
    with pytest.raises(ValueError):
        await client.get(b"a", b"b", prefix=True)


async def test_prefix_end_with_ff_bytes(client: Client) -> None:
    await client.put(b"a\xff", b"1")
    await client.put(b"a\xff\xff", b"2")
    await client.put(b"b", b"3")
    assert [kv.key for kv in (await client.get(b"a\xff", prefix=True)).kvs] == [b"a\xff", b"a\xff\xff"]


async def test_limit_count_more(client: Client) -> None:
    await _fill(client)
    g = await client.get(b"a", b"z", limit=2)
    assert [kv.key for kv in g.kvs] == [b"a", b"b"] and g.more and g.count == 5


@pytest.mark.parametrize(
    ("target", "order", "expected"),
    [
        ("key", "ascend", [b"a", b"b", b"c", b"d", b"e"]),
        ("key", "descend", [b"e", b"d", b"c", b"b", b"a"]),
        ("value", "ascend", [b"d", b"c", b"a", b"e", b"b"]),  # b"0" b"11" b"2" b"3" b"4" -> by bytes
        ("value", "descend", [b"b", b"e", b"a", b"c", b"d"]),
        ("version", "descend", [b"b", b"a", b"c", b"d", b"e"]),
        ("create", "descend", [b"e", b"d", b"c", b"b", b"a"]),
        ("mod", "ascend", [b"a", b"b", b"c", b"d", b"e"]),
        ("mod", "descend", [b"e", b"d", b"c", b"b", b"a"]),
    ],
)
async def test_sort(client: Client, target: str, order: str, expected: list[bytes]) -> None:
    await _fill(client)
    g = await client.get(b"a", b"z", sort_target=target, sort_order=order)  # type: ignore[arg-type]
    keys = [kv.key for kv in g.kvs]
    if target == "value":
        values = [kv.value for kv in g.kvs]
        assert values == sorted(values, reverse=(order == "descend"))
    elif target == "version" and order == "descend":
        assert keys[0] == b"b"  # the only version-2 key; the rest tie
    else:
        assert keys == expected
    with pytest.raises(ValueError):
        await client.get(b"a", sort_order="sideways")  # type: ignore[arg-type]


async def test_revision_keys_only_count_only_serializable(client: Client) -> None:
    revs = await _fill(client)
    old = await client.get(b"b", revision=revs[1])
    assert old.kvs[0].value == b"1"
    assert (await client.get(b"b")).kvs[0].value == b"11"
    ko = await client.get(b"a", b"z", keys_only=True)
    assert [kv.value for kv in ko.kvs] == [b""] * 5 and ko.kvs[0].key == b"a"
    co = await client.get(b"a", b"z", count_only=True)
    assert co.kvs == [] and co.count == 5
    s = await client.get(b"a", serializable=True)
    assert s.kvs[0].value == b"3"


async def test_min_max_mod_and_create_revision(client: Client) -> None:
    revs = await _fill(client)  # a:r0 b:r1,r2 c:r3 d:r4 e:r5
    keys = lambda g: [kv.key for kv in g.kvs]  # noqa: E731
    assert keys(await client.get(b"a", b"z", min_mod_revision=revs[3])) == [b"c", b"d", b"e"]
    assert keys(await client.get(b"a", b"z", max_mod_revision=revs[2])) == [b"a", b"b"]
    assert keys(await client.get(b"a", b"z", min_create_revision=revs[3])) == [b"c", b"d", b"e"]
    assert keys(await client.get(b"a", b"z", max_create_revision=revs[1])) == [b"a", b"b"]


async def test_delete_single_range_prefix_prev_kv(client: Client) -> None:
    await _fill(client)
    await client.put(b"p/1", b"x")
    await client.put(b"p/2", b"y")
    d = await client.delete(b"a")
    assert d.deleted == 1 and d.prev_kvs == []
    assert (await client.delete(b"a")).deleted == 0
    d = await client.delete(b"b", b"d", prev_kv=True)
    assert d.deleted == 2 and [kv.key for kv in d.prev_kvs] == [b"b", b"c"]
    assert d.prev_kvs[0].value == b"11"
    assert (await client.delete(b"p/", prefix=True)).deleted == 2
    assert (await client.delete(b"d", from_key=True)).deleted == 2
    assert (await client.get(b"", prefix=True)).count == 0


async def test_compact(client: Client) -> None:
    revs = await _fill(client)
    r = await client.compact(revs[2])
    assert r.header.revision == revs[-1]
    assert (await client.get(b"b", revision=revs[2])).kvs[0].value == b"11"
    r = await client.compact(revs[3], physical=True)
    assert r.header.revision == revs[-1]
