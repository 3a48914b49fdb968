"""Data-parallel training over several processes, launched by PyTorch's own `torchrun`.

    torchrun --standalone --nproc_per_node 2 -m training train --out model_store/ddp ...

torchrun starts the processes and gives each one `RANK`, `LOCAL_RANK`, `WORLD_SIZE` and a
rendezvous address; `session()` joins them into one process group (NCCL when CUDA is present,
one GPU per local rank; gloo on CPU). Without torchrun (or with one process) `session()` gives
`SINGLE_PROCESS`: no process group, no collective, and training is bit for bit what it was.

What the training loop asks of this module, and how it stays identical on every rank:

- `shard(batches)`: each epoch every rank builds the same batch list from the same seeded
  generator, then keeps every `world_size`-th batch from its rank on (as `DistributedSampler`
  does with `set_epoch`), padding the list by wrapping around so every rank takes the same
  number of steps: DistributedDataParallel needs one all-reduce per step on every rank.
- `wrap(model)`: DistributedDataParallel averages the gradients, so every rank applies the
  same update and the weights stay equal; the effective batch is `world_size * batch_size`.
- `gather(...)`: dev and test predictions are computed on a disjoint share of the examples per
  rank and gathered, so every rank holds the predictions for the *whole* set and computes the
  same metrics with the same function a single process uses.
- `sum(...)`: losses reduced as sums of (loss x weight) and of weights, i.e. exact means.
- `agree(flag)`: rank 0's decision (improved? stop?) broadcast, so early stopping can never
  leave one rank training while another waits.
- `check_same(...)`: the ranks compare the corpus' sha256 before training (a node reading
  another file fails at once) and a digest of the weights after it.
- Only rank 0 (`is_main`) writes the checkpoint and plots and shows a progress bar.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)

T = TypeVar("T")

# A collective waiting longer than this means another rank died or hung: fail, do not wait on.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits among the training processes (one of them when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" or "nccl" once a process group exists
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, object]:
        """For the model card: how many processes trained the model, and how."""
        return {"world_size": self.world_size, "backend": self.backend}

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of one epoch's batches; every rank gets the same count."""
        if not self.enabled or not items:
            return list(items)
        total = -(-len(items) // self.world_size) * self.world_size  # ceil to a multiple
        padded = [items[index % len(items)] for index in range(total)]
        return padded[self.rank :: self.world_size]

    def indices(self, count: int) -> list[int]:
        """This rank's share of `count` evaluation examples (disjoint, no padding)."""
        return list(range(self.rank, count, self.world_size))

    def gather(self, count: int, indices: Sequence[int], values: Sequence[int]) -> list[int]:
        """Every rank's `values` (one per index of its share) put back in example order."""
        if not self.enabled:
            return list(values)
        shares: list[tuple[list[int], list[int]] | None] = [None] * self.world_size
        torch_dist.all_gather_object(shares, (list(indices), list(values)))
        result = [0] * count
        seen = 0
        for share in shares:
            if share is None:
                raise RuntimeError("a rank sent no predictions")
            for index, value in zip(*share, strict=True):
                result[index] = value
                seen += 1
        if seen != count:
            raise RuntimeError(f"gathered {seen} predictions for {count} examples")
        return result

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks (float64)."""
        if not self.enabled:
            return tuple(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return tuple(float(value) for value in tensor.tolist())

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)], dtype=torch.int64, device=self.device)
        torch_dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def check_same(self, what: str, value: str) -> None:
        """Fail loudly unless every rank has the same `value` (a digest, a hash)."""
        if not self.enabled:
            return
        values: list[str | None] = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        if len(set(values)) != 1:
            raise RuntimeError(f"ranks disagree on {what}: {values}")

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train through: DistributedDataParallel around `model` when enabled.

        Its constructor copies rank 0's weights to every rank, so all start equal."""
        if not self.enabled:
            return model
        device_ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


SINGLE_PROCESS = DistributedContext()


@contextmanager
def session() -> Iterator[DistributedContext]:
    """The process group torchrun describes in the environment, for the duration of a run.

    No torchrun, or `WORLD_SIZE=1`: `SINGLE_PROCESS`, and nothing is initialised."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield SINGLE_PROCESS
        return
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} but {torch.cuda.device_count()} CUDA device(s): "
                "use --nproc_per_node no larger than the GPU count"
            )
        # Deterministic cuBLAS (torch.use_deterministic_algorithms) needs this set before use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", torch.device("cuda", local_rank)
    else:
        backend, device = "gloo", torch.device("cpu")
    torch_dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    context = DistributedContext(rank, world_size, local_rank, backend, device)
    if not context.is_main:
        # One voice: rank 0 logs the run; the others only warnings and errors.
        logging.getLogger("training").setLevel(logging.WARNING)
    log.info("process group: %d processes, %s backend", world_size, backend)
    try:
        yield context
    finally:
        torch_dist.destroy_process_group()
