"""`python -m meshkit ...` end to end: bad input gives a clear error, an exit code, no traceback.

Every case here exits before the server would start, so nothing binds a port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import meshkit


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "meshkit", *args],
        capture_output=True, text=True, env=clean, cwd=cwd, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "code", "first_line"),
    [
        (["server", "--bad-flag"], {}, 2, "flag provided but not defined: -bad-flag"),
        (["server", "--snapshot-count", "abc"], {}, 2, 'invalid value "abc" for flag -snapshot-count: parse error'),
        (["server", "--discovery", "http://127.0.0.1:1/x"], {}, 1, "meshkit: flag --discovery is not supported yet"),
        (["server", "--election-timeout", "100"], {}, 1,
         "meshkit: error verifying flags, --election-timeout[100ms] should be at least as 5 times as --heartbeat-interval[100ms]"),
        (["server", "foo"], {}, 1, "meshkit: error verifying flags, 'foo' is not a valid flag"),
        (["server"], {"ETCD_SNAPSHOT_COUNT": "abc"}, 1,
         'meshkit: error verifying flags, invalid value "abc" for ETCD_SNAPSHOT_COUNT: parse error'),
        (["server", "--name", "a"], {"ETCD_NAME": "b"}, 1, 'meshkit: conflicting environment variable "ETCD_NAME"'),
        (["server", "--config-file", "/nonexistent/x.yml"], {}, 1,
         "meshkit: error verifying flags, open /nonexistent/x.yml: no such file or directory"),
        (["bogus"], {}, 2, 'meshkit: unknown command "bogus" (available commands: server'),
        (["dashboard", "--listen", "bad"], {}, 2, "meshkit dashboard: listen:"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(
    args: list[str], env: dict[str, str], code: int, first_line: str, tmp_path: Path
) -> None:
    p = run(*args, env=env, cwd=tmp_path)
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert p.stderr.splitlines()[0].startswith(first_line), p.stderr
    assert len(p.stderr.splitlines()) <= 3
    assert list(tmp_path.iterdir()) == []  # nothing created (no data dir)


def test_no_args_prints_usage_exit_2() -> None:
    p = run()
    assert p.returncode == 2
    assert "Usage:" in p.stderr and "server" in p.stderr


def test_version() -> None:
    for args in (["--version"], ["server", "--version"]):
        p = run(*args)
        assert p.returncode == 0
        assert p.stdout.splitlines()[:2] == [
            f"meshkit Version: {meshkit.__version__}",
            "etcd API Version: 3.4",
        ]


def test_server_help_lists_every_flag() -> None:
    from meshkit.server.config import FLAGS

    p = run("server", "--help")
    assert p.returncode == 0
    for spec in FLAGS:
        if spec.status not in ("ignored",) and spec.name != "version":
            assert f"--{spec.name} " in p.stdout
    assert "--discovery '' \n" not in p.stdout


def test_main_function_directly(capsys: pytest.CaptureFixture[str]) -> None:
    from meshkit.cli.main import main

    assert main(["server", "--nope"]) == 2
    assert "flag provided but not defined: -nope" in capsys.readouterr().err
    assert main(["--help"]) == 0
