"""The http role reaches a gateway that serves TLS, trusting its certificate (GENSERVE_HTTP_GATEWAY_TLS_CA)."""

from __future__ import annotations

from pathlib import Path

import httpx

from genserve.common.tls import channel_credentials
from genserve.testing import ServerProcess
from tests.conftest import start_role
from tests.gateway.test_tls import write_self_signed


def test_the_http_role_is_ready_behind_a_tls_gateway(tmp_path: Path) -> None:
    cert, key = tmp_path / "gateway.pem", tmp_path / "gateway.key"
    write_self_signed(cert, key, "genserve-gateway")
    tls = {"GENSERVE_TLS_CERT_FILE": str(cert), "GENSERVE_TLS_KEY_FILE": str(key)}
    gateway = ServerProcess("gateway", tmp_path, tls, credentials=channel_credentials(str(cert)))
    try:
        # Dialled by IP, checked against a name the certificate lists.
        trust = {"GENSERVE_HTTP_GATEWAY_TLS_CA": str(cert), "GENSERVE_HTTP_GATEWAY_SERVER_NAME": "localhost"}
        http = start_role("http", tmp_path, {"GENSERVE_HTTP_GATEWAY_ADDR": gateway.address, **trust})
        try:
            health = httpx.get(f"{http.url}/healthz", timeout=10)
            assert health.status_code == 200 and health.json()["status"] == "SERVING"
        finally:
            assert http.stop() == 0, "SIGTERM ends the http role cleanly"
    finally:
        gateway.stop()
