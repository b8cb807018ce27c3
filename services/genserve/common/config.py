"""Typed settings read from environment variables, parsed once in each role's `main()`.

Every field is declared with `setting(env=..., help=...)`; the configuration table in
docs/configuration.md is generated from these declarations (`genserve config`) and a test keeps
the two in step.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def setting(env: str, default: Any, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


def _parse(raw: str, kind: Any, env: str) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw)
        return raw
    except ValueError as exc:
        raise ConfigError(f"{env}={raw!r} is not a valid {kind.__name__}") from exc


def from_env(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build settings `cls` from `environ` (default os.environ); keyword overrides win."""
    environ = os.environ if environ is None else environ
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        env = item.metadata.get("env")
        if item.name in overrides:
            values[item.name] = overrides[item.name]
        elif env and env in environ:
            values[item.name] = _parse(environ[env], hints[item.name], env)
    return cls(**values)


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(variable, default, help) for each setting of `cls`."""
    rows = []
    for item in dataclasses.fields(cls):
        if "env" in item.metadata:
            default = item.default
            shown = "" if default in ("", None) else str(default)
            rows.append((item.metadata["env"], shown, item.metadata["help"]))
    return rows


# --- the settings of each role --------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """What every gRPC process shares: where it listens and how it shuts down."""

    host: str = setting("GENSERVE_HOST", "127.0.0.1", "Address every server binds to (0.0.0.0 in containers).")
    max_message_bytes: int = setting(
        "GENSERVE_MAX_MESSAGE_BYTES",
        16 * 1024 * 1024,
        "Largest gRPC message accepted or sent, in bytes (images travel inside messages).",
    )
    shutdown_notice_seconds: float = setting(
        "GENSERVE_SHUTDOWN_NOTICE_SECONDS",
        2.0,
        "On SIGTERM: health turns NOT_SERVING and new calls are still accepted this long, "
        "so load balancers stop routing here first.",
    )
    shutdown_grace_seconds: float = setting(
        "GENSERVE_SHUTDOWN_GRACE_SECONDS",
        10.0,
        "Then new calls are refused and in-flight calls get this long to finish.",
    )
    log_level: str = setting("GENSERVE_LOG_LEVEL", "INFO", "Python logging level.")


@dataclass(frozen=True)
class PortSettings:
    """Fixed ports of each role, so the roles find each other without discovery."""

    gateway_port: int = setting("GENSERVE_GATEWAY_PORT", 50051, "Gateway gRPC port: the public endpoint.")
    gateway_metrics_port: int = setting("GENSERVE_GATEWAY_METRICS_PORT", 9451, "Gateway /metrics port.")
    text_port: int = setting("GENSERVE_TEXT_PORT", 50061, "Text service gRPC port.")
    text_metrics_port: int = setting("GENSERVE_TEXT_METRICS_PORT", 9461, "Text service /metrics port.")
    vision_port: int = setting("GENSERVE_VISION_PORT", 50062, "Vision service gRPC port.")
    vision_metrics_port: int = setting("GENSERVE_VISION_METRICS_PORT", 9462, "Vision service /metrics port.")
    latent_port: int = setting("GENSERVE_LATENT_PORT", 50063, "Latent service gRPC port.")
    latent_metrics_port: int = setting("GENSERVE_LATENT_METRICS_PORT", 9463, "Latent service /metrics port.")
    worker_port: int = setting("GENSERVE_WORKER_PORT", 50064, "Job worker gRPC port (health checks only).")
    worker_metrics_port: int = setting("GENSERVE_WORKER_METRICS_PORT", 9464, "Job worker /metrics port.")
    http_port: int = setting("GENSERVE_HTTP_PORT", 8000, "HTTP front door port: the OpenAI-compatible API.")
    http_metrics_port: int = setting("GENSERVE_HTTP_METRICS_PORT", 9450, "HTTP front door /metrics port.")


@dataclass(frozen=True)
class ModelSettings:
    """Where models come from and what they run on."""

    model_store: Path = setting(
        "GENSERVE_MODEL_STORE", Path("model_store"), "Model store folder (manifest.json + weights)."
    )
    device: str = setting("GENSERVE_DEVICE", "auto", "auto (CUDA when present, else CPU), cpu or cuda[:n].")
    torch_threads: int = setting("GENSERVE_TORCH_THREADS", 0, "Torch intra-op threads per process (0 = one per core).")


@dataclass(frozen=True)
class TextSettings:
    """Limits and batching of the text service."""

    models: str = setting(
        "GENSERVE_TEXT_MODELS",
        "",
        "Comma-separated text models to load (empty = every text model in the store).",
    )
    default_model: str = setting(
        "GENSERVE_TEXT_DEFAULT_MODEL",
        "",
        "Model used when a request names none; empty = the first of GENSERVE_TEXT_MODELS, else the store's "
        "default (manifest `defaults`).",
    )
    max_tokens: int = setting("GENSERVE_TEXT_MAX_TOKENS", 2048, "Cap on max_tokens per completion.")
    default_max_tokens: int = setting("GENSERVE_TEXT_DEFAULT_MAX_TOKENS", 200, "max_tokens when a request leaves it 0.")
    max_prompt_chars: int = setting("GENSERVE_TEXT_MAX_PROMPT_CHARS", 8192, "Longest prompt accepted, in characters.")
    max_completions: int = setting(
        "GENSERVE_TEXT_MAX_COMPLETIONS", 16, "Cap on completions per request (n × number of temperatures)."
    )
    max_batch: int = setting("GENSERVE_TEXT_MAX_BATCH", 64, "Most sequences decoded together in one forward step.")
    onednn_min_batch: int = setting(
        "GENSERVE_TEXT_ONEDNN_MIN_BATCH",
        0,
        "Decoding steps over at least this many sequences use oneDNN kernels (0 = never: plain ATen "
        "was faster at every batch size on the CPUs measured; prompts use oneDNN regardless).",
    )
    stream_flush_ms: float = setting(
        "GENSERVE_TEXT_STREAM_FLUSH_MS",
        16.0,
        "A stream sends a completion's new tokens at most this often (one display frame); the first "
        "and last at once. 0 = every token in its own message, at a large cost in CPU per token.",
    )
    stream_max_messages: float = setting(
        "GENSERVE_TEXT_STREAM_MAX_MESSAGES",
        500.0,
        "Messages per second all streams of a model share: with N streams each flushes at most every "
        "N/this seconds (if longer than the flush interval), so sending never starves decoding. 0 = no budget.",
    )
    max_waiting: int = setting(
        "GENSERVE_TEXT_MAX_WAITING",
        512,
        "Most completions waiting for a batch slot; beyond it requests get RESOURCE_EXHAUSTED.",
    )


@dataclass(frozen=True)
class ImageSettings:
    """Limits on images sent by clients (every service that accepts images)."""

    max_image_pixels: int = setting(
        "GENSERVE_MAX_IMAGE_PIXELS",
        16_000_000,
        "Largest input image, width × height, checked from the header before decoding.",
    )
    max_image_bytes: int = setting(
        "GENSERVE_MAX_IMAGE_BYTES", 12 * 1024 * 1024, "Largest encoded input image, in bytes."
    )


@dataclass(frozen=True)
class VisionSettings:
    """DeepDream and interactive style-transfer limits of the vision service."""

    models: str = setting(
        "GENSERVE_VISION_MODELS",
        "",
        "Comma-separated vision backbones to load (empty = every vision model in the store); style previews "
        "need vgg16.",
    )
    default_model: str = setting(
        "GENSERVE_VISION_DEFAULT_MODEL",
        "",
        "Backbone a dream uses when the request names none; empty = the first of GENSERVE_VISION_MODELS, else the "
        "store's default (manifest `defaults`).",
    )

    concurrency: int = setting(
        "GENSERVE_VISION_CONCURRENCY", 1, "Dreams and previews computed at once (each uses every torch thread)."
    )
    max_waiting: int = setting(
        "GENSERVE_VISION_MAX_WAITING", 4, "Requests waiting for a free slot; beyond it RESOURCE_EXHAUSTED."
    )
    dream_max_size: int = setting(
        "GENSERVE_VISION_DREAM_MAX_SIZE",
        512,
        "Longest side a dream works at (larger inputs are shrunk); max of max_size.",
    )
    preview_max_size: int = setting(
        "GENSERVE_VISION_PREVIEW_MAX_SIZE", 256, "StylePreview: largest output side; bigger runs belong to the job API."
    )
    preview_max_steps: int = setting(
        "GENSERVE_VISION_PREVIEW_MAX_STEPS", 60, "StylePreview: most optimisation steps; more belong to the job API."
    )


@dataclass(frozen=True)
class GatewaySettings:
    """Authentication, limits and routing of the public endpoint."""

    api_keys: str = setting(
        "GENSERVE_API_KEYS",
        "",
        "Comma-separated API keys, each `key` or `name:key`. With no keys here or in GENSERVE_API_KEYS_FILE, "
        "no authentication (logged as a warning).",
    )
    api_keys_file: str = setting(
        "GENSERVE_API_KEYS_FILE",
        "",
        "File of API keys, one `key` or `name:key` per line (# comments), e.g. a mounted Secret; added to "
        "GENSERVE_API_KEYS and read again when it changes (key rotation without a restart).",
    )
    tls_cert_file: str = setting(
        "GENSERVE_TLS_CERT_FILE",
        "",
        "PEM certificate chain: the gateway's public port speaks TLS (with GENSERVE_TLS_KEY_FILE). Empty = plaintext.",
    )
    tls_key_file: str = setting("GENSERVE_TLS_KEY_FILE", "", "PEM private key of GENSERVE_TLS_CERT_FILE.")
    text_addr: str = setting(
        "GENSERVE_TEXT_ADDR",
        "127.0.0.1:50061",
        "host:port of the text service, or its replicas: a comma-separated IPv4 host:port list or dns:///NAME:PORT "
        "(calls are spread round-robin over the healthy ones).",
    )
    vision_addr: str = setting(
        "GENSERVE_VISION_ADDR",
        "127.0.0.1:50062",
        "host:port of the vision service, or its replicas: a comma-separated IPv4 host:port list or dns:///NAME:PORT "
        "(calls are spread round-robin over the healthy ones).",
    )
    latent_addr: str = setting(
        "GENSERVE_LATENT_ADDR",
        "127.0.0.1:50063",
        "host:port of the latent service, or its replicas: a comma-separated IPv4 host:port list or dns:///NAME:PORT "
        "(calls are spread round-robin over the healthy ones).",
    )
    text_backend: str = setting(
        "GENSERVE_TEXT_BACKEND",
        "genserve",
        "genserve: GENSERVE_TEXT_ADDR is genserve's text service; torchserve: it is a TorchServe gRPC inference "
        "address serving archives of `genserve export torchserve` (docs/torchserve.md).",
    )
    text_torchserve_models: str = setting(
        "GENSERVE_TEXT_TORCHSERVE_MODELS",
        "",
        "With GENSERVE_TEXT_BACKEND=torchserve: the text models registered in TorchServe, comma-separated; the "
        "first answers requests that name no model.",
    )
    latent_backend: str = setting(
        "GENSERVE_LATENT_BACKEND",
        "genserve",
        "genserve or torchserve, as GENSERVE_TEXT_BACKEND, for GENSERVE_LATENT_ADDR (TorchServe serves Sample "
        "and Decode).",
    )
    latent_torchserve_models: str = setting(
        "GENSERVE_LATENT_TORCHSERVE_MODELS",
        "",
        "With GENSERVE_LATENT_BACKEND=torchserve: the latent models registered in TorchServe, comma-separated; "
        "the first is the default.",
    )
    torchserve_token: str = setting(
        "GENSERVE_TORCHSERVE_TOKEN",
        "",
        "TorchServe's inference key, sent as `authorization: Bearer`; empty with no token file = none sent "
        "(a TorchServe started with --disable-token-auth).",
    )
    torchserve_token_file: str = setting(
        "GENSERVE_TORCHSERVE_TOKEN_FILE",
        "",
        "TorchServe's key_file.json (its inference key is used) or a file holding the key alone; read again "
        "when it changes, as TorchServe's keys expire. Wins over GENSERVE_TORCHSERVE_TOKEN.",
    )
    default_deadline_seconds: float = setting(
        "GENSERVE_DEFAULT_DEADLINE_SECONDS", 300.0, "Deadline given to calls that arrive without one."
    )
    max_deadline_seconds: float = setting(
        "GENSERVE_MAX_DEADLINE_SECONDS", 3600.0, "Longer client deadlines are shortened to this."
    )
    max_concurrent_calls: int = setting(
        "GENSERVE_GATEWAY_MAX_CONCURRENT",
        1024,
        "Most calls in flight through the gateway; beyond it RESOURCE_EXHAUSTED.",
    )


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP front door: which gateway it calls, and the limits of its own side of the exchange."""

    gateway_addr: str = setting(
        "GENSERVE_HTTP_GATEWAY_ADDR",
        "127.0.0.1:50051",
        "host:port of the gateway the HTTP front door calls (`genserve up` sets its own gateway's).",
    )
    gateway_tls_ca: str = setting(
        "GENSERVE_HTTP_GATEWAY_TLS_CA",
        "",
        "PEM CA (or self-signed certificate) of a TLS gateway; empty = plaintext gRPC to the gateway.",
    )
    gateway_server_name: str = setting(
        "GENSERVE_HTTP_GATEWAY_SERVER_NAME",
        "",
        "Name the gateway's certificate is checked against, when GENSERVE_HTTP_GATEWAY_ADDR is not one it lists.",
    )
    cors_origins: str = setting(
        "GENSERVE_HTTP_CORS_ORIGINS",
        "",
        "Comma-separated origins whose web pages may call the API (`*` = any); empty = CORS off.",
    )
    max_body_bytes: int = setting(
        "GENSERVE_HTTP_MAX_BODY_BYTES",
        32 * 1024 * 1024,
        "Largest request body, in bytes (413 beyond it); room for two base64 images of GENSERVE_MAX_IMAGE_BYTES.",
    )
    default_timeout_seconds: float = setting(
        "GENSERVE_HTTP_DEFAULT_TIMEOUT_SECONDS",
        300.0,
        "Deadline of the gRPC call behind a request that sends no X-Genserve-Timeout header.",
    )
    retry_after_seconds: int = setting(
        "GENSERVE_HTTP_RETRY_AFTER_SECONDS", 1, "Retry-After sent with 429 (a full queue or concurrency limit)."
    )
    max_prompts: int = setting(
        "GENSERVE_HTTP_MAX_PROMPTS",
        16,
        "Most prompts in one /v1/completions request (each is its own gRPC call, all made at once).",
    )


@dataclass(frozen=True)
class LatentSettings:
    """The VAE and GAN service: which models, request caps and decode batching."""

    models: str = setting(
        "GENSERVE_LATENT_MODELS", "", "Comma-separated latent models to load (empty = every latent model in the store)."
    )
    default_model: str = setting(
        "GENSERVE_LATENT_DEFAULT_MODEL",
        "",
        "Model used when a request names none; empty = the first of GENSERVE_LATENT_MODELS, else the store's "
        "default (manifest `defaults`).",
    )
    max_images: int = setting(
        "GENSERVE_LATENT_MAX_IMAGES", 64, "Most images (or latent points, frames, strengths) in one request."
    )
    batching: bool = setting(
        "GENSERVE_LATENT_BATCHING", True, "Stack concurrent Sample/Decode requests into shared forward passes."
    )
    max_batch: int = setting("GENSERVE_LATENT_MAX_BATCH", 256, "Most latent points decoded in one forward pass.")
    max_wait_ms: float = setting(
        "GENSERVE_LATENT_MAX_WAIT_MS",
        0.0,
        "How long a decode that finds the model idle waits for others to share its pass (0 = none: requests that "
        "arrive during a pass always share the next one).",
    )
    max_concepts: int = setting(
        "GENSERVE_LATENT_MAX_CONCEPTS", 100, "Most user-defined concepts per API key and model."
    )


@dataclass(frozen=True)
class JobSettings:
    """Style-transfer jobs: the queue's limits, the workers' checkpoints and claims."""

    max_active: int = setting(
        "GENSERVE_JOB_MAX_ACTIVE",
        1000,
        "Most jobs queued or running at once; beyond it Submit gets RESOURCE_EXHAUSTED.",
    )
    max_active_per_key: int = setting(
        "GENSERVE_JOB_MAX_ACTIVE_PER_KEY", 100, "Most jobs queued or running at once for one API key."
    )
    max_size: int = setting("GENSERVE_JOB_MAX_SIZE", 1024, "Largest output side a job may ask for, in pixels.")
    max_steps: int = setting("GENSERVE_JOB_MAX_STEPS", 2000, "Most optimisation steps a job may ask for.")
    ttl_seconds: float = setting(
        "GENSERVE_JOB_TTL_SECONDS", 86400.0, "A finished job's record, events and result are kept this long."
    )
    checkpoint_every: int = setting(
        "GENSERVE_JOB_CHECKPOINT_EVERY", 20, "Workers save the engine state every this many steps."
    )
    claim_idle_seconds: float = setting(
        "GENSERVE_JOB_CLAIM_IDLE_SECONDS",
        30.0,
        "A running job whose worker has not been heard from this long is claimed by another worker and resumed.",
    )
    heartbeat_seconds: float = setting(
        "GENSERVE_JOB_HEARTBEAT_SECONDS", 5.0, "How often a worker renews its claim (must be under half the idle time)."
    )
    max_attempts: int = setting(
        "GENSERVE_JOB_MAX_ATTEMPTS",
        3,
        "A job whose worker died this many times while running it is FAILED (dead-lettered) instead of resumed.",
    )
    redis_retry_seconds: float = setting(
        "GENSERVE_JOB_REDIS_RETRY_SECONDS",
        60.0,
        "How long a worker keeps retrying an unreachable Redis before it gives its job up for another worker.",
    )


@dataclass(frozen=True)
class StackSettings:
    """`genserve up` (the local stack and its private Redis), and where every process finds Redis."""

    redis_url: str = setting(
        "REDIS_URL", "", "Use this Redis instead of starting a private one (redis://host:port/db)."
    )
    var_dir: Path = setting("GENSERVE_VAR_DIR", Path("var"), "Runtime data: Redis AOF, logs, caches.")
    start_timeout_seconds: float = setting(
        "GENSERVE_START_TIMEOUT_SECONDS",
        180.0,
        "How long `genserve up` waits for every service to report SERVING.",
    )


ALL_SETTINGS: tuple[type, ...] = (
    ServerSettings,
    PortSettings,
    ModelSettings,
    TextSettings,
    ImageSettings,
    VisionSettings,
    LatentSettings,
    GatewaySettings,
    HttpSettings,
    JobSettings,
    StackSettings,
)


def markdown_table() -> str:
    """The configuration table of docs/configuration.md."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for cls in ALL_SETTINGS:
        for env, default, text in describe(cls):
            lines.append(f"| `{env}` | {f'`{default}`' if default else ''} | {text} |")
    return "\n".join(lines)
