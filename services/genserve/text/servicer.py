"""TextService over gRPC: translates protobuf ↔ the domain layer (generator.py), nothing more."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from genserve.common.errors import loaded
from genserve.text.generator import GenerationPlan, GenerationRequest, TextGenerator
from genserve.text.protocol import CompletionUpdate, Finish, SamplingConfig, TokenOut
from genserve.v1 import text_pb2, text_pb2_grpc

FINISH_REASONS = {
    Finish.LENGTH: text_pb2.FINISH_REASON_LENGTH,
    Finish.STOP: text_pb2.FINISH_REASON_STOP,
}


def request_from_proto(message: text_pb2.GenerateRequest) -> GenerationRequest:
    sampling = message.sampling
    return GenerationRequest(
        prompt=message.prompt,
        model=message.model,
        max_tokens=message.max_tokens,
        sampling=SamplingConfig(  # unset optional fields take SamplingConfig's defaults (1 = off / T 1)
            temperature=sampling.temperature if sampling.HasField("temperature") else 1.0,
            top_k=sampling.top_k,
            top_p=sampling.top_p if sampling.HasField("top_p") else 1.0,
            min_p=sampling.min_p,
            repetition_penalty=sampling.repetition_penalty if sampling.HasField("repetition_penalty") else 1.0,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
        ),
        seed=message.seed if message.HasField("seed") else None,
        stop=tuple(message.stop),
        n=message.n,
        logprobs=message.logprobs,
        top_logprobs=message.top_logprobs,
        temperatures=tuple(message.temperatures),
    )


def token_to_proto(token: TokenOut) -> text_pb2.Token:
    return text_pb2.Token(
        text=token.text,
        id=token.id,
        logprob=token.logprob or 0.0,
        top_logprobs=[text_pb2.TopLogprob(token=t, logprob=lp) for t, lp in token.top],
    )


class TextServicer(text_pb2_grpc.TextServiceServicer):
    def __init__(self, generator: Callable[[], TextGenerator | None]) -> None:
        self._generator = generator

    def generator(self) -> TextGenerator:
        return loaded(self._generator(), "text models")

    async def Generate(
        self, request: text_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> text_pb2.GenerateResponse:
        domain = request_from_proto(request)
        reply: ResponseAssembly | None = None
        async for item in self.generator().stream(domain, incremental=False):
            if isinstance(item, GenerationPlan):
                reply = ResponseAssembly(item, domain.logprobs)
            elif reply is not None:
                reply.add(item)
        return reply.response() if reply is not None else text_pb2.GenerateResponse()

    async def GenerateStream(  # type: ignore[override]  # grpc.aio also takes a coroutine that writes
        self, request: text_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> None:
        # Written with context.write rather than yield: one generator layer less per message.
        domain = request_from_proto(request)
        messages: StreamAssembly | None = None
        async for item in self.generator().stream(domain):
            if isinstance(item, GenerationPlan):
                messages = StreamAssembly(item, domain.logprobs)
            elif messages is not None:
                for message in messages.add(item):
                    await context.write(message)


class ResponseAssembly:
    """A GenerateResponse put together from a plan and the updates of its completions (each
    delivered whole when decoding with incremental=False, or in pieces)."""

    def __init__(self, plan: GenerationPlan, logprobs: bool) -> None:
        self.logprobs = logprobs
        self.reply = text_pb2.GenerateResponse(model=plan.model, prompt_tokens=plan.prompt_tokens, seed=plan.seed)
        for planned in plan.completions:
            self.reply.completions.add(index=planned.index, temperature=planned.temperature, seed=planned.seed)
        self.parts: dict[int, list[str]] = {planned.index: [] for planned in plan.completions}

    def add(self, updates: list[CompletionUpdate]) -> None:
        for update in updates:
            completion = self.reply.completions[update.index]
            self.parts[update.index].append(update.text)
            if self.logprobs:
                completion.tokens.extend(token_to_proto(t) for t in update.tokens)
            if update.finish is not None:
                completion.finish_reason = FINISH_REASONS[update.finish]
                completion.completion_tokens = update.completion_tokens

    def response(self) -> text_pb2.GenerateResponse:
        for completion in self.reply.completions:
            completion.text = "".join(self.parts[completion.index])
        return self.reply


class StreamAssembly:
    """GenerateStream's messages: one per completion for everything that arrived together, the
    first of the stream carrying the request-level facts of the plan."""

    def __init__(self, plan: GenerationPlan, logprobs: bool) -> None:
        self.plan: GenerationPlan | None = plan
        self.logprobs = logprobs
        self.temperatures = {c.index: c.temperature for c in plan.completions}

    def add(self, updates: list[CompletionUpdate]) -> list[text_pb2.GenerateStreamResponse]:
        messages: dict[int, text_pb2.GenerateStreamResponse] = {}
        for update in updates:
            message = messages.get(update.index)
            if message is None:
                message = messages[update.index] = text_pb2.GenerateStreamResponse(
                    index=update.index, temperature=self.temperatures.get(update.index, 0.0)
                )
            message.text += update.text
            if self.logprobs:
                message.tokens.extend(token_to_proto(t) for t in update.tokens)
            if update.finish is not None:
                message.finish_reason = FINISH_REASONS[update.finish]
                message.completion_tokens = update.completion_tokens
        ordered = list(messages.values())
        if ordered and self.plan is not None:
            ordered[0].model, ordered[0].prompt_tokens, ordered[0].seed = (
                self.plan.model,
                self.plan.prompt_tokens,
                self.plan.seed,
            )
            self.plan = None
        return ordered
