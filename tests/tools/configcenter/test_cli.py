"""`meshkit config ...`: the commands, three watching processes, and etcd-auth roles."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshkit._internal.errors import PermissionDeniedError
from meshkit.cli.config import main
from meshkit.client import Client
from meshkit.configcenter import AppConfig, ConfigStore, role_commands
from tests.support.procs import ETCDCTL
from tests.tools.configcenter.conftest import Cluster
from tests.tools.configcenter.test_documents import SCHEMA

CLI = [sys.executable, "-m", "meshkit.cli.config"]


def run(cluster: Cluster, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["--endpoints", cluster.endpoint, *args])
    out, err = capsys.readouterr()
    return rc, out, err


def keys(cluster: Cluster) -> list[tuple[bytes, int]]:
    async def go() -> list[tuple[bytes, int]]:
        async with Client([cluster.endpoint]) as c:
            r = await c.get(b"/meshkit/config/", prefix=True)
            return [(kv.key, kv.mod_revision) for kv in r.kvs]
    return asyncio.run(go())


def test_cli_commands(shared_cluster: Cluster, app_name: str, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    c = shared_cluster
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "v1.yaml").write_text("name: api\ndb:\n  pool: 5\n")
    (tmp_path / "v2.json").write_text('{"name": "api", "db": {"pool": 9}}')
    (tmp_path / "bad.yaml").write_text("name: api\ndb: {pool: 5\n")
    (tmp_path / "big.yaml").write_text("name: api\ndb:\n  pool: 99\n")
    (tmp_path / "odd.txt").write_text("name=api\n")

    rc, out, _ = run(c, capsys, "push", app_name, str(tmp_path / "v1.yaml"), "--schema",
                     str(tmp_path / "schema.json"), "-m", "first", "--author", "alice")
    assert rc == 0 and out.startswith(f"pushed {app_name} version 1 at revision ")
    r1 = int(out.split()[-1])
    # flags after the command work too
    rc, out, _ = run(c, capsys, "push", app_name, str(tmp_path / "v2.json"), "-m", "second",
                     "--command-timeout", "4")
    assert rc == 0
    r2 = int(out.split()[-1])

    before = keys(c)
    for f, needle in (("bad.yaml", "not valid YAML"),
                      ("big.yaml", "$.db.pool: 99 is greater than the maximum of 50"),
                      ("odd.txt", "cannot tell the format")):
        rc, out, err = run(c, capsys, "push", app_name, str(tmp_path / f), "--schema",
                           str(tmp_path / "schema.json"))
        assert (rc, out) == (1, "")
        assert "refused, nothing was stored" in err and needle in err
    rc, _, err = run(c, capsys, "push", app_name, str(tmp_path / "v1.yaml"), "--base-revision", str(r1))
    assert rc == 3 and f"based on revision {r1}" in err and f"(revision {r2})" in err
    assert keys(c) == before

    rc, out, _ = run(c, capsys, "get", app_name)
    assert (rc, out) == (0, '{"name": "api", "db": {"pool": 9}}\n')
    rc, out, _ = run(c, capsys, "get", app_name, "--revision", str(r1), "-o", "json")
    got = json.loads(out)
    assert (got["version"], got["author"], got["data"]) == (1, "alice", {"name": "api", "db": {"pool": 5}})
    rc, out, _ = run(c, capsys, "history", app_name)
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "REVISION", "TIME", "AUTHOR", "MESSAGE"]
    assert [ln.split()[:2] for ln in lines[1:]] == [["1", str(r1)], ["2", str(r2)]]
    assert lines[1].split()[3:] == ["alice", "first"]
    rc, out, _ = run(c, capsys, "diff", app_name, str(r1), str(r2))
    assert rc == 0 and '-    "pool": 5\n+    "pool": 9\n' in out
    rc, out, _ = run(c, capsys, "rollback", app_name, str(r1), "-m", "back to 5")
    assert rc == 0 and out.startswith(f"rolled {app_name} back to revision {r1}: version 3 at revision ")
    rc, out, _ = run(c, capsys, "history", app_name, "-o", "json")
    hist = json.loads(out)
    assert [(h["version"], h["rollback_of"], h["message"]) for h in hist] == [
        (1, 0, "first"), (2, 0, "second"), (3, r1, "back to 5")]
    rc, out, _ = run(c, capsys, "get", app_name)
    assert out == "name: api\ndb:\n  pool: 5\n"
    rc, out, err = run(c, capsys, "rollback", app_name, "12345678")
    assert rc == 1 and "no version published at revision 12345678" in err
    rc, out, _ = run(c, capsys, "list", app_name.split("/")[0])
    assert app_name in out.splitlines()
    rc, out, _ = run(c, capsys, "roles", "prod/payments", "--reader", "app")
    assert out.splitlines()[-1] == "etcdctl user grant-role app config-read:prod/payments"
    rc, _, err = run(c, capsys, "get", "no-namespace")
    assert rc == 1 and "expected NAMESPACE/APP" in err
    assert main(["push"]) == 2


async def _line(proc: asyncio.subprocess.Process, within: float = 30.0) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), within)
    assert raw, "the watcher exited early"
    out: dict[str, Any] = json.loads(raw)
    return out


async def _cli(*args: str) -> str:
    p = await asyncio.create_subprocess_exec(*CLI, *args, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 30)
    assert p.returncode == 0, err.decode()
    return out.decode()


async def test_three_watching_processes(shared_cluster: Cluster, app_name: str,
                                        tmp_path: Path) -> None:
    """The issue's check: push, change and rollback while three processes watch; each sees
    every version in order and ends on the rolled-back one."""
    ep = shared_cluster.endpoint
    for n in (1, 2, 3):
        (tmp_path / f"v{n}.yaml").write_text(f"name: api\nstep: {n}\n")
    out = await _cli("--endpoints", ep, "push", app_name, str(tmp_path / "v1.yaml"), "-m", "v1")
    r1 = int(out.split()[-1])
    procs = [await asyncio.create_subprocess_exec(
        *CLI, "--endpoints", ep, "watch", app_name, "--count", "4",
        "--cache-file", str(tmp_path / f"cache{i}.json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(3)]
    try:
        firsts = await asyncio.gather(*(_line(p) for p in procs))
        assert all(f["revision"] == r1 and f["data"] == {"name": "api", "step": 1} for f in firsts)
        await _cli("--endpoints", ep, "push", app_name, str(tmp_path / "v2.yaml"), "-m", "v2")
        await _cli("--endpoints", ep, "push", app_name, str(tmp_path / "v3.yaml"), "-m", "v3")
        await _cli("--endpoints", ep, "rollback", app_name, str(r1))
        for p in procs:
            rest = [await _line(p) for _ in range(3)]
            assert await asyncio.wait_for(p.wait(), 15) == 0
            seen = [firsts[0], *rest]
            assert [s["version"] for s in seen] == [1, 2, 3, 4]
            assert [s["data"]["step"] for s in seen] == [1, 2, 3, 1]
            revs = [s["revision"] for s in seen]
            assert revs == sorted(revs) and len(set(revs)) == 4
            assert rest[-1]["rollback_of"] == r1 and rest[-1]["source"] == "cluster"
        for i in range(3):
            cache = json.loads((tmp_path / f"cache{i}.json").read_text())
            assert cache["record"]["version"] == 4
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


def _etcdctl(ep: str, *args: str, user: str | None = None) -> None:
    assert ETCDCTL is not None
    cmd = [ETCDCTL, "--endpoints", ep, *(["--user", user] if user else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=20,
                   env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})


async def test_namespace_roles_with_etcd_auth(cluster: Cluster, request: pytest.FixtureRequest,
                                              tmp_path: Path) -> None:
    """The documented etcdctl commands give apps read and publishers write on a namespace."""
    ep = cluster.endpoint
    root = "root:rootpw"
    await asyncio.to_thread(_etcdctl, ep, "user", "add", root, "--interactive=false")
    await asyncio.to_thread(_etcdctl, ep, "auth", "enable")
    for u in ("app:apppw", "alice:alicepw"):
        await asyncio.to_thread(_etcdctl, ep, "user", "add", u, "--interactive=false", user=root)
    for cmd in role_commands("prod/payments", readers=["app"], writers=["alice"]):
        await asyncio.to_thread(_etcdctl, ep, *cmd, user=root)

    name = "prod/payments/api"
    async with Client([ep], user="alice", password="alicepw") as alice_c:
        v1 = await ConfigStore(alice_c).push(name, "name: api\n", "yaml")
        assert v1.author == ConfigStore(alice_c).author
        with pytest.raises(PermissionDeniedError):  # outside the namespace
            await ConfigStore(alice_c).push("prod/billing/api", "name: b\n", "yaml")
    async with Client([ep], user="app", password="apppw") as app_c:
        async with AppConfig(name, client=app_c) as app:
            assert app.current == v1
            stream = app.changes()
            async with Client([ep], user="alice", password="alicepw") as alice_c:
                v2 = await ConfigStore(alice_c).push(name, "name: api2\n", "yaml")
            async with asyncio.timeout(10):
                assert await stream.__anext__() == v2
        with pytest.raises(PermissionDeniedError):  # apps cannot publish
            await ConfigStore(app_c).push(name, "name: evil\n", "yaml")
        with pytest.raises(PermissionDeniedError):
            async with AppConfig("prod/billing/api", client=app_c):
                pass
    async with Client([ep], user="root", password="rootpw") as root_c:
        assert (await ConfigStore(root_c).current(name)) == v2
    # the CLI passes the same credentials
    (tmp_path / "v3.yaml").write_text("name: api3\n")
    rc = await asyncio.to_thread(main, ["--endpoints", ep, "--user", "app:apppw", "push", name,
                                        str(tmp_path / "v3.yaml")])
    assert rc == 1
    rc = await asyncio.to_thread(main, ["--endpoints", ep, "--user", "alice:alicepw", "push", name,
                                        str(tmp_path / "v3.yaml")])
    assert rc == 0
