"""Streamed completions over the HTTP front door (SSE) beside the same load over gRPC streaming.

Starts its own text service, gateway and http role (free loopback ports) on one committed model,
then runs the same load twice per round, alternating the two transports so machine drift hits
both alike:

- HTTP: `POST /v1/completions` with `stream: true` to the http role, read as server-sent events by
  a minimal HTTP/1.1 client on asyncio streams (the `data:` lines, each chunk's JSON decoded);
- gRPC: `GenerateStream` through the same gateway on a raw grpc.aio stub.

Same model, prompt, max_tokens (200), seeds and sampling on both sides. Closed loop at concurrency
1, 8 and 32: aggregate tokens/s, and time to first token (p50/p95; the figure compared is that of
concurrency 1). Medians over the rounds; ratios are HTTP ÷ gRPC. Targets (issue 14): HTTP ≥ 0.8×
gRPC tokens/s at concurrency 32, and TTFT p50 at concurrency 1 within 20 ms of gRPC's.

The last line printed is one JSON object with every figure. Run: `make bench` or
`.venv/bin/python bench/http_streaming.py [--model NAME] [--rounds N] [--quick]`.

`--quick` is a smoke run of the same code in a few seconds: one round, 16-token requests, one
request per client; the JSON line has the same keys (`tokens_per_request` says what was asked).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and the file's name would hide the
# standard library's `http` package from everything imported below (urllib, grpc, genserve):
# the folder moves to the end, where `benchlib` is still found.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)] + [_HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import grpc  # noqa: E402
from benchlib import MODEL_STORE, median, percentile, rounded, serve, text_service  # noqa: E402

from genserve.common.model_store import ModelStore  # noqa: E402
from genserve.v1 import text_pb2, text_pb2_grpc  # noqa: E402

PROMPT = "ROMEO:\n"
TOKENS, QUICK_TOKENS = 200, 16  # max_tokens of every request
CONCURRENCY = (1, 8, 32)
TRANSPORTS = ("http", "grpc")
TARGET_C32_RATIO = 0.8  # HTTP tokens/s ÷ gRPC tokens/s at concurrency 32, at least
TARGET_TTFT_MS = 20.0  # HTTP TTFT p50 − gRPC TTFT p50 at concurrency 1, at most
DATA, DONE = b"data: ", b"data: [DONE]"


@dataclass
class Result:
    first: float  # request start → first text
    latency: float  # request start → end of stream
    tokens: int  # characters received (a token is one character)
    events: int  # SSE events or gRPC messages that carried text


class HttpSide:
    """Streamed completions over SSE on HTTP/1.1 keep-alive connections (one per client).

    A minimal client on asyncio streams: it writes the request, reads the chunked answer and
    splits it into events at blank lines (the role's events are single `data:` lines), decoding
    each event's JSON. httpx costs about twice the gRPC client's CPU per event (its pure-Python
    HTTP parser), and on two shared cores the client's cost comes out of the servers' time: this
    keeps the client's share close to the gRPC client's, so the figures are the server side's."""

    def __init__(self, url: str, model: str, concurrency: int) -> None:
        self.model = model
        address = urllib.parse.urlsplit(url)
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open: list[asyncio.StreamWriter] = []

    async def request(self, max_tokens: int, seed: int) -> Result:
        body = {"model": self.model, "prompt": PROMPT, "max_tokens": max_tokens, "seed": seed, "stream": True}
        encoded = json.dumps(body).encode()
        started = time.perf_counter()
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.open.append(writer)
        head = (
            f"POST /v1/completions HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(encoded)}\r\n\r\n"
        )
        writer.write(head.encode() + encoded)
        status = await reader.readline()
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if b" 200 " not in status or headers.get("transfer-encoding") != "chunked":
            answer = await reader.readexactly(int(headers.get("content-length", "0")))
            raise RuntimeError(f"{status.decode().strip()}: {answer[:300]!r}")
        first = 0.0
        count = events = 0
        pending = b""
        while size := int(await reader.readline(), 16):
            *complete, pending = (pending + (await reader.readexactly(size + 2))[:-2]).split(b"\n\n")
            for block in complete:
                if not block.startswith(DATA) or block == DONE:
                    continue
                chunk = json.loads(block[len(DATA) :])
                if "error" in chunk:
                    raise RuntimeError(f"stream failed: {chunk['error']}")
                text = chunk["choices"][0]["text"]
                if text and not first:
                    first = time.perf_counter() - started
                count += len(text)
                events += bool(text)
        await reader.readline()  # the blank line after the last chunk
        self.idle.append((reader, writer))
        return Result(first, time.perf_counter() - started, count, events)

    async def close(self) -> None:
        for writer in self.open:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for writer in self.open), return_exceptions=True)


class GrpcSide:
    """The same requests as GenerateStream calls through the gateway, on one grpc.aio channel."""

    def __init__(self, address: str, model: str) -> None:
        self.model = model
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = text_pb2_grpc.TextServiceStub(self.channel)

    async def request(self, max_tokens: int, seed: int) -> Result:
        request = text_pb2.GenerateRequest(model=self.model, prompt=PROMPT, max_tokens=max_tokens, seed=seed)
        started = time.perf_counter()
        first = 0.0
        count = events = 0
        async for message in self.stub.GenerateStream(request, timeout=600):
            if message.text and not first:
                first = time.perf_counter() - started
            count += len(message.text)
            events += bool(message.text)
        return Result(first, time.perf_counter() - started, count, events)

    async def close(self) -> None:
        await self.channel.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def closed_loop(
    make: Callable[[int], HttpSide | GrpcSide],
    concurrency: int,
    per_worker: int,
    tokens: int,
    processes: dict[str, int],
) -> dict[str, float]:
    """`concurrency` clients, each sending `per_worker` requests one after another (the side is
    made here, inside the loop that uses it: grpc.aio channels belong to one event loop)."""
    side = make(concurrency)
    try:
        # Warm-up: open the connections (one per client over HTTP/1.1) and touch the model.
        await asyncio.gather(*(side.request(8, 0) for _ in range(concurrency)))
        results: list[Result] = []

        async def worker(index: int) -> None:
            for i in range(per_worker):
                results.append(await side.request(tokens, index * 1000 + i))

        before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        client_before = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in processes.items()}
        cpu["client"] = time.process_time() - client_before  # this process: the benchmark's client
    finally:
        await side.close()
    events = max(1, sum(r.events for r in results))
    return {
        "tokens_per_s": sum(r.tokens for r in results) / wall,
        "ttft_p50_ms": 1000 * percentile([r.first for r in results], 50),
        "ttft_p95_ms": 1000 * percentile([r.first for r in results], 95),
        "latency_p50_s": percentile([r.latency for r in results], 50),
        "requests": len(results),
        "tokens": sum(r.tokens for r in results),
        "events": events,
        # CPU time the servers spent per event (SSE event or gRPC message) in the measured part:
        # unlike tokens/s, it barely depends on what else the machine runs meanwhile.
        **{f"{name}_cpu_us_per_event": 1e6 * seconds / events for name, seconds in cpu.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="model name (default: the store's best text model)")
    parser.add_argument("--quick", action="store_true", help="one round, short requests (a smoke run of a few seconds)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating HTTP/gRPC rounds per concurrency")
    args = parser.parse_args()
    entries = ModelStore(MODEL_STORE).entries_of("text")
    model = args.model or min(entries, key=lambda e: e.metrics["val_loss_nats_per_char"]).name
    rounds = 1 if args.quick else args.rounds
    tokens = QUICK_TOKENS if args.quick else TOKENS
    print(f"model {model}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}", flush=True)

    text = text_service(model)
    gateway = http = None
    figures: dict[str, object] = {"model": model, "tokens_per_request": tokens, "rounds": rounds}
    try:
        gateway = serve("gateway", {"GENSERVE_TEXT_ADDR": text.address})
        http = serve("http", {"GENSERVE_HTTP_GATEWAY_ADDR": gateway.address})
        sides: dict[str, Callable[[int], HttpSide | GrpcSide]] = {
            "http": lambda c: HttpSide(http.url, model, c),  # type: ignore[union-attr]
            "grpc": lambda c: GrpcSide(gateway.address, model),  # type: ignore[union-attr]
        }
        servers = {"gateway": gateway.process.pid, "text": text.process.pid}
        phases: dict[str, dict[str, object]] = {}
        for concurrency in CONCURRENCY:
            # 16 requests per phase at concurrency 1 and 8, 64 at 32 (two per client).
            per_worker = 1 if args.quick else max(2, 16 // concurrency)
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in TRANSPORTS}
            for index in range(rounds):
                # Alternate which side goes first, so neither always runs on a machine just warmed up.
                for name in TRANSPORTS if index % 2 == 0 else TRANSPORTS[::-1]:
                    watched = {**servers, "http_role": http.process.pid} if name == "http" else servers
                    runs[name].append(asyncio.run(closed_loop(sides[name], concurrency, per_worker, tokens, watched)))
            phase: dict[str, object] = {}
            for name in TRANSPORTS:
                phase[name] = {key: median([r[key] for r in runs[name]]) for key in runs[name][0]}
            http_fig, grpc_fig = phase["http"], phase["grpc"]
            assert isinstance(http_fig, dict) and isinstance(grpc_fig, dict)
            # Per round, side by side: the ratio of each pair of neighbouring phases, whose median is
            # the figure (the machine's drift between rounds cancels out of each ratio).
            ratios = [h["tokens_per_s"] / g["tokens_per_s"] for h, g in zip(runs["http"], runs["grpc"], strict=True)]
            phase["round_ratios"] = [round(ratio, 3) for ratio in ratios]
            phase["tokens_per_s_ratio"] = median(ratios)
            phase["ttft_p50_diff_ms"] = http_fig["ttft_p50_ms"] - grpc_fig["ttft_p50_ms"]
            phases[f"c{concurrency}"] = phase
            print(
                f"c{concurrency:<3} http {http_fig['tokens_per_s']:7.0f} tok/s · grpc {grpc_fig['tokens_per_s']:7.0f} "
                f"tok/s · ratio {phase['tokens_per_s_ratio']:.2f} · ttft p50 http {http_fig['ttft_p50_ms']:6.1f} ms "
                f"grpc {grpc_fig['ttft_p50_ms']:6.1f} ms",
                flush=True,
            )
        figures.update(phases)
    finally:
        for server in (http, gateway, text):
            if server is not None:
                server.stop()

    def fig(concurrency: int, side: str, key: str) -> float:
        phase = figures[f"c{concurrency}"]
        assert isinstance(phase, dict)
        return float(phase[side][key])

    def ratio(concurrency: int) -> float:
        phase = figures[f"c{concurrency}"]
        assert isinstance(phase, dict)
        return float(phase["tokens_per_s_ratio"])

    print()
    print("| concurrency | HTTP/SSE tok/s | gRPC tok/s | HTTP ÷ gRPC | TTFT p50 / p95 HTTP | TTFT p50 / p95 gRPC |")
    print("|---|---|---|---|---|---|")
    for c in CONCURRENCY:
        print(
            f"| {c} | {fig(c, 'http', 'tokens_per_s'):,.0f} | {fig(c, 'grpc', 'tokens_per_s'):,.0f} | "
            f"{ratio(c):.2f} | "
            f"{fig(c, 'http', 'ttft_p50_ms'):.1f} / {fig(c, 'http', 'ttft_p95_ms'):.1f} ms | "
            f"{fig(c, 'grpc', 'ttft_p50_ms'):.1f} / {fig(c, 'grpc', 'ttft_p95_ms'):.1f} ms |"
        )
    print()
    print(
        "| concurrency | events per request HTTP / gRPC | CPU per event: http role | gateway HTTP / gRPC "
        "| client HTTP / gRPC |"
    )
    print("|---|---|---|---|---|")
    for c in CONCURRENCY:
        per_request = [fig(c, side, "events") / fig(c, side, "requests") for side in TRANSPORTS]
        print(
            f"| {c} | {per_request[0]:.1f} / {per_request[1]:.1f} | "
            f"{fig(c, 'http', 'http_role_cpu_us_per_event'):.0f} µs | "
            f"{fig(c, 'http', 'gateway_cpu_us_per_event'):.0f} / {fig(c, 'grpc', 'gateway_cpu_us_per_event'):.0f} µs | "
            f"{fig(c, 'http', 'client_cpu_us_per_event'):.0f} / {fig(c, 'grpc', 'client_cpu_us_per_event'):.0f} µs |"
        )
    c32_ratio = ratio(32)
    ttft_diff = fig(1, "http", "ttft_p50_ms") - fig(1, "grpc", "ttft_p50_ms")
    figures["c32_tokens_per_s_ratio"] = c32_ratio
    figures["c1_ttft_p50_diff_ms"] = ttft_diff
    figures["targets_met"] = {
        "c32_ratio_ge_0.8": c32_ratio >= TARGET_C32_RATIO,
        "c1_ttft_within_20ms": ttft_diff <= TARGET_TTFT_MS,
    }
    print(
        f"\nc32 HTTP/gRPC tokens/s {c32_ratio:.2f} (target ≥ {TARGET_C32_RATIO}) · c1 TTFT p50 HTTP − gRPC "
        f"{ttft_diff:+.1f} ms (target ≤ {TARGET_TTFT_MS:.0f} ms) · load average {os.getloadavg()[0]:.2f}"
    )
    print(json.dumps(rounded(figures)))


if __name__ == "__main__":
    main()
