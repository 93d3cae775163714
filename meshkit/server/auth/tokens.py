"""Auth token providers: etcd 3.4's simple tokens and signed JWT tokens.

``--auth-token simple`` (the default): a token is ``<16 random letters>.<raft
index>``; the letters are chosen by the member that serves Authenticate and
proposed with the request, so every member registers the same token when it
applies the entry. A token lives ``--auth-token-ttl`` seconds after its last
use; disabling auth, deleting a user or changing its password drops tokens.

``--auth-token jwt,pub-key=...,priv-key=...,sign-method=RS256,ttl=5m``: a signed
token with etcd's claims (``username``, ``revision``, ``exp``); any member with
the public key verifies it, nothing is stored.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from meshkit._internal.clock import Clock
from meshkit._internal.errors import MeshkitError

SIMPLE_TOKEN_LETTERS = string.ascii_letters
SIMPLE_TOKEN_PREFIX_LEN = 16
DEFAULT_SIMPLE_TTL = 300.0
DEFAULT_JWT_TTL = 300.0


class TokenConfigError(MeshkitError):
    """An ``--auth-token`` value etcd would refuse."""


@dataclass(frozen=True)
class AuthInfo:
    username: str
    revision: int


class TokenProvider(Protocol):
    def enable(self) -> None: ...
    def disable(self) -> None: ...
    def gen_prefix(self) -> str: ...
    def assign(self, username: str, revision: int, prefix: str, index: int) -> str: ...
    def info(self, token: str, revision: int) -> AuthInfo | None: ...
    def invalidate_user(self, username: str) -> None: ...


class SimpleTokens:
    def __init__(self, clock: Clock, ttl: float = DEFAULT_SIMPLE_TTL) -> None:
        self._clock = clock
        self.ttl = ttl
        self._tokens: dict[str, tuple[str, float]] = {}
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False
        self._tokens.clear()

    def gen_prefix(self) -> str:
        return "".join(secrets.choice(SIMPLE_TOKEN_LETTERS) for _ in range(SIMPLE_TOKEN_PREFIX_LEN))

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        if not prefix:
            # etcd: a simple token needs its prefix from the API layer.
            raise TokenConfigError("simple token prefix is empty")
        now = self._clock.monotonic()
        # Forget expired tokens (bounded by how many exist).
        for tok in [t for t, (_, exp) in self._tokens.items() if exp <= now]:
            del self._tokens[tok]
        token = f"{prefix}.{index}"
        self._tokens[token] = (username, now + self.ttl)
        return token

    def info(self, token: str, revision: int) -> AuthInfo | None:
        got = self._tokens.get(token)
        if got is None:
            return None
        now = self._clock.monotonic()
        username, exp = got
        if exp <= now:
            del self._tokens[token]
            return None
        self._tokens[token] = (username, now + self.ttl)  # etcd resets the TTL on use
        return AuthInfo(username, revision)

    def invalidate_user(self, username: str) -> None:
        for tok in [t for t, (u, _) in self._tokens.items() if u == username]:
            del self._tokens[tok]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration for the positive values etcd's options take."""
    if not text or _DURATION.sub("", text) != "":
        raise TokenConfigError(f'time: invalid duration "{text}"')
    return sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text))


class JWTTokens:
    """etcd's tokenJWT: RS*/PS*/ES* with PEM key files, HS* with the key file's bytes."""

    def __init__(self, clock: Clock, sign_method: str, pub_key: Path | None, priv_key: Path | None,
                 ttl: float = DEFAULT_JWT_TTL) -> None:
        import jwt  # PyJWT[crypto]

        self._jwt = jwt
        self._clock = clock
        self.sign_method = sign_method
        self.ttl = ttl
        try:
            alg = jwt.get_algorithm_by_name(sign_method)
        except NotImplementedError as e:
            raise TokenConfigError(f"invalid sign-method {sign_method!r}") from e
        self._verify_key: Any = None
        self._sign_key: Any = None
        if sign_method.startswith("HS"):
            key_file = priv_key or pub_key
            if key_file is None:
                raise TokenConfigError("jwt: an HMAC sign-method needs priv-key")
            secret = key_file.read_bytes()
            self._sign_key = self._verify_key = secret
        else:
            if pub_key is None:
                raise TokenConfigError("jwt: pub-key is required")
            self._verify_key = alg.prepare_key(pub_key.read_bytes())
            if priv_key is not None:
                self._sign_key = alg.prepare_key(priv_key.read_bytes())

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def gen_prefix(self) -> str:
        return ""

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        import time

        if self._sign_key is None:
            raise TokenConfigError("jwt: no priv-key to sign tokens with")
        claims = {"username": username, "revision": revision, "exp": int(time.time() + self.ttl)}
        return str(self._jwt.encode(claims, self._sign_key, algorithm=self.sign_method))

    def info(self, token: str, revision: int) -> AuthInfo | None:
        try:
            claims = self._jwt.decode(token, self._verify_key, algorithms=[self.sign_method])
        except self._jwt.PyJWTError:
            return None
        username, rev = claims.get("username"), claims.get("revision")
        if not isinstance(username, str) or not isinstance(rev, int | float):
            return None
        return AuthInfo(username, int(rev))

    def invalidate_user(self, username: str) -> None:
        pass  # signed tokens cannot be recalled; a changed auth revision outdates them


def parse_token_option(spec: str) -> tuple[str, dict[str, str]]:
    """``simple`` or ``jwt,k=v,...`` -> (type, options); etcd's syntax and checks."""
    parts = spec.split(",")
    kind, opts = parts[0], {}
    for p in parts[1:]:
        if "=" not in p:
            raise TokenConfigError(f"invalid auth token option: {p}")
        k, v = p.split("=", 1)
        opts[k] = v
    if kind not in ("simple", "jwt"):
        raise TokenConfigError(f"unknown token type: {kind}")
    if kind == "jwt":
        unknown = set(opts) - {"pub-key", "priv-key", "sign-method", "ttl"}
        if unknown:
            raise TokenConfigError(f"unknown token option: {sorted(unknown)[0]}")
        if not opts.get("sign-method"):
            raise TokenConfigError("jwt: sign-method is required")
    return kind, opts


def new_token_provider(spec: str, clock: Clock, simple_ttl: float = DEFAULT_SIMPLE_TTL) -> TokenProvider:
    kind, opts = parse_token_option(spec)
    if kind == "simple":
        return SimpleTokens(clock, simple_ttl)
    ttl = parse_go_duration(opts["ttl"]) if "ttl" in opts else DEFAULT_JWT_TTL
    pub = Path(opts["pub-key"]) if opts.get("pub-key") else None
    priv = Path(opts["priv-key"]) if opts.get("priv-key") else None
    return JWTTokens(clock, opts["sign-method"], pub, priv, ttl)
