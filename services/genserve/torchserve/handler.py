"""genserve's models under TorchServe: the custom handler of `genserve export torchserve` archives.

An archive (archive.py) holds the weights, the model's manifest entry and a one-line entry module
that imports `handle` from here: the code that runs is genserve's own, installed in TorchServe's
Python (the `torchserve` extra puts TorchServe into genserve's environment), so a model decodes
under TorchServe with the text service's checks, continuous batching, sampling and seeds, and the
latent service's checks, prior sampling and float64 decoding. Nothing here restates those rules.

Requests and replies are the proto3 JSON form of genserve's own messages:
- text models: `genserve.v1.GenerateRequest` → `GenerateResponse`;
- latent models: `SampleRequest` → `ImagesResponse`, or, when the request has `latents`,
  `DecodeRequest` → `ImagesResponse` (PNG bytes in base64, as proto3 JSON writes bytes).
Each request of the batch TorchServe hands over is checked on its own; the valid ones then decode
together (text: one batch of the DecodeEngine, rows joining and leaving; latent: one forward pass).
A request that fails gets its own status (400 invalid argument, 404 not found, 429 resource
exhausted, 500 otherwise) and a JSON body `{"error": {"code": "INVALID_ARGUMENT", "message": ...}}`;
the others in the batch are unaffected. Same seed and parameters, same result as the services.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
import torch
from google.protobuf import json_format
from google.protobuf.message import Message

from genserve.common.config import LatentSettings, ModelSettings, TextSettings, from_env
from genserve.common.devices import configure_torch, pick_device
from genserve.common.errors import GenserveError, InvalidArgument
from genserve.common.images import ImageLimits, image_message
from genserve.common.model_store import ModelEntry
from genserve.common.packages import sha256_of
from genserve.latent import operations
from genserve.latent.concepts import UserConcepts
from genserve.latent.models import load_model
from genserve.text.checkpoint import load_checkpoint
from genserve.text.engine import DecodeEngine, Delivery, Generation
from genserve.text.generator import TextGenerator
from genserve.text.protocol import ModelDescription
from genserve.text.servicer import ResponseAssembly, StreamAssembly, request_from_proto
from genserve.v1 import latent_pb2, text_pb2

log = logging.getLogger(__name__)

# The archive's file holding the model's manifest entry (model_store/manifest.json), with the family.
ENTRY_FILE = "genserve-model.json"

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}


class Context(Protocol):
    """What the handler uses of TorchServe's `ts.context.Context`."""

    system_properties: dict[str, Any]
    manifest: dict[str, Any]
    request_ids: dict[int, str]  # position in the batch → TorchServe's request id

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None: ...


class HandlerError(RuntimeError):
    """The archive cannot be served (missing or altered files, a model of another family)."""


@dataclass
class Outcome:
    """One request's reply: a message (a streamed request's last messages), or the error it met."""

    reply: Message | list[Message] | None = None
    error: GenserveError | None = None


# Sends one streamed request's intermediate reply (a JSON string) to TorchServe's frontend.
Send = Callable[[str], None]

STREAM_KEY = "stream"  # the request's flag asking for streamed pieces (StreamPredictions)


def send_intermediate(replies: list[str], request_ids: dict[int, str], context: Context) -> None:
    """TorchServe's own way to send a streamed piece (imported here: only workers have a frontend)."""
    from ts.handler_utils.utils import send_intermediate_predict_response

    send_intermediate_predict_response(replies, request_ids, "Intermediate Prediction success", 200, context)


def request_body(item: Any) -> dict[str, Any]:
    """The JSON object of one request as TorchServe hands it over: decoded already (JSON
    content type), or bytes/str of its `data` or `body` input (gRPC, or another content type)."""
    value = item.get("data", item.get("body")) if isinstance(item, dict) else item
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument("the request must be a UTF-8 JSON object") from None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise InvalidArgument(f"the request is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("the request must be a JSON object (in the input named 'data' or 'body')")
    return value


def parse(body: dict[str, Any], message: Message) -> Message:
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError as error:
        raise InvalidArgument(f"{message.DESCRIPTOR.name}: {error}") from None
    return message


class Model(Protocol):
    def run(self, bodies: list[dict[str, Any]], senders: list[Send | None]) -> list[Outcome]: ...


class TextModel:
    """A text model and its DecodeEngine; requests are checked by the text service's own plan()."""

    def __init__(self, entry: ModelEntry, weights: Path, device: torch.device) -> None:
        self.settings = from_env(TextSettings)
        checkpoint = load_checkpoint(weights, device)
        self.engine = DecodeEngine(
            entry.name,
            checkpoint.model,
            checkpoint.vocab,
            device,
            threading.Condition(),
            max_batch=self.settings.max_batch,
            max_waiting=self.settings.max_waiting,
            onednn_min_batch=self.settings.onednn_min_batch,
        )
        description = ModelDescription(entry, checkpoint.vocab, checkpoint.architecture, str(device), {})
        # plan() reads the settings and the models only; the decode process stays unused here.
        self.generator = TextGenerator(self.settings, {entry.name: description}, entry.name, cast(Any, None))

    def run(self, bodies: list[dict[str, Any]], senders: list[Send | None]) -> list[Outcome]:
        outcomes = [Outcome() for _ in bodies]
        running: list[_Running] = []
        for i, (body, send) in enumerate(zip(bodies, senders, strict=True)):
            try:
                request = request_from_proto(cast(text_pb2.GenerateRequest, parse(body, text_pb2.GenerateRequest())))
                plan, spec = self.generator.plan(request, incremental=send is not None)
                deliveries: list[Delivery] = []
                self.engine.submit(Generation(spec, deliveries.append))
            except GenserveError as error:
                outcomes[i].error = error
                continue
            if send is None:
                running.append(_Running(i, deliveries, ResponseAssembly(plan, request.logprobs)))
            else:
                running.append(_Running(i, deliveries, StreamAssembly(plan, request.logprobs), send))
        with torch.inference_mode():
            while self.engine.has_work():
                self.engine.tick()
                for streamed in running:
                    if streamed.send is not None:
                        streamed.flush()
        for done in running:
            outcomes[done.position] = done.outcome()
        return outcomes


@dataclass
class _Running:
    """A text request in the engine: where its updates land and how its reply is put together.

    A streamed request sends its messages as they come, always holding the latest back: TorchServe
    ends a stream with the handler's return value, so the last messages must be that value."""

    position: int
    deliveries: list[Delivery]
    assembly: ResponseAssembly | StreamAssembly
    send: Send | None = None
    held: list[Message] | None = None
    failure: GenserveError | None = None

    def _take(self) -> list[Message]:
        fresh: list[Message] = []
        while self.deliveries and self.failure is None:
            delivery = self.deliveries.pop(0)
            if isinstance(delivery, BaseException):
                self.failure = delivery if isinstance(delivery, GenserveError) else GenserveError("internal error")
            elif isinstance(self.assembly, StreamAssembly):
                fresh.extend(self.assembly.add(delivery))
            else:
                self.assembly.add(delivery)
        return fresh

    def flush(self) -> None:
        fresh = self._take()
        if fresh and self.send is not None:
            if self.held:
                self.send(_json(self.held))
            self.held = fresh

    def outcome(self) -> Outcome:
        fresh = self._take()
        if self.failure is not None:
            return Outcome(error=self.failure)
        if isinstance(self.assembly, ResponseAssembly):
            return Outcome(reply=self.assembly.response())
        return Outcome(reply=[*(self.held or []), *fresh])


def _json(reply: Message | list[Message]) -> str:
    if isinstance(reply, list):
        return json.dumps([json_format.MessageToDict(message) for message in reply])
    return json.dumps(json_format.MessageToDict(reply))


class LatentModel:
    """A VAE decoder or GAN generator behind the latent service's own checks and decoding."""

    def __init__(self, entry: ModelEntry, weights: Path, device: torch.device) -> None:
        settings = from_env(LatentSettings)
        # float64, as the latent service: a row's pixels do not depend on the batch it rides in.
        network = load_model(weights, device).double()
        model = operations.LatentModel(entry.name, entry, network, device, {})
        self.name = entry.name
        self.operations = operations.LatentOperations(
            settings,
            ImageLimits(0, 0),  # no image inputs here: Sample and Decode take numbers only
            {entry.name: model},
            entry.name,
            ThreadPoolExecutor(max_workers=1),  # the async paths only; never started
            UserConcepts(None, 0),
        )

    def run(self, bodies: list[dict[str, Any]], senders: list[Send | None]) -> list[Outcome]:
        outcomes = [Outcome() for _ in bodies]
        points: list[tuple[int, torch.Tensor, latent_pb2.ImagesResponse]] = []
        for i, (body, send) in enumerate(zip(bodies, senders, strict=True)):
            try:
                if send is not None:
                    raise InvalidArgument("latent models answer whole: only text models stream")
                if "latents" in body:
                    decode = cast(latent_pb2.DecodeRequest, parse(body, latent_pb2.DecodeRequest()))
                    model, z = self.operations.decode_points(decode.model, [list(v.values) for v in decode.latents])
                    reply = latent_pb2.ImagesResponse(model=model.name)
                else:
                    sample = cast(latent_pb2.SampleRequest, parse(body, latent_pb2.SampleRequest()))
                    model, z, seed = self.operations.sample_points(
                        sample.model,
                        sample.n,
                        sample.seed if sample.HasField("seed") else None,
                        sample.temperature if sample.HasField("temperature") else None,
                        sample.truncation,
                    )
                    reply = latent_pb2.ImagesResponse(model=model.name, seed=seed)
                    if sample.return_latents:
                        reply.latents.extend(latent_pb2.LatentVector(values=row.tolist()) for row in z)
            except GenserveError as error:
                outcomes[i].error = error
                continue
            points.append((i, z, reply))
        if points:
            images = self.operations.decode_images(self.name, torch.cat([z for _, z, _ in points]))
            start = 0
            for i, z, reply in points:
                reply.images.extend(image_message(image) for image in images[start : start + len(z)])
                start += len(z)
                outcomes[i].reply = reply
        return outcomes


@dataclass
class GenserveHandler:
    """Loads the archive's model on `initialize`; `handle` answers a batch, one reply per request."""

    model: Model | None = None
    entry: ModelEntry | None = None
    family: str = ""

    def initialize(self, context: Context) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        described = json.loads((model_dir / ENTRY_FILE).read_text(encoding="utf-8"))
        entry = ModelEntry(**described["entry"])
        weights = model_dir / context.manifest["model"]["serializedFile"]
        if sha256_of(weights) != entry.sha256:
            raise HandlerError(f"{weights}: sha256 differs from the manifest entry of {entry.name!r}")
        gpu = context.system_properties.get("gpu_id")
        device = pick_device(f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu")
        configure_torch(from_env(ModelSettings).torch_threads)  # GENSERVE_TORCH_THREADS, as the services
        self.family, self.entry = entry.family, entry
        if entry.family == "text":
            self.model = TextModel(entry, weights, device)
        elif entry.family == "latent":
            self.model = LatentModel(entry, weights, device)
        else:
            raise HandlerError(f"{entry.name!r} is a {entry.family} model; archives hold text or latent models")

    def handle(self, data: list[Any], context: Context) -> list[str]:
        if self.model is None:
            raise HandlerError("the handler is not initialised")
        outcomes = [Outcome() for _ in data]
        bodies: list[dict[str, Any]] = []
        senders: list[Send | None] = []
        positions: list[int] = []
        for i, item in enumerate(data):
            try:
                body = request_body(item)
                streamed = body.pop(STREAM_KEY, False)
                if not isinstance(streamed, bool):
                    raise InvalidArgument(f"{STREAM_KEY!r} must be true or false")
            except GenserveError as error:
                outcomes[i].error = error
                continue
            bodies.append(body)
            senders.append(self._sender(i, len(data), context) if streamed else None)
            positions.append(i)
        # In TorchServe's model_log: how its batching shaped this call (streamed requests share batches too).
        log.info("batch of %d requests, %d streamed", len(data), sum(send is not None for send in senders))
        for i, ran in zip(positions, self.model.run(bodies, senders), strict=True):
            outcomes[i] = ran
        replies = []
        for i, outcome in enumerate(outcomes):
            if outcome.reply is not None and outcome.error is None:
                replies.append(_json(outcome.reply))
                continue
            failure = outcome.error or GenserveError("internal error")
            context.set_response_status(HTTP_STATUS.get(failure.code, 500), failure.message, i)
            replies.append(json.dumps({"error": {"code": failure.code.name, "message": failure.message}}))
        return replies

    @staticmethod
    def _sender(position: int, batch: int, context: Context) -> Send:
        """Intermediate replies to the request at `position` alone: only the calls that asked to
        stream may get them (sent on a unary call, a piece would end it and break the worker)."""
        request_ids = {position: context.request_ids[position]}

        def send(reply: str) -> None:
            replies = [""] * batch
            replies[position] = reply
            send_intermediate(replies, request_ids, context)

        return send


# One handler per model directory: a TorchServe worker serves one model, a test process several.
_handlers: dict[str, GenserveHandler] = {}


def handle(data: list[Any] | None, context: Context) -> list[str] | None:
    """TorchServe's function entry point: called once with data=None to load, then per batch."""
    model_dir = str(context.system_properties["model_dir"])
    handler = _handlers.get(model_dir)
    if handler is None:
        handler = GenserveHandler()
        handler.initialize(context)
        _handlers[model_dir] = handler
    if data is None:
        return None
    return handler.handle(data, context)
