"""TLS settings for the client and peer listeners (etcd's --cert-file etc.).

``client_cert_common_name(context)`` is what the Auth layer uses as the user
name of a request carrying a verified client certificate (etcd does this with
``--client-cert-auth``): it answers the certificate's common name, or None
when the connection has no verified client certificate. It is asked on every
request, so until this process has made TLS server credentials (the only way
a call can carry a verified certificate) it answers None without asking grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshkit._internal.errors import MeshkitError


class TLSConfigError(MeshkitError):
    pass


# Set once TLSInfo.server_credentials() was called in this process.
_tls_serving = False


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TLSConfigError(f"cannot read {what} {path}: {e.strerror}") from e


@dataclass(frozen=True)
class TLSInfo:
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False

    @property
    def empty(self) -> bool:
        return not (self.cert_file or self.key_file)

    def validate(self) -> list[str]:
        out = []
        if bool(self.cert_file) != bool(self.key_file):
            out.append("TLS needs both a certificate file and a key file")
        if self.client_cert_auth and not self.trusted_ca_file:
            out.append("client certificate authentication needs a trusted CA file")
        return out

    def server_credentials(self) -> grpc.ServerCredentials:
        problems = self.validate() or (["TLS needs a certificate file and a key file"] if self.empty else [])
        if problems:
            raise TLSConfigError("; ".join(problems))
        pair = (_read(self.key_file, "key file"), _read(self.cert_file, "certificate file"))
        ca = _read(self.trusted_ca_file, "trusted CA file") if self.trusted_ca_file else None
        global _tls_serving
        _tls_serving = True
        return grpc.ssl_server_credentials([pair], root_certificates=ca,
                                           require_client_auth=self.client_cert_auth)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials to dial a TLS peer: its CA, and this member's certificate as client cert."""
        ca = _read(self.trusted_ca_file, "trusted CA file") if self.trusted_ca_file else None
        key = _read(self.key_file, "key file") if self.key_file else None
        cert = _read(self.cert_file, "certificate file") if self.cert_file else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def grpc_ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` for gRPC served in process: HTTP/2 by ALPN."""
        global _tls_serving
        _tls_serving = True
        ctx = self.ssl_context()
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` for the HTTP listener (aiohttp)."""
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.trusted_ca_file:
            ctx.load_verify_locations(self.trusted_ca_file)
        if self.client_cert_auth:
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def client_cert_common_name(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the request's verified client certificate, if any."""
    if not _tls_serving:
        return None
    values = context.auth_context().get("x509_common_name")
    if not values:
        return None
    return bytes(next(iter(values))).decode()
