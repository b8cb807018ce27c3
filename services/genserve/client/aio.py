"""`AsyncClient`: the asyncio client of one gateway (grpc.aio), the same methods as `Client`, awaited.

Unary calls are coroutines; streams (`generate_stream`, `dream_stream`, `style_preview_stream`,
`watch_job`) are async iterators. Create it inside the event loop that uses it.
"""

# ruff: noqa: ASYNC109 (`timeout=` is a gRPC deadline, named as in the blocking client, not a wait)

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Unpack

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


class AsyncClient:
    """A gateway's whole public API over one grpc.aio channel; see `Client` for the parameters."""

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        api_key: str = "",
        timeout: float | None = 60.0,
        retry: Retry | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str = "",
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """`channel_options` are added to the channel's own (e.g. a service config that balances
        over every address a DNS name resolves to: genserve.common.balancing); none by default."""
        self.address = address
        self.timeout = timeout
        self.retry = retry or Retry()
        self._metadata = key_metadata(api_key)
        self._channel = (
            grpc.aio.insecure_channel(address, options=[*CHANNEL_OPTIONS, *channel_options])
            if credentials is None
            else grpc.aio.secure_channel(address, credentials, options=[*tls_options(server_name), *channel_options])
        )
        self._text = text_pb2_grpc.TextServiceStub(self._channel)
        self._vision = vision_pb2_grpc.VisionServiceStub(self._channel)
        self._latent = latent_pb2_grpc.LatentServiceStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._owns_channel = True  # False in the views made by with_api_key
        self._pause: Callable[[float], Awaitable[None]] = self._back_off

    async def close(self) -> None:
        """Close the channel (a view made by `with_api_key` leaves it to the client it came from)."""
        if self._owns_channel:
            await self._channel.close()

    def with_api_key(self, api_key: str) -> AsyncClient:
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

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    # --- plumbing -------------------------------------------------------------------------------

    async def _back_off(self, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._channel.channel_ready(), self.retry.ready_wait)

    def _deadline(self, timeout: float | None, default: float | None) -> float | None:
        limit = default if timeout is None else timeout
        return None if limit is None else time.monotonic() + limit

    async def _unary(self, rpc: Callable[..., Any], request: Any, timeout: float | None, retry: bool = False) -> Any:
        deadline = self._deadline(timeout, self.timeout)
        failures = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await rpc(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as error:
                delay = self.retry.backoff(failures + 1)
                retryable = retry and status_of(error) == grpc.StatusCode.UNAVAILABLE
                in_time = remaining is None or delay < remaining
                if not (retryable and in_time and failures < self.retry.attempts):
                    raise error_from(error) from None
            failures += 1
            await self._pause(delay)

    async def _stream(self, rpc: Callable[..., Any], request: Any, timeout: float | None) -> AsyncGenerator[Any, None]:
        """A server stream, never retried; leaving the loop early cancels the call.

        The public streams close this one explicitly (aclosing): a stream abandoned while paused at
        a `yield` then cancels its call at once, not when the garbage collector finds it."""
        deadline = self._deadline(timeout, self.timeout)
        call = rpc(request, timeout=None if deadline is None else deadline - time.monotonic(), metadata=self._metadata)
        try:
            async for message in call:
                yield message
        except grpc.RpcError as error:
            raise error_from(error) from None
        finally:
            call.cancel()

    # --- text -----------------------------------------------------------------------------------

    async def generate(
        self, prompt: str, *, timeout: float | None = None, **options: Unpack[requests.GenerateOptions]
    ) -> results.Generation:
        """Every requested completion of `prompt`, returned together."""
        request = requests.generate_request(prompt, options)
        return results.Generation.from_proto(await self._unary(self._text.Generate, request, timeout))

    async def generate_stream(
        self, prompt: str, *, timeout: float | None = None, **options: Unpack[requests.GenerateOptions]
    ) -> AsyncIterator[results.TextPiece]:
        """Pieces of text as they are sampled (`piece.text`); several completions interleave by `index`."""
        request = requests.generate_request(prompt, options)
        async with contextlib.aclosing(self._stream(self._text.GenerateStream, request, timeout)) as messages:
            async for message in messages:
                yield results.TextPiece.from_proto(message)

    # --- vision ---------------------------------------------------------------------------------

    async def dream_stream(
        self, image: ImageInput, *, timeout: float | None = None, **options: Unpack[requests.DreamOptions]
    ) -> AsyncIterator[results.DreamProgress]:
        """DeepDream progress events; the last one carries `result`."""
        request = requests.dream_request(image, options)
        async with contextlib.aclosing(self._stream(self._vision.Dream, request, timeout)) as messages:
            async for message in messages:
                yield results.DreamProgress.from_proto(message)

    async def dream(
        self, image: ImageInput, *, timeout: float | None = None, **options: Unpack[requests.DreamOptions]
    ) -> ImageResult:
        """The finished dream (PNG bytes in `.png`, `.image()` for PIL)."""
        return await _final(self.dream_stream(image, timeout=timeout, **options), "Dream")

    async def style_preview_stream(
        self,
        content: ImageInput,
        styles: requests.StylesInput,
        *,
        timeout: float | None = None,
        **options: Unpack[requests.StyleOptions],
    ) -> AsyncIterator[results.StyleProgress]:
        """A small synchronous style transfer's progress events; the last one carries `result`."""
        request = requests.style_transfer_request(content, styles, options)
        async with contextlib.aclosing(self._stream(self._vision.StylePreview, request, timeout)) as messages:
            async for message in messages:
                yield results.StyleProgress.from_proto(message)

    async def style_preview(
        self,
        content: ImageInput,
        styles: requests.StylesInput,
        *,
        timeout: float | None = None,
        **options: Unpack[requests.StyleOptions],
    ) -> ImageResult:
        """The finished style preview."""
        return await _final(self.style_preview_stream(content, styles, timeout=timeout, **options), "StylePreview")

    # --- latent ---------------------------------------------------------------------------------

    async def sample(
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
        return results.LatentImages.from_proto(await self._unary(self._latent.Sample, request, timeout))

    async def encode(
        self, images: Sequence[ImageInput], *, model: str = "", timeout: float | None = None
    ) -> results.Encodings:
        """Images → posterior means and log-variances (VAE)."""
        request = latent_pb2.EncodeRequest(model=model, images=[requests.image(item) for item in images])
        return results.Encodings.from_proto(await self._unary(self._latent.Encode, request, timeout))

    async def decode(
        self, latents: Sequence[Sequence[float]] | np.ndarray, *, model: str = "", timeout: float | None = None
    ) -> results.LatentImages:
        """Latent points (rows of a (count, dim) array) → images."""
        request = latent_pb2.DecodeRequest(model=model, latents=requests.vectors(latents))
        return results.LatentImages.from_proto(await self._unary(self._latent.Decode, request, timeout))

    async def interpolate(
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
        return results.LatentImages.from_proto(await self._unary(self._latent.Interpolate, request, timeout))

    async def manifold(
        self, *, model: str = "", grid_size: int = 0, quantile: float = 0.0, timeout: float | None = None
    ) -> results.Manifold:
        """The decoded grid over a 2-d latent space."""
        request = latent_pb2.ManifoldRequest(model=model, grid_size=grid_size, quantile=quantile)
        return results.Manifold.from_proto(await self._unary(self._latent.Manifold, request, timeout))

    async def arithmetic(
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
        return results.LatentImages.from_proto(await self._unary(self._latent.Arithmetic, request, timeout))

    async def create_concept(
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
        return results.Concept.from_proto(await self._unary(self._latent.CreateConcept, request, timeout))

    async def list_concepts(self, *, model: str = "", timeout: float | None = None) -> list[results.Concept]:
        request = latent_pb2.ListConceptsRequest(model=model)
        reply = await self._unary(self._latent.ListConcepts, request, timeout, retry=True)
        return [results.Concept.from_proto(item) for item in reply.concepts]

    async def delete_concept(self, name: str, *, model: str = "", timeout: float | None = None) -> results.Concept:
        request = latent_pb2.DeleteConceptRequest(model=model, name=name)
        return results.Concept.from_proto(await self._unary(self._latent.DeleteConcept, request, timeout))

    async def apply_concept(
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
        return results.LatentImages.from_proto(await self._unary(self._latent.ApplyConcept, request, timeout))

    # --- models ---------------------------------------------------------------------------------

    async def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """The gateway's standard gRPC health status: "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" ...
        (`service` "" = the whole server). Never retried: a probe wants the answer of now."""
        request = health_pb2.HealthCheckRequest(service=service)
        reply = await self._unary(self._health.Check, request, timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def list_models(self, family: str = "", *, timeout: float | None = None) -> list[results.ModelInfo]:
        """Every served model, or those of one family ("text", "vision", "latent")."""
        reply = await self._unary(self._models.ListModels, models_pb2.ListModelsRequest(family=family), timeout, True)
        return [results.ModelInfo.from_proto(item) for item in reply.models]

    async def describe_model(self, name: str, *, timeout: float | None = None) -> results.ModelInfo:
        reply = await self._unary(self._models.DescribeModel, models_pb2.DescribeModelRequest(name=name), timeout, True)
        return results.ModelInfo.from_proto(reply)

    # --- jobs -----------------------------------------------------------------------------------

    async def submit_style_transfer(
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
            await self._unary(self._jobs.SubmitStyleTransfer, request, timeout, bool(idempotency_key))
        )

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> results.Job:
        return results.Job.from_proto(
            await self._unary(self._jobs.GetJob, jobs_pb2.GetJobRequest(id=job_id), timeout, True)
        )

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> results.Job:
        """Cancel a queued or running job (a finished one is returned unchanged, so this is retried)."""
        return results.Job.from_proto(
            await self._unary(self._jobs.CancelJob, jobs_pb2.CancelJobRequest(id=job_id), timeout, True)
        )

    async def list_jobs(
        self, *, state: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> results.JobPage:
        """One page of the caller's jobs, newest first (state: "queued", "running", ... or "" for all)."""
        request = jobs_pb2.ListJobsRequest(state=requests.job_state(state), page_size=page_size, page_token=page_token)
        return results.JobPage.from_proto(await self._unary(self._jobs.ListJobs, request, timeout, True))

    async def get_job_result(self, job_id: str, *, timeout: float | None = None) -> results.JobResult:
        """The image of a succeeded job (FailedPrecondition otherwise)."""
        request = jobs_pb2.GetJobResultRequest(id=job_id)
        return results.JobResult.from_proto(await self._unary(self._jobs.GetJobResult, request, timeout, True))

    async def watch_job(
        self,
        job_id: str,
        *,
        after: str = "",
        timeout: float | None = None,
        on_reconnect: ReconnectHook | None = None,
    ) -> AsyncIterator[results.JobEvent]:
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
                async for message in call:
                    failures = 0
                    event = results.JobEvent.from_proto(message)
                    last = event.event_id or last
                    yield event
                    if event.terminal:
                        return
                job = await self.get_job(job_id)
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
            await self._pause(self.retry.backoff(failures))


async def _final(
    events: AsyncIterator[results.DreamProgress] | AsyncIterator[results.StyleProgress], rpc: str
) -> ImageResult:
    try:
        async for event in events:
            if event.result is not None:
                return event.result
    finally:
        await events.aclose()  # type: ignore[union-attr]
    raise GenserveClientError(f"the {rpc} stream ended without a result", code="INTERNAL")
