"""``meshkit metad`` as a real process: flags, refusal of unsafe settings, serving /self."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys

import aiohttp

from meshkit.cli.metad import main
from tests.support.procs import ServerProc, free_ports
from tests.tools.metad.conftest import MAPPING, NODES, callers, eventually


def test_flags_refuse_unsafe_settings(capsys: object) -> None:
    assert main(["--help"]) == 0
    assert main(["--xff"]) == 2
    assert main(["--manage-listen", "0.0.0.0:9611"]) == 2
    assert main(["--listen", "nope"]) == 2
    assert main(["--bogus"]) == 2


async def test_metad_process_serves_self(server: ServerProc, prefix: str) -> None:
    port, mport = free_ports(2)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshkit.cli.metad", "--endpoints", server.endpoint,
        "--listen", f"127.0.0.1:{port}", "--manage-listen", f"127.0.0.1:{mport}",
        "--prefix", prefix, "--group", "cli",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with callers("127.0.0.1", "127.0.0.2") as (a, c):
            async def ready() -> bool:
                assert proc.returncode is None, "metad exited"
                with contextlib.suppress(aiohttp.ClientError):
                    return (await a.get(mport, "/health")).status == 200
                return False
            await eventually(ready, within=20)
            assert (await a.request("POST", mport, "/v1/data", data=json.dumps(NODES))).status == 200
            assert (await a.request("POST", mport, "/v1/mapping", data=json.dumps(MAPPING))).status == 200
            r = await c.get(port, "/self/node/name")
            assert (r.status, r.text) == (200, "node2")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
