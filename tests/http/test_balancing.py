"""GENSERVE_HTTP_GATEWAY_ADDR naming several gateways: the http role spreads its calls over all of
them (round_robin, per call, over one channel) and goes on through the survivor when one stops."""

from __future__ import annotations

from pathlib import Path

import httpx

from genserve.testing import ServerProcess
from tests.conftest import start_role, wait_for
from tests.gateway.test_replicas import answered

BODY = {"prompt": "ROMEO:", "max_tokens": 2, "seed": 1}
CALLS = 60


def completes(client: httpx.Client) -> bool:
    return client.post("/v1/completions", json=BODY).status_code == 200


def test_http_role_balances_over_gateways(tmp_path: Path) -> None:
    text = start_role("text", tmp_path, {"GENSERVE_TEXT_MODELS": "shakespeare-lstm"})
    gateways: list[ServerProcess] = []
    try:
        notice = {"GENSERVE_TEXT_ADDR": text.address, "GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0"}
        gateways = [start_role("gateway", tmp_path, notice) for _ in range(2)]
        addresses = ",".join(gateway.address for gateway in gateways)
        http = start_role("http", tmp_path, {"GENSERVE_HTTP_GATEWAY_ADDR": addresses})
        try:
            with httpx.Client(base_url=http.url, timeout=30) as client:
                # Every call gets a new HTTP request, all over the one gRPC channel of the role.
                assert all(completes(client) for _ in range(CALLS))
                counts = [answered(gateway) for gateway in gateways]
                assert sum(counts) == CALLS and min(counts) >= 0.7 * max(counts), counts
                gateways[1].stop()
                # The stopped gateway's connection closes; calls go on through the other one.
                assert wait_for(lambda: completes(client), 10)
                assert all(completes(client) for _ in range(10))
        finally:
            http.stop()
    finally:
        for gateway in gateways:
            gateway.stop()
        text.stop()
