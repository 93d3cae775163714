"""The bbolt writer and reader on their own, checked by the real `etcdctl snapshot status`
(which runs bbolt's own `tx.Check()` over every page)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from meshkit.server.backend import bbolt
from tests.support.procs import ETCDCTL, require_reference_binaries


def _save(path: Path, buckets: dict[bytes, list[tuple[bytes, bytes]]]) -> bytes:
    f = io.BytesIO()
    size = bbolt.write_bbolt(f, buckets)
    data = f.getvalue()
    assert len(data) == size and size % bbolt.PAGE_SIZE == 0
    path.write_bytes(data + hashlib.sha256(data).digest())
    return data


def _etcdctl_status(path: Path) -> dict[str, int]:
    assert ETCDCTL is not None
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}, "ETCDCTL_API": "3"}
    p = subprocess.run([ETCDCTL, "snapshot", "status", str(path), "-w", "json"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    return dict(json.loads(p.stdout))


def _buckets(n_keys: int, big: int) -> dict[bytes, list[tuple[bytes, bytes]]]:
    keys = [(bbolt.rev_key(i + 2, 0), b"\x0a\x03k%02d" % (i % 100)) for i in range(n_keys)]
    return {
        b"key": keys,
        b"meta": [(b"consistent_index", (7).to_bytes(8, "big"))],
        b"alarm": [],
        b"lease": [(b"zz%06d" % i, b"v" * (i % 300)) for i in range(1000)] + [(b"~big", b"B" * big)],
        b"members": [],
    }


@pytest.mark.parametrize(("n_keys", "big"), [(0, 10), (5, 5000), (20000, 70000)])
def test_written_file_passes_bbolt_check_and_reads_back(tmp_path: Path, n_keys: int, big: int) -> None:
    require_reference_binaries()
    buckets = _buckets(n_keys, big)
    data = _save(tmp_path / "s.db", buckets)
    db = bbolt.read_bbolt(data)
    assert db.buckets == buckets
    ours = bbolt.snapshot_status(db)
    theirs = _etcdctl_status(tmp_path / "s.db")
    assert theirs == {"hash": ours.hash, "revision": ours.revision,
                      "totalKey": ours.total_key, "totalSize": ours.total_size}
    assert ours.revision == (n_keys + 1 if n_keys else 0)


def test_hash_check_and_errors() -> None:
    f = io.BytesIO()
    bbolt.write_bbolt(f, {b"key": [], b"meta": []})
    data = f.getvalue()
    blob = data + hashlib.sha256(data).digest()
    assert bbolt.verify_snapshot_hash(blob) == data
    with pytest.raises(bbolt.BoltFormatError, match="missing hash"):
        bbolt.verify_snapshot_hash(data)
    with pytest.raises(bbolt.BoltFormatError, match="does not match"):
        bbolt.verify_snapshot_hash(data + b"\0" * 32)
    with pytest.raises(bbolt.BoltFormatError, match="no valid bbolt meta"):
        bbolt.read_bbolt(b"\0" * len(data))
    with pytest.raises(ValueError, match="strictly increasing"):
        bbolt.write_bbolt(io.BytesIO(), {b"key": [(b"b", b""), (b"a", b"")]})


def test_one_corrupt_meta_falls_back_to_the_other() -> None:
    f = io.BytesIO()
    bbolt.write_bbolt(f, {b"key": [(bbolt.rev_key(2, 0), b"x")]})
    data = bytearray(f.getvalue())
    data[20] ^= 0xFF  # inside meta page 0
    assert bbolt.read_bbolt(bytes(data)).buckets[b"key"] == [(bbolt.rev_key(2, 0), b"x")]


def test_layout_helpers() -> None:
    assert bbolt.parse_rev_key(bbolt.rev_key(5, 2, True)) == (5, 2, True)
    fields = bbolt.parse_varint_fields(bbolt.marshal_lease(0x1234, 60, 42))
    assert fields == {1: 0x1234, 2: 60, 3: 42}
    assert bbolt.etcd_member_json(1, "a", ["http://p"], [], False) == b'{"id":1,"peerURLs":["http://p"],"name":"a"}'
