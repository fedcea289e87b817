"""Device, precision and threads: what the configuration's `device`,
`precision` and `threads` resolve to on the machine at hand.

`auto` means: CUDA when a GPU is visible, else the CPU; bf16 autocast where
the hardware runs bf16 matmuls natively (CUDA with bf16; a CPU with AMX or
AVX512-BF16, read from the CPU's flags at run time, never assumed), fp32
elsewhere. Master weights and optimizer state always stay fp32: bf16 is an
autocast of the forward/backward pass only.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from .allocator import active as allocator_in_use
from .config import DEVICES, PRECISIONS
from .errors import ConfigError


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_bf16_kind() -> str:
    """'amx' or 'avx512_bf16' when this CPU computes bf16 matmuls natively, else ''."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return ""


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ConfigError(f"device {name!r} unknown ({', '.join(DEVICES)})")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda: no CUDA GPU is visible to torch on this machine; use --device cpu (or auto)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_bf16_kind())


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """torch.float32 or torch.bfloat16 (the autocast dtype)."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision {name!r} unknown ({', '.join(PRECISIONS)})")
    if name == "bf16" and not bf16_supported(device):
        what = "this GPU" if device.type == "cuda" else "this CPU (no AMX or AVX512-BF16 flag)"
        raise ConfigError(f"precision bf16: {what} has no native bf16 support; use --precision fp32 (or auto)")
    if name == "bf16" or (name == "auto" and bf16_supported(device)):
        return torch.bfloat16
    return torch.float32


@dataclass(frozen=True)
class Hardware:
    """Where and how a run computes."""

    device: torch.device
    dtype: torch.dtype  # autocast dtype; float32 = no autocast
    threads: int

    @property
    def bf16(self) -> bool:
        return self.dtype == torch.bfloat16

    def autocast(self):
        """The forward/backward context: bf16 autocast, or nothing."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def describe(self) -> str:
        if self.device.type == "cuda":
            where = f"cuda ({torch.cuda.get_device_name(self.device)})"
        else:
            kind = cpu_bf16_kind()
            where = f"cpu ({self.threads} thread{'s' if self.threads != 1 else ''}{', ' + kind if kind else ''}, {allocator_in_use()} allocator)"
        return f"device {where}, precision {'bf16 autocast, fp32 master weights' if self.bf16 else 'fp32'}"


def setup(device: str = "auto", precision: str = "auto", threads: int = 0) -> Hardware:
    """Resolve the settings (one clear ConfigError for impossible ones) and
    apply the thread count. threads 0: leave torch's setting as it is (every
    core, unless OMP_NUM_THREADS or the caller said otherwise)."""
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    if threads < 0:
        raise ConfigError(f"threads must be >= 0 (0: every core), got {threads}")
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return Hardware(dev, dtype, torch.get_num_threads())


def cpu_fp32() -> Hardware:
    """The plain setting (tests, tools): CPU, fp32, torch's current thread count."""
    return Hardware(torch.device("cpu"), torch.float32, torch.get_num_threads())


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def to_device(batch, device: torch.device):
    """A collated batch (nested dicts of tensors) on `device`; other values as they are."""
    if device.type == "cpu":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
