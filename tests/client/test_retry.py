"""Which calls the client repeats after UNAVAILABLE, and that a repeated read then succeeds."""

from __future__ import annotations

import pytest

from genserve.client import Client, Retry, Unavailable
from genserve.common.processes import free_port
from tests.client.conftest import API_KEY, LATENT_MODEL, CuttableProxy, Stack


def test_reads_are_retried_with_backoff_and_generation_is_not() -> None:
    pauses: list[float] = []
    with Client(f"127.0.0.1:{free_port()}", timeout=10, retry=Retry(attempts=3, delay=0.1)) as client:
        client._pause = pauses.append
        with pytest.raises(Unavailable):
            client.list_models()
        assert pauses == [0.1, 0.2, 0.4]
        pauses.clear()
        with pytest.raises(Unavailable):
            client.generate("ROMEO:")
        with pytest.raises(Unavailable):
            client.submit_style_transfer(b"x", b"y")  # no idempotency key: not repeated
        with pytest.raises(Unavailable):
            list(client.generate_stream("ROMEO:"))
        assert pauses == []
        with pytest.raises(Unavailable):
            client.submit_style_transfer(b"x", b"y", idempotency_key="k")
        assert pauses == [0.1, 0.2, 0.4]


def test_a_read_succeeds_once_the_gateway_is_reachable_again(stack: Stack) -> None:
    port = free_port()
    started: list[CuttableProxy] = []

    def come_back(delay: float) -> None:
        # At the first pause the gateway becomes reachable (behind a proxy on the port the client
        # dials); then the client's own back-off (sleep, wait for the channel) runs.
        if not started:
            started.append(CuttableProxy(stack.gateway.address, port))
        client._back_off(delay)

    try:
        with Client(f"127.0.0.1:{port}", api_key=API_KEY, timeout=30) as client:
            client._pause = come_back
            names = [model.name for model in client.list_models("latent")]
    finally:
        for proxy in started:
            proxy.close()
    assert LATENT_MODEL in names and len(started) == 1
