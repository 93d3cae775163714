"""The committed generated modules must be exactly what the .proto sources give."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_modules_match_sources(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)], check=True)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    # (bytecode caches are no sources: __pycache__ exists once anything imported them)
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "meshkit" / "api").rglob("*_pb2*.py*")
                       if "__pycache__" not in p.parts)
    assert fresh == committed, "a .proto has no generated module, or a generated module has no .proto"
    stale = [str(rel) for rel in fresh if (tmp_path / rel).read_bytes() != (ROOT / rel).read_bytes()]
    assert not stale, f"regenerate with `python scripts/gen_protos.py`: stale {stale}"


def test_wire_names_are_etcds() -> None:
    from meshkit.api.etcdserverpb import rpc_pb2
    from meshkit.api.v3electionpb import v3election_pb2
    from meshkit.api.v3lockpb import v3lock_pb2

    d = rpc_pb2.DESCRIPTOR
    assert {s.full_name for s in d.services_by_name.values()} == {
        "etcdserverpb.KV", "etcdserverpb.Watch", "etcdserverpb.Lease", "etcdserverpb.Cluster",
        "etcdserverpb.Maintenance", "etcdserverpb.Auth",
    }
    assert v3lock_pb2.DESCRIPTOR.services_by_name["Lock"].full_name == "v3lockpb.Lock"
    assert v3election_pb2.DESCRIPTOR.services_by_name["Election"].full_name == "v3electionpb.Election"
    # A few field numbers clients depend on.
    f = rpc_pb2.RangeRequest.DESCRIPTOR.fields_by_name
    assert (f["max_create_revision"].number, f["count_only"].number) == (13, 9)
    assert rpc_pb2.Compare.DESCRIPTOR.fields_by_name["range_end"].number == 64
    assert rpc_pb2.WatchResponse.DESCRIPTOR.fields_by_name["events"].number == 11
