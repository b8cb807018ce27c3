"""Prometheus metrics of every process, in one place.

Names: `genserve_` + what + base unit, `_total` on counters. Labels are limited to service,
method, code and model (never prompts, keys or job ids). A `Metrics` object is built once per
process on a registry; tests pass a fresh `CollectorRegistry()`.
"""

from __future__ import annotations

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

# Request latency: milliseconds for a token-sized call up to ten minutes for a long stream.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)
# Decoding-step time: sub-millisecond (batch 1) to tens of milliseconds (large batches).
STEP_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 256)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.requests = Counter(
            "genserve_requests_total",
            "RPCs finished, by final status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "genserve_request_seconds",
            "RPC duration from arrival to final status.",
            ["service", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "genserve_requests_in_flight",
            "RPCs being handled now.",
            ["service", "method"],
            registry=registry,
        )
        # Text generation.
        self.tokens_generated = Counter(
            "genserve_tokens_generated_total",
            "Tokens sampled.",
            ["model"],
            registry=registry,
        )
        self.text_active_sequences = Gauge(
            "genserve_text_active_sequences",
            "Sequences in the running decode batch.",
            ["model"],
            registry=registry,
        )
        self.text_waiting_sequences = Gauge(
            "genserve_text_waiting_sequences",
            "Sequences waiting for a batch slot.",
            ["model"],
            registry=registry,
        )
        self.text_step_seconds = Histogram(
            "genserve_text_step_seconds",
            "Time of one decoding step over the whole batch.",
            ["model"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.text_batch_size = Histogram(
            "genserve_text_batch_size",
            "Sequences decoded per step.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.latent_batch_size = Histogram(
            "genserve_latent_batch_size",
            "Latent points decoded per forward pass (requests' points stacked together).",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.latent_batch_requests = Histogram(
            "genserve_latent_batch_requests",
            "Requests sharing one decoding forward pass.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.text_time_to_first_token_seconds = Histogram(
            "genserve_text_time_to_first_token_seconds",
            "From admission to the first sampled token.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Services that run long torch work (vision).
        self.work_running = Gauge(
            "genserve_work_running",
            "Long requests (dreams, previews) being computed.",
            ["service"],
            registry=registry,
        )
        self.work_waiting = Gauge(
            "genserve_work_waiting",
            "Long requests waiting for a free slot.",
            ["service"],
            registry=registry,
        )
        # Jobs: the gateway samples the queue; workers count what they run.
        self.jobs_queued = Gauge("genserve_jobs_queued", "Style-transfer jobs waiting for a worker.", registry=registry)
        self.jobs_running = Gauge("genserve_jobs_running", "Style-transfer jobs being run.", registry=registry)
        self.jobs_submitted = Counter(
            "genserve_jobs_submitted_total",
            "Jobs accepted by SubmitStyleTransfer (not idempotent repeats).",
            registry=registry,
        )
        self.jobs_finished = Counter(
            "genserve_jobs_finished_total",
            "Jobs ended, by terminal state, as seen by workers.",
            ["state"],
            registry=registry,
        )
        self.job_attempts = Counter(
            "genserve_job_attempts_total",
            "Attempts started: first runs and resumptions.",
            ["kind"],
            registry=registry,
        )
        self.jobs_claimed = Counter(
            "genserve_jobs_claimed_total", "Jobs claimed from a worker that went silent.", registry=registry
        )
        self.job_queue_wait_seconds = Histogram(
            "genserve_job_queue_wait_seconds",
            "From submit to the first attempt's start.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.job_run_seconds = Histogram(
            "genserve_job_run_seconds",
            "From the first start to success, resumptions included.",
            buckets=(*LATENCY_BUCKETS, 1800, 3600, 7200),
            registry=registry,
        )
        self.job_step_seconds = Histogram(
            "genserve_job_step_seconds",
            "One optimisation step of a job, reporting included.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
            registry=registry,
        )
        # Gateway.
        self.auth_failures = Counter(
            "genserve_auth_failures_total",
            "Calls refused by authentication.",
            ["reason"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "genserve_backend_errors_total",
            "Backend calls that ended in a transport-level error.",
            ["backend", "code"],
            registry=registry,
        )

    def init_service(self, service: str, methods: list[str]) -> None:
        """Create each method's OK series at 0, so dashboards see them before traffic."""
        for method in methods:
            self.requests.labels(service, method, "OK")
            self.request_seconds.labels(service, method)
            self.in_flight.labels(service, method)

    def init_text_model(self, model: str) -> None:
        for metric in (
            self.tokens_generated,
            self.text_active_sequences,
            self.text_waiting_sequences,
            self.text_step_seconds,
            self.text_batch_size,
            self.text_time_to_first_token_seconds,
        ):
            metric.labels(model)

    def init_latent_model(self, model: str) -> None:
        for metric in (self.latent_batch_size, self.latent_batch_requests):
            metric.labels(model)

    def observe_latent_batch(self, model: str, requests: int, rows: int) -> None:
        """One decoding forward pass of the latent service: `requests` requests' `rows` points."""
        self.latent_batch_size.labels(model).observe(rows)
        self.latent_batch_requests.labels(model).observe(requests)

    def serve_http(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP on (host, port), in a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)


class HttpMetrics:
    """The HTTP front door's own series (its process registers only these).

    `route` is the route's path template ("/v1/completions", "/v1/models/{model}"; "unmatched" for
    paths no route serves), so the label set stays small whatever clients send. A client that
    went away before its answer was complete is counted with status "499".
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.requests = Counter(
            "genserve_http_requests_total",
            "HTTP requests finished, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "genserve_http_request_seconds",
            "HTTP request duration from arrival to the last byte of the answer (a whole stream).",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "genserve_http_in_flight",
            "HTTP requests being handled now (open streams included).",
            ["route", "method"],
            registry=registry,
        )

    def init_route(self, route: str, method: str) -> None:
        """Create the route's 200 series at 0, so dashboards see it before traffic."""
        self.requests.labels(route, method, "200")
        self.request_seconds.labels(route, method)
        self.in_flight.labels(route, method)

    def serve_http(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
