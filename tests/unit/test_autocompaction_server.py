"""A member started with revision-mode auto-compaction compacts through the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

from meshkit._internal.clock import FakeClock
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.server.embed import EmbeddedServer
from meshkit.server.etcdserver.compactor import REVISION_CHECK_INTERVAL
from meshkit.server.etcdserver.server import EtcdServer


async def test_member_auto_compacts_in_revision_mode(tmp_path: Path) -> None:
    settings = EmbeddedServer.for_test(tmp_path, 0).settings
    settings.auto_compaction_mode = "revision"
    settings.auto_compaction_revisions = 5
    clock = FakeClock()
    async with EtcdServer(settings, clock=clock) as s:
        for i in range(20):
            await s.propose(ipb.InternalRequest(put=pb.PutRequest(key=b"k", value=b"%d" % i)))
        assert s.store.current_revision == 21
        clock.advance(REVISION_CHECK_INTERVAL)
        for _ in range(50):
            await asyncio.sleep(0.01)
            if s.store.compact_revision == 16:
                break
        assert s.store.compact_revision == 16
        assert s.compactor.compacted == [16]
