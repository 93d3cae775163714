"""`meshkit ctl make-mirror` (and defrag's progress) against the real etcdctl 3.4.

The two tools mirror the same source at the same time, each into its own fresh
destination of one kind, while the source changes: the destinations must end equal,
key for key and revision for revision (etcdctl puts each base key, then applies each
source revision as one txn), and hold what the source holds. Both directions run:
meshkit's server -> the real etcd, and the real etcd -> meshkit's server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import (
    ETCD,
    ETCDCTL,
    ServerProc,
    free_ports,
    require_reference_binaries,
    start_etcd,
    start_meshkit,
    wait_port,
)
from tests.tools.ctl.harness import CTL, decode, env_for, normalise

pytestmark = pytest.mark.etcd


@dataclass
class Servers:
    src: dict[str, ServerProc]  # by kind
    dst: dict[str, list[ServerProc]]  # two fresh destinations of each kind
    tmp: Path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    require_reference_binaries()
    tmp = tmp_path_factory.mktemp("mirror")
    plan: list[tuple[str, str]] = [("src", "etcd"), ("src", "meshkit"), ("dst", "etcd"), ("dst", "etcd"),
                                   ("dst", "meshkit"), ("dst", "meshkit")]
    started: list[ServerProc] = []

    def start(i: int) -> ServerProc:
        role, kind = plan[i]
        d = tmp / f"{role}-{kind}-{i}"
        d.mkdir()
        return (start_etcd if kind == "etcd" else start_meshkit)(d)

    try:
        with ThreadPoolExecutor(len(plan)) as pool:
            futs = [pool.submit(start, i) for i in range(len(plan))]
            for f in futs:
                started.append(f.result())
        by = list(zip(plan, started, strict=True))
        yield Servers({k: sp for (r, k), sp in by if r == "src"},
                      {k: [sp for (r, kk), sp in by if r == "dst" and kk == k] for k in ("etcd", "meshkit")}, tmp)
    finally:
        for sp in started:
            sp.stop()


def etcdctl(sp: ServerProc | str, *args: str, stdin: str | None = None) -> str:
    assert ETCDCTL is not None
    ep = sp if isinstance(sp, str) else sp.endpoint
    p = subprocess.run([ETCDCTL, f"--endpoints={ep}", *args], input=(stdin or "").encode(), capture_output=True,
                       env=env_for(), timeout=30, check=False)
    assert p.returncode == 0, (args, p)
    return decode(p.stdout)


def dump(sp: ServerProc) -> dict[str, Any]:
    """Everything a destination holds: revision, and each key's value, revisions, version."""
    doc = json.loads(etcdctl(sp, "get", "", "--prefix", "-w", "json"))
    return {"revision": doc["header"]["revision"],
            "kvs": [(kv["key"], kv.get("value", ""), kv["create_revision"], kv["mod_revision"], kv["version"])
                    for kv in doc.get("kvs", [])]}


def contents(sp: ServerProc, prefix: str = "") -> dict[str, str]:
    doc = json.loads(etcdctl(sp, "get", prefix, "--prefix", "-w", "json"))
    import base64

    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in doc.get("kvs", [])}


class Mirror:
    """One make-mirror process; stdout and stderr to files."""

    def __init__(self, tool: str, src: ServerProc, dst: ServerProc, flags: list[str], tmp: Path,
                 stderr: int | None = None) -> None:
        assert ETCDCTL is not None
        base = [ETCDCTL] if tool == "etcdctl" else list(CTL)
        self.tool = tool
        self.out_path = tmp / f"{tool}-{dst.client_port}.out"
        self.err_path = tmp / f"{tool}-{dst.client_port}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([*base, f"--endpoints={src.endpoint}", "make-mirror", *flags, dst.endpoint],
                                         stdout=out, stderr=stderr if stderr is not None else err, env=env_for(),
                                         stdin=subprocess.DEVNULL)

    def stop(self) -> int | None:
        """SIGTERM; the exit code if it had already ended by itself."""
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return code

    @property
    def out(self) -> str:
        return decode(self.out_path.read_bytes())

    @property
    def err(self) -> str:
        return decode(self.err_path.read_bytes())


def wait_for(what: str, cond: Callable[[], bool], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def expected(src: ServerProc, prefix: str, dest_prefix: str) -> dict[str, str]:
    """What a mirror of ``prefix`` holds: Go's strings.Replace(key, prefix, dest, 1)."""
    return {k.replace(prefix, dest_prefix, 1): v for k, v in contents(src, prefix).items()}


def wipe(*sps: ServerProc) -> None:
    for sp in sps:
        etcdctl(sp, "del", "", "--prefix")


BASE = [("mm/a", "1"), ("mm/b", "two words"), ("mm/c", "3"), ("mm/x/mm/y", "prefix twice"),
        ("other", "outside"), ("mm/", "the prefix itself"), ("mmz", "not under mm/")]


def updates(src: ServerProc) -> None:
    """Changes while mirroring: single puts and deletes, and revisions with several events."""
    etcdctl(src, "put", "mm/d", "4")
    etcdctl(src, "put", "mm/a", "1 again")
    etcdctl(src, "del", "mm/b")
    etcdctl(src, "put", "other2", "outside")
    etcdctl(src, "txn", stdin='value("mm/c") = "3"\n\nput mm/c 33\nput mm/e 5\ndel mm/d\n\nput mm/f 6\n\n')
    lease = etcdctl(src, "lease", "grant", "100").split()[1]
    etcdctl(src, "put", "mm/leased", "L", f"--lease={lease}")
    etcdctl(src, "del", "mm/x/", "--prefix")  # several deletes in one revision
    etcdctl(src, "put", "mm/g", "7")


def run_pair(s: Servers, src_kind: str, dst_kind: str, flags: list[str], prefix: str, dest_prefix: str,
             base: list[tuple[str, str]], tmp: Path) -> tuple[Mirror, Mirror]:
    src = s.src[src_kind]
    da, db = s.dst[dst_kind]
    wipe(src, da, db)
    for k, v in base:
        etcdctl(src, "put", k, v)
    mirrors = (Mirror("etcdctl", src, da, flags, tmp), Mirror("meshkit", src, db, flags, tmp))
    try:
        want = expected(src, prefix, dest_prefix)
        wait_for("the base copy", lambda: contents(da) == want and contents(db) == want)
        assert f"{dest_prefix}x/mm/y" in want  # only the first "mm/" of a key is replaced
        updates(src)
        want = expected(src, prefix, dest_prefix)
        wait_for("the updates", lambda: contents(da) == want and contents(db) == want)
        assert f"{dest_prefix}c" in want and f"{dest_prefix}x/mm/y" not in want
    finally:
        codes = [m.stop() for m in mirrors]
    assert codes == [None, None], (codes, mirrors[0].err, mirrors[1].err)
    # revision for revision: both destinations saw the same puts and txns
    assert dump(da) == dump(db)
    return mirrors


@pytest.mark.parametrize(("src_kind", "dst_kind"), [("meshkit", "etcd"), ("etcd", "meshkit")])
def test_mirror_prefix_to_dest_prefix(servers: Servers, src_kind: str, dst_kind: str, tmp_path: Path) -> None:
    a, b = run_pair(servers, src_kind, dst_kind, ["--prefix=mm/", "--dest-prefix=copy/"], "mm/", "copy/",
                    BASE, tmp_path)
    for m in (a, b):  # quiet before its first 30-second report, nothing on stderr
        assert normalise_out(m.out) == "" and normalise_out(m.err) == "", (m.tool, m.out, m.err)


def normalise_out(text: str) -> str:
    from tests.tools.ctl.harness import Result

    return normalise(Result(0, text, "")).out


def test_mirror_no_dest_prefix_and_whole_keyspace(servers: Servers, tmp_path: Path) -> None:
    # --no-dest-prefix: "mm/a" lands as "a" (the first "mm/" of a key is cut; "mm/"
    # itself would become the empty key, which no server takes)
    (tmp_path / "1").mkdir()
    run_pair(servers, "etcd", "meshkit", ["--prefix=mm/", "--no-dest-prefix"], "mm/", "",
             [kv for kv in BASE if kv[0] != "mm/"], tmp_path / "1")
    # no prefix: the whole key space, more than one page (1000 keys) of base
    many = [(f"bulk/{i:05d}", f"v{i}") for i in range(1100)]
    src = servers.src["meshkit"]
    da, db = servers.dst["etcd"]
    wipe(src, da, db)
    _bulk_put(src, many)
    (tmp_path / "2").mkdir()
    mirrors = (Mirror("etcdctl", src, da, [], tmp_path / "2"), Mirror("meshkit", src, db, [], tmp_path / "2"))
    try:
        want = contents(src)
        assert len(want) == 1100
        wait_for("the base copy of 1100 keys", lambda: contents(da) == want and contents(db) == want, 60)
        etcdctl(src, "del", "bulk/000", "--prefix")  # 100 deletes in one revision: one txn
        want = contents(src)
        wait_for("the delete", lambda: contents(da) == want and contents(db) == want)
    finally:
        codes = [m.stop() for m in mirrors]
    assert codes == [None, None], codes
    assert dump(da) == dump(db)


def _bulk_put(sp: ServerProc, kvs: list[tuple[str, str]]) -> None:
    import asyncio

    from meshkit.client import Client

    async def go() -> None:
        async with Client([sp.endpoint], timeout=10) as c:
            sem = asyncio.Semaphore(32)

            async def one(k: str, v: str) -> None:
                async with sem:
                    await c.put(k.encode(), v.encode())

            await asyncio.gather(*(one(k, v) for k, v in kvs))

    asyncio.run(go())


def test_mirror_dest_refuses_large_txn(servers: Servers, tmp_path: Path) -> None:
    """A source revision with more events than the destination takes in one txn
    (etcd's --max-txn-ops, 128): both tools stop with the destination's error."""
    src = servers.src["meshkit"]
    da, db = servers.dst["etcd"]
    wipe(src, da, db)
    _bulk_put(src, [(f"big/{i:04d}", "v") for i in range(200)])
    mirrors = (Mirror("etcdctl", src, da, ["--prefix=big/"], tmp_path),
               Mirror("meshkit", src, db, ["--prefix=big/"], tmp_path))
    try:
        wait_for("the base copy", lambda: len(contents(da)) == 200 and len(contents(db)) == 200)
        etcdctl(src, "del", "big/", "--prefix")
        wait_for("both to stop", lambda: all(m.proc.poll() is not None for m in mirrors))
    finally:
        codes = [m.stop() for m in mirrors]
    assert codes == [1, 1], codes
    errs = [normalise_out(m.err) for m in mirrors]
    assert errs[0] == errs[1] == "Error: etcdserver: too many operations in txn request\n", errs


@pytest.mark.slow
def test_mirror_reports_count_every_30s(servers: Servers, tmp_path: Path) -> None:
    """etcdctl prints the number of keys mirrored (base puts plus events) every 30 s."""
    src = servers.src["etcd"]
    da, db = servers.dst["meshkit"]
    wipe(src, da, db)
    for k, v in BASE:
        etcdctl(src, "put", k, v)
    started = time.monotonic()
    mirrors = (Mirror("etcdctl", src, da, ["--prefix=mm/"], tmp_path),
               Mirror("meshkit", src, db, ["--prefix=mm/"], tmp_path))
    try:
        want = expected(src, "mm/", "mm/")
        wait_for("the base copy", lambda: contents(da) == want and contents(db) == want)
        updates(src)  # 5 base keys + 9 events under mm/
        want = expected(src, "mm/", "mm/")
        wait_for("the updates", lambda: contents(da) == want and contents(db) == want)
        time.sleep(max(0.0, started + 32 - time.monotonic()))
        wait_for("the first report", lambda: all(m.out for m in mirrors), 5)
    finally:
        for m in mirrors:
            m.stop()
    assert [m.out for m in mirrors] == ["14\n", "14\n"], [m.out for m in mirrors]


# ---------------------------------------------------------------- a terminal on stderr


def _on_tty(argv: list[str], stop_when: Callable[[subprocess.Popen[bytes]], bool],
            limit: float = 30.0) -> tuple[int, bytes, bytes]:
    """Run with stderr on a pseudo-terminal and stdout a pipe; SIGINT once ``stop_when``.
    The exit code, stdout, and what the terminal got."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                            env=env_for())
    os.close(slave)
    tty = b""
    deadline = time.monotonic() + limit
    stopped = False
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    tty += os.read(master, 65536)
                except OSError:  # the child closed its end
                    break
            if proc.poll() is not None:
                continue
            if not stopped and stop_when(proc):
                time.sleep(0.3)
                proc.send_signal(signal.SIGINT)
                stopped = True
        out, _ = proc.communicate(timeout=10)
        return proc.returncode, out, tty
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


def test_progress_on_a_terminal_only(servers: Servers, tmp_path: Path) -> None:
    """make-mirror and defrag draw a tqdm bar on stderr when it is a terminal; stdout
    stays what etcdctl prints (without a terminal stderr stays empty: the tests above)."""
    src = servers.src["etcd"]
    _, db = servers.dst["meshkit"]
    wipe(src, db)
    for k, v in BASE:
        etcdctl(src, "put", k, v)
    want = expected(src, "mm/", "mm/")
    _, out, tty = _on_tty([*CTL, f"--endpoints={src.endpoint}", "make-mirror", "--prefix=mm/", db.endpoint],
                          lambda p: contents(db) == want)
    assert contents(db) == want
    text = tty.decode("utf-8", "replace")
    assert "make-mirror" in text and "5 keys" in text, text
    assert out == b"", out
    # defrag: the same stdout as etcdctl's, the bar only on the terminal
    code, out, tty = _on_tty([*CTL, f"--endpoints={src.endpoint}", "defrag"], lambda p: False)
    assert code == 0, (out, tty)
    assert out.decode() == etcdctl(src, "defrag") == f"Finished defragmenting etcd member[{src.endpoint}]\n"
    assert "defragmenting" in tty.decode("utf-8", "replace"), tty


# ---------------------------------------------------------------- a TLS destination


@pytest.fixture(scope="module")
def tls_dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from tests.server.tls.certs import make_certs

    require_reference_binaries()
    assert ETCD is not None
    tmp = tmp_path_factory.mktemp("mirror-tls")
    certs = make_certs(tmp / "certs")
    cport, pport = free_ports(2)
    with open(tmp / "etcd.log", "wb") as log:
        proc = subprocess.Popen([
            ETCD, "--name", "tls", "--data-dir", str(tmp / "data"),
            "--listen-client-urls", f"https://127.0.0.1:{cport}", "--advertise-client-urls", f"https://127.0.0.1:{cport}",
            "--listen-peer-urls", f"http://127.0.0.1:{pport}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-cluster", f"tls=http://127.0.0.1:{pport}",
            "--cert-file", str(certs.server_cert), "--key-file", str(certs.server_key),
            "--trusted-ca-file", str(certs.ca), "--client-cert-auth",
        ], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        wait_port(cport, proc=proc)
        yield certs, f"https://127.0.0.1:{cport}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_mirror_to_a_tls_destination(servers: Servers, tls_dest: tuple[Any, str], tmp_path: Path) -> None:
    certs, url = tls_dest
    assert ETCDCTL is not None
    src = servers.src["meshkit"]
    wipe(src)
    for k, v in BASE:
        etcdctl(src, "put", k, v)
    tls = [f"--cacert={certs.ca}", f"--cert={certs.client_cert}", f"--key={certs.client_key}"]
    got = {}
    for tool, dest_prefix in (("etcdctl", "a/"), ("meshkit", "b/")):
        base = [ETCDCTL] if tool == "etcdctl" else list(CTL)
        argv = [*base, f"--endpoints={src.endpoint}", "make-mirror", "--prefix=mm/", f"--dest-prefix={dest_prefix}",
                f"--dest-cacert={certs.ca}", f"--dest-cert={certs.client_cert}", f"--dest-key={certs.client_key}",
                url]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_for())
        try:
            def copied(p: str = dest_prefix) -> bool:
                return bool(json.loads(etcdctl(url, *tls, "get", p, "--prefix", "--keys-only", "-w", "json"))
                            .get("count", 0) == 5)

            wait_for(f"{tool}'s copy over TLS", copied)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        got[tool] = (out, normalise_out(decode(err)))
        assert got[tool] == (b"", ""), got
    a = etcdctl(url, *tls, "get", "a/", "--prefix").replace("a/", "")
    b = etcdctl(url, *tls, "get", "b/", "--prefix").replace("b/", "")
    assert a == b and "two words" in a
