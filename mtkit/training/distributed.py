"""Distributed data parallel training through torch.distributed (launched by torchrun, on one
machine or several).

Every rank builds the same plan of batches from the shared seed; an update takes the plan's
next world × accumulate batches, each rank whole batches of its own (see
``mtkit.data.batching.updates``), and DDP averages the gradients. Losses are scaled by the
update's token count over all ranks, so an update equals one process accumulating the same
batches. Every rank translates a slice of the dev set; rank 0 gathers the scores, logs and
writes the run directory; stop decisions are agreed on by all ranks every step.
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

from mtkit.errors import UsageError


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
        # Rank 0 scores BLEU and writes checkpoints while the others wait: allow slow disks.
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


@dataclass(frozen=True)
class Launch:
    """How many training processes to start, on how many machines: ``nproc`` on this one (the
    ``node_rank``-th of ``nnodes``), meeting at ``master_addr:master_port``, where node 0 runs
    torch's rendezvous store. Node 0 holds rank 0, which writes the run directory."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None  # torchrun's default, 29500, when None

    @property
    def world(self) -> int:
        return self.nproc * self.nnodes

    def check(self) -> None:
        """Refuse options that do not go together (the command line checks each one's range)."""
        if self.nnodes == 1:
            if self.node_rank is not None or self.master_addr is not None or self.master_port is not None:
                raise UsageError(
                    "--node-rank, --master-addr and --master-port are for training on several machines (--nnodes M)"
                )
            return
        if self.node_rank is None or self.master_addr is None:
            raise UsageError("--nnodes needs --node-rank R (0 on the machine at --master-addr) and --master-addr HOST")
        if self.node_rank >= self.nnodes:
            raise UsageError(f"--node-rank must be between 0 and {self.nnodes - 1}")

    def torchrun_args(self) -> list[str]:
        """torchrun's options: a standalone rendezvous on one machine; on several, the static
        one, where --node-rank fixes which machine holds rank 0 (c10d's would order the machines
        by host name)."""
        if self.nnodes == 1:
            return ["--standalone", f"--nproc-per-node={self.nproc}"]
        port = [] if self.master_port is None else [f"--master-port={self.master_port}"]
        return [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}", f"--master-addr={self.master_addr}", *port,
                f"--nproc-per-node={self.nproc}"]


def launch(settings: Launch, argv: list[str]) -> int:
    """Run ``mtkit ARGV`` in ``settings.nproc`` processes through torchrun; return its exit
    status."""
    command = [sys.executable, "-m", "torch.distributed.run", *settings.torchrun_args(), "-m", "mtkit", *argv]
    # Ctrl-C reaches the workers directly (they save and stop); this process just waits.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.run(command).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
