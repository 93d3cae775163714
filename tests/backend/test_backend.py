from __future__ import annotations

from pathlib import Path

import pytest

from meshkit.server.backend import Backend, schema


def _row(main: int, sub: int = 0, key: bytes = b"k", value: bytes = b"v", tomb: int = 0):
    return (main, sub, key, main, main, 1, value, 0, tomb)


def test_open_creates_file_and_parents(tmp_path: Path) -> None:
    p = tmp_path / "member" / "snap" / "db.sqlite"
    be = Backend.open(p)
    assert p.exists()
    assert be.consistent_index == 0
    assert be.get_meta_int(schema.META_SCHEMA_VERSION) == schema.SCHEMA_VERSION
    be.close()
    be.close()  # idempotent


def test_kv_rows_visible_before_commit_and_ordered(tmp_path: Path) -> None:
    be = Backend.open(tmp_path / "db")
    be.put_kvs([_row(3), _row(2, 0), _row(2, 1, b"j")])
    assert be.get_kv(2, 1) == _row(2, 1, b"j")
    assert be.get_kvs([(3, 0), (9, 9), (2, 0)]) == [_row(3), None, _row(2, 0)]
    assert [r[:2] for r in be.iter_kv()] == [(2, 0), (2, 1), (3, 0)]
    assert [r[:2] for r in be.iter_kv(3, 3)] == [(3, 0)]
    be.delete_kvs([(2, 0)])
    assert be.kv_count() == 2
    be.close()


def test_commit_is_atomic_with_consistent_index(tmp_path: Path) -> None:
    p = tmp_path / "db"
    be = Backend.open(p)
    be.put_kv(_row(2))
    be.bucket_put("lease", b"\x01", b"lease-1")
    be.set_consistent_index(7)
    be.commit()
    be.put_kv(_row(3))
    be.bucket_put("lease", b"\x02", b"lease-2")
    be.set_consistent_index(8)
    be.close(commit=False)  # crash: the open batch is lost

    be = Backend.open(p)
    assert be.consistent_index == 7
    assert [r[0] for r in be.iter_kv()] == [2]
    assert be.bucket_items("lease") == [(b"\x01", b"lease-1")]
    be.close()


def test_close_commits(tmp_path: Path) -> None:
    p = tmp_path / "db"
    be = Backend.open(p)
    be.put_kv(_row(2))
    be.set_consistent_index(3)
    be.close()
    be = Backend.open(p)
    assert be.consistent_index == 3 and be.kv_count() == 1
    be.close()


def test_buckets_and_meta(tmp_path: Path) -> None:
    be = Backend.open(tmp_path / "db")
    assert be.get_meta("nope") is None
    be.set_meta_int("x", -5)
    assert be.get_meta_int("x") == -5
    be.bucket_put("members", b"b", b"2")
    be.bucket_put("members", b"a", b"1")
    be.bucket_put("auth", b"a", b"x")
    assert be.bucket_items("members") == [(b"a", b"1"), (b"b", b"2")]
    assert be.bucket_get("auth", b"a") == b"x"
    be.bucket_delete("members", b"a")
    assert be.bucket_get("members", b"a") is None
    be.close()


def test_duplicate_revision_is_an_invariant_violation(tmp_path: Path) -> None:
    import sqlite3

    be = Backend.open(tmp_path / "db")
    be.put_kv(_row(2))
    be.put_kv(_row(2))
    with pytest.raises(sqlite3.IntegrityError):
        be.commit()


def test_size_and_defragment(tmp_path: Path) -> None:
    be = Backend.open(tmp_path / "db")
    be.put_kvs([_row(i, 0, b"k%d" % i, b"x" * 1000) for i in range(2, 2002)])
    be.commit()
    full = be.size()
    assert full >= 2_000_000 and be.size_in_use() <= full
    be.delete_kvs([(i, 0) for i in range(2, 2002)])
    be.commit()
    assert be.size_in_use() < full // 2
    be.defragment()
    assert be.size() < full // 2
    be.close()


def test_closed_backend_rejects_writes(tmp_path: Path) -> None:
    be = Backend.open(tmp_path / "db")
    be.close()
    with pytest.raises(RuntimeError):
        be.commit()
