"""Vision compute, measured side by side on this machine.

Prints, from one run: seconds per style-transfer step at 256² and 512² (L-BFGS and Adam); the
time of one VGG16 forward+backward alone (to relu5_1, gradient w.r.t. the image only) at those
sizes and the ratio of the two (the loss and Gram overhead; target ≤ 1.3x); the achieved GFLOP/s
of that forward+backward against this machine's measured float32 matmul peak; and a DeepDream
timing (3 octaves × 20 steps at 320² on EfficientNet-Lite0; target ≤ 2 s). The machines are
shared and noisy, so each pair is measured alternately and medians are reported. The last line
is one JSON object. Run: `.venv/bin/python bench/vision.py [--quick]` (after `make models`).

`--quick` is a smoke run of the same code in a few seconds: one repeat, one step, the two style
phases at 64² and 128² and a 2 × 2-step dream at 128²; the JSON line keeps its keys (style_256,
style_512, dream_320_3x20_s name the phases) and `settings` says what was measured.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from benchlib import median, median_seconds, rounded

from genserve.common.devices import configure_torch
from genserve.common.images import to_tensor
from genserve.common.model_store import ModelStore
from genserve.common.style_request import StyleParams
from genserve.vision.backbones import EfficientNetLite0, VGG16Features
from genserve.vision.dream import DreamParams, dream, validate
from genserve.vision.fast_copies import channels_last_copy
from genserve.vision.samples import sample_image
from genserve.vision.style import StyleTransfer
from genserve.vision.weights import load_from_store

ROOT = Path(__file__).resolve().parents[1]
STORE = ModelStore(ROOT / "model_store")
CACHE = ROOT / "var" / "packages"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run's figures, or a smoke run's through the same code."""

    style_sizes: tuple[int, int]  # pixels per side of the phases reported as style_256 and style_512
    repeats: int  # timings per median
    steps: int  # style-transfer steps timed per run, after 2 warm-up steps
    dream_size: int  # pixels per side of the dream reported as dream_320_3x20_s
    dream_octaves: int
    dream_steps: int  # per octave


FULL = Plan(style_sizes=(256, 512), repeats=5, steps=10, dream_size=320, dream_octaves=3, dream_steps=20)
QUICK = Plan(style_sizes=(64, 128), repeats=1, steps=1, dream_size=128, dream_octaves=2, dream_steps=2)


def matmul_peak_gflops(repeats: int) -> dict[str, float]:
    """Best float32 GEMM rates here, 2·m·n·k FLOPs per product, from the two GEMM libraries torch uses.

    torch.matmul goes to the BLAS torch was built with; convolutions go to oneDNN, whose GEMM
    kernels may use wider vector units (on AMD CPUs the BLAS can fall back to AVX2 while oneDNN
    runs AVX-512). A 1x1 convolution over 64x64 positions is a (4096 x 1024) · (1024 x 1024) GEMM in
    oneDNN. The peak is the better of the two.
    """
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    blas = 2 * n**3 / min(median_seconds(lambda: a @ b, 3) for _ in range(repeats)) / 1e9
    channels, side = 1024, 64
    x = torch.randn(1, channels, side, side).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, 1, bias=False).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    conv.requires_grad_(False)
    with torch.no_grad():
        conv(x)
        seconds = min(median_seconds(lambda: conv(x), 3) for _ in range(repeats))
    onednn = 2 * side * side * channels * channels / seconds / 1e9
    return {"blas_matmul_gflops": blas, "onednn_gemm_gflops": onednn, "peak_gflops": max(blas, onednn)}


def vgg_flops(vgg: VGG16Features, size: int, deepest: str = "relu5_1") -> float:
    """Forward FLOPs of the convolutions up to `deepest` on a size×size image (2 per MAC)."""
    flops, side = 0.0, size
    for module_name, module in vgg.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            flops += 2 * side * side * module.in_channels * module.out_channels * module.kernel_size[0] ** 2
        elif isinstance(module, torch.nn.MaxPool2d):
            side = -(-side // 2)  # ceil_mode
        if module_name.endswith(deepest.replace("relu", "conv")):
            break
    return flops


def vgg_forward_backward(vgg: VGG16Features, image: torch.Tensor) -> Callable[[], None]:
    """One forward to relu5_1 and backward to the pixels, laid out as the engine runs it (channels_last)."""
    fast = channels_last_copy(vgg, "style")  # the very copy StyleTransfer runs (one cache, keyed by purpose)

    def run() -> None:
        x = image.clone().requires_grad_(True)
        features = fast.features(fast.preprocess(x).contiguous(memory_format=torch.channels_last), STYLE_LAYERS)
        sum(f.sum() for f in features.values()).backward()

    return run


def style_step_seconds(
    vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor, size: int, optimizer: str, steps: int
) -> float:
    params = StyleParams(optimizer=optimizer, iterations=steps + 2, max_size=size, seed=0)
    engine = StyleTransfer(vgg, content, [(style, 1.0)], params)
    engine.run(until_step=2)  # warm-up: targets, allocator, first L-BFGS history
    started = time.perf_counter()
    engine.run(until_step=2 + steps)
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (a smoke run of a few seconds)")
    args = parser.parse_args()
    configure_torch(0)
    torch.set_grad_enabled(True)
    plan = QUICK if args.quick else FULL
    repeats, steps = plan.repeats, plan.steps
    vgg = load_from_store(STORE, "vgg16")
    lite = load_from_store(STORE, "efficientnet-lite0")
    assert isinstance(vgg, VGG16Features) and isinstance(lite, EfficientNetLite0)
    photo, painting = sample_image("chelsea", CACHE), sample_image("hubble", CACHE)
    print(f"torch threads {torch.get_num_threads()}", flush=True)

    gemm = matmul_peak_gflops(repeats)
    peak = gemm["peak_gflops"]
    print(
        f"float32 GEMM peak: {peak:.1f} GFLOP/s (torch.matmul {gemm['blas_matmul_gflops']:.1f}, "
        f"oneDNN {gemm['onednn_gemm_gflops']:.1f})",
        flush=True,
    )
    figures: dict[str, object] = {"settings": {"quick": args.quick, **asdict(plan)}, "matmul": gemm}
    for label, size in zip(("style_256", "style_512"), plan.style_sizes, strict=True):
        content = to_tensor(photo.resize((size, size)))
        style = to_tensor(painting.resize((size, size)))
        run_fb = vgg_forward_backward(vgg, content)
        run_fb()
        fb_times, step_times = [], {"lbfgs": [], "adam": []}
        for _ in range(max(1, repeats // 2)):
            fb_times.append(median_seconds(run_fb, repeats))
            for optimizer in step_times:
                step_times[optimizer].append(style_step_seconds(vgg, content, style, size, optimizer, steps))
        forward_backward = median(fb_times)
        flops = 2 * vgg_flops(vgg, size)  # backward w.r.t. the input costs about one forward
        gflops = flops / forward_backward / 1e9
        entry: dict[str, float] = {
            "vgg_forward_backward_s": forward_backward,
            "vgg_gflops": gflops,
            "vgg_fraction_of_peak": gflops / peak,
        }
        for optimizer, times in step_times.items():
            seconds = median(times)
            entry[f"{optimizer}_step_s"] = seconds
            entry[f"{optimizer}_ratio"] = seconds / forward_backward
        figures[label] = entry
        print(
            f"{size}²: VGG16 fwd+bwd {forward_backward:.3f} s ({gflops:.1f} GFLOP/s, {gflops / peak:.0%} of peak) · "
            f"L-BFGS step {entry['lbfgs_step_s']:.3f} s ({entry['lbfgs_ratio']:.2f}x) · "
            f"Adam step {entry['adam_step_s']:.3f} s ({entry['adam_ratio']:.2f}x)",
            flush=True,
        )

    side = plan.dream_size
    image = to_tensor(photo.resize((side, side)))
    # Checked as the service checks a request (the backbone's default layers filled in).
    params = validate(
        DreamParams(octaves=plan.dream_octaves, steps_per_octave=plan.dream_steps), lite.architecture, lite.layer_names
    )
    warm_up = validate(DreamParams(octaves=1, steps_per_octave=2), lite.architecture, lite.layer_names)
    dream(lite, to_tensor(photo.resize((96, 96))), warm_up)
    dream_seconds = median_seconds(lambda: dream(lite, image, params), max(1, repeats // 2 + 1))
    figures["dream_320_3x20_s"] = dream_seconds
    print(
        f"DeepDream {plan.dream_octaves} octaves × {plan.dream_steps} steps at {side}² (EfficientNet-Lite0): "
        f"{dream_seconds:.2f} s",
        flush=True,
    )
    ratios = [figures[label][f"{o}_ratio"] for label in ("style_256", "style_512") for o in ("lbfgs", "adam")]  # type: ignore[index]
    figures["targets_met"] = {"style_step_le_1.3x": max(ratios) <= 1.3, "dream_le_2s": dream_seconds <= 2.0}
    print(json.dumps(rounded(figures)))


if __name__ == "__main__":
    main()
