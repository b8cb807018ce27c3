"""TLS on the gateway's public port and API keys from a file: a TLS client with a key gets in, a
plaintext client does not, a wrong key is UNAUTHENTICATED; keys and certificate are rotated without
a restart."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from genserve.common.processes import free_ports
from genserve.common.tls import channel_credentials
from genserve.testing import ServerProcess
from genserve.v1 import models_pb2, models_pb2_grpc
from tests.conftest import start_role, wait_for


def write_self_signed(cert_path: Path, key_path: Path, common_name: str) -> None:
    """A certificate for localhost and 127.0.0.1, signed by its own key (so it is its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Written elsewhere and renamed into place, as a Secret volume or cert-manager updates files.
    for path, data in ((key_path, key_pem), (cert_path, certificate.public_bytes(serialization.Encoding.PEM))):
        fresh = path.with_suffix(".new")
        fresh.write_bytes(data)
        os.replace(fresh, path)


def write_keys(path: Path, text: str) -> None:
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


@dataclass
class TlsGateway:
    process: ServerProcess
    cert: Path
    key: Path
    keys: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key, keys = folder / "tls.crt", folder / "tls.key", folder / "api-keys"
    write_self_signed(cert, key, "genserve test gateway")
    write_keys(keys, "# name:key, one per line\nalice:first-key\n")
    # One backend is enough for ModelService.ListModels to answer; the others lead nowhere.
    latent = start_role("latent", folder)
    nowhere = f"127.0.0.1:{free_ports(1)[0]}"
    env = {
        "GENSERVE_TLS_CERT_FILE": str(cert),
        "GENSERVE_TLS_KEY_FILE": str(key),
        "GENSERVE_API_KEYS_FILE": str(keys),
        "GENSERVE_LATENT_ADDR": latent.address,
        "GENSERVE_TEXT_ADDR": nowhere,
        "GENSERVE_VISION_ADDR": nowhere,
    }
    try:
        process = ServerProcess("gateway", folder, env, credentials=channel_credentials(str(cert)))
        try:
            yield TlsGateway(process, cert, key, keys)
        finally:
            process.stop()
    finally:
        latent.stop()


def list_models(address: str, key: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
        try:
            models_pb2_grpc.ModelServiceStub(channel).ListModels(
                models_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=5
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_a_tls_client_with_a_key_gets_in_and_a_plaintext_or_wrong_key_client_does_not(gateway: TlsGateway) -> None:
    address = gateway.process.address
    trusted = channel_credentials(str(gateway.cert))
    assert list_models(address, "first-key", trusted) == grpc.StatusCode.OK
    assert list_models(address, "first-key", None) == grpc.StatusCode.UNAVAILABLE
    assert list_models(address, "wrong-key", trusted) == grpc.StatusCode.UNAUTHENTICATED
    # A client that does not trust the certificate (the system CAs) cannot connect either.
    assert list_models(address, "first-key", grpc.ssl_channel_credentials()) == grpc.StatusCode.UNAVAILABLE


def test_the_health_command_checks_over_tls(gateway: TlsGateway) -> None:
    def health(*options: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "genserve.cli", "health", gateway.process.address, *options]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    trusted = health("--tls-ca", str(gateway.cert))
    assert trusted.returncode == 0 and "SERVING" in trusted.stdout, trusted.stderr
    named = health("--tls-ca", str(gateway.cert), "--tls-server-name", "localhost")
    assert named.returncode == 0, named.stderr
    assert health().returncode == 1, "a plaintext health check must not pass against a TLS port"


def test_keys_and_certificate_rotate_without_a_restart(gateway: TlsGateway) -> None:
    address, pid = gateway.process.address, gateway.process.process.pid
    write_keys(gateway.keys, "bob:second-key\n")

    def rotated() -> bool:
        trusted = channel_credentials(str(gateway.cert))
        return list_models(address, "second-key", trusted) == grpc.StatusCode.OK

    assert wait_for(rotated, timeout=10), "the new key from the keys file was not accepted"
    assert list_models(address, "first-key", channel_credentials(str(gateway.cert))) == grpc.StatusCode.UNAUTHENTICATED

    old_certificate = gateway.cert.read_bytes()
    write_self_signed(gateway.cert, gateway.key, "genserve test gateway, renewed")
    assert gateway.cert.read_bytes() != old_certificate
    # A new connection that trusts only the renewed certificate succeeds: the gateway serves it now.
    assert wait_for(lambda: rotated(), timeout=10), "the renewed certificate was not served"
    old_only = grpc.ssl_channel_credentials(root_certificates=old_certificate)
    assert list_models(address, "second-key", old_only) == grpc.StatusCode.UNAVAILABLE
    assert gateway.process.process.pid == pid and gateway.process.process.poll() is None
