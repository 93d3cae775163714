"""docker-compose.yml's members are valid `meshkit server` configurations that agree
with each other (docker cannot run here; the server's own parser checks the file)."""

from __future__ import annotations

from pathlib import Path

import yaml

from meshkit.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]


def test_compose_members_parse_and_agree() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert len(services) == 3
    configs = {name: ServerConfig.from_args([], environ=svc["environment"]) for name, svc in services.items()}
    for name, cfg in configs.items():
        assert cfg.name == name
        assert cfg.initial_cluster_state == "new"
        # Each member's advertised peer URL is its own entry in the shared initial cluster.
        assert dict(cfg.initial_cluster)[name] == cfg.initial_advertise_peer_urls[0]
        assert services[name]["image"] == "meshkit:latest" and services[name]["build"] == "."
    clusters = {cfg.initial_cluster for cfg in configs.values()}
    tokens = {cfg.initial_cluster_token for cfg in configs.values()}
    assert len(clusters) == 1 and len(tokens) == 1
    assert {n for n, _ in next(iter(clusters))} == set(services)
    assert len({cfg.data_dir for cfg in configs.values()}) == 3


def test_dockerfile_runs_meshkit_server_with_etcds_ports() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["meshkit", "server"]' in text
    assert "EXPOSE 2379 2380" in text
