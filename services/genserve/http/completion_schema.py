"""OpenAI's legacy completions format ↔ genserve's text generation.

The request model states types only: ranges and limits are the text service's to check, so an
out-of-range value is refused with the service's own message (in these parameter names). A token
is one character here, so usage counts characters. Unary answers are pydantic models (they make
the OpenAPI document); streamed chunks are plain dicts, built for every piece of text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genserve.client import Completion, Generation, Token
from genserve.client.requests import GenerateOptions
from genserve.http.errors import ApiError, FieldNames

# The text service's field paths, as this API names them.
COMPLETION_FIELDS = FieldNames(
    aliases={
        "model": "model",
        "prompt": "prompt",
        "max_tokens": "max_tokens",
        "n": "n",
        "stop": "stop",
        "seed": "seed",
        "logprobs": "logprobs",
        "top_logprobs": "logprobs",
        "temperatures": "temperatures",
        **{
            f"{prefix}{name}": name
            for prefix in ("", "sampling.")
            for name in (
                "temperature",
                "top_p",
                "top_k",
                "min_p",
                "repetition_penalty",
                "presence_penalty",
                "frequency_penalty",
            )
        },
    },
    not_found="model",
    not_found_code="model_not_found",
)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(False, description="Send a last chunk with `usage` and no choices before [DONE].")


class CompletionRequest(BaseModel):
    """POST /v1/completions. Unset sampling fields take the text service's defaults."""

    # OpenAI refuses arguments it does not know; so does this API (a misspelt `top_k` would
    # otherwise be ignored in silence).
    model_config = ConfigDict(extra="forbid")

    model: str = Field("", description="A text model from GET /v1/models; empty = the service's default.")
    prompt: str | list[str] = Field(
        description="The text to continue, or a list of texts: one set of completions per prompt."
    )
    max_tokens: int | None = Field(None, description="Characters per completion; unset = the service default.")
    temperature: float | None = Field(None, description="0 = greedy; unset = 1 (the model's own distribution).")
    top_p: float | None = Field(None, description="Nucleus sampling mass in (0, 1]; unset = 1 (off).")
    n: int | None = Field(None, description="Completions per prompt (per temperature with `temperatures`).")
    stop: str | list[str] | None = Field(None, description="Generation stops before any of these strings.")
    seed: int | None = Field(None, description="Same seed, prompt and parameters → the same text.")
    presence_penalty: float | None = Field(None, description="Subtracted once from each seen token's logit.")
    frequency_penalty: float | None = Field(None, description="Subtracted per occurrence from a token's logit.")
    logprobs: int | None = Field(
        None,
        description="Return each token's log-probability and this many most likely alternatives per position.",
    )
    stream: bool = Field(False, description="Send server-sent events as text is sampled, ending with [DONE].")
    stream_options: StreamOptions | None = None
    echo: bool = Field(False, description="Not supported (true is refused).")
    best_of: int | None = Field(None, description="Not supported beyond best_of = n.")
    suffix: str | None = Field(None, description="Not supported (these models only continue text).")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported (non-empty is refused).")
    user: str | None = Field(None, description="Accepted and ignored.")
    # genserve's extras
    top_k: int | None = Field(None, description="genserve: keep the k most likely tokens; 0 = off.")
    min_p: float | None = Field(None, description="genserve: drop tokens below min_p × the top probability.")
    repetition_penalty: float | None = Field(None, description="genserve: > 1 discourages repeats.")
    temperatures: list[float] | None = Field(
        None, description="genserve: a sweep, n completions per listed temperature (overrides temperature)."
    )

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def completions_per_prompt(self) -> int:
        """How many completions the service makes for each prompt (n × temperatures)."""
        return max(self.n or 1, 1) * max(len(self.temperatures or ()), 1)

    def refuse_unsupported(self) -> None:
        """OpenAI parameters with no honest meaning here are refused, not ignored."""

        def refuse(param: str, why: str) -> ApiError:
            return ApiError(400, f"{param} is not supported: {why}", param=param, code="unsupported_parameter")

        if self.echo:
            raise refuse("echo", "send the prompt yourself; log-probabilities exist for generated tokens only")
        if self.suffix:
            raise refuse("suffix", "these models only continue text left to right")
        if self.logit_bias:
            raise refuse("logit_bias", "use top_k, min_p or the penalties to shape the distribution")
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise refuse("best_of", "completions are not ranked; ask for n of them and pick yourself")

    def options(self) -> GenerateOptions:
        """The gRPC parameters; unset ones are left out so the service applies its defaults."""
        options = GenerateOptions(model=self.model)
        for name in ("max_tokens", "n", "top_k", "min_p", "presence_penalty", "frequency_penalty", "temperatures"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value  # type: ignore[literal-required]
        for name in ("temperature", "top_p", "repetition_penalty", "seed"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value  # type: ignore[literal-required]
        if self.stop is not None:
            options["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.logprobs is not None:
            options["logprobs"] = True
            options["top_logprobs"] = self.logprobs
        return options


class Logprobs(BaseModel):
    """OpenAI's legacy per-token detail; log-probabilities are natural logs under the model's own
    distribution (temperature 1, before penalties and filters)."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    # Character offset of each token in prompt + completion (the first is the prompt's length).
    text_offset: list[int]


class Choice(BaseModel):
    text: str
    index: int
    logprobs: Logprobs | None
    finish_reason: Literal["length", "stop"] | None
    # genserve: the request seed this prompt was sampled with (send it as `seed` to repeat the text).
    seed: int
    # genserve: the temperature of this completion (only with a `temperatures` sweep).
    temperature: float | None = Field(None, exclude_if=lambda value: value is None)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def logprobs_of(tokens: Sequence[Token], offset: int) -> dict[str, Any]:
    """OpenAI's `logprobs` object for `tokens`, the first of which starts at character `offset`."""
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token.text)
    return {
        "tokens": [token.text for token in tokens],
        "token_logprobs": [token.logprob for token in tokens],
        "top_logprobs": [dict(token.top_logprobs) for token in tokens],
        "text_offset": offsets,
    }


def usage_of(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def _choice(
    request: CompletionRequest, prompt: str, generation: Generation, first_index: int, done: Completion
) -> Choice:
    logprobs = Logprobs(**logprobs_of(done.tokens, len(prompt))) if request.logprobs is not None else None
    return Choice(
        text=done.text,
        index=first_index + done.index,
        logprobs=logprobs,
        finish_reason=done.finish_reason or None,  # type: ignore[arg-type]
        seed=generation.seed,
        temperature=done.temperature if request.temperatures else None,
    )


def completion_response(request: CompletionRequest, generations: Sequence[Generation]) -> CompletionResponse:
    """One answer for all prompts: prompt i's completions are choices i·per_prompt … (as OpenAI numbers them)."""
    per_prompt = request.completions_per_prompt()
    choices = [
        _choice(request, prompt, generation, position * per_prompt, done)
        for position, (prompt, generation) in enumerate(zip(request.prompts(), generations, strict=True))
        for done in generation.completions
    ]
    return CompletionResponse(
        id=completion_id(),
        created=now(),
        model=generations[0].model,
        choices=choices,
        usage=usage_of(
            sum(generation.prompt_tokens for generation in generations),
            sum(done.completion_tokens for generation in generations for done in generation.completions),
        ),
    )
