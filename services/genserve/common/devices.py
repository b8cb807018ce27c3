"""Device choice and torch thread settings, shared by every process that runs a model."""

from __future__ import annotations

import torch

from genserve.common.config import ConfigError


def pick_device(preference: str = "auto") -> torch.device:
    """'auto' → CUDA when present, else CPU; 'cpu' or 'cuda[:n]' force a device (GENSERVE_DEVICE)."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise ConfigError(f"GENSERVE_DEVICE={preference!r} is not a device; use auto, cpu or cuda[:n]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"GENSERVE_DEVICE={preference!r} asks for CUDA, which this machine lacks; use auto or cpu")
    return device


def configure_torch(threads: int) -> None:
    """Process-wide torch settings for serving; call before any model runs.

    threads caps intra-op threads (0 keeps torch's default, one per core). Denormal floats are
    flushed to zero: saturated LSTM gates (sigmoid of large negative inputs) produce them, and
    on x86 every operation on a denormal is slow (a 32-row LSTM step took 4.2 ms instead of
    2.7 ms). Threads started afterwards, torch's own workers included, inherit the setting.
    """
    torch.set_flush_denormal(True)
    if threads > 0:
        torch.set_num_threads(threads)


def bf16_autocast_supported(device: torch.device) -> bool:
    """bfloat16 autocast pays off on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
