"""Every benchmark's smoke mode (`bench/NAME.py --quick`) runs to its end and closes with its JSON line.

The benchmarks run in full only between releases (`make bench`); their quick modes take the same
code path in seconds, so a change that breaks a benchmark fails here. Each runs as a script, in
its own interpreter, as `make bench-quick` runs it; the figures' values depend on the machine, so
only their presence, types and signs are checked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterable

import pytest

from tests.conftest import ROOT

# A quick run takes 10-35 s on two busy cores; the bound is for a slower machine, and is kept
# under the suite's per-test timeout so a hung benchmark fails with its output rather than none.
RUN_TIMEOUT_S = 240

Figures = dict[str, object]


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_quick(script: str) -> Figures:
    """Run `bench/<script> --quick`; its exit code must be 0 and its last stdout line a JSON object."""
    command = [sys.executable, str(ROOT / "bench" / script), "--quick"]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else expired.stderr
        pytest.fail(f"{script} --quick ran past {RUN_TIMEOUT_S} s; stderr tail:\n{_tail(stderr or '')}")
    assert done.returncode == 0, (
        f"{script} --quick exited with code {done.returncode}; stderr tail:\n{_tail(done.stderr)}\n"
        f"stdout tail:\n{_tail(done.stdout, 5)}"
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"{script} --quick printed nothing; stderr tail:\n{_tail(done.stderr)}"
    try:
        figures = json.loads(lines[-1])
    except json.JSONDecodeError as error:
        raise AssertionError(
            f"{script} --quick: the last line is not JSON ({error}): {lines[-1][:300]!r}; "
            f"stderr tail:\n{_tail(done.stderr)}"
        ) from None
    assert isinstance(figures, dict), f"{script} --quick: the last line is not a JSON object: {lines[-1][:300]!r}"
    return figures


def has_keys(figures: object, keys: Iterable[str], where: str) -> Figures:
    """`figures` is an object holding at least `keys`; returns it."""
    assert isinstance(figures, dict), f"{where} is not an object: {figures!r}"
    missing = sorted(set(keys) - figures.keys())
    assert not missing, f"{where} lacks {missing}; it has {sorted(figures)}"
    return figures


def positive(figures: Figures, keys: Iterable[str], where: str) -> None:
    """Each of `keys` is a finite number above 0 (a rate, a duration, a ratio of two of them)."""
    for key in keys:
        assert key in figures, f"{where} lacks {key!r}; it has {sorted(figures)}"
        value = figures[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{where}.{key} = {value!r}"
        assert math.isfinite(value) and value > 0, f"{where}.{key} = {value!r}, expected a finite number > 0"


def flags(figures: object, keys: Iterable[str], where: str) -> None:
    """An object of true/false verdicts with exactly `keys`."""
    checked = has_keys(figures, keys, where)
    assert all(isinstance(value, bool) for value in checked.values()), f"{where} = {checked!r}"


def check_text(figures: Figures) -> None:
    has_keys(
        figures,
        [
            "model", "tokens_per_request", "rounds", "uniform", "mixed", "targets_met",
            "reference_batch1_tokens_per_s", "reference_batch1_ms_per_token", "reference_batch32_tokens_per_s",
            "c32_unary_vs_batch32", "c32_stream_vs_batch32",
            "c1_unary_per_token_vs_batch1", "c1_stream_per_token_vs_batch1",
        ],
        "text",
    )  # fmt: skip
    positive(figures, ["tokens_per_request", "reference_batch1_tokens_per_s", "reference_batch32_tokens_per_s"], "text")
    positive(figures, ["c32_unary_vs_batch32", "c32_stream_vs_batch32", "c1_unary_per_token_vs_batch1"], "text")
    uniform = has_keys(figures["uniform"], [f"c{c}_{m}" for c in (1, 8, 32) for m in ("unary", "stream")], "uniform")
    for phase, result in uniform.items():
        keys = ["tokens_per_s", "ttft_p50_ms", "ttft_p95_ms", "per_token_ms_p50", "requests"]
        positive(has_keys(result, [*keys, "reference_tokens_per_s", "vs_reference"], phase), keys, phase)
        positive(result, ["reference_tokens_per_s", "vs_reference"], phase)  # type: ignore[arg-type]
    mixed = has_keys(figures["mixed"], ["rate_per_s", "requests", "tokens_per_s", "short_p95_s", "all_p95_s"], "mixed")
    positive(mixed, ["rate_per_s", "requests", "tokens_per_s", "all_p95_s"], "mixed")
    flags(figures["targets_met"], ["c32_unary_ge_0.85", "c32_stream_ge_0.70", "c1_per_token_le_1.3x"], "targets_met")


def check_vision(figures: Figures) -> None:
    has_keys(figures, ["settings", "matmul", "style_256", "style_512", "dream_320_3x20_s", "targets_met"], "vision")
    matmul = has_keys(figures["matmul"], ["blas_matmul_gflops", "onednn_gemm_gflops", "peak_gflops"], "matmul")
    positive(matmul, matmul.keys(), "matmul")
    for phase in ("style_256", "style_512"):
        keys = [
            "vgg_forward_backward_s", "vgg_gflops", "vgg_fraction_of_peak",
            "lbfgs_step_s", "lbfgs_ratio", "adam_step_s", "adam_ratio",
        ]  # fmt: skip
        positive(has_keys(figures[phase], keys, phase), keys, phase)
    positive(figures, ["dream_320_3x20_s"], "vision")
    flags(figures["targets_met"], ["style_step_le_1.3x", "dream_le_2s"], "targets_met")
    assert has_keys(figures["settings"], ["quick"], "settings")["quick"] is True


def check_jobs(figures: Figures) -> None:
    has_keys(figures, ["settings", "submit", "queue_latency", "resume", "targets_met"], "jobs")
    submit = has_keys(figures["submit"], ["submits", "accepted", "errors", "jobs_per_s", "latency_p95_ms"], "submit")
    positive(submit, ["submits", "accepted", "jobs_per_s", "latency_p50_ms", "latency_p95_ms"], "submit")
    spans = ["submit_rpc", "running", "progress", "done"]
    latency = has_keys(figures["queue_latency"], [f"{s}_p{q}_ms" for s in spans for q in (50, 95)], "queue_latency")
    positive(latency, [f"{s}_p{q}_ms" for s in spans for q in (50, 95)], "queue_latency")
    resume = has_keys(figures["resume"], ["kill_to_progress_s", "kill_to_progress_median_s", "target_s"], "resume")
    positive(resume, ["kill_to_progress_median_s", "target_s"], "resume")
    assert len(resume["kill_to_progress_s"]) == has_keys(figures["settings"], ["resumes"], "settings")["resumes"]  # type: ignore[arg-type]
    flags(
        figures["targets_met"],
        [
            "submit_ge_500_per_s", "progress_p95_le_100ms",
            "resume_median_le_idle_plus_2s", "resume_every_run_le_idle_plus_2s",
        ],
        "targets_met",
    )  # fmt: skip


def check_faults(figures: Figures) -> None:
    keys = [
        "settings", "jobs_submitted", "succeeded_exactly_once", "lost", "duplicated", "dead_lettered",
        "jobs_with_step_gaps", "states", "kills", "kills_mid_job", "kills_idle", "resumes", "worker_restarts",
        "steps_needed", "steps_executed", "steps_wasted", "wasted_per_kill", "max_redone_in_one_resume", "drain_s",
        "targets_met",
    ]  # fmt: skip
    has_keys(figures, keys, "faults")
    settings = has_keys(figures["settings"], ["jobs", "steps"], "settings")
    assert figures["jobs_submitted"] == settings["jobs"]
    assert figures["steps_needed"] == settings["jobs"] * settings["steps"]  # type: ignore[operator]
    positive(figures, ["jobs_submitted", "steps_needed", "steps_executed", "drain_s"], "faults")
    for count in ("lost", "duplicated", "kills", "resumes", "steps_wasted"):
        assert isinstance(figures[count], int) and figures[count] >= 0, f"faults.{count} = {figures[count]!r}"
    flags(figures["targets_met"], ["zero_lost", "zero_duplicated", "wasted_per_kill_le_checkpoint_interval"], "targets")


def check_latent(figures: Figures) -> None:
    keys = ["model", "seconds", "rounds", "c1", "c8", "c64", "decoder_one_thread", "decoder_service_threads"]
    has_keys(figures, [*keys, "target_c64_ge_5x"], "latent")
    for phase in ("c1", "c8", "c64"):
        rates = ["batching_images_per_s", "no_batching_images_per_s", "ratio"]
        positive(has_keys(figures[phase], rates, phase), rates, phase)
    for decoder in ("decoder_one_thread", "decoder_service_threads"):
        rates = ["threads", "batch_1_images_per_s", "batch_64_images_per_s", "ratio"]
        positive(has_keys(figures[decoder], rates, decoder), rates, decoder)
    assert isinstance(figures["target_c64_ge_5x"], bool)


def check_http(figures: Figures) -> None:
    has_keys(
        figures,
        ["model", "tokens_per_request", "rounds", "c1", "c8", "c32", "c32_tokens_per_s_ratio", "c1_ttft_p50_diff_ms"],
        "http",
    )
    positive(figures, ["tokens_per_request", "rounds", "c32_tokens_per_s_ratio"], "http")
    assert isinstance(figures["c1_ttft_p50_diff_ms"], int | float), figures["c1_ttft_p50_diff_ms"]
    for phase in ("c1", "c8", "c32"):
        result = has_keys(figures[phase], ["http", "grpc", "tokens_per_s_ratio", "round_ratios"], phase)
        positive(result, ["tokens_per_s_ratio"], phase)
        for side in ("http", "grpc"):
            keys = ["tokens_per_s", "ttft_p50_ms", "ttft_p95_ms", "latency_p50_s", "requests", "tokens", "events"]
            positive(has_keys(result[side], keys, f"{phase}.{side}"), keys, f"{phase}.{side}")
            # CPU time per event from /proc, in clock ticks: 0 in a run this short is possible.
            servers = ["gateway", "text", "client", *(["http_role"] if side == "http" else [])]
            cpu = has_keys(result[side], [f"{name}_cpu_us_per_event" for name in servers], f"{phase}.{side}")
            assert all(cpu[f"{name}_cpu_us_per_event"] >= 0 for name in servers), cpu
        # The same load on both sides: every request of both came back whole.
        assert result["http"]["tokens"] == result["grpc"]["tokens"], result  # type: ignore[index]
    flags(figures["targets_met"], ["c32_ratio_ge_0.8", "c1_ttft_within_20ms"], "targets_met")


def check_vs_torchserve(figures: Figures) -> None:
    keys = ["model", "threads", "quick", "uniform", "mixed", "cold_start", "rss", "targets_met", "run_s"]
    has_keys(figures, [*keys, "torchserve_settings"], "vs_torchserve")
    assert figures["quick"] is True
    settings = figures["torchserve_settings"]
    assert isinstance(settings, list) and len(settings) == 7, settings
    rates = ["tokens_per_s", "latency_p50_s", "latency_p95_s", "requests"]
    uniform = has_keys(figures["uniform"], ["c1", "c8", "c32"], "uniform")
    for c, phase in uniform.items():
        phase = has_keys(phase, ["genserve", "torchserve", "torchserve_best", "genserve_vs_best"], c)
        positive(has_keys(phase["genserve"], rates, f"{c}.genserve"), rates, f"{c}.genserve")
        for name, result in has_keys(phase["torchserve"], settings, f"{c}.torchserve").items():
            positive(has_keys(result, [*rates, "errors"], f"{c}.{name}"), rates, f"{c}.{name}")
            assert has_keys(result, ["errors"], name)["errors"] == 0, (c, name, result)
        assert phase["torchserve_best"] in settings
    mixed = has_keys(figures["mixed"], ["torchserve_setting", "probes", "rate_sustained_by_torchserve"], "mixed")
    positive(mixed, ["rate_sustained_by_torchserve"], "mixed")
    run_keys = ["rate_per_s", "requests", "completed", "tokens_per_s", "short_p95_s", "deadline_exceeded", "sustained"]
    for label in ("at_sustained_rate", "at_1.5x"):
        sides = has_keys(has_keys(mixed, [label], "mixed")[label], ["genserve", "torchserve"], label)
        for side, result in sides.items():
            positive(has_keys(result, run_keys, f"{label}.{side}"), run_keys[:4], f"{label}.{side}")
    cold = has_keys(figures["cold_start"], ["genserve", "torchserve"], "cold_start")
    for side, result in cold.items():
        positive(has_keys(result, ["cold_start_s"], side), ["cold_start_s"], side)
    memory = ["genserve_idle_mb", "torchserve_idle_mb", "genserve_peak_mb", "torchserve_peak_mb"]
    positive(has_keys(figures["rss"], memory, "rss"), memory, "rss")
    flags(
        figures["targets_met"],
        [
            "a_tokens_per_s_ge_best_torchserve_every_concurrency", "b_short_p95_le_half_torchserve",
            "b_genserve_sustains_1.5x", "b_torchserve_does_not_sustain_1.5x", "c_cold_start_no_worse", "c_rss_no_worse",
        ],
        "targets_met",
    )  # fmt: skip


def needs_torchserve() -> pytest.MarkDecorator:
    """vs_torchserve.py runs a real TorchServe: Java 17+ and the torchserve extra, else a skip saying why."""
    from genserve.torchserve.launcher import java_missing_reason

    reason = java_missing_reason()
    return pytest.mark.skipif(reason is not None, reason=f"TorchServe cannot run here: {reason}")


@pytest.mark.parametrize(
    ("script", "check"),
    [
        ("text_throughput.py", check_text),
        ("vision.py", check_vision),
        ("jobs.py", check_jobs),
        ("faults.py", check_faults),
        ("latent.py", check_latent),
        ("http_streaming.py", check_http),
        pytest.param("vs_torchserve.py", check_vs_torchserve, marks=needs_torchserve()),
    ],
)
def test_quick_mode_closes_with_its_json_line(script: str, check: Callable[[Figures], None]) -> None:
    check(run_quick(script))


def test_no_benchmark_shadows_a_standard_module() -> None:
    # A script's folder comes first on sys.path: bench/http.py once made `import http.client` (in
    # torch, urllib) find the benchmark instead, and every other benchmark failed to start.
    names = {path.stem for path in (ROOT / "bench").glob("*.py")}
    assert not names & set(sys.stdlib_module_names)
