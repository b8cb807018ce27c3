"""`Client`: the blocking client of one gateway (one gRPC channel, typed methods, plain results)."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genserve.client import requests, results
from genserve.client.errors import GenserveClientError, Unavailable, error_from, status_of
from genserve.client.images import ImageInput, ImageResult
from genserve.client.settings import CHANNEL_OPTIONS, ReconnectHook, Retry, key_metadata, tls_options
from genserve.v1 import (
    jobs_pb2,
    jobs_pb2_grpc,
    latent_pb2,
    latent_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    text_pb2_grpc,
    vision_pb2_grpc,
)

Reply = TypeVar("Reply")


class Client:
    """A gateway's whole public API over one channel.

    `timeout` is the default deadline in seconds of every call except `watch_job` (which has none
    unless given): a call's `timeout=` overrides it, and it covers the call's retries. `api_key` is
    sent as `authorization: Bearer <key>`. `credentials` (e.g.
    `grpc.ssl_channel_credentials(CA_PEM_BYTES)`) make it a TLS channel, checked against
    `server_name` when the address is not a name the certificate lists. Failures raise
    `GenserveClientError` subclasses, never `grpc.RpcError`.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        api_key: str = "",
        timeout: float | None = 60.0,
        retry: Retry | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str = "",
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.retry = retry or Retry()
        self._metadata = key_metadata(api_key)
        self._channel = (
            grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
            if credentials is None
            else grpc.secure_channel(address, credentials, options=tls_options(server_name))
        )
        self._text = text_pb2_grpc.TextServiceStub(self._channel)
        self._vision = vision_pb2_grpc.VisionServiceStub(self._channel)
        self._latent = latent_pb2_grpc.LatentServiceStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._owns_channel = True  # False in the views made by with_api_key
        # How a retry waits (an attribute, so it can be swapped for a recorder).
        self._pause: Callable[[float], None] = self._back_off

    def close(self) -> None:
        """Close the channel (a view made by `with_api_key` leaves it to the client it came from)."""
        if self._owns_channel:
            self._channel.close()

    def with_api_key(self, api_key: str) -> Client:
        """A view of this client whose calls send `api_key` instead ("" = none).

        It shares this client's channel, stubs, default timeout and retry policy, so making one
        per request costs one small object and no connection: a front end that serves many
        callers passes each caller's key through one channel. Closing the view does nothing;
        close the client it came from.
        """
        view = copy.copy(self)
        view._metadata = key_metadata(api_key)
        view._owns_channel = False
        return view

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------

    def _back_off(self, delay: float) -> None:
        time.sleep(delay)
        # Not ready in time: the next try fails fast with UNAVAILABLE and counts as one more failure.
        with contextlib.suppress(grpc.FutureTimeoutError):
            grpc.channel_ready_future(self._channel).result(timeout=self.retry.ready_wait)

    def _deadline(self, timeout: float | None, default: float | None) -> float | None:
        limit = default if timeout is None else timeout
        return None if limit is None else time.monotonic() + limit

    def _unary(self, rpc: Callable[..., Reply], request: Any, timeout: float | None, retry: bool = False) -> Reply:
        deadline = self._deadline(timeout, self.timeout)
        failures = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return rpc(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as error:
                delay = self.retry.backoff(failures + 1)
                retryable = retry and status_of(error) == grpc.StatusCode.UNAVAILABLE
                in_time = remaining is None or delay < remaining
                if not (retryable and in_time and failures < self.retry.attempts):
                    raise error_from(error) from None
            failures += 1
            self._pause(delay)

    def _stream(self, rpc: Callable[..., Any], request: Any, timeout: float | None) -> Iterator[Any]:
        """A server stream, never retried; leaving the loop early cancels the call."""
        deadline = self._deadline(timeout, self.timeout)
        call = rpc(request, timeout=None if deadline is None else deadline - time.monotonic(), metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise error_from(error) from None
        finally:
            call.cancel()

    # --- text -----------------------------------------------------------------------------------

    def generate(
        self, prompt: str, *, timeout: float | None = None, **options: Unpack[requests.GenerateOptions]
    ) -> results.Generation:
        """Every requested completion of `prompt`, returned together."""
        request = requests.generate_request(prompt, options)
        return results.Generation.from_proto(self._unary(self._text.Generate, request, timeout))

    def generate_stream(
        self, prompt: str, *, timeout: float | None = None, **options: Unpack[requests.GenerateOptions]
    ) -> Iterator[results.TextPiece]:
        """Pieces of text as they are sampled (`piece.text`); several completions interleave by `index`."""
        request = requests.generate_request(prompt, options)
        for message in self._stream(self._text.GenerateStream, request, timeout):
            yield results.TextPiece.from_proto(message)

    # --- vision ---------------------------------------------------------------------------------

    def dream_stream(
        self, image: ImageInput, *, timeout: float | None = None, **options: Unpack[requests.DreamOptions]
    ) -> Iterator[results.DreamProgress]:
        """DeepDream progress events; the last one carries `result`."""
        request = requests.dream_request(image, options)
        for message in self._stream(self._vision.Dream, request, timeout):
            yield results.DreamProgress.from_proto(message)

    def dream(
        self, image: ImageInput, *, timeout: float | None = None, **options: Unpack[requests.DreamOptions]
    ) -> ImageResult:
        """The finished dream (PNG bytes in `.png`, `.image()` for PIL)."""
        return _final(self.dream_stream(image, timeout=timeout, **options), "Dream")

    def style_preview_stream(
        self,
        content: ImageInput,
        styles: requests.StylesInput,
        *,
        timeout: float | None = None,
        **options: Unpack[requests.StyleOptions],
    ) -> Iterator[results.StyleProgress]:
        """A small synchronous style transfer's progress events; the last one carries `result`."""
        request = requests.style_transfer_request(content, styles, options)
        for message in self._stream(self._vision.StylePreview, request, timeout):
            yield results.StyleProgress.from_proto(message)

    def style_preview(
        self,
        content: ImageInput,
        styles: requests.StylesInput,
        *,
        timeout: float | None = None,
        **options: Unpack[requests.StyleOptions],
    ) -> ImageResult:
        """The finished style preview."""
        return _final(self.style_preview_stream(content, styles, timeout=timeout, **options), "StylePreview")

    # --- latent ---------------------------------------------------------------------------------

    def sample(
        self,
        n: int = 1,
        *,
        model: str = "",
        seed: int | None = None,
        temperature: float | None = None,
        truncation: float = 0.0,
        return_latents: bool = False,
        timeout: float | None = None,
    ) -> results.LatentImages:
        """`n` new images from a latent model's prior (with their latents when asked)."""
        request = latent_pb2.SampleRequest(
            model=model, n=n, seed=seed, temperature=temperature, truncation=truncation, return_latents=return_latents
        )
        return results.LatentImages.from_proto(self._unary(self._latent.Sample, request, timeout))

    def encode(
        self, images: Sequence[ImageInput], *, model: str = "", timeout: float | None = None
    ) -> results.Encodings:
        """Images → posterior means and log-variances (VAE)."""
        request = latent_pb2.EncodeRequest(model=model, images=[requests.image(item) for item in images])
        return results.Encodings.from_proto(self._unary(self._latent.Encode, request, timeout))

    def decode(
        self, latents: Sequence[Sequence[float]] | np.ndarray, *, model: str = "", timeout: float | None = None
    ) -> results.LatentImages:
        """Latent points (rows of a (count, dim) array) → images."""
        request = latent_pb2.DecodeRequest(model=model, latents=requests.vectors(latents))
        return results.LatentImages.from_proto(self._unary(self._latent.Decode, request, timeout))

    def interpolate(
        self,
        start: requests.PointInput,
        end: requests.PointInput,
        *,
        steps: int = 0,
        method: str = "",
        model: str = "",
        timeout: float | None = None,
    ) -> results.LatentImages:
        """Frames of a walk between two points (vectors or images); method "slerp" (default) or "lerp"."""
        request = latent_pb2.InterpolateRequest(
            model=model,
            start=requests.point(start, "start"),
            end=requests.point(end, "end"),
            steps=steps,
            method=requests.interpolation_method(method),
        )
        return results.LatentImages.from_proto(self._unary(self._latent.Interpolate, request, timeout))

    def manifold(
        self, *, model: str = "", grid_size: int = 0, quantile: float = 0.0, timeout: float | None = None
    ) -> results.Manifold:
        """The decoded grid over a 2-d latent space."""
        request = latent_pb2.ManifoldRequest(model=model, grid_size=grid_size, quantile=quantile)
        return results.Manifold.from_proto(self._unary(self._latent.Manifold, request, timeout))

    def arithmetic(
        self,
        a: requests.PointInput,
        b: requests.PointInput,
        c: requests.PointInput,
        *,
        model: str = "",
        timeout: float | None = None,
    ) -> results.LatentImages:
        """a − b + c in latent space, decoded."""
        request = latent_pb2.ArithmeticRequest(
            model=model, a=requests.point(a, "a"), b=requests.point(b, "b"), c=requests.point(c, "c")
        )
        return results.LatentImages.from_proto(self._unary(self._latent.Arithmetic, request, timeout))

    def create_concept(
        self,
        name: str,
        positives: Sequence[ImageInput],
        negatives: Sequence[ImageInput],
        *,
        model: str = "",
        description: str = "",
        timeout: float | None = None,
    ) -> results.Concept:
        """A concept vector of the caller's own: mean latent of the positives minus the negatives'."""
        request = latent_pb2.CreateConceptRequest(
            model=model,
            name=name,
            description=description,
            positives=[requests.image(item, "positives") for item in positives],
            negatives=[requests.image(item, "negatives") for item in negatives],
        )
        return results.Concept.from_proto(self._unary(self._latent.CreateConcept, request, timeout))

    def list_concepts(self, *, model: str = "", timeout: float | None = None) -> list[results.Concept]:
        request = latent_pb2.ListConceptsRequest(model=model)
        reply = self._unary(self._latent.ListConcepts, request, timeout, retry=True)
        return [results.Concept.from_proto(item) for item in reply.concepts]

    def delete_concept(self, name: str, *, model: str = "", timeout: float | None = None) -> results.Concept:
        request = latent_pb2.DeleteConceptRequest(model=model, name=name)
        return results.Concept.from_proto(self._unary(self._latent.DeleteConcept, request, timeout))

    def apply_concept(
        self,
        concept: str,
        point: requests.PointInput,
        *,
        strengths: Sequence[float] = (),
        model: str = "",
        timeout: float | None = None,
    ) -> results.LatentImages:
        """One image per strength: point + strength × concept vector."""
        request = latent_pb2.ApplyConceptRequest(
            model=model, concept=concept, point=requests.point(point, "point"), strengths=list(strengths)
        )
        return results.LatentImages.from_proto(self._unary(self._latent.ApplyConcept, request, timeout))

    # --- models ---------------------------------------------------------------------------------

    def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """The gateway's standard gRPC health status: "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" ...
        (`service` "" = the whole server). Never retried: a probe wants the answer of now."""
        request = health_pb2.HealthCheckRequest(service=service)
        reply = self._unary(self._health.Check, request, timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def list_models(self, family: str = "", *, timeout: float | None = None) -> list[results.ModelInfo]:
        """Every served model, or those of one family ("text", "vision", "latent")."""
        reply = self._unary(self._models.ListModels, models_pb2.ListModelsRequest(family=family), timeout, True)
        return [results.ModelInfo.from_proto(item) for item in reply.models]

    def describe_model(self, name: str, *, timeout: float | None = None) -> results.ModelInfo:
        reply = self._unary(self._models.DescribeModel, models_pb2.DescribeModelRequest(name=name), timeout, True)
        return results.ModelInfo.from_proto(reply)

    # --- jobs -----------------------------------------------------------------------------------

    def submit_style_transfer(
        self,
        content: ImageInput,
        styles: requests.StylesInput,
        *,
        idempotency_key: str = "",
        timeout: float | None = None,
        **options: Unpack[requests.StyleOptions],
    ) -> results.Job:
        """Queue a style transfer as a durable job ("queued", or "running" if a worker took it at once).
        With an idempotency key a repeated submit returns the first job, so only then is it retried."""
        request = requests.submit_request(content, styles, options, idempotency_key)
        return results.Job.from_proto(
            self._unary(self._jobs.SubmitStyleTransfer, request, timeout, bool(idempotency_key))
        )

    def get_job(self, job_id: str, *, timeout: float | None = None) -> results.Job:
        return results.Job.from_proto(self._unary(self._jobs.GetJob, jobs_pb2.GetJobRequest(id=job_id), timeout, True))

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> results.Job:
        """Cancel a queued or running job (a finished one is returned unchanged, so this is retried)."""
        return results.Job.from_proto(
            self._unary(self._jobs.CancelJob, jobs_pb2.CancelJobRequest(id=job_id), timeout, True)
        )

    def list_jobs(
        self, *, state: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> results.JobPage:
        """One page of the caller's jobs, newest first (state: "queued", "running", ... or "" for all)."""
        request = jobs_pb2.ListJobsRequest(state=requests.job_state(state), page_size=page_size, page_token=page_token)
        return results.JobPage.from_proto(self._unary(self._jobs.ListJobs, request, timeout, True))

    def get_job_result(self, job_id: str, *, timeout: float | None = None) -> results.JobResult:
        """The image of a succeeded job (FailedPrecondition otherwise)."""
        request = jobs_pb2.GetJobResultRequest(id=job_id)
        return results.JobResult.from_proto(self._unary(self._jobs.GetJobResult, request, timeout, True))

    def watch_job(
        self,
        job_id: str,
        *,
        after: str = "",
        timeout: float | None = None,
        on_reconnect: ReconnectHook | None = None,
    ) -> Iterator[results.JobEvent]:
        """The job's events after `after` (all when ""), then live ones; ends after the terminal event.

        A stream that breaks (UNAVAILABLE: connection reset, gateway restart) is reopened after the
        last event delivered, so no event is missed or repeated; up to `retry.attempts` reconnects
        in a row. If the history ends without a terminal event while the job's record is terminal
        (its events were trimmed), a closing event made from the record (event_id "") ends it.
        `timeout` bounds each stream (none by default: a job may run for hours).
        """
        last = after
        failures = 0
        while True:
            call = self._jobs.WatchJob(
                jobs_pb2.WatchJobRequest(id=job_id, after_event_id=last), timeout=timeout, metadata=self._metadata
            )
            try:
                for message in call:
                    failures = 0
                    event = results.JobEvent.from_proto(message)
                    last = event.event_id or last
                    yield event
                    if event.terminal:
                        return
                job = self.get_job(job_id)
                if job.terminal:
                    yield results.JobEvent.closing(job)
                    return
                reason = "stream ended early"
                if failures >= self.retry.attempts:
                    raise Unavailable(f"the watch stream of job {job_id} keeps ending before the job does")
            except grpc.RpcError as error:
                if status_of(error) != grpc.StatusCode.UNAVAILABLE or failures >= self.retry.attempts:
                    raise error_from(error) from None
                reason = f"stream lost ({error_from(error).message})"
            finally:
                call.cancel()
            failures += 1
            if on_reconnect is not None:
                on_reconnect(reason, failures, self.retry.attempts)
            self._pause(self.retry.backoff(failures))


def _final(events: Iterator[results.DreamProgress] | Iterator[results.StyleProgress], rpc: str) -> ImageResult:
    with contextlib.closing(events):  # type: ignore[type-var]
        for event in events:
            if event.result is not None:
                return event.result
    raise GenserveClientError(f"the {rpc} stream ended without a result", code="INTERNAL")
