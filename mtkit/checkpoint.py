"""Checkpoints: tensors and plain data only, written atomically, checked when read.

A checkpoint is a ``torch.save`` dictionary loaded with ``weights_only=True``, so a file from a
stranger cannot run code. ``meta.checksum`` is a SHA-256 over every tensor, so a truncated or
corrupted file is reported as such instead of loading garbage.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from mtkit.errors import CheckpointError, UsageError
from mtkit.fileio import atomic_write


def tensor_checksum(obj: Any) -> str:
    """SHA-256 over all tensors in a nested structure, visited in a fixed order."""
    return _checksum(obj, plain=False)


def content_checksum(obj: Any) -> str:
    """SHA-256 over all tensors and plain values (strings, bytes, numbers) of a nested structure:
    for a file whose configuration matters as much as its weights (``mtkit export``)."""
    return _checksum(obj, plain=True)


def _checksum(obj: Any, plain: bool) -> str:
    digest = hashlib.sha256()

    def visit(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(f"{path}:{value.dtype}:{tuple(value.shape)};".encode())
            digest.update(data.numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                visit(value[key], f"{path}/{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(item, f"{path}/{i}")
        elif plain:
            data = value if isinstance(value, bytes) else repr(value).encode()
            digest.update(f"{path}:{type(value).__name__}:{len(data)};".encode())
            digest.update(data)

    visit(obj, "")
    return digest.hexdigest()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus its checksum) to ``path`` via a temporary file and a rename."""
    payload = dict(payload)
    payload["meta"] = {**payload.get("meta", {}), "checksum": tensor_checksum(payload)}
    with atomic_write(path, binary=True) as handle:
        torch.save(payload, handle)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and verify its checksum."""
    payload = safe_load(path, "checkpoint", map_location)
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"{path}: not an mtkit checkpoint")
    stored = payload.get("meta", {}).pop("checksum", None)
    if stored is None or stored != tensor_checksum(payload):
        raise CheckpointError(f"{path}: corrupted checkpoint (checksum mismatch)")
    return payload


def safe_load(path: str | Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain data only, so a file from a
    stranger cannot run code. A refused, truncated or corrupted file raises one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            found = _UNSAFE.search(str(exc))
            detail = f": {found.group(1)}" if found else ""
            raise CheckpointError(f"{path}: refused: the {what} holds objects other than tensors and plain data{detail}") from None
        raise CheckpointError(f"{path}: truncated or corrupted {what} ({_first_sentence(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged archive or pickle raises
        raise CheckpointError(f"{path}: truncated or corrupted {what} ({_first_sentence(exc)})") from None


_UNSAFE = re.compile(r"(unsupported GLOBAL [\w.]+|Unsupported global: GLOBAL [\w.]+)", re.IGNORECASE)


def _first_sentence(exc: Exception) -> str:
    return str(exc).strip().split(". ")[0].splitlines()[0][:120] if str(exc).strip() else type(exc).__name__


def numbered_checkpoints(run_dir: Path) -> list[Path]:
    """``step-N.pt`` files of a run, oldest first."""
    numbered = [p for p in run_dir.glob("step-*.pt") if p.stem[5:].isdigit()]
    return sorted(numbered, key=lambda p: int(p.stem[5:]))


def last_checkpoints(run_dir: Path, count: int, option: str) -> list[Path]:
    """The run's ``count`` most recent ``step-N.pt`` files; a usage error naming ``option`` (the
    flag that asked for them) if it has fewer."""
    if count < 1:
        raise UsageError(f"{option} must be at least 1 (got {count})")
    chosen = numbered_checkpoints(run_dir)[-count:]
    if len(chosen) < count:
        raise UsageError(f"{run_dir} has {len(chosen)} numbered checkpoints (step-N.pt), fewer than {option} {count}")
    return chosen


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the models' parameters (accumulated in float64)."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        model = load_checkpoint(path)["model"]
        if total and model.keys() != total.keys():
            raise CheckpointError(f"{path}: holds a different model than {paths[0]}")
        for name, tensor in model.items():
            total[name] = total.get(name, 0) + tensor.double()
    reference = load_checkpoint(paths[0])["model"]
    return {name: (value / len(paths)).to(reference[name].dtype) for name, value in total.items()}
