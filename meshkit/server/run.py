"""``meshkit server``: run one member until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from meshkit._internal.errors import MeshkitError

log = logging.getLogger("meshkit.server")


def settings_from_config(cfg: Any) -> Any:
    from meshkit.server.etcdserver.server import ServerSettings

    return ServerSettings(
        name=cfg.name,
        data_dir=Path(cfg.data_dir),
        wal_dir=Path(cfg.wal_dir) if cfg.wal_dir else None,
        initial_cluster=tuple(cfg.initial_cluster),
        initial_cluster_token=cfg.initial_cluster_token,
        advertise_peer_urls=tuple(cfg.initial_advertise_peer_urls),
        advertise_client_urls=tuple(cfg.advertise_client_urls),
        initial_cluster_state=cfg.initial_cluster_state,
        listen_peer=tuple((h, p) for h, p, _ in cfg.listen_addresses("peer")),
        strict_reconfig_check=cfg.strict_reconfig_check,
        snapshot_count=cfg.snapshot_count,
        heartbeat_ms=cfg.heartbeat_interval_ms,
        election_ms=cfg.election_timeout_ms,
        max_request_bytes=cfg.max_request_bytes,
        max_txn_ops=cfg.max_txn_ops,
        auto_compaction_mode=cfg.auto_compaction_mode or "periodic",
        auto_compaction_period_s=cfg.auto_compaction_period_ms / 1000.0,
        auto_compaction_revisions=cfg.auto_compaction_revisions,
        grpc_keepalive_min_time_ms=cfg.grpc_keepalive_min_time_ms,
        grpc_keepalive_interval_ms=cfg.grpc_keepalive_interval_ms,
        grpc_keepalive_timeout_ms=cfg.grpc_keepalive_timeout_ms,
        watch_progress_notify_interval_s=cfg.watch_progress_notify_interval_ms / 1000.0,
    )


async def serve(cfg: Any) -> None:
    from meshkit.server.embed import EmbeddedServer

    listen = []
    for host, port, scheme in cfg.listen_addresses():
        if scheme != "http":
            raise MeshkitError(f"TLS client URLs ({scheme}://{host}:{port}) are not supported yet")
        listen.append((host, port))
    for host, port, scheme in cfg.listen_addresses("peer"):
        if scheme != "http":
            raise MeshkitError(f"TLS peer URLs ({scheme}://{host}:{port}) are not supported yet")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with EmbeddedServer(settings_from_config(cfg), listen):
        log.info("ready to serve client requests")
        await stop.wait()
        log.info("received a stop signal, shutting down")


def run_server(cfg: Any) -> int:
    runner_kwargs: dict[str, Any] = {}
    try:
        import uvloop

        runner_kwargs["loop_factory"] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    try:
        with asyncio.Runner(**runner_kwargs) as runner:
            runner.run(serve(cfg))
    except MeshkitError as e:
        print(f"meshkit: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
