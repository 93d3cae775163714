"""The server's configuration: etcd 3.4's flags, ``ETCD_*`` variables and YAML file.

:class:`ServerConfig` is a frozen dataclass with etcd's defaults. It is built by
:meth:`ServerConfig.from_args` with etcd 3.4's precedence:

* with ``--config-file`` (or ``ETCD_CONFIG_FILE``) the YAML file is the whole
  configuration: other flags and every other ``ETCD_*`` variable are ignored;
* otherwise a command-line flag wins over its variable, but giving both is an error
  (etcd: "conflicting environment variable ... is shadowed"); an unknown ``ETCD_*``
  variable is a warning.

Every etcd 3.4 flag is known (see :data:`FLAGS`), plus etcd 3.5's
``--listen-client-http-urls`` and ``--experimental-snapshot-catchup-entries`` as
extensions. A flag meshkit does not implement is accepted only with its default
value; any other value is the error ``flag --X is not supported yet``. Messages copy
etcd's words where etcd has some.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from meshkit._internal import goflags
from meshkit._internal.errors import MeshkitError

__all__ = [
    "DEFAULT_QUOTA_BACKEND_BYTES",
    "FLAGS",
    "ConfigError",
    "FlagSpec",
    "HelpRequested",
    "ServerConfig",
    "VersionRequested",
    "flag_to_env",
    "parse_initial_cluster",
    "parse_urls",
]

DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024 * 1024 * 1024
MAX_ELECTION_MS = 50000
DEFAULT_NAME = "default"
DEFAULT_LISTEN_PEER_URLS = "http://localhost:2380"
DEFAULT_LISTEN_CLIENT_URLS = "http://localhost:2379"
DEFAULT_INITIAL_ADVERTISE_PEER_URLS = "http://localhost:2380"
DEFAULT_ADVERTISE_CLIENT_URLS = "http://localhost:2379"
DEFAULT_INITIAL_CLUSTER = "default=http://localhost:2380"
LOG_LEVELS = ("debug", "info", "warn", "error", "panic", "fatal")
_VERIFYING = "error verifying flags"
UNSET_ADVERTISE_CLIENT_URLS = (
    "--advertise-client-urls is required when --listen-client-urls is set explicitly"
)


# ---------------------------------------------------------------- errors


class ConfigError(MeshkitError):
    """The configuration is unusable. ``problems`` names every broken rule.

    ``exit_code`` is what etcd exits with for the same mistake: 2 for a command line
    Go's flag package refuses, 1 for everything found after parsing.
    """

    def __init__(
        self,
        problems: Sequence[str],
        *,
        exit_code: int = 1,
        usage: bool = False,
        context: str = "",
    ) -> None:
        self.problems = tuple(problems)
        self.exit_code = exit_code
        self.usage = usage  # etcd prints its usage lines after this kind of error
        # etcd's lead-in for the message, e.g. "error verifying flags"
        self.context = context
        super().__init__("; ".join(self.problems))


class HelpRequested(Exception):
    """``-h``/``--help`` was given: print the help, exit 0."""


class VersionRequested(Exception):
    """``--version`` was given: print the versions, exit 0."""


# ---------------------------------------------------------------- value parsers
# (Go's strconv/time rules live in meshkit._internal.goflags.)


def _go() -> Any:
    return goflags


def _value_error(text: str) -> Exception:
    return _go().ValueError_(text)


_SCHEMES = ("http", "https", "unix", "unixs")
_PORT_RE = re.compile(r"[0-9]*")


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """``net.SplitHostPort``; None when the text is not ``host:port``."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1 : end + 2] == ":":
            return None
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        return None
    host, _, port = hostport.partition(":")
    return host, port


def parse_url(text: str) -> str:
    """One etcd URL (``types.NewURLs`` rules); returns it with a lower-case scheme."""
    s = text.strip()
    if "://" not in s:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", s) is None and ":" in s.split("/", 1)[0]:
            raise _value_error(f'parse "{s}": first path segment in URL cannot contain colon')
        raise _value_error(f"URL scheme must be http, https, unix, or unixs: {s}")
    scheme, _, rest = s.partition("://")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise _value_error(f"URL scheme must be http, https, unix, or unixs: {s}")
    hostport, sep, path = rest.partition("/")
    for ch in "?#":
        if ch in hostport:
            hostport = hostport.split(ch, 1)[0]
            path = path or ch
    if "@" in hostport:
        hostport = hostport.rsplit("@", 1)[1]
    colon = hostport.rfind(":")
    if colon >= 0 and "]" not in hostport[colon:]:
        port = hostport[colon + 1 :]
        if not _PORT_RE.fullmatch(port):
            raise _value_error(f'parse "{s}": invalid port ":{port}" after host')
    if _split_host_port(hostport) is None:
        raise _value_error(f'URL address does not have the form "host:port": {s}')
    if sep and path:
        raise _value_error(f"URL must not contain a path: {s}")
    return f"{scheme}://{rest}"


def parse_urls(text: str, *, allow_empty: bool = True) -> tuple[str, ...]:
    """A comma-separated URL list as etcd's ``UniqueURLs`` flag: de-duplicated, sorted."""
    if text == "" and allow_empty:
        return ()
    urls = {parse_url(part) for part in text.split(",")}
    return tuple(sorted(urls))


def url_host_port(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL :func:`parse_url` accepted."""
    scheme, _, rest = url.partition("://")
    hostport = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    hp = _split_host_port(hostport)
    assert hp is not None
    host, port = hp
    return scheme, host, int(port) if port else 0


def parse_initial_cluster(text: str) -> tuple[tuple[str, str], ...]:
    """``--initial-cluster`` (``types.NewURLsMap``): sorted (name, url) pairs."""
    if text == "":
        return ()
    by_name: dict[str, list[str]] = {}
    for item in text.split(","):
        if item == "":
            continue
        name, _, value = item.partition("=")
        name = urllib.parse.unquote_plus(name)
        value = urllib.parse.unquote_plus(value)
        by_name.setdefault(name, []).append(value)
    pairs: list[tuple[str, str]] = []
    for name, values in by_name.items():
        for url in sorted({parse_url(v) for v in values}):
            pairs.append((name, url))
    return tuple(sorted(pairs))


def urls_map_string(pairs: Iterable[tuple[str, str]]) -> str:
    """``types.URLsMap.String()``: sorted ``name=url`` joined by commas."""
    return ",".join(sorted(f"{n}={u}" for n, u in pairs))


def _strings(text: str) -> tuple[str, ...]:
    """``flags.StringsValue``: comma-separated, order kept."""
    return tuple(text.split(",")) if text else ()


def _unique_strings(text: str) -> tuple[str, ...]:
    """``flags.UniqueStringsValue``: comma-separated, de-duplicated, sorted."""
    return tuple(sorted(set(text.split(",")))) if text else ()


def _choice(*valid: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in valid:
            raise _value_error("invalid value")
        return text

    return parse


def _uint(text: str) -> int:
    return int(_go().parse_uint(text, 64))


def _int(text: str) -> int:
    return int(_go().parse_int(text, 64))


def _bool(text: str) -> bool:
    return bool(_go().parse_bool(text))


def _duration(text: str) -> int:
    """Go duration text -> nanoseconds; the flag package reports any error as "parse error"."""
    try:
        return int(_go().parse_duration_ns(text))
    except _go().ValueError_:
        raise _value_error("parse error") from None


def _str(text: str) -> str:
    return text


def _max_uint32(text: str) -> int:
    value = int(_go().parse_uint(text, 32)) if text != "math.MaxUint32" else 0xFFFFFFFF
    return value


# ---------------------------------------------------------------- the flag table

Status = Literal["works", "unsupported", "ignored", "meta"]
Kind = Literal[
    "string",
    "bool",
    "uint",
    "int",
    "duration",
    "urls",
    "strings",
    "unique-strings",
    "choice",
    "ignored",
]


@dataclass(frozen=True)
class FlagSpec:
    """One etcd 3.4 flag: its parser, default (as parsed), meshkit field and status.

    ``yaml`` is the key in etcd's config file (None: not settable there); ``section``
    names the nested YAML section (``client-transport-security``) holding it.
    """

    name: str
    kind: Kind
    default: Any
    status: Status
    field: str | None = None
    parse: Callable[[str], Any] = _str
    help: str = ""
    yaml: str | None = None
    section: str | None = None

    @property
    def is_bool(self) -> bool:
        return self.kind in ("bool", "ignored")

    @property
    def env(self) -> str:
        return flag_to_env(self.name)


def flag_to_env(name: str) -> str:
    """``flags.FlagToEnv("ETCD", name)``."""
    return "ETCD_" + name.upper().replace("-", "_")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "string": _str,
    "bool": _bool,
    "uint": _uint,
    "int": _int,
    "duration": _duration,
    "urls": parse_urls,
    "strings": _strings,
    "unique-strings": _unique_strings,
    "ignored": _str,
}

_MS = 1_000_000
_SEC = 1_000_000_000


def _spec(
    name: str,
    kind: Kind,
    default: Any,
    status: Status,
    field: str | None = None,
    *,
    parse: Callable[[str], Any] | None = None,
    help: str = "",
    yaml: str | Literal[False] | None = None,
    section: str | None = None,
) -> FlagSpec:
    return FlagSpec(
        name=name,
        kind=kind,
        default=default,
        status=status,
        field=field,
        parse=parse or _PARSERS[kind],
        help=help,
        yaml=None if yaml is False else (yaml or name),
        section=section,
    )


_CLIENT_SEC = "client-transport-security"
_PEER_SEC = "peer-transport-security"

FLAGS: tuple[FlagSpec, ...] = (
    _spec("config-file", "string", "", "meta", "config_file", yaml=False,
          help="Path to the server configuration file. Other flags and environment variables are ignored when it is given."),
    # member
    _spec("name", "string", DEFAULT_NAME, "works", "name", help="Human-readable name for this member."),
    _spec("data-dir", "string", "", "works", "data_dir", help="Path to the data directory (default '${name}.etcd')."),
    _spec("wal-dir", "string", "", "works", "wal_dir", help="Path to the dedicated wal directory."),
    _spec("snapshot-count", "uint", 100000, "works", "snapshot_count",
          help="Number of committed transactions to trigger a snapshot to disk."),
    _spec("heartbeat-interval", "uint", 100, "works", "heartbeat_interval_ms",
          help="Time (in milliseconds) of a heartbeat interval."),
    _spec("election-timeout", "uint", 1000, "works", "election_timeout_ms",
          help="Time (in milliseconds) for an election to timeout."),
    _spec("initial-election-tick-advance", "bool", True, "works", "initial_election_tick_advance",
          help="Whether to fast-forward initial election ticks on boot for faster election."),
    _spec("listen-peer-urls", "urls", (DEFAULT_LISTEN_PEER_URLS,), "works", "listen_peer_urls",
          help="List of URLs to listen on for peer traffic."),
    _spec("listen-client-urls", "urls", (DEFAULT_LISTEN_CLIENT_URLS,), "works", "listen_client_urls",
          help="List of URLs to listen on for client traffic."),
    # etcd 3.5's flag, a meshkit extension to 3.4's set
    _spec("listen-client-http-urls", "urls", (), "works", "listen_client_http_urls",
          help="List of URLs to listen on for http only client traffic. Enabling this flag removes "
               "http services from --listen-client-urls. (etcd 3.5; meshkit extension)"),
    _spec("max-snapshots", "uint", 5, "works", "max_snapshots",
          help="Maximum number of snapshot files to retain (0 is unlimited)."),
    _spec("max-wals", "uint", 5, "works", "max_wals", help="Maximum number of wal files to retain (0 is unlimited)."),
    _spec("quota-backend-bytes", "int", 0, "works", "quota_backend_bytes",
          help="Raise alarms when backend size exceeds the given quota (0 defaults to low space quota)."),
    _spec("backend-batch-interval", "duration", 0, "unsupported",
          help="BackendBatchInterval is the maximum time before commit the backend transaction."),
    _spec("backend-batch-limit", "int", 0, "unsupported",
          help="BackendBatchLimit is the maximum operations before commit the backend transaction."),
    _spec("max-txn-ops", "uint", 128, "works", "max_txn_ops",
          help="Maximum number of operations permitted in a transaction."),
    _spec("max-request-bytes", "uint", 1572864, "works", "max_request_bytes",
          help="Maximum client request size in bytes the server will accept."),
    _spec("max-concurrent-streams", "uint", 0xFFFFFFFF, "unsupported", parse=_max_uint32,
          help="Maximum concurrent streams that each client can open at a time."),
    _spec("grpc-keepalive-min-time", "duration", 5 * _SEC, "works", "grpc_keepalive_min_time_ms",
          help="Minimum duration interval that a client should wait before pinging server."),
    _spec("grpc-keepalive-interval", "duration", 7200 * _SEC, "works", "grpc_keepalive_interval_ms",
          help="Frequency duration of server-to-client ping to check if a connection is alive (0 to disable)."),
    _spec("grpc-keepalive-timeout", "duration", 20 * _SEC, "works", "grpc_keepalive_timeout_ms",
          help="Additional duration of wait before closing a non-responsive connection (0 to disable)."),
    # clustering
    _spec("initial-advertise-peer-urls", "urls", (DEFAULT_INITIAL_ADVERTISE_PEER_URLS,), "works",
          "initial_advertise_peer_urls", help="List of this member's peer URLs to advertise to the rest of the cluster."),
    _spec("initial-cluster", "string", DEFAULT_INITIAL_CLUSTER, "works", "initial_cluster",
          help="Initial cluster configuration for bootstrapping."),
    _spec("initial-cluster-state", "choice", "new", "works", "initial_cluster_state",
          parse=_choice("new", "existing"), help="Initial cluster state ('new' or 'existing')."),
    _spec("initial-cluster-token", "string", "etcd-cluster", "works", "initial_cluster_token",
          help="Initial cluster token for the etcd cluster during bootstrap."),
    _spec("advertise-client-urls", "urls", (DEFAULT_ADVERTISE_CLIENT_URLS,), "works", "advertise_client_urls",
          help="List of this member's client URLs to advertise to the public."),
    _spec("discovery", "string", "", "unsupported", help="Discovery URL used to bootstrap the cluster."),
    _spec("discovery-fallback", "choice", "proxy", "unsupported", parse=_choice("proxy", "exit"),
          help="Expected behavior ('exit' or 'proxy') when discovery services fails."),
    _spec("discovery-proxy", "string", "", "unsupported", help="HTTP proxy to use for traffic to discovery service."),
    _spec("discovery-srv", "string", "", "unsupported", help="DNS srv domain used to bootstrap the cluster."),
    _spec("discovery-srv-name", "string", "", "unsupported",
          help="Suffix to the dns srv name queried when bootstrapping."),
    _spec("strict-reconfig-check", "bool", True, "works", "strict_reconfig_check",
          help="Reject reconfiguration requests that would cause quorum loss."),
    _spec("pre-vote", "bool", False, "unsupported", help="Enable to run an additional Raft election phase."),
    _spec("auto-compaction-retention", "string", "0", "works", "auto_compaction_retention",
          help="Auto compaction retention length. 0 means disable auto compaction."),
    _spec("auto-compaction-mode", "string", "periodic", "works", "auto_compaction_mode",
          help="Interpret 'auto-compaction-retention' one of: periodic|revision."),
    _spec("enable-v2", "bool", False, "unsupported", "enable_v2", help="Accept etcd V2 client requests."),
    # security
    _spec("cert-file", "string", "", "works", "cert_file", yaml="cert-file", section=_CLIENT_SEC,
          help="Path to the client server TLS cert file."),
    _spec("key-file", "string", "", "works", "key_file", yaml="key-file", section=_CLIENT_SEC,
          help="Path to the client server TLS key file."),
    _spec("client-cert-auth", "bool", False, "works", "client_cert_auth", yaml="client-cert-auth",
          section=_CLIENT_SEC, help="Enable client cert authentication."),
    _spec("client-crl-file", "string", "", "unsupported", yaml=False,
          help="Path to the client certificate revocation list file."),
    _spec("client-cert-allowed-hostname", "string", "", "unsupported", yaml=False,
          help="Allowed TLS hostname for client cert authentication."),
    _spec("trusted-ca-file", "string", "", "works", "trusted_ca_file", yaml="trusted-ca-file", section=_CLIENT_SEC,
          help="Path to the client server TLS trusted CA cert file."),
    _spec("auto-tls", "bool", False, "works", "auto_tls", yaml="auto-tls", section=_CLIENT_SEC,
          help="Client TLS using generated certificates."),
    _spec("peer-cert-file", "string", "", "works", "peer_cert_file", yaml="cert-file", section=_PEER_SEC,
          help="Path to the peer server TLS cert file."),
    _spec("peer-key-file", "string", "", "works", "peer_key_file", yaml="key-file", section=_PEER_SEC,
          help="Path to the peer server TLS key file."),
    _spec("peer-client-cert-auth", "bool", False, "works", "peer_client_cert_auth", yaml="client-cert-auth",
          section=_PEER_SEC, help="Enable peer client cert authentication."),
    _spec("peer-trusted-ca-file", "string", "", "works", "peer_trusted_ca_file", yaml="trusted-ca-file",
          section=_PEER_SEC, help="Path to the peer server TLS trusted CA file."),
    _spec("peer-auto-tls", "bool", False, "works", "peer_auto_tls", yaml="auto-tls", section=_PEER_SEC,
          help="Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided."),
    _spec("peer-cert-allowed-cn", "string", "", "unsupported", yaml=False,
          help="Required CN for client certs connecting to the peer endpoint."),
    _spec("peer-cert-allowed-hostname", "string", "", "unsupported", yaml=False,
          help="Allowed TLS hostname for inter peer authentication."),
    _spec("peer-crl-file", "string", "", "unsupported", yaml=False,
          help="Path to the peer certificate revocation list file."),
    _spec("cipher-suites", "strings", (), "unsupported",
          help="Comma-separated list of supported TLS cipher suites between client/server and peers."),
    _spec("cors", "unique-strings", ("*",), "unsupported",
          help="Comma-separated whitelist of origins for CORS (empty or * means allow all)."),
    _spec("host-whitelist", "unique-strings", ("*",), "unsupported",
          help="Acceptable hostnames from HTTP client requests, if server is not secure (empty or * means allow all)."),
    # auth
    _spec("auth-token", "string", "simple", "works", "auth_token",
          help="Specify a v3 authentication token type and its options ('simple' or 'jwt')."),
    _spec("bcrypt-cost", "uint", 10, "works", "bcrypt_cost",
          help="Specify the cost / strength of the bcrypt algorithm for hashing auth passwords (4 to 31)."),
    _spec("auth-token-ttl", "uint", 300, "works", "auth_token_ttl", help="Time (in seconds) of the auth-token-ttl."),
    # profiling and monitoring
    _spec("enable-pprof", "bool", False, "works", "enable_pprof",
          help="Enable runtime profiling data via HTTP server."),
    _spec("metrics", "string", "basic", "works", "metrics",
          help="Set level of detail for exported metrics, specify 'extensive' to include histogram metrics."),
    _spec("listen-metrics-urls", "urls", (), "works", "listen_metrics_urls",
          help="List of URLs to listen on for the metrics and health endpoints."),
    # logging
    _spec("logger", "string", "capnslog", "works", "logger", help="Specify 'zap' for structured logging or 'capnslog'."),
    _spec("log-outputs", "unique-strings", ("default",), "works", "log_outputs",
          help="Specify 'stdout' or 'stderr', or list of comma separated output targets."),
    _spec("log-output", "unique-strings", ("default",), "works",
          help="DEPRECATED: use '--log-outputs'."),
    _spec("log-level", "string", "info", "works", "log_level",
          help="Configures log level. Only supports debug, info, warn, error, panic, or fatal."),
    _spec("debug", "bool", False, "works", help="Enable debug-level logging (deprecated: use '--log-level=debug')."),
    _spec("log-package-levels", "string", "", "unsupported",
          help="Specify a particular log level for each etcd package."),
    # v2 proxy
    _spec("proxy", "choice", "off", "unsupported", parse=_choice("off", "readonly", "on"),
          help="Proxy mode setting ('off', 'readonly' or 'on')."),
    _spec("proxy-failure-wait", "uint", 5000, "unsupported",
          help="Time (in milliseconds) an endpoint will be held in a failed state."),
    _spec("proxy-refresh-interval", "uint", 30000, "unsupported",
          help="Time (in milliseconds) of the endpoints refresh interval."),
    _spec("proxy-dial-timeout", "uint", 1000, "unsupported", help="Time (in milliseconds) for a dial to timeout."),
    _spec("proxy-write-timeout", "uint", 5000, "unsupported", help="Time (in milliseconds) for a write to timeout."),
    _spec("proxy-read-timeout", "uint", 0, "unsupported", help="Time (in milliseconds) for a read to timeout."),
    # gateway
    _spec("enable-grpc-gateway", "bool", True, "unsupported", help="Enable GRPC gateway."),
    # experimental
    _spec("experimental-initial-corrupt-check", "bool", False, "unsupported",
          help="Enable to check data corruption before serving any client/peer traffic."),
    _spec("experimental-corrupt-check-time", "duration", 0, "unsupported",
          help="Duration of time between cluster corruption check passes."),
    _spec("experimental-enable-v2v3", "string", "", "unsupported",
          help="Serve v2 requests through the v3 backend under a given prefix."),
    _spec("experimental-backend-bbolt-freelist-type", "string", "array", "unsupported",
          help="The type of freelist that boltdb backend uses (array and map are supported types)."),
    _spec("experimental-enable-lease-checkpoint", "bool", False, "unsupported",
          help="Enable the primary lessor to persist lease remainingTTL."),
    _spec("experimental-enable-lease-checkpoint-persist", "bool", False, "unsupported",
          help="Persist lease remainingTTL to prevent indefinite auto-renewal of long lived leases."),
    _spec("experimental-compaction-batch-limit", "int", 1000, "unsupported",
          help="The maximum revisions deleted in each compaction batch."),
    _spec("experimental-peer-skip-client-san-verification", "bool", False, "unsupported", yaml=False,
          help="Skip verification of SAN field in client certificate for peer connections."),
    _spec("experimental-watch-progress-notify-interval", "duration", 600 * _SEC, "works",
          "watch_progress_notify_interval_ms",
          help="Duration of periodical watch progress notification."),
    _spec("experimental-warning-apply-duration", "duration", 100 * _MS, "unsupported",
          help="Warning is generated if requests take more than this duration."),
    # etcd 3.5's flag, a meshkit extension to 3.4's set (3.4 keeps a fixed 5000). Its
    # YAML key is spelt catch-up, unlike the flag: etcd's json tag, kept for 3.5 files.
    _spec("experimental-snapshot-catchup-entries", "uint", 5000, "works", "snapshot_catchup_entries",
          yaml="experimental-snapshot-catch-up-entries",
          help="Number of entries for a slow follower to catch up after compacting the raft storage "
               "entries. (etcd 3.5; meshkit extension)"),
    # unsafe
    _spec("force-new-cluster", "bool", False, "works", "force_new_cluster",
          help="Force to create a new one-member cluster."),
    _spec("unsafe-no-fsync", "bool", False, "unsupported",
          help="Disables fsync, unsafe, will cause data loss."),
    # version
    _spec("version", "bool", False, "meta", yaml=False, help="Print the version and exit."),
    # flags etcd still accepts and ignores with a warning
    *(
        _spec(n, "ignored", None, "ignored", yaml=False)
        for n in (
            "cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
            "max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval", "peer-election-timeout",
            "retry-interval", "snapshot", "v", "vv", "test.coverprofile", "test.outputdir",
        )
    ),
)  # fmt: skip

FLAGS_BY_NAME: dict[str, FlagSpec] = {f.name: f for f in FLAGS}


# ---------------------------------------------------------------- the config


def _ms(ns: int) -> int:
    return ns // _MS


@dataclass(frozen=True)
class ServerConfig:
    """One member's configuration, with etcd 3.4's defaults.

    Times are integer milliseconds, sizes integer bytes, URL lists sorted tuples of
    strings (``http://127.0.0.1:2379``), ``initial_cluster`` sorted (name, peer URL)
    pairs (a member with two peer URLs appears twice).
    """

    name: str = DEFAULT_NAME
    data_dir: str = "default.etcd"
    wal_dir: str = ""
    snapshot_count: int = 100000
    # log entries kept behind a snapshot for slow followers (etcd 3.5's flag)
    snapshot_catchup_entries: int = 5000
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    initial_election_tick_advance: bool = True
    listen_peer_urls: tuple[str, ...] = (DEFAULT_LISTEN_PEER_URLS,)
    listen_client_urls: tuple[str, ...] = (DEFAULT_LISTEN_CLIENT_URLS,)
    # etcd 3.5: HTTP only on these; the client URLs then serve gRPC only
    listen_client_http_urls: tuple[str, ...] = ()
    advertise_client_urls: tuple[str, ...] = (DEFAULT_ADVERTISE_CLIENT_URLS,)
    initial_advertise_peer_urls: tuple[str, ...] = (DEFAULT_INITIAL_ADVERTISE_PEER_URLS,)
    listen_metrics_urls: tuple[str, ...] = ()
    initial_cluster: tuple[tuple[str, str], ...] = (
        ("default", DEFAULT_INITIAL_ADVERTISE_PEER_URLS),
    )
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    max_snapshots: int = 5
    max_wals: int = 5
    quota_backend_bytes: int = 0
    max_txn_ops: int = 128
    max_request_bytes: int = 1572864
    grpc_keepalive_min_time_ms: int = 5000
    watch_progress_notify_interval_ms: int = 600_000
    grpc_keepalive_interval_ms: int = 7_200_000
    grpc_keepalive_timeout_ms: int = 20000
    strict_reconfig_check: bool = True
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    enable_v2: bool = False
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    auto_tls: bool = False
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    peer_auto_tls: bool = False
    auth_token: str = "simple"
    bcrypt_cost: int = 10
    auth_token_ttl: int = 300
    force_new_cluster: bool = False
    enable_pprof: bool = False
    metrics: str = "basic"
    logger: str = "capnslog"
    log_outputs: tuple[str, ...] = ("default",)
    log_level: str = "info"
    config_file: str = ""
    # Only the command line/environment path can leave this unset (etcd's
    # ErrUnsetAdvertiseClientURLsFlag); kept so validate() can report it.
    advertise_client_urls_missing: bool = field(default=False, repr=False)

    ENV_PREFIX: ClassVar[str] = "ETCD_"

    # ------------------------------------------------------------ building

    @classmethod
    def from_args(
        cls,
        argv: Sequence[str],
        environ: Mapping[str, str] | None = None,
        *,
        validate: bool = True,
        log: Callable[[str, str], None] | None = None,
    ) -> ServerConfig:
        """Parse etcd 3.4's command line, ``ETCD_*`` variables and config file.

        ``log(level, message)`` receives etcd's notices (unknown ``ETCD_*``
        variables, ignored legacy flags, the config file in use). Raises
        :class:`ConfigError` (with etcd's exit code), :class:`HelpRequested` or
        :class:`VersionRequested`.
        """
        from meshkit.server.config_file import load_config_file

        goflags = _go()
        say = log or (lambda _level, _msg: None)
        env = dict(environ) if environ is not None else {}
        flagset = goflags.FlagSet(
            [goflags.Flag(name=f.name, parse=f.parse, is_bool=f.is_bool) for f in FLAGS]
        )
        try:
            parsed = flagset.parse(list(argv))
        except goflags.HelpRequested:
            raise HelpRequested() from None
        except goflags.FlagError as exc:
            message = str(exc)
            m = re.match(r"flag provided but not defined: -(.+)$", message)
            if m:
                guess = goflags.closest_flag(
                    m.group(1), [f.name for f in FLAGS if f.status != "ignored"]
                )
                if guess:
                    message += f" (did you mean --{guess}?)"
            raise ConfigError([message], exit_code=2, usage=True) from None
        if parsed.args:
            raise ConfigError([f"'{parsed.args[0]}' is not a valid flag"], context=_VERIFYING)
        cmdline = parsed.as_dict()
        if cmdline.get("version"):
            raise VersionRequested()

        for name in cmdline:
            if FLAGS_BY_NAME[name].status == "ignored":
                say("warning", f'flag "-{name}" is no longer supported - ignoring.')

        config_file = cmdline.get("config-file") or env.get(flag_to_env("config-file"), "")
        values: dict[str, Any] = {f.name: f.default for f in FLAGS if f.status != "ignored"}
        sources: dict[str, str] = {}
        if config_file:
            say(
                "info",
                f'Loading server configuration from "{config_file}". Other configuration '
                "command line flags and environment variables will be ignored if provided.",
            )
            file_values = load_config_file(config_file, log=say)
            values.update(file_values)
            sources.update({k: f"config file key {k!r}" for k in file_values})
            set_names = set(file_values)
            missing_ac = False
        else:
            env_values = _values_from_env(env, set(cmdline), say)
            values.update(env_values)
            sources.update({k: flag_to_env(k) for k in env_values})
            values.update(
                {k: v for k, v in cmdline.items() if FLAGS_BY_NAME[k].status != "ignored"}
            )
            sources.update({k: f"--{k}" for k in cmdline})
            set_names = set(env_values) | set(cmdline)
            missing_ac = (
                "listen-client-urls" in set_names and "advertise-client-urls" not in set_names
            )

        unsupported = [
            _unsupported_message(name, sources.get(name, f"--{name}"))
            for name, spec in FLAGS_BY_NAME.items()
            if spec.status == "unsupported" and name in set_names and values[name] != spec.default
        ]
        if unsupported:
            raise ConfigError(unsupported)

        config = cls._from_values(
            values, set_names=set_names, missing_ac=missing_ac, config_file=config_file
        )
        if validate:
            config.validate()
        return config

    @classmethod
    def _from_values(
        cls, values: Mapping[str, Any], *, set_names: set[str], missing_ac: bool, config_file: str
    ) -> ServerConfig:
        kwargs: dict[str, Any] = {}
        for spec in FLAGS:
            if spec.field is None or spec.field == "config_file":
                continue
            value = values[spec.name]
            if spec.kind == "duration":
                value = _ms(value)
            kwargs[spec.field] = value
        # --log-output is the deprecated spelling of --log-outputs
        if "log-output" in set_names and "log-outputs" not in set_names:
            kwargs["log_outputs"] = values["log-output"]
        if values.get("debug"):
            kwargs["log_level"] = "debug"
        name = kwargs["name"]
        if not kwargs["data_dir"]:
            kwargs["data_dir"] = f"{name}.etcd"
        # etcd's UpdateDefaultClusterFromName: only the name given -> that name with
        # this member's advertised peer URLs.
        cluster_text = values["initial-cluster"]
        if name != DEFAULT_NAME and cluster_text == DEFAULT_INITIAL_CLUSTER:
            cluster_text = ",".join(f"{name}={u}" for u in kwargs["initial_advertise_peer_urls"])
        if isinstance(cluster_text, str):
            try:
                kwargs["initial_cluster"] = parse_initial_cluster(cluster_text)
            except _go().ValueError_ as exc:
                raise ConfigError([f"error setting up initial cluster: {exc}"]) from None
        else:  # already parsed by the config-file loader
            kwargs["initial_cluster"] = cluster_text
        if missing_ac:
            kwargs["advertise_client_urls"] = ()
            kwargs["advertise_client_urls_missing"] = True
        kwargs["config_file"] = config_file
        return cls(**kwargs)

    def replace(self, **changes: Any) -> ServerConfig:
        """A copy with some fields changed (not validated)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ derived values

    @property
    def effective_quota_backend_bytes(self) -> int:
        """The backend quota in force: 0 means etcd's 2 GiB default, negative disables it (0)."""
        if self.quota_backend_bytes == 0:
            return DEFAULT_QUOTA_BACKEND_BYTES
        return max(self.quota_backend_bytes, 0)

    @property
    def election_ticks(self) -> int:
        return self.election_timeout_ms // self.heartbeat_interval_ms

    @property
    def auto_compaction_period_ms(self) -> int:
        """Periodic mode: the retention window in ms (a bare number means hours); 0 = off."""
        if self.auto_compaction_mode == "revision":
            return 0
        return _retention(self.auto_compaction_mode, self.auto_compaction_retention)

    @property
    def auto_compaction_revisions(self) -> int:
        """Revision mode: how many revisions to keep; 0 = off."""
        if self.auto_compaction_mode != "revision":
            return 0
        return _retention("revision", self.auto_compaction_retention)

    def listen_addresses(
        self, kind: Literal["client", "client-http", "peer", "metrics"] = "client"
    ) -> list[tuple[str, int, str]]:
        """(host, port, scheme) to bind for the client, client HTTP, peer or metrics URLs.

        ``localhost`` is bound as ``127.0.0.1`` (etcd does the same: it never
        resolves names for binding). IPv6 hosts come without brackets.
        """
        urls = {
            "client": self.listen_client_urls,
            "client-http": self.listen_client_http_urls,
            "peer": self.listen_peer_urls,
            "metrics": self.listen_metrics_urls,
        }[kind]
        out: list[tuple[str, int, str]] = []
        for url in urls:
            scheme, host, port = url_host_port(url)
            if host == "localhost":
                host = "127.0.0.1"
            out.append((host, port, scheme))
        return out

    def initial_cluster_string(self) -> str:
        return urls_map_string(self.initial_cluster)

    # ------------------------------------------------------------ validation

    def problems(self) -> list[str]:
        """Every broken rule, in etcd's words where etcd has them (empty: valid)."""
        out: list[str] = []
        for flag, urls, bind in (
            ("listen-peer-urls", self.listen_peer_urls, True),
            ("listen-client-urls", self.listen_client_urls, True),
            ("listen-client-http-urls", self.listen_client_http_urls, True),
            ("listen-metrics-urls", self.listen_metrics_urls, True),
            ("initial-advertise-peer-urls", self.initial_advertise_peer_urls, False),
            ("advertise-client-urls", self.advertise_client_urls, False),
        ):
            for url in urls:
                out.extend(_check_url(flag, url, bind=bind, all_urls=urls))
        if self.initial_cluster_state not in ("new", "existing"):
            out.append(f'unexpected clusterState "{self.initial_cluster_state}"')
        if self.heartbeat_interval_ms <= 0:
            out.append(f"--heartbeat-interval must be >0 (set to {self.heartbeat_interval_ms}ms)")
        if self.election_timeout_ms <= 0:
            out.append(f"--election-timeout must be >0 (set to {self.election_timeout_ms}ms)")
        if 5 * self.heartbeat_interval_ms > self.election_timeout_ms:
            out.append(
                f"--election-timeout[{self.election_timeout_ms}ms] should be at least as 5 times as "
                f"--heartbeat-interval[{self.heartbeat_interval_ms}ms]"
            )
        if self.election_timeout_ms > MAX_ELECTION_MS:
            out.append(
                f"--election-timeout[{self.election_timeout_ms}ms] is too long, and should be set "
                f"less than {MAX_ELECTION_MS}ms"
            )
        if self.advertise_client_urls_missing:
            out.append(UNSET_ADVERTISE_CLIENT_URLS)
        if self.auto_compaction_mode not in ("", "periodic", "revision"):
            out.append(f'unknown auto-compaction-mode "{self.auto_compaction_mode}"')
        else:
            try:
                _retention(self.auto_compaction_mode, self.auto_compaction_retention)
            except ValueError as exc:
                out.append(str(exc))
        out.extend(self._logging_problems())
        out.extend(self._cluster_problems())
        if self.max_request_bytes <= 0:
            out.append(f"--max-request-bytes must be >0 (set to {self.max_request_bytes})")
        if self.max_txn_ops <= 0:
            out.append(f"--max-txn-ops must be >0 (set to {self.max_txn_ops})")
        if not 4 <= self.bcrypt_cost <= 31:
            out.append(f"--bcrypt-cost must be between 4 and 31 (set to {self.bcrypt_cost})")
        token_type = self.auth_token.split(",", 1)[0]
        if token_type not in ("simple", "jwt"):
            out.append(f"unknown token type: {token_type} (--auth-token must be 'simple' or 'jwt')")
        else:
            from meshkit.server.auth.tokens import TokenConfigError, parse_token_option

            try:
                parse_token_option(self.auth_token)
            except TokenConfigError as e:
                out.append(f"--auth-token: {e}")
        if self.metrics not in ("basic", "extensive"):
            out.append(f'--metrics must be "basic" or "extensive" (set to "{self.metrics}")')
        if self.enable_v2:
            out.append("flag --enable-v2 is not supported yet")
        for prefix, cert, key in (
            ("", self.cert_file, self.key_file),
            ("peer-", self.peer_cert_file, self.peer_key_file),
        ):
            if bool(cert) != bool(key):
                out.append(f"--{prefix}cert-file and --{prefix}key-file must be given together")
        out.extend(self._https_problems())
        return out

    def validate(self) -> ServerConfig:
        """Raise :class:`ConfigError` naming every broken rule; return self when valid."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems, context=_VERIFYING)
        return self

    def _logging_problems(self) -> list[str]:
        out: list[str] = []
        if self.log_level not in LOG_LEVELS:
            out.append(
                f'unknown log-level "{self.log_level}" (only supports debug, info, warn, error, panic, or fatal)'
            )
        if self.logger == "capnslog":
            if len(self.log_outputs) != 1:
                got = " ".join(f'"{o}"' for o in self.log_outputs)
                out.append(
                    f"--logger=capnslog supports only 1 value in '--log-outputs', got [{got}]"
                )
            else:
                output = self.log_outputs[0]
                if output not in ("default", "stderr", "stdout"):
                    out.append(
                        f'unknown log-output "{output}" (only supports "default", "stderr", "stdout")'
                    )
        elif self.logger == "zap":
            if not self.log_outputs:
                out.append("--log-outputs must not be empty")
            if len(self.log_outputs) > 1 and "default" in self.log_outputs:
                out.append('multi logoutput for "default" is not supported yet')
        else:
            out.append(f'unknown logger option "{self.logger}"')
        return out

    def _cluster_problems(self) -> list[str]:
        out: list[str] = []
        if not self.initial_cluster:
            return ["--initial-cluster must not be empty (discovery is not supported yet)"]
        names = {n for n, _ in self.initial_cluster}
        if self.name not in names:
            return [f'couldn\'t find local name "{self.name}" in the initial cluster configuration']
        seen: dict[str, str] = {}
        for _n, url in self.initial_cluster:
            key = _normalise_url(url)
            if key in seen:
                out.append(f"initial cluster {self.initial_cluster_string()} has duplicate url")
                break
            seen[key] = url
        if self.initial_cluster_state == "new":
            mine = sorted(u for n, u in self.initial_cluster if n == self.name)
            ap = sorted(self.initial_advertise_peer_urls)
            mine_n = sorted(_normalise_url(u) for u in mine)
            ap_n = sorted(_normalise_url(u) for u in ap)
            if mine_n != ap_n:
                if len(mine) != len(ap):
                    detail = f"len({_go_quote_list(ap)}) != len({_go_quote_list(mine)})"
                else:
                    a, b = next(
                        (a, b)
                        for a, b, an, bn in zip(ap, mine, ap_n, mine_n, strict=True)
                        if an != bn
                    )
                    detail = f'resolved urls: "{a}" != "{b}"'
                missing = [u for u in mine if _normalise_url(u) not in ap_n] or mine
                has = ",".join(f"{self.name}={u}" for u in missing)
                out.append(
                    f"--initial-cluster has {has} but missing from "
                    f"--initial-advertise-peer-urls={','.join(ap)} ({detail})"
                )
        return out

    def _https_problems(self) -> list[str]:
        out: list[str] = []
        client_tls = bool(self.cert_file and self.key_file) or self.auto_tls
        peer_tls = bool(self.peer_cert_file and self.peer_key_file) or self.peer_auto_tls
        for url in (*self.listen_client_urls, *self.listen_client_http_urls):
            if url.startswith("https://") and not client_tls:
                out.append(
                    f"TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
                )
        for url in self.listen_peer_urls:
            if url.startswith("https://") and not peer_tls:
                out.append(
                    "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url "
                    f"{url} with HTTPS scheme"
                )
        return out


# ---------------------------------------------------------------- helpers


def _unsupported_message(name: str, source: str) -> str:
    if source.startswith("--"):
        return f"flag --{name} is not supported yet"
    return f"flag --{name} is not supported yet (set by {source})"


def _values_from_env(
    environ: Mapping[str, str], cmdline: set[str], say: Callable[[str, str], None]
) -> dict[str, Any]:
    """etcd's ``flags.SetFlagsFromEnv`` + ``verifyEnv``."""
    by_env = {f.env: f for f in FLAGS if f.name != "config-file"}
    shadowed = {flag_to_env(n) for n in cmdline}
    values: dict[str, Any] = {}
    errors: list[str] = []
    for key, spec in by_env.items():
        if key in shadowed:
            continue
        text = environ.get(key, "")
        if text == "":
            continue
        try:
            value = spec.parse(text)
        except _go().ValueError_ as exc:
            errors.append(f'invalid value "{text}" for {key}: {exc}')
            continue
        if spec.status == "ignored":
            say("warning", f'flag "-{spec.name}" is no longer supported - ignoring.')
            continue
        values[spec.name] = value
        # Values of known settings are paths, URLs and numbers, never secrets.
        say("info", f"recognized and used environment variable {key}={text}")
    for key in environ:
        if key in shadowed:
            raise ConfigError(
                [
                    f'conflicting environment variable "{key}" is shadowed by corresponding '
                    "command-line flag (either unset environment variable or disable flag)"
                ]
            )
        if key.startswith("ETCD_") and key not in by_env and key != flag_to_env("config-file"):
            # The value is not echoed: an unknown variable may hold anything.
            say("warning", f"unrecognized environment variable {key}")
    if errors:
        raise ConfigError(errors, context=_VERIFYING)
    return values


def _retention(mode: str, text: str) -> int:
    """etcd's parseCompactionRetention: ms for periodic, a count for revision."""
    goflags = _go()
    if re.fullmatch(r"[0-9]+", text):
        n = int(text)
        return n if mode == "revision" else n * 3_600_000
    if mode == "revision":
        raise ValueError(
            f'error parsing CompactionRetention: revision mode needs a number of revisions, got "{text}"'
        )
    try:
        ns = int(goflags.parse_duration_ns(text))
    except goflags.ValueError_ as exc:
        raise ValueError(f"error parsing CompactionRetention: {exc}") from None
    if ns < 0:
        raise ValueError(f'error parsing CompactionRetention: negative duration "{text}"')
    return ns // _MS


def _normalise_url(url: str) -> str:
    """Compare peer URLs as etcd does after resolving: localhost is 127.0.0.1."""
    scheme, host, port = url_host_port(url)
    if host == "localhost":
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


def _go_quote_list(items: Sequence[str]) -> str:
    return "[" + " ".join(f'"{i}"' for i in items) + "]"


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_url(flag: str, url: str, *, bind: bool, all_urls: Sequence[str]) -> list[str]:
    scheme, host, port = url_host_port(url)
    out: list[str] = []
    if scheme in ("unix", "unixs"):
        return [f"--{flag} {url}: unix socket URLs are not supported yet"]
    if bind and host != "localhost" and not _is_ip(host):
        out.append(f"expected IP in URL for binding ({url})")
    if not bind and host == "":
        out.append(
            f'--{flag} "{",".join(all_urls)}" must be "host:port" (unexpected empty host ({url}))'
        )
    if not (0 if bind else 1) <= port <= 65535:
        low = 0 if bind else 1
        out.append(f"--{flag} {url}: port must be between {low} and 65535")
    return out
