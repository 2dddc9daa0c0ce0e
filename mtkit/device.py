"""Devices and numeric precision: where tensors live and how autocast runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from contextlib import nullcontext

import torch

from mtkit.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cuda:N`` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name} requested but CUDA is not available (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs with native bf16 (compute capability 8.0, Ampere, and later), else
    fp32 (also on CPUs; see the README). ``torch.cuda.is_bf16_supported`` also says yes where
    bf16 is only emulated, far slower than fp32."""
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; use {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0) else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UsageError("fp16 needs a CUDA device; on a CPU use bf16 or fp32")
    return name


def autocast(device: torch.device, precision: str):
    """The autocast context for a precision (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing every block over 32 MB back to
    the system. PyTorch's CPU allocator has no cache, so otherwise each large temporary of a
    step (the logits, their gradient, a batch's products) is mapped afresh and its pages
    faulted in again at every step: a quarter of the book's model's bf16 training step, and up
    to three quarters of an int8 output layer's time, on this project's 2-core machine. The
    cost: the process keeps its peak memory until it exits. True where it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 1 << 30))
