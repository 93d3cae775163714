"""etcdctl's user rule, shared by the client and every tool's command line."""

from __future__ import annotations

import pytest

from meshkit.client.client import credentials


def test_flag_wins_and_splits_name_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDCTL_USER", "env:envpw")
    assert credentials("alice:secret") == ("alice", "secret")
    assert credentials("a:b:c") == ("a", "b:c")  # only the first colon splits


def test_environment_and_password_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETCDCTL_USER", raising=False)
    monkeypatch.delenv("ETCDCTL_PASSWORD", raising=False)
    assert credentials() == (None, None)
    monkeypatch.setenv("ETCDCTL_USER", "bob")
    assert credentials() == ("bob", "")
    monkeypatch.setenv("ETCDCTL_PASSWORD", "pw")
    assert credentials() == ("bob", "pw")
    assert credentials("carol") == ("carol", "pw")
