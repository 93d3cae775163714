"""Restarting `meshkit server` on an existing data dir: a torn WAL tail is cut and
reported, a corrupt record in the middle stops the start with one clear line and
touches nothing, and a restart replays only the WAL tail after the snapshot or the
store's consistent index."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import pytest

from meshkit.client import Client
from meshkit.server.snap import Snapshotter
from meshkit.server.wal import WAL, SnapshotMark
from meshkit.server.wal import record as rec
from tests.server.conftest import (
    Procs,
    kill9,
    log_text,
    meshkit_cmd,
    restart_line,
    run_meshkit,
    stop_clean,
    wait_ready,
)
from tests.support.procs import ServerProc, start_etcd, start_meshkit

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ [DIWEF] \| ")


def wal_segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "member" / "wal").glob("*.wal"))


def records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, payload length, type) of each record of a segment."""
    out, off = [], 0
    while off < len(data):
        _, length, rtype = rec.HEADER.unpack_from(data, off)
        out.append((off, length, rtype))
        off += rec.HEADER_SIZE + length
    assert off == len(data)
    return out


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


async def write_keys(endpoint: str, n: int, prefix: str = "k", concurrency: int = 1) -> dict[bytes, tuple[bytes, int]]:
    """Put n distinct keys; returns key -> (value, acknowledged revision)."""
    acked: dict[bytes, tuple[bytes, int]] = {}
    async with Client([endpoint], timeout=10.0) as c:
        async def worker(w: int) -> None:
            for i in range(w, n, concurrency):
                k, v = f"{prefix}/{i:05d}".encode(), f"value-{i}".encode()
                acked[k] = (v, (await c.put(k, v)).header.revision)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return acked


async def assert_all_there(endpoint: str, acked: dict[bytes, tuple[bytes, int]]) -> None:
    async with Client([endpoint], timeout=10.0) as c:
        r = await c.get(b"\0", from_key=True)
        have = {kv.key: (kv.value, kv.mod_revision) for kv in r.kvs}
        missing = {k: v for k, v in acked.items() if have.get(k) != v}
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {list(missing.items())[:3]}"
        assert r.header.revision >= max(rev for _, rev in acked.values())
        # A few reads at the acknowledged revision, too.
        for k, (v, rev) in list(acked.items())[:: max(1, len(acked) // 20)]:
            kv = (await c.get(k, revision=rev)).kvs[0]
            assert (kv.value, kv.mod_revision) == (v, rev)


def _torn_header() -> bytes:
    return b"\x13\x37\x00\x00\x2a\x00\x00"  # 7 bytes: less than a record header


def _torn_record() -> bytes:
    # A whole entry-record header announcing 200 payload bytes; only 50 made it.
    head = rec.LEN_TYPE_ENTRY.pack(200, rec.REC_ENTRY, 2, 999_999, 0)
    return rec.CRC.pack(0xDEADBEEF) + head + b"\xab" * (50 - rec.ENTRY.size)


def _bad_crc_then_zeros() -> bytes:
    # A complete record with a wrong CRC followed by preallocated zero bytes.
    payload = rec.ENTRY.pack(2, 999_999, 0) + b"half-written"
    head = rec.LEN_TYPE.pack(len(payload), rec.REC_ENTRY)
    return rec.CRC.pack(0x01020304) + head + payload + bytes(4096)


def _zeros() -> bytes:
    return bytes(8192)


@pytest.mark.parametrize("garbage", [_torn_header, _torn_record, _bad_crc_then_zeros, _zeros],
                         ids=["partial-header", "partial-record", "bad-crc-then-zeros", "zeros"])
async def test_torn_wal_tail_is_truncated(procs: Procs, garbage: object) -> None:
    sp = await procs.start_ready()
    acked = await write_keys(sp.endpoint, 40)
    stop_clean(sp)
    seg = wal_segments(sp.data_dir)[-1]
    before = seg.read_bytes()
    tail = garbage()  # type: ignore[operator]
    append(seg, tail)

    sp = await procs.restart_ready(sp)
    warning = rf" W \| server: wal: truncated a torn tail of {len(tail)} bytes$"
    assert re.search(warning, log_text(sp), re.M), log_text(sp)
    await assert_all_there(sp.endpoint, acked)
    async with Client([sp.endpoint]) as c:  # and it takes writes after the cut
        r = await c.put(b"after", b"1")
        assert r.header.revision == max(rev for _, rev in acked.values()) + 1
    stop_clean(sp)
    after = seg.read_bytes()
    assert after[: len(before)] == before  # the valid records were kept as they were
    assert tail not in after
    records(after)  # and the segment parses from end to end


async def test_corrupt_record_in_the_middle_stops_the_start(procs: Procs) -> None:
    sp = await procs.start_ready()
    acked = await write_keys(sp.endpoint, 40)
    stop_clean(sp)
    segs = wal_segments(sp.data_dir)
    assert len(segs) == 1
    seg = segs[0]
    data = bytearray(seg.read_bytes())
    entries = [r for r in records(bytes(data)) if r[2] == rec.REC_ENTRY and r[1] > rec.ENTRY.size]
    assert len(entries) >= 30
    off, _, _ = entries[2]  # an early put; dozens of records follow it
    data[off + rec.HEADER_SIZE + rec.ENTRY.size + 3] ^= 0x40
    seg.write_bytes(data)
    digest = tree_digest(sp.data_dir)

    res = run_meshkit(meshkit_cmd(sp.data_dir), cwd=procs.tmp)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out, out
    problems = [line for line in out.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(problems) == 1, out
    assert str(seg) in problems[0] and f"offset {off}" in problems[0], problems[0]
    assert "corrupt" in problems[0]
    assert tree_digest(sp.data_dir) == digest  # nothing on disk was touched

    # Undo the damage: the member starts again with everything.
    data[off + rec.HEADER_SIZE + rec.ENTRY.size + 3] ^= 0x40
    seg.write_bytes(data)
    sp = await procs.restart_ready(sp)
    await assert_all_there(sp.endpoint, acked)


@pytest.mark.slow
async def test_restart_after_snapshots_replays_only_the_tail(procs: Procs) -> None:
    sp = await procs.start_ready("--snapshot-count", "1000")
    acked = await write_keys(sp.endpoint, 5000, concurrency=64)
    await asyncio.sleep(0.3)
    snaps = [int(m) for m in re.findall(r"snapshot at index (\d+)", log_text(sp))]
    assert len(snaps) >= 4, log_text(sp)
    kill9(sp)

    mark = Snapshotter(sp.data_dir / "member" / "snap").load_newest()
    assert mark is not None and mark.index == snaps[-1]
    # What a restart reads back from the WAL: only the entries after the snapshot.
    wal, replay = WAL.open(sp.data_dir / "member" / "wal", from_snapshot=SnapshotMark(mark.index, mark.term))
    wal.close()
    assert not replay.entries or replay.entries[0].index == mark.index + 1
    assert len(replay.entries) <= 1000 + 100

    sp = await procs.restart_ready(sp, "--snapshot-count", "1000")
    applied, to_replay = restart_line(sp)
    assert applied >= mark.index
    assert to_replay <= 1000 + 100
    await assert_all_there(sp.endpoint, acked)
    stop_clean(sp)


@pytest.mark.slow
async def test_restart_without_snapshot_replays_from_the_consistent_index(procs: Procs) -> None:
    sp = await procs.start_ready()
    acked = await write_keys(sp.endpoint, 300, concurrency=8)
    await asyncio.sleep(0.5)  # idle: the backend batch is committed (every 100 ms)
    kill9(sp)
    sp = await procs.restart_ready(sp)
    assert "snapshot at index" not in log_text(sp)
    applied, to_replay = restart_line(sp)
    assert applied >= 300
    assert to_replay <= 2
    await assert_all_there(sp.endpoint, acked)
    stop_clean(sp)


@pytest.mark.parametrize("server", ["etcd", "meshkit"])
async def test_restart_with_another_peer_url_keeps_serving(tmp_path: Path, server: str) -> None:
    """A restarted single member whose --initial-advertise-peer-urls changed: etcd keeps
    the membership it stored (initial-cluster flags only matter at bootstrap) and serves."""
    start = start_etcd if server == "etcd" else start_meshkit
    sp: ServerProc = start(tmp_path)
    try:
        acked = await write_keys(sp.endpoint, 5)
    finally:
        sp.stop()
    # Same data dir; new client and peer ports (start_* always picks free ones).
    if server == "etcd":
        sp2 = start_etcd(tmp_path)
    else:
        sp2 = start_meshkit(tmp_path, data_dir=sp.data_dir)
    try:
        await wait_ready(sp2.endpoint)
        await assert_all_there(sp2.endpoint, acked)
        async with Client([sp2.endpoint]) as c:
            await c.put(b"after", b"1")
            # Still one member, with the peer URL it was created with.
            members = (await c.member_list()).members
            assert len(members) == 1
            assert members[0].peer_urls == [f"http://127.0.0.1:{sp.peer_port}"]
    finally:
        sp2.stop()
