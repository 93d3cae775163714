"""Authentication and authorization: etcd 3.4's auth store and token providers."""

from meshkit.server.auth.store import ROOT_ROLE, ROOT_USER, AuthStore
from meshkit.server.auth.tokens import AuthInfo, TokenConfigError, TokenProvider, new_token_provider

__all__ = ["ROOT_ROLE", "ROOT_USER", "AuthInfo", "AuthStore", "TokenConfigError", "TokenProvider",
           "new_token_provider"]
