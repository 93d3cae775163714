"""``meshkit server``: run one member until SIGINT/SIGTERM, or until it is removed
from the cluster (then it exits with status 0, as etcd does)."""

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
    from meshkit.server.tls import TLSInfo

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
        snapshot_catchup_entries=cfg.snapshot_catchup_entries,
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
        auth_token=cfg.auth_token,
        bcrypt_cost=cfg.bcrypt_cost,
        auth_token_ttl_s=float(cfg.auth_token_ttl),
        quota_backend_bytes=cfg.effective_quota_backend_bytes,
        peer_tls=TLSInfo(cfg.peer_cert_file, cfg.peer_key_file, cfg.peer_trusted_ca_file,
                         cfg.peer_client_cert_auth),
    )


def _split_client_urls(addresses: list[tuple[str, int, str]],
                       tls: Any) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Client (or client HTTP) URLs as (http addresses, https addresses)."""
    plain: list[tuple[str, int]] = []
    secure: list[tuple[str, int]] = []
    for host, port, scheme in addresses:
        if scheme == "https":
            if tls.empty:
                raise MeshkitError(f"TLS key/cert (--cert-file, --key-file) must be provided for client url https://{host}:{port}")
            secure.append((host, port))
        elif scheme == "http":
            plain.append((host, port))
        else:
            raise MeshkitError(f"unsupported client URL scheme {scheme}://{host}:{port}")
    return plain, secure


async def serve(cfg: Any) -> None:
    from meshkit.server.embed import EmbeddedServer
    from meshkit.server.tls import TLSInfo

    tls = TLSInfo(cfg.cert_file, cfg.key_file, cfg.trusted_ca_file, cfg.client_cert_auth)
    listen, listen_tls = _split_client_urls(cfg.listen_addresses(), tls)
    http_listen, http_listen_tls = _split_client_urls(cfg.listen_addresses("client-http"), tls)
    metrics = [(h, p) for h, p, _ in cfg.listen_addresses("metrics")]
    metrics_tls = any(sc == "https" for _, _, sc in cfg.listen_addresses("metrics"))
    if metrics_tls and any(sc != "https" for _, _, sc in cfg.listen_addresses("metrics")):
        raise MeshkitError("--listen-metrics-urls mixing http and https is not supported")
    for host, port, scheme in cfg.listen_addresses("peer"):
        if scheme == "https" and not (cfg.peer_cert_file and cfg.peer_key_file):
            raise MeshkitError(f"TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url https://{host}:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with EmbeddedServer(settings_from_config(cfg), listen, listen_tls=listen_tls, tls=tls,
                              metrics_listen=metrics, metrics_tls=metrics_tls,
                              client_http_listen=http_listen, client_http_listen_tls=http_listen_tls) as srv:
        log.info("ready to serve client requests")
        from meshkit.server import runtime

        runtime.tune_gc()  # freeze the startup heap (the loaded store) out of GC scans
        # Until a signal, or until the member stops by itself (it learned it was
        # removed from the cluster): etcd's server stops then and the process
        # exits with status 0.
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(srv.stopped.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if stop.is_set():
            log.info("received a stop signal, shutting down")
        else:
            log.info("stopping: this member was removed from the cluster")


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
