"""A model family served by TorchServe: the gateway translates genserve's RPCs to TorchServe's.

With GENSERVE_TEXT_BACKEND=torchserve (or GENSERVE_LATENT_BACKEND) the family's address is a
TorchServe gRPC inference endpoint (`org.pytorch.serve.grpc.inference.InferenceAPIsService`)
serving archives of `genserve export torchserve`, whose handler reads and writes the proto3 JSON
of genserve's own messages (genserve.torchserve.handler). So a call is decoded once, sent as the
`data` input of `Predictions` (or `StreamPredictions` with `"stream": true`, the flag the handler
streams on), and the reply parsed back into genserve's message:

- TextService: Generate → Predictions; GenerateStream → StreamPredictions, each piece (a JSON list
  of GenerateStreamResponse) written as it comes.
- LatentService: Sample and Decode → Predictions; the other methods answer UNIMPLEMENTED (an
  archive holds a generator only: no encoder, concepts or arithmetic).
- ModelService: the configured models, described from the gateway's model store when it has them,
  once TorchServe answers Ping.

Errors: TorchServe 0.12.0 answers a request its handler refused with OK and an `{"error": ...}`
body; the body's code becomes the status, so a bad parameter is INVALID_ARGUMENT as from the
genserve service. TorchServe's own statuses are mapped: its "model not found" (INTERNAL) is
NOT_FOUND; a refused token (PERMISSION_DENIED: the gateway's configuration, not the caller's) and
an unreachable endpoint are UNAVAILABLE naming the endpoint. The caller's deadline (capped as for
every backend) and cancellation go on to TorchServe's call; TorchServe finishes a batch its worker
has begun, cancelled or not (its worker protocol has no cancel).

TorchServe's token (token authorisation is on by default since 0.11.1) is sent as
`authorization: Bearer …`, from GENSERVE_TORCHSERVE_TOKEN or GENSERVE_TORCHSERVE_TOKEN_FILE (its
`key_file.json`, or a file holding the key alone), a file read again when it changes: TorchServe's
keys expire, and a renewed one is used without a restart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format
from google.protobuf.message import Message

from genserve.common.caller import forwarded_principal
from genserve.common.catalog import model_info
from genserve.common.config import ConfigError, GatewaySettings, ServerSettings
from genserve.common.errors import GenserveError, NotFound, RemoteError
from genserve.common.model_store import ModelEntry
from genserve.common.server import channel_options
from genserve.common.watched_file import WatchedFile
from genserve.gateway.forward import CallPolicy, channel_target
from genserve.tsapi import inference_pb2, inference_pb2_grpc
from genserve.v1 import latent_pb2, models_pb2, text_pb2

log = logging.getLogger(__name__)

BACKEND_KINDS = ("genserve", "torchserve")
# Round-robin over TorchServe replicas, without the genserve channels' health checks and keepalive
# pings: TorchServe serves no health service, and its Netty server takes pings more often than
# every 5 minutes as abuse (GOAWAY too_many_pings).
TORCHSERVE_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
]


def read_token_file(path: Path) -> str:
    """TorchServe's key_file.json (its inference key), or a file holding the key alone."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"GENSERVE_TORCHSERVE_TOKEN_FILE {path} cannot be read: {error}") from None
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["inference"]["key"]).strip()
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"GENSERVE_TORCHSERVE_TOKEN_FILE {path} is JSON but not TorchServe's key_file.json "
                '(no {"inference": {"key": ...}})'
            ) from None
    if not text or any(c.isspace() for c in text):
        raise ConfigError(f"GENSERVE_TORCHSERVE_TOKEN_FILE {path} holds no single key")
    return text


class TorchServeToken:
    """The inference key sent to TorchServe: fixed, from a file that follows rotation, or none."""

    def __init__(self, token: str, token_file: str) -> None:
        self.fixed = token.strip()
        self.file = WatchedFile(Path(token_file), read_token_file, "TorchServe token file") if token_file else None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.file.current() if self.file is not None else self.fixed
        return (("authorization", f"Bearer {token}"),) if token else ()


class TorchServeBackend:
    """One family's TorchServe endpoint: its channel, the models routed to it, and the calls."""

    def __init__(
        self,
        family: str,
        address: str,
        models: list[str],
        token: TorchServeToken,
        server_settings: ServerSettings,
        policy: CallPolicy,
        entries: Callable[[], dict[str, ModelEntry]],
    ) -> None:
        self.name = family
        self.address = address
        self.models = models
        self.token = token
        self.policy = policy
        self.entries = entries
        options = [*channel_options(server_settings), *TORCHSERVE_OPTIONS]
        self.channel = grpc.aio.insecure_channel(channel_target(address), options=options)
        self.stub = inference_pb2_grpc.InferenceAPIsServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    def model_for(self, requested: str) -> str:
        if not requested:
            return self.models[0]
        if requested not in self.models:
            raise NotFound(
                f"unknown {self.name} model {requested!r}; available (TorchServe at {self.address}): "
                + ", ".join(self.models)
            )
        return requested

    def _request(self, model: str, body: dict[str, Any]) -> inference_pb2.PredictionsRequest:
        return inference_pb2.PredictionsRequest(model_name=model, input={"data": json.dumps(body).encode()})

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (*self.token.metadata(), *forwarded_principal())

    async def predict(self, model: str, body: dict[str, Any], context: grpc.aio.ServicerContext) -> Any:
        """The handler's reply to one request, as JSON; its error body raised as its status."""
        try:
            reply = await self.stub.Predictions(
                self._request(model, body), timeout=self.policy.timeout(context), metadata=self._metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise self.error(model, error) from None
        return _prediction(reply)

    async def stream(self, model: str, body: dict[str, Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """The handler's streamed pieces of one request, as JSON, until TorchServe ends the stream."""
        call = self.stub.StreamPredictions(
            self._request(model, {**body, "stream": True}),
            timeout=self.policy.timeout(context),
            metadata=self._metadata(),
        )
        try:
            async for reply in call:
                yield _prediction(reply)
        except grpc.aio.AioRpcError as error:
            raise self.error(model, error) from None
        finally:
            call.cancel()  # a no-op after the end; stops TorchServe's stream when the client left

    async def ping(self, deadline_seconds: float) -> None:
        try:
            await self.stub.Ping(empty_pb2.Empty(), timeout=deadline_seconds, metadata=self.token.metadata())
        except grpc.aio.AioRpcError as error:
            raise self.error("", error) from None

    def error(self, model: str, error: grpc.aio.AioRpcError) -> GenserveError:
        code = error.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return self.policy.error(self, error)
        if code == grpc.StatusCode.PERMISSION_DENIED:
            self.policy.metrics.backend_errors.labels(self.name, code.name).inc()
            log.error("TorchServe at %s refused the gateway's token: %s", self.address, error.details())
        return translate_status(self.name, self.address, model, code, error.details() or "")

    async def list_models(self, family: str, deadline_seconds: float) -> list[models_pb2.ModelInfo]:
        """The models routed here, once TorchServe answers; described from the model store."""
        if family and family != self.name:
            return []
        await self.ping(deadline_seconds)
        entries = self.entries()
        device = f"torchserve {self.address}"
        described = []
        for position, name in enumerate(self.models):
            entry = entries.get(name)
            if entry is not None and entry.family == self.name:
                described.append(model_info(entry, device, position == 0))
            else:
                described.append(
                    models_pb2.ModelInfo(name=name, family=self.name, device=device, is_default=position == 0)
                )
        return described


def translate_status(family: str, address: str, model: str, code: grpc.StatusCode, details: str) -> GenserveError:
    """A status of TorchServe itself as genserve's: what it means to a genserve client."""
    lowered = details.lower()
    if code == grpc.StatusCode.INTERNAL and "not found" in lowered:
        return NotFound(
            f"TorchServe at {address} has no model {model!r} registered ({details}); "
            f"register its archive (genserve export torchserve --model {model})"
        )
    if code == grpc.StatusCode.INTERNAL and "has no worker to serve inference request" in lowered:
        # TorchServe 0.12.0's answer when its job queue is full (job_queue_size), as when no worker runs.
        return RemoteError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{family} model {model!r} is busy: TorchServe at {address} takes no more requests now (its job queue "
            "is full, or no worker runs); retry later",
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return RemoteError(
            grpc.StatusCode.UNAVAILABLE,
            f"the {family} backend (TorchServe at {address}) refused the gateway's token; "
            "check GENSERVE_TORCHSERVE_TOKEN_FILE (TorchServe's keys expire and are renewed)",
        )
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return RemoteError(code, details)
    return RemoteError(code, f"TorchServe at {address}: {details}")


def _prediction(reply: inference_pb2.PredictionResponse) -> Any:
    try:
        value = json.loads(reply.prediction)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RemoteError(
            grpc.StatusCode.INTERNAL,
            "TorchServe answered with something other than a genserve archive's JSON "
            f"(is the model an archive of `genserve export torchserve`?): {reply.prediction[:80]!r}",
        ) from None
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        failure = value["error"]
        try:
            code = grpc.StatusCode[str(failure.get("code"))]
        except KeyError:
            code = grpc.StatusCode.INTERNAL
        raise RemoteError(code, str(failure.get("message", "")))
    return value


def _parse(value: Any, message: Message) -> Message:
    try:
        return json_format.ParseDict(value, message)
    except json_format.ParseError as error:
        raise RemoteError(
            grpc.StatusCode.INTERNAL, f"TorchServe's reply is not a {message.DESCRIPTOR.name}: {error}"
        ) from None


def _body(request: Message) -> dict[str, Any]:
    return json_format.MessageToDict(request)


def _unary(method: Callable[..., Any], request: type[Message], response: type[Message]) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )


async def _predict(
    backend: TorchServeBackend,
    requested_model: str,
    request: Message,
    response: Message,
    context: grpc.aio.ServicerContext,
    **extra: Any,
) -> Message:
    """One unary call: the request's model routed, its JSON (plus `extra` keys) predicted, the reply parsed."""
    model = backend.model_for(requested_model)
    return _parse(await backend.predict(model, {**extra, **_body(request)}, context), response)


def text_handler(backend: TorchServeBackend) -> grpc.GenericRpcHandler:
    async def generate(request: text_pb2.GenerateRequest, context: grpc.aio.ServicerContext) -> Message:
        return await _predict(backend, request.model, request, text_pb2.GenerateResponse(), context)

    async def generate_stream(request: text_pb2.GenerateRequest, context: grpc.aio.ServicerContext) -> None:
        model = backend.model_for(request.model)
        async for pieces in backend.stream(model, _body(request), context):
            if not isinstance(pieces, list):
                raise RemoteError(grpc.StatusCode.INTERNAL, "TorchServe's streamed piece is not a list of messages")
            for piece in pieces:
                await context.write(_parse(piece, text_pb2.GenerateStreamResponse()))

    service = text_pb2.DESCRIPTOR.services_by_name["TextService"]
    handlers = {
        "Generate": _unary(generate, text_pb2.GenerateRequest, text_pb2.GenerateResponse),
        "GenerateStream": grpc.unary_stream_rpc_method_handler(
            generate_stream,
            request_deserializer=text_pb2.GenerateRequest.FromString,
            response_serializer=text_pb2.GenerateStreamResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def latent_handler(backend: TorchServeBackend) -> grpc.GenericRpcHandler:
    async def sample(request: latent_pb2.SampleRequest, context: grpc.aio.ServicerContext) -> Message:
        return await _predict(backend, request.model, request, latent_pb2.ImagesResponse(), context)

    async def decode(request: latent_pb2.DecodeRequest, context: grpc.aio.ServicerContext) -> Message:
        # The handler tells Decode from Sample by the key `latents`, which proto3 JSON leaves out when empty.
        return await _predict(backend, request.model, request, latent_pb2.ImagesResponse(), context, latents=[])

    service = latent_pb2.DESCRIPTOR.services_by_name["LatentService"]
    handlers = {
        "Sample": _unary(sample, latent_pb2.SampleRequest, latent_pb2.ImagesResponse),
        "Decode": _unary(decode, latent_pb2.DecodeRequest, latent_pb2.ImagesResponse),
    }
    for method in service.methods:
        if method.name not in handlers:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unimplemented(method.name, backend))
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _unimplemented(method: str, backend: TorchServeBackend) -> Callable[..., Any]:
    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RemoteError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"LatentService.{method} is not served: the latent family goes to TorchServe at {backend.address} "
            "(GENSERVE_LATENT_BACKEND=torchserve), whose archives sample and decode only",
        )

    return refuse


HANDLERS = {"text": text_handler, "latent": latent_handler}


def torchserve_models(settings: GatewaySettings, family: str) -> list[str] | None:
    """The models of `family` routed to TorchServe (the first the default), or None: a genserve service."""
    kind = {"text": settings.text_backend, "latent": settings.latent_backend}.get(family, "genserve")
    if kind not in BACKEND_KINDS:
        raise ConfigError(f"GENSERVE_{family.upper()}_BACKEND={kind!r}: choose one of {', '.join(BACKEND_KINDS)}")
    if kind == "genserve":
        return None
    spec = {"text": settings.text_torchserve_models, "latent": settings.latent_torchserve_models}[family]
    models = [name.strip() for name in spec.split(",") if name.strip()]
    if not models:
        raise ConfigError(
            f"GENSERVE_{family.upper()}_BACKEND=torchserve needs GENSERVE_{family.upper()}_TORCHSERVE_MODELS: the "
            f"names of the {family} models registered in TorchServe, comma-separated (the first answers requests "
            "that name no model)"
        )
    return models
