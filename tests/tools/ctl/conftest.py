"""Fixtures for the `meshkit ctl` differential tests: two fresh servers of one kind.

The real etcdctl runs against one, `meshkit ctl` against the other; both see the same
command sequence from a fresh store, so revisions match and only ids, ports, lease ids
and timings must be normalised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.procs import ServerProc, require_reference_binaries, start_etcd, start_meshkit


@dataclass
class Twins:
    kind: str
    ref: ServerProc  # driven by the real etcdctl
    ours: ServerProc  # driven by meshkit ctl


@pytest.fixture(scope="module", params=["etcd", "meshkit"])
def twins(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twins]:
    """Shared by the module's tests: both servers see the same sequence, so they stay in step."""
    require_reference_binaries()
    tmp_path = tmp_path_factory.mktemp(f"ctl-{request.param}")
    start = start_etcd if request.param == "etcd" else start_meshkit
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start(tmp_path / "a")
    try:
        b = start(tmp_path / "b")
        try:
            yield Twins(request.param, a, b)
        finally:
            b.stop()
    finally:
        a.stop()
