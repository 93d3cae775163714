"""--experimental-watch-progress-notify-interval reaches the watch layer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from meshkit.client import Client
from tests.support.procs import start_meshkit


async def test_progress_notify_interval_flag(tmp_path: Path) -> None:
    sp = start_meshkit(tmp_path, "--experimental-watch-progress-notify-interval", "300ms")
    try:
        async with Client([sp.endpoint]) as c:
            await c.put(b"p", b"1")
            rev = (await c.get(b"p")).header.revision
            async with c.watch(b"p", progress_notify=True) as w:
                # No writes: the only thing that can arrive is a progress notification.
                resp = await asyncio.wait_for(anext(aiter(w)), timeout=5)
            assert resp.events == [] and resp.header.revision == rev
    finally:
        sp.stop()
