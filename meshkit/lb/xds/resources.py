"""xDS v3 resources for one registry service, built from its instances.

For a service ``web`` (dialled as ``xds:///web``) the control plane serves:

* LDS ``Listener "web"``: an API listener whose ``HttpConnectionManager`` takes its
  routes from RDS over ADS, with the router filter (gRPC requires it last);
* RDS ``RouteConfiguration "web"``: one virtual host (``*``), every path to cluster ``web``;
* CDS ``Cluster "web"``: type EDS over ADS (``service_name "web"``), ROUND_ROBIN;
* EDS ``ClusterLoadAssignment "web"``: one locality per instance,
  ``Locality(zone=<zone>, sub_zone=<instance id>)`` weighted by the instance's weight.
  gRPC picks among localities by weight (weighted_target) and ignores endpoint
  weights under round robin, so a locality per instance is how weights reach every
  gRPC client. Weight 0 means draining: the endpoint is sent with
  ``health_status DRAINING`` and gRPC gives it no new calls.
  With ``local_zone`` (the client's ``node.locality.zone``) and ``prefer_local``,
  localities of that zone get priority 0 and the others priority 1: gRPC fails over
  to priority 1 only when every local instance is unreachable.

Everything comes from ``xds-protos`` (the Envoy/xDS protobuf definitions on PyPI).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from meshkit.registry.model import Instance

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "TYPE_URLS",
    "cluster",
    "listener",
    "load_assignment",
    "pack",
    "route_config",
    "split_hostport",
]

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_URLS = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)


def pack(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3)


def listener(service: str) -> listener_pb2.Listener:
    """The API listener gRPC looks up for ``xds:///<service>``."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=service,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=service),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                         typed_config=pack(router_pb2.Router()))],
    )
    return listener_pb2.Listener(
        name=service, api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager)))


def route_config(service: str) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=service,
        virtual_hosts=[route_components_pb2.VirtualHost(
            name=service, domains=["*"],
            routes=[route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix=""),
                route=route_components_pb2.RouteAction(cluster=service))])])


def cluster(service: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=service,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=_ads(), service_name=service),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        connect_timeout=duration_pb2.Duration(seconds=5),
    )


def split_hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def load_assignment(service: str, instances: Iterable[Instance], *, local_zone: str = "",
                    prefer_local: bool = True) -> endpoint_pb2.ClusterLoadAssignment:
    """EDS for ``service``: one weighted locality per instance (see the module doc)."""
    insts: Sequence[Instance] = sorted(instances, key=lambda i: (i.zone, i.instance_id))
    has_local = bool(local_zone) and prefer_local and any(
        i.zone == local_zone and i.weight > 0 for i in insts)
    groups: list[endpoint_components_pb2.LocalityLbEndpoints] = []
    for inst in insts:
        host, port = split_hostport(inst.addr)
        draining = inst.weight <= 0
        ep = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                    address=host, port_value=port))),
            health_status=(health_check_pb2.DRAINING if draining else health_check_pb2.HEALTHY),
            load_balancing_weight=wrappers_pb2.UInt32Value(value=max(inst.weight, 1)),
        )
        priority = 0 if not has_local or inst.zone == local_zone else 1
        groups.append(endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(zone=inst.zone, sub_zone=inst.instance_id),
            lb_endpoints=[ep],
            load_balancing_weight=wrappers_pb2.UInt32Value(value=max(inst.weight, 1)),
            priority=priority,
        ))
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=service, endpoints=groups)
