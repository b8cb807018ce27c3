"""TLS for the gateway's public port, and channels that reach it.

The server side reloads its certificate when the files change (a renewed Secret or a cert-manager
rotation), checked at each new handshake, so renewal needs no restart. Clients pass the CA that
signed the gateway's certificate, and a server name when they dial an address that the certificate
does not list (a probe dialling 127.0.0.1, say).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc

from genserve.common.config import ConfigError

log = logging.getLogger(__name__)
PEM_MARKER = b"-----BEGIN "


def read_pem(path: str, setting: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting} {path} cannot be read: {error.strerror or error}") from None
    if PEM_MARKER not in data:
        raise ConfigError(f"{setting} {path} is not PEM (no '-----BEGIN' line)")
    return data


class _CertificateFiles:
    """Feeds grpc's dynamic credentials: a new configuration only when the files changed."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        return tuple((s.st_ino, s.st_mtime_ns) for s in (os.stat(self.cert_file), os.stat(self.key_file)))

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = (read_pem(self.key_file, "GENSERVE_TLS_KEY_FILE"), read_pem(self.cert_file, "GENSERVE_TLS_CERT_FILE"))
        return grpc.ssl_server_certificate_configuration([pair])

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = self._stamp()
            if stamp == self.stamp:
                return None
            fresh = self.configuration()
        except (OSError, ConfigError) as error:
            # Half-written during a rotation: keep the certificate in use and look again next handshake.
            log.error("TLS certificate not reloaded, the one loaded before stays in use: %s", error)
            return None
        self.stamp = stamp
        log.info("TLS certificate %s loaded again", self.cert_file)
        return fresh


def server_credentials(cert_file: str, key_file: str) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files, or None (plaintext) when neither is set."""
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        raise ConfigError(
            "GENSERVE_TLS_CERT_FILE and GENSERVE_TLS_KEY_FILE go together: set both (TLS) or neither (plaintext)"
        )
    files = _CertificateFiles(cert_file, key_file)
    return grpc.dynamic_ssl_server_credentials(files.configuration(), files)


def channel_credentials(ca_file: str) -> grpc.ChannelCredentials:
    """Trust the CA (or self-signed certificate) in `ca_file`."""
    return grpc.ssl_channel_credentials(root_certificates=read_pem(ca_file, "the CA file"))


def open_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, server_name: str = ""
) -> grpc.Channel:
    """A blocking channel for tooling (health checks): TLS when `credentials` are given, checked
    against `server_name` if set. The client library opens its own (genserve.client)."""
    if credentials is None:
        return grpc.insecure_channel(address)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address, credentials, options=options)
