"""--onetime against the real etcd and meshkit: consistent reads, staged writes, check_cmd,
reload, unchanged files, modes and backups, exit status, --noop, --sync-only."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

from meshkit.client import Client, Op
from meshkit.confd import Confd, ConfdConfig, fetch
from tests.support.procs import ServerProc
from tests.tools.confd.conftest import write_resource, write_template


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshkit.cli.confd", *args], capture_output=True,
                          text=True, timeout=60)


async def test_fetch_is_one_revision_across_transactions(client: Client, ns: str) -> None:
    # 200 prefixes: two transactions (128 ranges each at most), the second at the first's revision.
    await client.txn().then(*[Op.put(f"{ns}/k{i:03d}", "old") for i in range(100)]).commit()
    await client.txn().then(*[Op.put(f"{ns}/k{i:03d}", "old") for i in range(100, 200)]).commit()
    rev = (await client.get(f"{ns}/k000")).header.revision
    await client.txn().then(*[Op.put(f"{ns}/k{i:03d}", "new") for i in range(100)]).commit()
    await client.txn().then(*[Op.put(f"{ns}/k{i:03d}", "new") for i in range(100, 200)]).commit()
    keys = [f"{ns}/k{i:03d}" for i in range(200)]
    snap = await fetch(client, keys, strip_prefix=ns, revision=rev)
    assert snap.revision == rev and len(snap.data) == 200 and set(snap.data.values()) == {"old"}
    latest = await fetch(client, keys, strip_prefix=ns)
    assert set(latest.data.values()) == {"new"} and latest.revision == rev + 2
    assert "/k199" in latest.data  # prefix stripped like confd


async def test_render_is_consistent_under_concurrent_writes(client: Client, ns: str, tmp_path: Path) -> None:
    confdir = tmp_path / "confd"
    write_template(confdir, "all.tmpl", "{% for k in ls('/') %}{{ getv('/' ~ k) }}\n{% endfor %}")
    dest = tmp_path / "all.out"
    write_resource(confdir, "all.toml", {"src": "all.tmpl", "dest": str(dest), "prefix": ns,
                                         "keys": [f"/k{i:03d}" for i in range(150)]})
    stop = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop.is_set():  # ends when the renders are done
            n += 1
            await client.txn().then(*[Op.put(f"{ns}/k{i:03d}", str(n)) for i in range(75)]).commit()
            await client.txn().then(*[Op.put(f"{ns}/k{i:03d}", str(n)) for i in range(75, 150)]).commit()

    for lo in (0, 75):
        await client.txn().then(*[Op.put(f"{ns}/k{i:03d}", "0") for i in range(lo, lo + 75)]).commit()
    task = asyncio.create_task(writer())
    try:
        confd = Confd(client, ConfdConfig(str(confdir), mode="onetime"))
        for _ in range(8):
            [outcome] = await confd.run_once()
            assert outcome.ok, outcome.error
            values = dest.read_text().split()
            assert len(values) == 150
            # one revision: the two halves are written by separate txns, so a render
            # always holds one or two neighbouring values, split at k075, never a mix
            first, second = values[:75], values[75:]
            assert len(set(first)) == 1 and len(set(second)) == 1, values
            assert int(first[0]) - int(second[0]) in (0, 1)
            dest.unlink()
    finally:
        stop.set()
        await task


async def test_check_reload_unchanged_mode_backup(client: Client, ns: str, tmp_path: Path,
                                                  server: ServerProc) -> None:
    confdir = tmp_path / "confd"
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "app.conf"
    log = tmp_path / "reloads.log"
    write_template(confdir, "app.tmpl", "port={{ getv('/port') }}\n")
    write_resource(confdir, "app.toml", {
        "src": "app.tmpl", "dest": str(dest), "prefix": ns, "keys": ["/port"], "mode": "0640",
        # the check sees the staged file ({{.src}}), in the destination's directory
        "check_cmd": f"test \"$(dirname {{{{.src}}}})\" = {out} && grep -q '^port=[0-9]*$' {{{{.src}}}} "
                     "|| { echo bad config in {{.src}}; exit 1; }",
        "reload_cmd": f"echo reload >> {log}", "backup": True,
    })
    await client.put(f"{ns}/port", "80")
    eps = ["--endpoints", server.url, "--confdir", str(confdir), "--onetime"]
    r = cli(*eps)
    assert r.returncode == 0, r.stderr
    assert dest.read_text() == "port=80\n" and stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert log.read_text() == "reload\n"
    ino = dest.stat().st_ino

    # unchanged content, mode and owner: no write, no reload
    assert cli(*eps).returncode == 0
    assert dest.stat().st_ino == ino and log.read_text() == "reload\n"

    # a changed value: new file (renamed in: new inode), backup of the old, one more reload
    await client.put(f"{ns}/port", "81")
    assert cli(*eps).returncode == 0
    assert dest.read_text() == "port=81\n" and dest.stat().st_ino != ino
    assert (out / "app.conf.bak").read_text() == "port=80\n"
    assert log.read_text() == "reload\n" * 2

    # a bad value fails check_cmd: old file kept, no reload, output reported, exit 1,
    # no staged file left behind
    await client.put(f"{ns}/port", "eighty")
    r = cli(*eps)
    assert r.returncode == 1
    assert "check_cmd exited with status 1" in r.stderr and "bad config in" in r.stderr
    assert dest.read_text() == "port=81\n" and log.read_text() == "reload\n" * 2
    assert sorted(p.name for p in out.iterdir()) == ["app.conf", "app.conf.bak"]

    # --keep-stage-file keeps the rejected staged file for inspection
    r = cli(*eps, "--keep-stage-file")
    assert r.returncode == 1 and "staged file kept at" in r.stderr
    staged = [p for p in out.iterdir() if p.name.startswith(".app.conf.")]
    assert len(staged) == 1 and staged[0].read_text() == "port=eighty\n"

    # a mode change alone is a change
    await client.put(f"{ns}/port", "81")
    res = confdir / "conf.d" / "app.toml"
    res.write_text(res.read_text().replace('"0640"', '"0600"'))
    assert cli(*eps).returncode == 0
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600 and log.read_text() == "reload\n" * 3


async def test_one_failure_does_not_stop_the_others(client: Client, ns: str, tmp_path: Path,
                                                    server: ServerProc) -> None:
    confdir = tmp_path / "confd"
    write_template(confdir, "a.tmpl", "{{ getv('/a') }}")
    write_template(confdir, "missing.tmpl", "{{ getv('/not-there') }}")
    write_template(confdir, "broken.tmpl", "{% if %}")
    for name in ("a", "missing", "broken"):
        write_resource(confdir, f"{name}.toml", {"src": f"{name}.tmpl", "dest": str(tmp_path / name),
                                                 "prefix": ns, "keys": ["/"]})
    await client.put(f"{ns}/a", "A")
    r = cli("--endpoints", server.url, "--confdir", str(confdir), "--onetime")
    assert r.returncode == 1
    assert (tmp_path / "a").read_text() == "A"
    assert not (tmp_path / "missing").exists() and not (tmp_path / "broken").exists()
    assert "key does not exist: /not-there" in r.stderr and "broken.tmpl: line 1" in r.stderr


async def test_noop_and_sync_only(client: Client, ns: str, tmp_path: Path, server: ServerProc) -> None:
    confdir = tmp_path / "confd"
    dest = tmp_path / "f.conf"
    dest.write_text("a=1\nb=2\n")
    flag = tmp_path / "ran"
    write_template(confdir, "f.tmpl", "a=1\nb={{ getv('/b') }}\n")
    write_resource(confdir, "f.toml", {"src": "f.tmpl", "dest": str(dest), "prefix": ns, "keys": ["/b"],
                                       "check_cmd": f"touch {flag}", "reload_cmd": f"touch {flag}"})
    await client.put(f"{ns}/b", "3")
    eps = ["--endpoints", server.url, "--confdir", str(confdir), "--onetime"]
    r = cli(*eps, "--noop")
    assert r.returncode == 0, r.stderr
    assert f"--- {dest}\n+++ {dest}\n" in r.stdout and "-b=2\n+b=3\n" in r.stdout
    assert dest.read_text() == "a=1\nb=2\n" and not flag.exists()
    assert os.listdir(tmp_path).count("f.conf") == 1 and not any(
        p.startswith(".f.conf") for p in os.listdir(tmp_path))
    r = cli(*eps, "--sync-only")
    assert r.returncode == 0, r.stderr
    assert dest.read_text() == "a=1\nb=3\n" and not flag.exists()


def test_cli_flag_errors(tmp_path: Path) -> None:
    r = cli("--confdir", str(tmp_path), "--onetime", "--watch")
    assert r.returncode == 2 and "give one of" in r.stderr and "conf.d is not a directory" in r.stderr
    r = cli("-backend", "consul", "--confdir", str(tmp_path))
    assert r.returncode == 2 and "backend 'consul' is not supported" in r.stderr
