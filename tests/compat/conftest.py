from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import ServerProc, require_reference_binaries, start_etcd, start_meshkit


@dataclass
class Pair:
    etcd: ServerProc
    meshkit: ServerProc


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """The real etcd and `meshkit server`, both fresh, side by side."""
    require_reference_binaries()
    (tmp_path / "e").mkdir()
    (tmp_path / "m").mkdir()
    etcd = start_etcd(tmp_path / "e")
    try:
        mesh = start_meshkit(tmp_path / "m")
        try:
            yield Pair(etcd, mesh)
        finally:
            mesh.stop()
    finally:
        etcd.stop()
