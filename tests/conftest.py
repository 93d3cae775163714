from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import ServerProc, start_etcd


@pytest.fixture
def real_etcd(tmp_path: Path) -> Iterator[ServerProc]:
    """The real etcd 3.4 on free loopback ports, stopped after the test."""
    sp = start_etcd(tmp_path)
    try:
        yield sp
    finally:
        sp.stop()
