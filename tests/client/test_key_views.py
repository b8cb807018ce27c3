"""`with_api_key`: one channel, a different key per call site; and the `health` probe.

A small in-process gRPC server echoes the key each call carried (as the name of the one model it
lists), so the test sees exactly what went over the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from genserve.client import AsyncClient, Client
from genserve.v1 import models_pb2, models_pb2_grpc


class KeyEcho(models_pb2_grpc.ModelServiceServicer):
    def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        keys = [value for key, value in context.invocation_metadata() if key == "authorization"]
        return models_pb2.ListModelsResponse(models=[models_pb2.ModelInfo(name=",".join(keys) or "no key")])


@pytest.fixture(scope="module")
def echo_address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    models_pb2_grpc.add_ModelServiceServicer_to_server(KeyEcho(), server)
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    checks.set("genserve.v1.TextService", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_a_sync_view_sends_its_own_key_over_the_same_channel(echo_address: str) -> None:
    with Client(echo_address, api_key="first", timeout=5) as client:
        view = client.with_api_key("second")
        anonymous = client.with_api_key("")
        assert view._channel is client._channel and view._models is client._models
        assert [model.name for model in view.list_models()] == ["Bearer second"]
        assert [model.name for model in anonymous.list_models()] == ["no key"]
        assert [model.name for model in client.list_models()] == ["Bearer first"], "the client keeps its key"
        view.close()  # a view leaves the channel to its client
        assert [model.name for model in client.list_models()] == ["Bearer first"]
        assert client.health() == "SERVING" and client.health("genserve.v1.TextService") == "NOT_SERVING"


def test_an_async_view_sends_its_own_key_over_the_same_channel(echo_address: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(echo_address, api_key="first", timeout=5) as client:
            views = [client.with_api_key(f"caller-{i}") for i in range(3)]
            answers = await asyncio.gather(*(view.list_models() for view in views))
            assert [models[0].name for models in answers] == ["Bearer caller-0", "Bearer caller-1", "Bearer caller-2"]
            assert all(view._channel is client._channel for view in views)
            await views[0].close()
            assert (await client.list_models())[0].name == "Bearer first"
            assert await client.health() == "SERVING"

    asyncio.run(scenario())
