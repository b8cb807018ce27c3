"""A backend address naming several replicas: the gateway spreads calls over all of them, leaves a
draining one alone, and goes on through the survivors when one is killed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from genserve.gateway.forward import channel_target
from genserve.testing import ServerProcess
from genserve.v1 import latent_pb2, latent_pb2_grpc, text_pb2, text_pb2_grpc
from tests.conftest import start_role, wait_for

REQUEST = text_pb2.GenerateRequest(prompt="ROMEO:", max_tokens=2, seed=1)


def answered(replica: ServerProcess, service: str = "genserve.v1.TextService", method: str = "Generate") -> float:
    """Calls of `method` this replica answered OK, from its /metrics."""
    for family in text_string_to_metric_families(replica.metrics()):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "genserve_requests_total"
                and labels.get("method") == method
                and (labels.get("code") == "OK" and labels.get("service") == service)
            ):
                return sample.value
    return 0.0


def generate_calls(replica: ServerProcess) -> float:
    return answered(replica)


def not_serving(replica: ServerProcess) -> bool:
    with grpc.insecure_channel(replica.address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return True
    return reply.status != health_pb2.HealthCheckResponse.SERVING


def test_latent_calls_spread_over_two_replicas(tmp_path: Path) -> None:
    latents = [start_role("latent", tmp_path) for _ in range(2)]
    try:
        gateway = start_role("gateway", tmp_path, {"GENSERVE_LATENT_ADDR": ",".join(r.address for r in latents)})
        try:
            with grpc.insecure_channel(gateway.address) as channel:
                stub = latent_pb2_grpc.LatentServiceStub(channel)
                for seed in range(120):
                    stub.Sample(latent_pb2.SampleRequest(model="mnist-vae-16d", n=1, seed=seed), timeout=10)
        finally:
            gateway.stop()
        counts = [answered(r, "genserve.v1.LatentService", "Sample") for r in latents]
        assert sum(counts) == 120 and min(counts) >= 0.7 * max(counts), counts
    finally:
        for replica in latents:
            replica.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[ServerProcess], ServerProcess]]:
    log_dir = tmp_path_factory.mktemp("replicas")
    # The third replica drains for 20 s after SIGTERM: long enough to see it get no calls meanwhile.
    notices = ("0", "0", "20")
    texts: list[ServerProcess] = []
    try:
        for notice in notices:
            texts.append(start_role("text", log_dir, {"GENSERVE_SHUTDOWN_NOTICE_SECONDS": notice}))
        addresses = ",".join(text.address for text in texts)
        gateway = start_role("gateway", log_dir, {"GENSERVE_TEXT_ADDR": addresses})
        try:
            yield texts, gateway
        finally:
            gateway.stop()
    finally:
        for text in texts:
            text.stop()


def test_a_list_of_replicas_is_one_balanced_target() -> None:
    assert channel_target("127.0.0.1:1,127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("127.0.0.1:50061") == "127.0.0.1:50061"
    assert channel_target("dns:///text-headless.genserve.svc.cluster.local:50061").startswith("dns:///")


def test_calls_spread_drain_and_fail_over(replicas: tuple[list[ServerProcess], ServerProcess]) -> None:
    (first, second, draining), gateway = replicas
    with grpc.insecure_channel(gateway.address) as channel:
        stub = text_pb2_grpc.TextServiceStub(channel)

        def call() -> bool:
            try:
                stub.Generate(REQUEST, timeout=10)
            except grpc.RpcError:
                return False
            return True

        # Spread: per call over every healthy replica (one channel from the gateway to all three).
        before = [generate_calls(text) for text in (first, second, draining)]
        assert all(call() for _ in range(150))
        counts = [generate_calls(text) - start for text, start in zip((first, second, draining), before, strict=True)]
        assert sum(counts) == 150 and min(counts) >= 0.7 * max(counts), counts

        # Draining: after SIGTERM the replica says NOT_SERVING for its notice period and gets no new calls.
        os.kill(draining.process.pid, signal.SIGTERM)
        assert wait_for(lambda: not_serving(draining), timeout=10)
        seen = generate_calls(draining)

        def routed_elsewhere() -> bool:
            start = generate_calls(draining)
            return all(call() for _ in range(5)) and generate_calls(draining) == start

        assert wait_for(routed_elsewhere, timeout=10), "the gateway kept sending calls to a draining replica"
        held = generate_calls(draining)
        assert all(call() for _ in range(30))
        assert generate_calls(draining) == held >= seen and draining.process.poll() is None, "still in its notice"

        # Failover: a replica killed outright; new calls succeed on the survivor within seconds.
        os.kill(second.process.pid, signal.SIGKILL)
        second.process.wait()
        assert wait_for(lambda: all(call() for _ in range(3)), timeout=10)
        start = generate_calls(first)
        assert all(call() for _ in range(20))
        assert generate_calls(first) - start == 20
