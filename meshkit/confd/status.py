"""The status endpoint (aiohttp): ``GET /status`` and ``GET /health``.

``/status`` answers JSON: per resource the state, the last rendered revision, the
last success, the last error with the command's output, counters. ``/health`` is
200 while no resource is stuck (a round unfinished for longer than its budget:
``wait.max`` + command timeouts + 60 s, or ``--stuck-after``) and 503 naming the
stuck ones otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from meshkit.confd.runner import Confd

__all__ = ["make_app", "start_status_server"]


def make_app(confd: Confd) -> web.Application:
    async def status(_req: web.Request) -> web.Response:
        return web.json_response(confd.status(), dumps=_dumps)

    async def health(_req: web.Request) -> web.Response:
        stuck = confd.stuck()
        if stuck:
            return web.json_response({"health": "false", "stuck": stuck}, status=503)
        return web.json_response({"health": "true"})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/health", health)
    return app


def _dumps(obj: object) -> str:
    import json

    return json.dumps(obj, indent=1, sort_keys=True)


async def start_status_server(confd: Confd, listen: str) -> tuple[web.AppRunner, int]:
    """Serve on ``HOST:PORT`` (port 0 picks one); returns the runner and the bound port."""
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(make_app(confd), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = int(port)
    for addr in runner.addresses:  # (host, port[, ...]) of each listening socket
        bound = int(addr[1])
        break
    return runner, bound
