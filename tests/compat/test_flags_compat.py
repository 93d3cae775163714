"""The same bad command lines given to the real etcd 3.4 and to `meshkit server`.

Both must fail, with the same exit code, and name the same flag/value in the same
words. Every case fails before etcd serves anything; URLs are on 127.0.0.1 only and
a hung process is killed by the subprocess timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import require_reference_binaries

ETCD = shutil.which("etcd")
pytestmark = pytest.mark.etcd


@pytest.fixture(autouse=True)
def _need_etcd() -> None:
    # skipped without the real binaries; a failure in CI (MESHKIT_REQUIRE_ETCD=1)
    require_reference_binaries()


LOOP = [
    "--listen-client-urls", "http://127.0.0.1:23979",
    "--advertise-client-urls", "http://127.0.0.1:23979",
    "--listen-peer-urls", "http://127.0.0.1:23980",
    "--initial-advertise-peer-urls", "http://127.0.0.1:23980",
    "--initial-cluster", "default=http://127.0.0.1:23980",
]  # fmt: skip


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    full_env.update(env)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=20)


def both(
    tmp_path: Path, args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    env = env or {}
    (tmp_path / "etcd").mkdir()
    (tmp_path / "meshkit").mkdir()
    assert ETCD is not None
    etcd = _run([ETCD, "--data-dir", str(tmp_path / "etcd" / "d"), *args], env, tmp_path / "etcd")
    mesh = _run(
        [
            sys.executable,
            "-m",
            "meshkit",
            "server",
            "--data-dir",
            str(tmp_path / "meshkit" / "d"),
            *args,
        ],
        env,
        tmp_path / "meshkit",
    )
    assert "Traceback" not in mesh.stderr
    return etcd, mesh


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--bad-flag"], 2, "flag provided but not defined: -bad-flag"),
        (["--snapshot-count", "abc"], 2, 'invalid value "abc" for flag -snapshot-count: parse error'),
        (["--force-new-cluster=maybe"], 2, 'invalid boolean value "maybe" for -force-new-cluster: parse error'),
        (["--initial-cluster-state", "bogus"], 2, 'invalid value "bogus" for flag -initial-cluster-state: invalid value'),
        (["--listen-client-urls", "http://127.0.0.1"], 2,
         'invalid value "http://127.0.0.1" for flag -listen-client-urls: URL address does not have the form "host:port"'),
        (["--name"], 2, "flag needs an argument: -name"),
        (["extra"], 1, "'extra' is not a valid flag"),
        ([*LOOP, "--election-timeout", "100"], 1,
         "--election-timeout[100ms] should be at least as 5 times as --heartbeat-interval[100ms]"),
        ([*LOOP, "--election-timeout", "60000"], 1, "--election-timeout[60000ms] is too long, and should be set less than 50000ms"),
        (["--listen-client-urls", "http://127.0.0.1:23979"], 1,
         "--advertise-client-urls is required when --listen-client-urls is set explicitly"),
        ([*LOOP, "--auto-compaction-mode", "bogus"], 1, 'unknown auto-compaction-mode "bogus"'),
        ([*LOOP, "--logger", "bogus"], 1, 'unknown logger option "bogus"'),
        ([*LOOP, "--log-outputs", "bogus"], 1, 'unknown log-output "bogus" (only supports "default", "stderr", "stdout")'),
        ([*LOOP[:8], "--initial-cluster", "other=http://127.0.0.1:23980"], 1,
         'couldn\'t find local name "default" in the initial cluster configuration'),
        ([*LOOP[:8], "--initial-cluster", "default=http://127.0.0.1:23981"], 1,
         "--initial-cluster has default=http://127.0.0.1:23981 but missing from --initial-advertise-peer-urls=http://127.0.0.1:23980"),
    ],
)  # fmt: skip
def test_same_failure(tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    etcd, mesh = both(tmp_path, args)
    assert etcd.returncode == code, etcd.stderr[-2000:]
    assert mesh.returncode == code, mesh.stderr
    assert needle in etcd.stderr
    assert needle in mesh.stderr


def test_bad_env_value(tmp_path: Path) -> None:
    etcd, mesh = both(tmp_path, LOOP, {"ETCD_SNAPSHOT_COUNT": "abc"})
    needle = 'invalid value "abc" for ETCD_SNAPSHOT_COUNT: parse error'
    assert etcd.returncode == mesh.returncode == 1
    assert needle in etcd.stderr and needle in mesh.stderr


def test_env_shadowed_by_flag_is_fatal(tmp_path: Path) -> None:
    etcd, mesh = both(tmp_path, [*LOOP, "--name", "a"], {"ETCD_NAME": "b"})
    needle = 'conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag'
    assert etcd.returncode == mesh.returncode == 1
    assert needle in etcd.stderr and needle in mesh.stderr


def test_config_file_type_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("name: x\nsnapshot-count: abc\n")
    etcd, mesh = both(tmp_path, ["--config-file", str(cfg)])
    needle = "json: cannot unmarshal string into Go struct field configYAML.snapshot-count of type uint64"
    assert etcd.returncode == mesh.returncode == 1
    assert needle in etcd.stderr and needle in mesh.stderr


def test_config_file_missing(tmp_path: Path) -> None:
    etcd, mesh = both(tmp_path, ["--config-file", "/nonexistent/etcd.yml"])
    needle = "open /nonexistent/etcd.yml: no such file or directory"
    assert etcd.returncode == mesh.returncode == 1
    assert needle in etcd.stderr and needle in mesh.stderr


@pytest.mark.parametrize("arg", ["--version", "--help", "-h"])
def test_version_and_help_exit_0(tmp_path: Path, arg: str) -> None:
    assert ETCD is not None
    e = _run([ETCD, arg], {}, tmp_path)
    m = _run([sys.executable, "-m", "meshkit", "server", arg], {}, tmp_path)
    assert e.returncode == m.returncode == 0
    marker = "Version:" if arg == "--version" else "--name 'default'"
    assert marker in e.stdout and marker in m.stdout
