"""Data-parallel training of the sequence models over several processes (PyTorch DDP).

``torchrun`` starts one process per rank and gives each its ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; :func:`init_distributed` joins them (gloo on
CPU, NCCL on GPU). The training loop (:mod:`training.models.train`) then

* cuts every batch of the single-process schedule into one piece per rank (the total
  batch stays ``batch_size``; the batch order is drawn from the same seed on every rank),
* averages the gradients over the ranks (``DistributedDataParallel``),
* scores validation sharded by user and gathers the ranks, so every rank holds the same
  numbers as a single-process evaluation of the same weights,
* takes rank 0's early-stopping decision on every rank.

Only rank 0 evaluates on test and writes the bundle (:mod:`training.pipeline`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from streamrec.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
LAUNCH = "torchrun --nproc-per-node N -m cli train ... --distributed"


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when a GPU is visible, else the CPU."""
    if name not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available to this torch "
                          f"({torch.__version__}); use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Distributed:
    """This process's place in the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, object]:
        return {"world_size": self.world_size, "backend": self.backend, "device": self.device.type}

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def shard(self, n: int, block: int) -> tuple[int, int]:
        """This rank's ``[lo, hi)`` of ``n`` rows, cut at multiples of ``block`` (so each
        rank's batches are the single-process batches)."""
        blocks = -(-n // block)
        per, extra = divmod(blocks, self.world_size)
        first = self.rank * per + min(self.rank, extra)
        count = per + (1 if self.rank < extra else 0)
        return min(first * block, n), min((first + count) * block, n)

    def gather_rows(self, part: np.ndarray, n: int, block: int) -> np.ndarray:
        """Every rank's :meth:`shard` of a 1-D int64 array, joined in order (length ``n``)."""
        bounds = [Distributed(r, self.world_size, 0, self.device, self.backend).shard(n, block)
                  for r in range(self.world_size)]
        width = max(hi - lo for lo, hi in bounds)
        mine = torch.zeros(width, dtype=torch.int64, device=self.device)
        mine[:len(part)] = torch.from_numpy(np.asarray(part, dtype=np.int64)).to(self.device)
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine)
        return np.concatenate([p[:hi - lo].cpu().numpy() for p, (lo, hi) in zip(parts, bounds, strict=True)])

    def split_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's piece of one batch of the single-process schedule."""
        return idx.tensor_split(self.world_size)[self.rank]


def in_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str = "auto", threads: int | None = None) -> Distributed:
    """Join the process group torchrun set up. Each rank gets ``threads`` torch threads
    (default: this machine's cores shared out among the ranks on it)."""
    if not in_torchrun():
        raise ConfigError("--distributed needs the environment torchrun gives each process "
                          f"(RANK, WORLD_SIZE, MASTER_ADDR); launch it as: {LAUNCH}")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if torch.cuda.device_count() < local_world:
            raise ConfigError(f"--device cuda: {local_world} ranks on this machine, "
                              f"{torch.cuda.device_count()} GPU(s)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    torch.set_num_threads(threads or max(1, cpu_count() // local_world))
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return Distributed(rank, world, local_rank, dev, backend)


def close(ctx: Distributed | None) -> None:
    if ctx is not None and dist.is_initialized():
        dist.destroy_process_group()

