"""Publishing through ConfigStore, against the real etcd and meshkit's server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from meshkit.client import Client
from meshkit.configcenter import (
    ConfigNotFoundError,
    ConfigStore,
    ConflictError,
    DocumentError,
    RevisionNotFoundError,
    SchemaValidationError,
    load_schema,
)
from tests.tools.configcenter.test_documents import SCHEMA

V1 = "name: api\ndb:\n  pool: 5\n"
V2 = "name: api\ndb:\n  pool: 10\n"
V3 = "name: api\ndb:\n  pool: 20\n  host: db1\n"


async def snapshot(c: Client) -> tuple[int, list[tuple[bytes, int]]]:
    """The cluster revision and every key of the config center with its mod revision."""
    r = await c.get(b"/meshkit/config/", prefix=True)
    return r.header.revision, [(kv.key, kv.mod_revision) for kv in r.kvs]


async def test_push_get_history_diff(client: Client, app_name: str) -> None:
    store = ConfigStore(client, author="alice")
    with pytest.raises(ConfigNotFoundError):
        await store.current(app_name)
    v1 = await store.push(app_name, V1, "yaml", message="first")
    v2 = await store.push(app_name, V2, "yaml", message="more connections", author="bob")
    v3 = await store.push(app_name, json.dumps({"name": "api", "db": {"pool": 20}}), "json")
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    assert v1.revision < v2.revision < v3.revision
    assert (v2.base_revision, v3.base_revision) == (v1.revision, v2.revision)

    cur = await store.current(app_name)
    assert (cur.version, cur.revision, cur.data) == (3, v3.revision, {"name": "api", "db": {"pool": 20}})
    hist = await store.history(app_name)
    assert [(v.version, v.revision, v.author, v.message) for v in hist] == [
        (1, v1.revision, "alice", "first"), (2, v2.revision, "bob", "more connections"),
        (3, v3.revision, "alice", "")]
    assert all(v.time.endswith("Z") for v in hist)
    assert (await store.get(app_name, v1.revision)).text == V1

    d = await store.diff(app_name, v1.revision, v2.revision)
    assert f"--- {app_name}@{v1.revision} (version 1)" in d
    assert "-  pool: 5\n+  pool: 10\n" in d
    assert await store.diff(app_name, v1.revision, v1.revision) == ""
    # different formats: the data is compared
    assert '-    "pool": 10\n+    "pool": 20\n' in await store.diff(app_name, v2.revision, v3.revision)
    with pytest.raises(RevisionNotFoundError, match="published revisions"):
        await store.diff(app_name, v1.revision, v1.revision + 1000)
    ns = app_name.rsplit("/", 1)[0]
    assert await store.list(ns) == [app_name]


async def test_push_file_with_schema(client: Client, app_name: str, tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "ok.yaml").write_text(V1)
    (tmp_path / "ok.properties").write_text("name=api\n")
    store = ConfigStore(client)
    v = await store.push_file(app_name, tmp_path / "ok.yaml", schema_path=tmp_path / "s.json",
                              message="validated")
    assert v.data == {"name": "api", "db": {"pool": 5}}
    p = await store.push_file(app_name, tmp_path / "ok.properties")
    assert (p.format, p.data) == ("properties", {"name": "api"})


@pytest.mark.parametrize(("text", "fmt", "schema", "error", "needle"), [
    ("name: api\ndb: {pool: [1}\n", "yaml", None, DocumentError, "not valid YAML"),
    ('{"name": "api",}', "json", None, DocumentError, "not valid JSON"),
    ("- just\n- a list\n", "yaml", None, DocumentError, "top level must be a mapping"),
    ("name=api\nbroken line\n", "properties", None, DocumentError, "expected key=value"),
    ("name: api\ndb:\n  pool: 500\n", "yaml", SCHEMA, SchemaValidationError,
     "$.db.pool: 500 is greater than the maximum of 50"),
    ("db:\n  pool: 5\n", "yaml", SCHEMA, SchemaValidationError, "'name' is a required property"),
])
async def test_refused_pushes_store_nothing(
    client: Client, app_name: str, text: str, fmt: str, schema: dict[str, object] | None,
    error: type[Exception], needle: str,
) -> None:
    store = ConfigStore(client)
    good = await store.push(app_name, V1, "yaml")
    before = await snapshot(client)
    with pytest.raises(error) as ei:
        await store.push(app_name, text, fmt, schema=schema, source="bad.in")  # type: ignore[arg-type]
    assert needle in str(ei.value)
    assert await snapshot(client) == before  # not one key written, no revision spent
    assert (await store.current(app_name)).revision == good.revision


async def test_oversized_document_is_refused(client: Client, app_name: str) -> None:
    store = ConfigStore(client)
    before = await snapshot(client)
    with pytest.raises(DocumentError, match="too large"):
        await store.push(app_name, json.dumps({"blob": "x" * 600_000}), "json")
    assert await snapshot(client) == before


async def test_push_based_on_an_old_revision_conflicts(client: Client, app_name: str) -> None:
    alice, bob = ConfigStore(client, author="alice"), ConfigStore(client, author="bob")
    base = await alice.push(app_name, V1, "yaml")
    won = await bob.push(app_name, V2, "yaml", base_revision=base.revision, message="bob's")
    before = await snapshot(client)
    with pytest.raises(ConflictError) as ei:
        await alice.push(app_name, V3, "yaml", base_revision=base.revision)
    e = ei.value
    assert (e.base_revision, e.current_revision, e.current_version) == (base.revision, won.revision, 2)
    assert "by bob: \"bob's\"" in str(e) and "nothing was stored" in str(e)
    assert await snapshot(client) == before
    # a first push "based on nothing" conflicts once something is published
    with pytest.raises(ConflictError):
        await alice.push(app_name, V3, "yaml", base_revision=0)


async def test_racing_pushes_are_never_lost_silently(client: Client, app_name: str) -> None:
    """Pushes racing from one base: the txn's compare lets exactly one win per base; every
    other gets ConflictError, and each winner is in the history."""
    stores = [ConfigStore(client, author=f"p{i}") for i in range(6)]
    base = await stores[0].push(app_name, V1, "yaml")
    results = await asyncio.gather(
        *(s.push(app_name, f"name: api\nwriter: {i}\n", "yaml", base_revision=base.revision)
          for i, s in enumerate(stores)), return_exceptions=True)
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1 and len(losses) == 5
    assert all(isinstance(e, ConflictError) for e in losses)
    hist = await stores[0].history(app_name)
    assert [v.revision for v in hist] == [base.revision, wins[0].revision]
    # without an explicit base each push reads then compares: whatever interleaving, every
    # push either lands in the history or raises
    results = await asyncio.gather(
        *(s.push(app_name, f"name: api\nround2: {i}\n", "yaml") for i, s in enumerate(stores)),
        return_exceptions=True)
    landed = {r.revision for r in results if not isinstance(r, BaseException)}
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException))
    assert landed
    hist = await stores[0].history(app_name)
    assert {v.revision for v in hist[2:]} == landed
    assert [v.version for v in hist] == list(range(1, len(hist) + 1))


async def test_history_and_rollback_outlive_compaction(client: Client, app_name: str) -> None:
    store = ConfigStore(client, author="ops")
    v1 = await store.push(app_name, V1, "yaml", message="one")
    v2 = await store.push(app_name, V2, "yaml", message="two")
    v3 = await store.push(app_name, V3, "yaml", message="three")
    await client.put(b"unrelated", b"x")  # move past v3, then compact everything
    rev = (await client.get(b"unrelated")).header.revision
    await client.compact(rev, physical=True)
    hist = await store.history(app_name)
    assert [(v.version, v.revision, v.message) for v in hist] == [
        (1, v1.revision, "one"), (2, v2.revision, "two"), (3, v3.revision, "three")]
    assert "-  pool: 5\n+  pool: 10\n" in await store.diff(app_name, v1.revision, v2.revision)

    rb = await store.rollback(app_name, v1.revision)
    assert (rb.version, rb.rollback_of, rb.text, rb.data) == (4, v1.revision, V1, v1.data)
    assert rb.message == f"rollback to revision {v1.revision} (version 1)"
    assert rb.base_revision == v3.revision
    cur = await store.current(app_name)
    assert (cur.revision, cur.data) == (rb.revision, {"name": "api", "db": {"pool": 5}})
    # a rollback is guarded by the same compare-and-swap
    with pytest.raises(ConflictError):
        await store.rollback(app_name, v2.revision, base_revision=v3.revision)
    # and refuses a revision that was never published, storing nothing
    before = await snapshot(client)
    with pytest.raises(RevisionNotFoundError):
        await store.rollback(app_name, v1.revision + 1000)
    # a schema given to rollback is checked against the old version
    strict = load_schema(json.dumps({"type": "object", "required": ["host"]}))
    with pytest.raises(SchemaValidationError):
        await store.rollback(app_name, v2.revision, schema=strict)
    assert await snapshot(client) == before
