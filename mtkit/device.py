"""Devices and numeric precision: where tensors live and how autocast runs."""

from __future__ import annotations

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
    """``auto``: bf16 on GPUs that support it, else fp32 (also on CPUs; see the README)."""
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; use {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UsageError("fp16 needs a CUDA device; on a CPU use bf16 or fp32")
    return name


def autocast(device: torch.device, precision: str):
    """The autocast context for a precision (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
