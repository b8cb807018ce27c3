"""Decode throughput through the gateway, with the latent service's batching on and off, side by side.

Two stacks run at once (latent service + gateway each), one with GENSERVE_LATENT_BATCHING=1 and
one with 0; every phase alternates between them, round by round, so the machine's drift hits
both alike. Each request decodes one latent point of the default VAE (mnist-vae-16d). Prints
images/s at concurrency 1, 8 and 64 for each and the ratio; the last line is one JSON object.

One more figure bounds the ratio: the decoder's own images/s in this process, a point at a time and
64 at a time (float64 as served, PNG encoding included), on one thread and on the services' default
(torch's thread count): what stacking can gain before any request costs are counted.

Run: `.venv/bin/python bench/latent.py [--seconds S] [--rounds R] [--quick]` (after `make models`).
`--quick` is a smoke run of the same code in a few seconds: one round of 0.25 s measurements
(unless --seconds or --rounds say otherwise); the JSON line has the same keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from pathlib import Path

import grpc
import torch
from benchlib import median, rounded

from genserve.common.images import png_image
from genserve.latent.models import load_model
from genserve.testing import ServerProcess
from genserve.v1 import latent_pb2, latent_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mnist-vae-16d"
CONCURRENCY = (1, 8, 64)


async def phase(address: str, concurrency: int, seconds: float) -> float:
    """Images per second with `concurrency` clients each sending one-point Decodes back to back."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = latent_pb2_grpc.LatentServiceStub(channel)
        done = 0
        stop = time.perf_counter() + seconds

        async def client(index: int) -> None:
            nonlocal done
            step = 0
            while time.perf_counter() < stop:
                point = latent_pb2.LatentVector(values=[math.sin(index * 31 + step + j) for j in range(16)])
                await stub.Decode(latent_pb2.DecodeRequest(model=MODEL, latents=[point]), timeout=60)
                done += 1
                step += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        return done / (time.perf_counter() - started)


def decoder_images_per_second(batch: int, seconds: float, threads: int) -> float:
    """The served decoder (float64) plus PNG encoding on `threads` threads, `batch` points per pass."""
    torch.set_num_threads(threads)
    network = load_model(ROOT / "model_store" / "latent" / f"{MODEL}.safetensors").double()
    z = torch.randn(batch, network.latent_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    images = 0
    started = time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - started < seconds:
            [png_image(image) for image in network.decode(z).float()]
            images += batch
    return images / (time.perf_counter() - started)


def start(log_dir: Path, batching: bool) -> tuple[ServerProcess, ServerProcess]:
    env = {
        "GENSERVE_MODEL_STORE": str(ROOT / "model_store"),
        "GENSERVE_LATENT_MODELS": MODEL,
        "GENSERVE_LATENT_BATCHING": "1" if batching else "0",
        "GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0",
    }
    backend = ServerProcess("latent", log_dir, env)
    gateway = ServerProcess("gateway", log_dir, {**env, "GENSERVE_LATENT_ADDR": backend.address})
    return backend, gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round of short measurements (a smoke run)")
    parser.add_argument("--seconds", type=float, help="length of one measurement (default 4; quick 0.25)")
    parser.add_argument("--rounds", type=int, help="alternations per concurrency (default 3; quick 1)")
    args = parser.parse_args()
    args.seconds = args.seconds or (0.25 if args.quick else 4.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    warmup = min(1.0, args.seconds)
    processes: list[ServerProcess] = []
    try:
        with tempfile.TemporaryDirectory() as logs:
            on = start(Path(logs), batching=True)
            processes += on
            off = start(Path(logs), batching=False)
            processes += off
            print(f"batching on: gateway {on[1].address}; off: gateway {off[1].address}", flush=True)
            asyncio.run(phase(on[1].address, 4, warmup))  # warm-up both
            asyncio.run(phase(off[1].address, 4, warmup))
            figures: dict[str, object] = {"model": MODEL, "seconds": args.seconds, "rounds": args.rounds}
            for concurrency in CONCURRENCY:
                batched, single = [], []
                for _ in range(args.rounds):
                    batched.append(asyncio.run(phase(on[1].address, concurrency, args.seconds)))
                    single.append(asyncio.run(phase(off[1].address, concurrency, args.seconds)))
                with_batching, without = median(batched), median(single)
                figures[f"c{concurrency}"] = {
                    "batching_images_per_s": with_batching,
                    "no_batching_images_per_s": without,
                    "ratio": with_batching / without,
                }
                print(
                    f"concurrency {concurrency:>2}: batching {with_batching:8.1f} images/s, "
                    f"without {without:8.1f} images/s, ratio {with_batching / without:.2f}x",
                    flush=True,
                )
            service_threads = torch.get_num_threads()  # what the services use by default
            for label, threads in (("one_thread", 1), ("service_threads", service_threads)):
                alone: dict[int, list[float]] = {1: [], 64: []}
                for _ in range(args.rounds):  # alternating, like the stacks
                    for batch, rates in alone.items():
                        rates.append(decoder_images_per_second(batch, args.seconds, threads))
                single, stacked = median(alone[1]), median(alone[64])
                figures[f"decoder_{label}"] = {
                    "threads": threads,
                    "batch_1_images_per_s": single,
                    "batch_64_images_per_s": stacked,
                    "ratio": stacked / single,
                }
                print(
                    f"the decoder alone (+ PNG), {threads} thread(s): {single:8.1f} images/s a point at a time, "
                    f"{stacked:8.1f} in passes of 64: {stacked / single:.2f}x",
                    flush=True,
                )
            figures["target_c64_ge_5x"] = figures["c64"]["ratio"] >= 5.0  # type: ignore[index]
            print(json.dumps(rounded(figures)))
    finally:
        for process in processes:
            process.stop()


if __name__ == "__main__":
    main()
