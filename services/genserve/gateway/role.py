"""The gateway role: the only public endpoint. Authenticates, limits, and routes to backends."""

from __future__ import annotations

import grpc

from genserve.common.config import GatewaySettings, ServerSettings
from genserve.common.metrics import Metrics
from genserve.gateway.auth import Gatekeeper, parse_api_keys
from genserve.gateway.catalog import GatewayCatalogServicer
from genserve.gateway.forward import Backend, CallPolicy, forwarding_handler
from genserve.v1 import models_pb2, models_pb2_grpc, text_pb2, vision_pb2


class GatewayRole:
    name = "gateway"
    failure: str | None = None

    def __init__(self, server: ServerSettings, gateway: GatewaySettings, metrics: Metrics) -> None:
        self.server_settings = server
        self.settings = gateway
        self.metrics = metrics
        self.policy = CallPolicy(gateway, metrics)
        # (public service, backend name, backend address)
        self.routes = [
            (text_pb2.DESCRIPTOR.services_by_name["TextService"], "text", gateway.text_addr),
            (vision_pb2.DESCRIPTOR.services_by_name["VisionService"], "vision", gateway.vision_addr),
        ]
        self.backends: list[Backend] = []
        self.gatekeeper = Gatekeeper(parse_api_keys(gateway.api_keys), gateway.max_concurrent_calls, metrics)

    def service_names(self) -> list[str]:
        return [
            *(service.full_name for service, _, _ in self.routes),
            models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
        ]

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [self.gatekeeper]

    def add_to_server(self, server: grpc.aio.Server) -> None:
        # Channels belong to the running event loop, so they are made here, not in __init__.
        for service, name, address in self.routes:
            backend = Backend(name, address, self.server_settings)
            self.backends.append(backend)
            server.add_generic_rpc_handlers([forwarding_handler(service, backend, self.policy)])
        models_pb2_grpc.add_ModelServiceServicer_to_server(GatewayCatalogServicer(self.backends, self.policy), server)

    async def start(self) -> None:
        """Nothing to load: the gateway is ready as soon as it listens."""

    async def stop(self) -> None:
        for backend in self.backends:
            await backend.close()
