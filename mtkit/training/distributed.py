"""Distributed data parallel training through torch.distributed (launched by torchrun).

Every rank builds the same global batches from the shared seed and trains on its own slice of
each (sentences ``rank::world``); DDP averages the gradients. Losses are scaled by the global
token count, so the update equals a single process on the whole batch. Only rank 0 validates,
logs and writes checkpoints; stop decisions are agreed on by all ranks every step.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_type: str) -> Distributed:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPU); a no-op alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        # Rank 0 validates while the others wait: allow long validations.
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_sum(values: list[float], info: Distributed, device: torch.device) -> list[float]:
    """Sum numbers over ranks in one message (losses, token counts, and flags: a flag summed
    over ranks is non-zero if any rank raised it)."""
    if not info.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(obj, info: Distributed) -> list:
    """Every rank's ``obj``, in rank order (a one-element list when alone)."""
    if not info.enabled:
        return [obj]
    gathered: list = [None] * info.world
    dist.all_gather_object(gathered, obj)
    return gathered


def shutdown(info: Distributed) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``mtkit ARGV`` in ``nproc`` processes through torchrun; return its exit status."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "mtkit", *argv,
    ]
    # Ctrl-C reaches the workers directly (they save and stop); this process just waits.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.run(command).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
