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
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
import torch
from google.protobuf import json_format
from google.protobuf.message import Message

from genserve.common.config import LatentSettings, TextSettings, from_env
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
from genserve.text.servicer import FINISH_REASONS, request_from_proto, token_to_proto
from genserve.v1 import latent_pb2, text_pb2

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

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None: ...


class HandlerError(RuntimeError):
    """The archive cannot be served (missing or altered files, a model of another family)."""


@dataclass
class Outcome:
    """One request's reply: a message, or the error it met."""

    reply: Message | None = None
    error: GenserveError | None = None


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
    def run(self, bodies: list[dict[str, Any]]) -> list[Outcome]: ...


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

    def run(self, bodies: list[dict[str, Any]]) -> list[Outcome]:
        outcomes = [Outcome() for _ in bodies]
        running: list[tuple[int, Any, text_pb2.GenerateResponse, dict[int, list[str]]]] = []
        for i, body in enumerate(bodies):
            try:
                request = request_from_proto(cast(text_pb2.GenerateRequest, parse(body, text_pb2.GenerateRequest())))
                plan, spec = self.generator.plan(request, incremental=False)
            except GenserveError as error:
                outcomes[i].error = error
                continue
            reply = text_pb2.GenerateResponse(model=plan.model, prompt_tokens=plan.prompt_tokens, seed=plan.seed)
            for planned in plan.completions:
                reply.completions.add(index=planned.index, temperature=planned.temperature, seed=planned.seed)
            deliveries: list[Delivery] = []
            generation = Generation(spec, deliveries.append)
            try:
                self.engine.submit(generation)
            except GenserveError as error:
                outcomes[i].error = error
                continue
            running.append((i, deliveries, reply, {c.index: [] for c in plan.completions}))
            outcomes[i].reply = reply
        with torch.inference_mode():
            while self.engine.has_work():
                self.engine.tick()
        for i, deliveries, reply, parts in running:
            for delivery in deliveries:
                if isinstance(delivery, BaseException):
                    failure = delivery if isinstance(delivery, GenserveError) else GenserveError("internal error")
                    outcomes[i] = Outcome(error=failure)
                    break
                for update in delivery:
                    completion = reply.completions[update.index]
                    parts[update.index].append(update.text)
                    completion.tokens.extend(token_to_proto(t) for t in update.tokens)
                    if update.finish is not None:
                        completion.finish_reason = FINISH_REASONS[update.finish]
                        completion.completion_tokens = update.completion_tokens
            for completion in reply.completions:
                completion.text = "".join(parts[completion.index])
        return outcomes


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

    def run(self, bodies: list[dict[str, Any]]) -> list[Outcome]:
        outcomes = [Outcome() for _ in bodies]
        points: list[tuple[int, torch.Tensor, latent_pb2.ImagesResponse]] = []
        for i, body in enumerate(bodies):
            try:
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
        configure_torch(0)
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
        positions: list[int] = []
        for i, item in enumerate(data):
            try:
                bodies.append(request_body(item))
                positions.append(i)
            except GenserveError as error:
                outcomes[i].error = error
        for i, ran in zip(positions, self.model.run(bodies), strict=True):
            outcomes[i] = ran
        replies = []
        for i, outcome in enumerate(outcomes):
            if outcome.reply is not None and outcome.error is None:
                replies.append(json.dumps(json_format.MessageToDict(outcome.reply)))
                continue
            failure = outcome.error or GenserveError("internal error")
            context.set_response_status(HTTP_STATUS.get(failure.code, 500), failure.message, i)
            replies.append(json.dumps({"error": {"code": failure.code.name, "message": failure.message}}))
        return replies


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
