"""ServerConfig.from_args: defaults, flag forms, env vars, precedence, config file, validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from meshkit.server.config import (
    FLAGS,
    ConfigError,
    HelpRequested,
    ServerConfig,
    VersionRequested,
)

# Loopback URLs every valid test uses unless it is about URLs.
LOOP = [
    "--listen-client-urls", "http://127.0.0.1:23791",
    "--advertise-client-urls", "http://127.0.0.1:23791",
    "--listen-peer-urls", "http://127.0.0.1:23801",
    "--initial-advertise-peer-urls", "http://127.0.0.1:23801",
    "--initial-cluster", "default=http://127.0.0.1:23801",
]  # fmt: skip


def parse(
    *argv: str, env: dict[str, str] | None = None, log: list[tuple[str, str]] | None = None
) -> ServerConfig:
    sink = log if log is not None else []
    return ServerConfig.from_args(
        list(argv), env or {}, log=lambda lvl, msg: sink.append((lvl, msg))
    )


def problems_of(*argv: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as ei:
        parse(*argv, env=env)
    return "\n".join(ei.value.problems)


# ------------------------------------------------------------------ defaults


def test_defaults_equal_etcd() -> None:
    c = parse()
    assert c.name == "default"
    assert c.data_dir == "default.etcd"
    assert c.wal_dir == ""
    assert c.listen_client_urls == ("http://localhost:2379",)
    assert c.advertise_client_urls == ("http://localhost:2379",)
    assert c.listen_peer_urls == ("http://localhost:2380",)
    assert c.initial_advertise_peer_urls == ("http://localhost:2380",)
    assert c.initial_cluster == (("default", "http://localhost:2380"),)
    assert c.initial_cluster_state == "new"
    assert c.initial_cluster_token == "etcd-cluster"
    assert c.snapshot_count == 100000
    assert c.heartbeat_interval_ms == 100
    assert c.election_timeout_ms == 1000
    assert c.quota_backend_bytes == 0
    assert c.effective_quota_backend_bytes == 2 * 1024**3
    assert c.max_request_bytes == 1572864
    assert c.max_txn_ops == 128
    assert c.grpc_keepalive_min_time_ms == 5000
    assert c.grpc_keepalive_interval_ms == 2 * 3600 * 1000
    assert c.grpc_keepalive_timeout_ms == 20000
    assert c.auto_compaction_mode == "periodic"
    assert c.auto_compaction_retention == "0"
    assert c.log_level == "info"
    assert c.logger == "capnslog"
    assert c.log_outputs == ("default",)
    assert c.enable_v2 is False
    assert c.auth_token == "simple"
    assert c.bcrypt_cost == 10
    assert c.strict_reconfig_check is True
    assert c.max_snapshots == 5 and c.max_wals == 5
    assert c.metrics == "basic"
    assert c.listen_metrics_urls == ()
    assert c == ServerConfig()  # the dataclass defaults are etcd's too


def test_config_is_frozen() -> None:
    c = parse()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.name = "x"  # type: ignore[misc]
    assert dataclasses.is_dataclass(c)


def test_name_derives_data_dir_and_initial_cluster() -> None:
    c = parse("--name", "n1", "--initial-advertise-peer-urls", "http://127.0.0.1:23801",
              "--listen-peer-urls", "http://127.0.0.1:23801")  # fmt: skip
    assert c.data_dir == "n1.etcd"
    assert c.initial_cluster == (("n1", "http://127.0.0.1:23801"),)


def test_default_name_keeps_default_initial_cluster() -> None:
    # etcd only rewrites initial-cluster when the name is not "default"
    msg = problems_of("--initial-advertise-peer-urls", "http://127.0.0.1:23801",
                      "--listen-peer-urls", "http://127.0.0.1:23801")  # fmt: skip
    assert "--initial-cluster has default=http://localhost:2380 but missing from" in msg
    assert '(resolved urls: "http://127.0.0.1:23801" != "http://localhost:2380")' in msg


# ------------------------------------------------------------------ flag forms


@pytest.mark.parametrize(
    "argv",
    [["-name", "x"], ["--name", "x"], ["--name=x"], ["-name=x"]],
)
def test_string_flag_forms(argv: list[str]) -> None:
    assert parse(*argv).name == "x"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--force-new-cluster"], True),
        (["-force-new-cluster"], True),
        (["--force-new-cluster=true"], True),
        (["--force-new-cluster=1"], True),
        (["--force-new-cluster=T"], True),
        (["--force-new-cluster=false"], False),
        ([], False),
    ],
)
def test_bool_flag_forms(argv: list[str], expected: bool) -> None:
    assert parse(*argv).force_new_cluster is expected


def test_bool_flag_does_not_take_separate_value() -> None:
    with pytest.raises(ConfigError) as ei:
        parse("--force-new-cluster", "false")
    assert ei.value.problems == ("'false' is not a valid flag",)
    assert ei.value.exit_code == 1


def test_last_repeat_wins_and_double_dash_ends_flags() -> None:
    assert parse("--name", "a", "--name", "b").name == "b"
    with pytest.raises(ConfigError, match="'x' is not a valid flag"):
        parse("--", "x")


def test_integer_forms_like_go() -> None:
    assert parse("--snapshot-count", "0x10").snapshot_count == 16
    assert parse("--snapshot-count", "1_000").snapshot_count == 1000
    assert parse("--quota-backend-bytes", "-1").effective_quota_backend_bytes == 0


def test_durations() -> None:
    c = parse("--grpc-keepalive-min-time", "1.5s", "--grpc-keepalive-interval", "1h30m",
              "--grpc-keepalive-timeout", "0")  # fmt: skip
    assert c.grpc_keepalive_min_time_ms == 1500
    assert c.grpc_keepalive_interval_ms == 90 * 60 * 1000
    assert c.grpc_keepalive_timeout_ms == 0


def test_urls_are_unique_and_sorted() -> None:
    c = parse(
        "--listen-client-urls", "http://127.0.0.1:2,http://127.0.0.1:1, http://127.0.0.1:1",
        "--advertise-client-urls", "http://127.0.0.1:1",
    )  # fmt: skip
    assert c.listen_client_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")


def test_listen_addresses_map_localhost() -> None:
    c = parse("--listen-client-urls", "http://localhost:23791,https://127.0.0.1:23792",
              "--advertise-client-urls", "http://127.0.0.1:23791", "--auto-tls")  # fmt: skip
    assert c.listen_addresses() == [("127.0.0.1", 23791, "http"), ("127.0.0.1", 23792, "https")]
    assert parse().listen_addresses("peer") == [("127.0.0.1", 2380, "http")]


def test_multi_member_initial_cluster() -> None:
    c = parse(*LOOP[:8], "--initial-cluster",
              "default=http://127.0.0.1:23801,b=http://127.0.0.1:23802,c=http://127.0.0.1:23803")  # fmt: skip
    assert c.initial_cluster == (
        ("b", "http://127.0.0.1:23802"),
        ("c", "http://127.0.0.1:23803"),
        ("default", "http://127.0.0.1:23801"),
    )


def test_auto_compaction_retention() -> None:
    assert parse("--auto-compaction-retention", "1").auto_compaction_period_ms == 3600_000
    assert parse("--auto-compaction-retention", "5m").auto_compaction_period_ms == 300_000
    c = parse("--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000")
    assert c.auto_compaction_revisions == 1000 and c.auto_compaction_period_ms == 0


def test_debug_flag_sets_log_level_and_log_output_alias() -> None:
    assert parse("--debug").log_level == "debug"
    assert parse("--log-output", "stdout").log_outputs == ("stdout",)
    c = parse("--logger", "zap", "--log-outputs", "stderr,/tmp/x.log", "--log-level", "warn")
    assert c.log_outputs == ("/tmp/x.log", "stderr") and c.log_level == "warn"


def test_tls_flags_are_fields() -> None:
    c = parse("--cert-file", "c.pem", "--key-file", "k.pem", "--trusted-ca-file", "ca.pem",
              "--client-cert-auth", "--peer-cert-file", "pc.pem", "--peer-key-file", "pk.pem",
              "--peer-trusted-ca-file", "pca.pem", "--peer-client-cert-auth", "--peer-auto-tls",
              "--auto-tls")  # fmt: skip
    assert (c.cert_file, c.key_file, c.trusted_ca_file, c.client_cert_auth) == (
        "c.pem",
        "k.pem",
        "ca.pem",
        True,
    )
    assert (c.peer_cert_file, c.peer_key_file, c.peer_trusted_ca_file) == (
        "pc.pem",
        "pk.pem",
        "pca.pem",
    )
    assert c.peer_client_cert_auth and c.peer_auto_tls and c.auto_tls


# ------------------------------------------------------------------ errors from parsing


def test_unknown_flag_is_exit_2_with_hint() -> None:
    with pytest.raises(ConfigError) as ei:
        parse("--lisen-client-urls", "http://127.0.0.1:1")
    assert ei.value.exit_code == 2
    assert ei.value.problems[0].startswith("flag provided but not defined: -lisen-client-urls")
    assert "did you mean --listen-client-urls?" in ei.value.problems[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--snapshot-count", "abc"], 'invalid value "abc" for flag -snapshot-count: parse error'),
        (["--snapshot-count", "-1"], 'invalid value "-1" for flag -snapshot-count: parse error'),
        (["--heartbeat-interval", "99999999999999999999"],
         'invalid value "99999999999999999999" for flag -heartbeat-interval: value out of range'),
        (["--grpc-keepalive-min-time", "5"], 'invalid value "5" for flag -grpc-keepalive-min-time: parse error'),
        (["--force-new-cluster=maybe"], 'invalid boolean value "maybe" for -force-new-cluster: parse error'),
        (["--initial-cluster-state", "bogus"], 'invalid value "bogus" for flag -initial-cluster-state: invalid value'),
        (["--listen-client-urls", "ftp://127.0.0.1:1"],
         'invalid value "ftp://127.0.0.1:1" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:1'),
        (["--listen-client-urls", "http://127.0.0.1"],
         'invalid value "http://127.0.0.1" for flag -listen-client-urls: URL address does not have the form "host:port": http://127.0.0.1'),
        (["--listen-client-urls", "http://127.0.0.1:abc"],
         'invalid value "http://127.0.0.1:abc" for flag -listen-client-urls: parse "http://127.0.0.1:abc": invalid port ":abc" after host'),
        (["--advertise-client-urls", "http://127.0.0.1:1/path"],
         'invalid value "http://127.0.0.1:1/path" for flag -advertise-client-urls: URL must not contain a path: http://127.0.0.1:1/path'),
        (["--name"], "flag needs an argument: -name"),
        (["---name"], "bad flag syntax: ---name"),
    ],
)  # fmt: skip
def test_bad_values_name_flag_and_value(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(*argv)
    assert ei.value.problems == (message,)
    assert ei.value.exit_code == 2


def test_help_and_version() -> None:
    with pytest.raises(HelpRequested):
        parse("-h")
    with pytest.raises(HelpRequested):
        parse("--help")
    with pytest.raises(VersionRequested):
        parse("--version")


# ------------------------------------------------------------------ unsupported / legacy flags

UNSUPPORTED = [f for f in FLAGS if f.status == "unsupported"]


@pytest.mark.parametrize("spec", UNSUPPORTED, ids=lambda s: s.name)
def test_unsupported_flag_with_default_value_is_accepted(spec) -> None:  # type: ignore[no-untyped-def]
    from meshkit._internal.goflags import format_duration_ns

    if spec.kind == "bool":
        text = str(spec.default).lower()
    elif spec.kind == "duration":
        text = format_duration_ns(spec.default)
    elif spec.kind in ("strings", "unique-strings"):
        text = ",".join(spec.default)
    else:
        text = str(spec.default)
    parse(f"--{spec.name}={text}")
    parse(env={spec.env: text} if text else {})


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--discovery", "http://127.0.0.1:1/x"], "discovery"),
        (["--proxy", "on"], "proxy"),
        (["--pre-vote"], "pre-vote"),
        (["--enable-v2"], "enable-v2"),
        (["--experimental-initial-corrupt-check"], "experimental-initial-corrupt-check"),
        (["--cipher-suites", "TLS_AES_128_GCM_SHA256"], "cipher-suites"),
        (["--unsafe-no-fsync"], "unsafe-no-fsync"),
    ],
)
def test_unsupported_flag_with_other_value_is_error(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(*argv)
    assert ei.value.problems == (f"flag --{flag} is not supported yet",)
    assert ei.value.exit_code == 1


def test_unsupported_flag_from_env_names_the_variable() -> None:
    msg = problems_of(env={"ETCD_PRE_VOTE": "true"})
    assert msg == "flag --pre-vote is not supported yet (set by ETCD_PRE_VOTE)"


def test_legacy_flag_is_ignored_with_warning() -> None:
    log: list[tuple[str, str]] = []
    parse("-v", "--snapshot", log=log)
    assert ("warning", 'flag "-v" is no longer supported - ignoring.') in log
    assert ("warning", 'flag "-snapshot" is no longer supported - ignoring.') in log


# ------------------------------------------------------------------ environment


def test_env_vars() -> None:
    c = parse(env={
        "ETCD_NAME": "envname",
        "ETCD_DATA_DIR": "/tmp/envdata",
        "ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:23791",
        "ETCD_ADVERTISE_CLIENT_URLS": "http://127.0.0.1:23791",
        "ETCD_SNAPSHOT_COUNT": "5",
        "ETCD_FORCE_NEW_CLUSTER": "true",
        "ETCD_GRPC_KEEPALIVE_TIMEOUT": "3s",
    })  # fmt: skip
    assert c.name == "envname" and c.data_dir == "/tmp/envdata"
    assert c.listen_client_urls == ("http://127.0.0.1:23791",)
    assert c.snapshot_count == 5 and c.force_new_cluster and c.grpc_keepalive_timeout_ms == 3000
    assert c.initial_cluster == (("envname", "http://localhost:2380"),)


def test_env_empty_value_is_unset() -> None:
    assert parse(env={"ETCD_NAME": ""}).name == "default"


def test_flag_and_env_for_same_setting_conflict() -> None:
    # etcd 3.4 treats this as fatal, exit 1 (not a warning)
    msg = problems_of("--name", "flagname", env={"ETCD_NAME": "envname"})
    assert msg == (
        'conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag '
        "(either unset environment variable or disable flag)"
    )


def test_flags_and_env_combine() -> None:
    c = parse("--name", "flagname", env={"ETCD_SNAPSHOT_COUNT": "7"})
    assert c.name == "flagname" and c.snapshot_count == 7


def test_unknown_env_var_warns_without_value() -> None:
    log: list[tuple[str, str]] = []
    parse(env={"ETCD_FOO_BAR": "secret-value", "ETCDCTL_API": "3", "HOME": "/root"}, log=log)
    assert ("warning", "unrecognized environment variable ETCD_FOO_BAR") in log
    assert not any("secret-value" in m for _, m in log)
    assert not any("ETCDCTL_API" in m for _, m in log)


def test_bad_env_value_names_variable() -> None:
    with pytest.raises(ConfigError) as ei:
        parse(env={"ETCD_SNAPSHOT_COUNT": "abc"})
    assert ei.value.problems == ('invalid value "abc" for ETCD_SNAPSHOT_COUNT: parse error',)
    assert ei.value.exit_code == 1


def test_listen_client_urls_from_env_requires_advertise() -> None:
    msg = problems_of(env={"ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:23791"})
    assert msg == "--advertise-client-urls is required when --listen-client-urls is set explicitly"


# ------------------------------------------------------------------ config file


SAMPLE = """\
name: filename
data-dir: /tmp/filedata
listen-peer-urls: http://127.0.0.1:23801
listen-client-urls: http://127.0.0.1:23791,http://localhost:23792
initial-advertise-peer-urls: http://127.0.0.1:23801
advertise-client-urls: http://127.0.0.1:23791
initial-cluster-token: tok
initial-cluster-state: 'new'
snapshot-count: 42
heartbeat-interval: 50
election-timeout: 500
quota-backend-bytes: 1048576
max-request-bytes: 1000
auto-compaction-mode: periodic
auto-compaction-retention: "2"
grpc-keepalive-min-time: 3000000000
log-outputs: [stderr]
force-new-cluster: true
strict-reconfig-check: false
enable-v2: false
proxy: 'off'
client-transport-security:
  cert-file: /c/server.crt
  key-file: /c/server.key
  client-cert-auth: true
  trusted-ca-file: /c/ca.crt
  auto-tls: false
peer-transport-security:
  cert-file: /c/peer.crt
  key-file: /c/peer.key
  client-cert-auth: true
  trusted-ca-file: /c/peer-ca.crt
  auto-tls: false
"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "etcd.conf.yml"
    p.write_text(text)
    return str(p)


def test_config_file_with_nested_tls(tmp_path: Path) -> None:
    c = parse("--config-file", write(tmp_path, SAMPLE))
    assert c.name == "filename" and c.data_dir == "/tmp/filedata"
    assert c.listen_client_urls == ("http://127.0.0.1:23791", "http://localhost:23792")
    assert c.initial_cluster == (("filename", "http://127.0.0.1:23801"),)  # derived from name
    assert c.initial_cluster_token == "tok"
    assert (c.snapshot_count, c.heartbeat_interval_ms, c.election_timeout_ms) == (42, 50, 500)
    assert c.quota_backend_bytes == 1048576 and c.max_request_bytes == 1000
    assert c.auto_compaction_period_ms == 2 * 3600_000
    assert c.grpc_keepalive_min_time_ms == 3000
    assert c.log_outputs == ("stderr",)
    assert c.force_new_cluster and not c.strict_reconfig_check
    assert (c.cert_file, c.key_file, c.trusted_ca_file, c.client_cert_auth) == (
        "/c/server.crt", "/c/server.key", "/c/ca.crt", True)  # fmt: skip
    assert (c.peer_cert_file, c.peer_key_file, c.peer_trusted_ca_file, c.peer_client_cert_auth) == (
        "/c/peer.crt", "/c/peer.key", "/c/peer-ca.crt", True)  # fmt: skip
    assert c.config_file.endswith("etcd.conf.yml")


def test_config_file_ignores_flags_and_env(tmp_path: Path) -> None:
    path = write(tmp_path, SAMPLE)
    log: list[tuple[str, str]] = []
    c = parse("--config-file", path, "--name", "flagname", "--snapshot-count", "1",
              env={"ETCD_NAME": "envname", "ETCD_FOO": "1"}, log=log)  # fmt: skip
    assert c.name == "filename" and c.snapshot_count == 42
    assert any("will be ignored" in m for _, m in log)
    assert not any("ETCD_FOO" in m for _, m in log)


def test_config_file_from_env(tmp_path: Path) -> None:
    c = parse(env={"ETCD_CONFIG_FILE": write(tmp_path, SAMPLE), "ETCD_NAME": "envname"})
    assert c.name == "filename"


def test_config_file_defaults_data_dir_from_name(tmp_path: Path) -> None:
    c = parse("--config-file", write(tmp_path, "name: n9\n"))
    assert c.data_dir == "n9.etcd"
    assert c.initial_cluster == (("n9", "http://localhost:2380"),)
    assert c.advertise_client_urls == ("http://localhost:2379",)


def test_config_file_duration_string_extension(tmp_path: Path) -> None:
    c = parse("--config-file", write(tmp_path, "grpc-keepalive-interval: 10m\n"))
    assert c.grpc_keepalive_interval_ms == 600_000


def test_config_file_unknown_key_warns(tmp_path: Path) -> None:
    log: list[tuple[str, str]] = []
    parse("--config-file", write(tmp_path, "name: a\nbogus-key: 1\ncert-file: x\n"), log=log)
    assert ("warning", "unrecognized config key bogus-key (ignored)") in log
    assert ("warning", "unrecognized config key cert-file (ignored)") in log


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsnapshot-count: abc\n",
         "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal string into Go struct field "
         "configYAML.snapshot-count of type uint64"),
        ("name: [x\n", "error converting YAML to JSON: yaml:"),
        ("listen-client-urls: ftp://127.0.0.1:1\n",
         "unexpected error setting up listen-client-urls: URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:1"),
        ("client-transport-security: yes\n", "configYAML.client-transport-security"),
        ("force-new-cluster: 3\n", "cannot unmarshal number into Go struct field configYAML.force-new-cluster of type bool"),
        ("discovery: http://127.0.0.1:1/x\n", "flag --discovery is not supported yet (set by config file key 'discovery')"),
    ],
)  # fmt: skip
def test_config_file_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse("--config-file", write(tmp_path, text))
    assert message in ei.value.problems[0]
    assert ei.value.exit_code == 1


def test_config_file_missing() -> None:
    msg = problems_of("--config-file", "/nonexistent/etcd.yml")
    assert msg == "open /nonexistent/etcd.yml: no such file or directory"


def test_config_file_still_validated(tmp_path: Path) -> None:
    msg = problems_of("--config-file", write(tmp_path, "heartbeat-interval: 500\n"))
    assert (
        "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[500ms]"
        in msg
    )


# ------------------------------------------------------------------ validation: one rule each


def test_valid_loopback_config() -> None:
    assert parse(*LOOP).problems() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--heartbeat-interval", "300"],
         "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"),
        (["--heartbeat-interval", "0"], "--heartbeat-interval must be >0 (set to 0ms)"),
        (["--election-timeout", "0"], "--election-timeout must be >0 (set to 0ms)"),
        (["--election-timeout", "60000"],
         "--election-timeout[60000ms] is too long, and should be set less than 50000ms"),
        (["--listen-client-urls", "http://example.com:23791"], "expected IP in URL for binding (http://example.com:23791)"),
        (["--listen-peer-urls", "http://example.com:23801"], "expected IP in URL for binding (http://example.com:23801)"),
        (["--advertise-client-urls", "http://:23791"],
         '--advertise-client-urls "http://:23791" must be "host:port" (unexpected empty host (http://:23791))'),
        (["--listen-client-urls", "http://127.0.0.1:70000"], "--listen-client-urls http://127.0.0.1:70000: port must be between 0 and 65535"),
        (["--listen-client-urls", "unix://127.0.0.1:1"], "--listen-client-urls unix://127.0.0.1:1: unix socket URLs are not supported yet"),
        (["--auto-compaction-mode", "bogus"], 'unknown auto-compaction-mode "bogus"'),
        (["--auto-compaction-retention", "bogus"], 'error parsing CompactionRetention: time: invalid duration "bogus"'),
        (["--auto-compaction-retention", "-5"], 'error parsing CompactionRetention: time: missing unit in duration "-5"'),
        (["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"],
         'revision mode needs a number of revisions, got "1h"'),
        (["--log-level", "bogus"], 'unknown log-level "bogus" (only supports debug, info, warn, error, panic, or fatal)'),
        (["--logger", "bogus"], 'unknown logger option "bogus"'),
        (["--log-outputs", "stderr,stdout"], "--logger=capnslog supports only 1 value in '--log-outputs', got [\"stderr\" \"stdout\"]"),
        (["--log-outputs", "bogus"], 'unknown log-output "bogus" (only supports "default", "stderr", "stdout")'),
        (["--logger", "zap", "--log-outputs", "default,stdout"], 'multi logoutput for "default" is not supported yet'),
        (["--max-request-bytes", "0"], "--max-request-bytes must be >0 (set to 0)"),
        (["--max-txn-ops", "0"], "--max-txn-ops must be >0 (set to 0)"),
        (["--bcrypt-cost", "3"], "--bcrypt-cost must be between 4 and 31 (set to 3)"),
        (["--auth-token", "bogus"], "unknown token type: bogus"),
        (["--auth-token", "jwt,pub-key=x"], "--auth-token: jwt: sign-method is required"),
        (["--metrics", "bogus"], '--metrics must be "basic" or "extensive" (set to "bogus")'),
        (["--cert-file", "c.pem"], "--cert-file and --key-file must be given together"),
        (["--listen-client-urls", "https://127.0.0.1:23791", "--advertise-client-urls", "https://127.0.0.1:23791"],
         "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:23791 with HTTPS scheme"),
        (["--listen-client-urls", "http://127.0.0.1:23791"],
         "--advertise-client-urls is required when --listen-client-urls is set explicitly"),
    ],
)  # fmt: skip
def test_validation_rule(argv: list[str], message: str) -> None:
    base = [a for a in LOOP]
    # the rule's own flags replace the loopback defaults given in LOOP
    for flag in argv[::2]:
        if flag in base:
            i = base.index(flag)
            del base[i : i + 2]
    if (
        "--listen-client-urls" in argv
        and "--advertise-client-urls" not in argv
        and "required" in message
    ):
        base = [a for a in base]
        i = base.index("--advertise-client-urls")
        del base[i : i + 2]
    with pytest.raises(ConfigError) as ei:
        parse(*base, *argv)
    assert any(message in p for p in ei.value.problems), ei.value.problems
    assert ei.value.exit_code == 1


@pytest.mark.parametrize(
    ("cluster", "extra", "message"),
    [
        ("other=http://127.0.0.1:23801", [], 'couldn\'t find local name "default" in the initial cluster configuration'),
        ("other=http://127.0.0.1:23801", ["--initial-cluster-state", "existing"],
         'couldn\'t find local name "default" in the initial cluster configuration'),
        ("default=http://127.0.0.1:23802", [],
         "--initial-cluster has default=http://127.0.0.1:23802 but missing from "
         '--initial-advertise-peer-urls=http://127.0.0.1:23801 (resolved urls: "http://127.0.0.1:23801" != "http://127.0.0.1:23802")'),
        ("default=http://127.0.0.1:23801,default=http://127.0.0.1:23802", [],
         "--initial-cluster has default=http://127.0.0.1:23802 but missing from --initial-advertise-peer-urls=http://127.0.0.1:23801 "
         '(len(["http://127.0.0.1:23801"]) != len(["http://127.0.0.1:23801" "http://127.0.0.1:23802"]))'),
        ("default=http://127.0.0.1:23801,b=http://127.0.0.1:23801", [],
         "initial cluster b=http://127.0.0.1:23801,default=http://127.0.0.1:23801 has duplicate url"),
        ("default=http://127.0.0.1", [], 'error setting up initial cluster: URL address does not have the form "host:port": http://127.0.0.1'),
        ("foo", [], "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: "),
    ],
)  # fmt: skip
def test_initial_cluster_rules(cluster: str, extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(*LOOP[:8], "--initial-cluster", cluster, *extra)
    assert message in ei.value.problems


def test_initial_cluster_localhost_matches_127() -> None:
    parse(*LOOP[:8], "--initial-cluster", "default=http://localhost:23801")


def test_validate_names_every_broken_rule() -> None:
    c = ServerConfig(
        heartbeat_interval_ms=300, max_request_bytes=0, log_level="loud", bcrypt_cost=99
    )
    with pytest.raises(ConfigError) as ei:
        c.validate()
    text = "\n".join(ei.value.problems)
    for needle in (
        "--heartbeat-interval[300ms]",
        "--max-request-bytes",
        "log-level",
        "--bcrypt-cost",
    ):
        assert needle in text
    assert len(ei.value.problems) == 4


def test_from_args_without_validation() -> None:
    c = ServerConfig.from_args(["--max-request-bytes", "0"], {}, validate=False)
    assert c.max_request_bytes == 0
    assert c.problems() == ["--max-request-bytes must be >0 (set to 0)"]


# ------------------------------------------------------------------ etcd 3.5's catch-up entries


def test_snapshot_catchup_entries_default_flag_and_env() -> None:
    """``--experimental-snapshot-catchup-entries`` (etcd 3.5, uint64, default 5000)."""
    from meshkit.server.run import settings_from_config

    assert parse().snapshot_catchup_entries == 5000
    c = parse("--experimental-snapshot-catchup-entries", "10")
    assert c.snapshot_catchup_entries == 10
    assert settings_from_config(c).snapshot_catchup_entries == 10  # what the server uses
    assert parse("--experimental-snapshot-catchup-entries=0").snapshot_catchup_entries == 0  # as etcd
    env = {"ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES": "12"}
    assert parse(env=env).snapshot_catchup_entries == 12
    assert "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES" in problems_of(
        "--experimental-snapshot-catchup-entries", "3", env=env)  # shadowed: fatal, as any flag


def test_snapshot_catchup_entries_config_file_key(tmp_path: Path) -> None:
    """etcd 3.5's YAML key is spelt ``catch-up`` (its json tag), not like the flag."""
    c = parse("--config-file", write(tmp_path, "experimental-snapshot-catch-up-entries: 1000\n"))
    assert c.snapshot_catchup_entries == 1000
    log: list[tuple[str, str]] = []
    c = parse("--config-file", write(tmp_path, "experimental-snapshot-catchup-entries: 7\n"), log=log)
    assert c.snapshot_catchup_entries == 5000
    assert ("warning", "unrecognized config key experimental-snapshot-catchup-entries (ignored)") in log


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", ""])
def test_snapshot_catchup_entries_bad_flag_value_names_the_flag(value: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(f"--experimental-snapshot-catchup-entries={value}")
    assert ei.value.problems == (
        f'invalid value "{value}" for flag -experimental-snapshot-catchup-entries: parse error',)
    assert ei.value.exit_code == 2


def test_snapshot_catchup_entries_bad_env_and_file_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(env={"ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES": "ten"})
    assert ei.value.problems == (
        'invalid value "ten" for ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES: parse error',)
    for text, kind in (("ten", "string"), ("-3", "number -3")):
        with pytest.raises(ConfigError) as ei:
            parse("--config-file", write(tmp_path, f"experimental-snapshot-catch-up-entries: {text}\n"))
        assert ei.value.problems == (
            f"error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {kind} into Go "
            "struct field configYAML.experimental-snapshot-catch-up-entries of type uint64",)


def test_snapshot_catchup_entries_bad_value_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from meshkit.cli.main import main

    assert main(["server", "--experimental-snapshot-catchup-entries", "many"]) == 2
    assert ('invalid value "many" for flag -experimental-snapshot-catchup-entries: parse error'
            in capsys.readouterr().err)
