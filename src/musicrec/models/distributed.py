"""Data-parallel training under ``torchrun``: one process per core or GPU, PyTorch DDP.

A training stage with ``<stage>_training.processes`` above 1 starts itself again under
``torchrun --standalone`` with that many processes on this machine; on several machines, run
``torchrun`` yourself (README "When one machine is not enough") and every process finds its
place from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

In each process the model is wrapped in ``DistributedDataParallel`` (gloo on the CPU, NCCL on
GPUs). Every process draws the same epoch plan from the shared seed and trains on its share of
the batches (batch ``i`` goes to process ``i mod world_size``, the last round filled up from
the start so that all take the same number of steps); DDP averages the gradients, so the
weights stay identical everywhere. Validation is computed by every process on the same weights and
taken from process 0; only process 0 writes checkpoints and outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether torchrun (or a launcher that sets the same variables) started this process.

    True at a world size of 1 too: the process then joins a group of one, so ``torchrun
    --nproc-per-node=1`` runs the distributed code path (NCCL on a GPU) on a single device.
    """
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (torchrun's ``RANK`` before and after the group is joined)."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Process 0, the one that writes (always true outside torchrun)."""
    return rank() == 0


def relaunch(stage: str, argv: list[str], processes: int) -> int:
    """Run ``musicrec <stage> <argv>`` under ``torchrun --standalone`` with ``processes``.

    The processes start ``python -m musicrec``, so an installed console script is not needed
    (a checkout on ``PYTHONPATH`` is enough).
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "musicrec",
        stage,
        *argv,
    ]
    print(f"{stage}: training in {processes} processes: {' '.join(command[2:])}", flush=True)
    return subprocess.run(command, check=False).returncode


def relaunch_if_asked(stage: str, argv: list[str] | None, processes: int) -> int | None:
    """With ``processes`` > 1 outside torchrun, run the stage under torchrun
    (:func:`relaunch`) and return its exit code; else None: train in this process."""
    if processes > 1 and not launched():
        return relaunch(stage, list(argv or []), processes)
    return None


@contextmanager
def process_group() -> Iterator[None]:
    """Join the process group when torchrun started this process; do nothing otherwise."""
    if not launched() or active():
        yield
        return
    if torch.cuda.is_available():
        local_rank, n_gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= n_gpus:
            # More processes than GPUs: they share cards, which NCCL may refuse ("Duplicate
            # GPU detected"); say so before it does.
            print(
                f"distributed: process {local_rank} shares GPU {local_rank % n_gpus} "
                f"({n_gpus} GPU(s) here); NCCL supports one process per GPU",
                file=sys.stderr,
                flush=True,
            )
        torch.cuda.set_device(local_rank % n_gpus)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` when distributed, else ``model`` itself."""
    if not active():
        return model
    devices = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=devices)


def shard(batches: Iterable) -> Iterable:
    """This process's share of an epoch's batches (all of them when not distributed).

    Batch ``i`` goes to process ``i mod world_size``; like PyTorch's ``DistributedSampler``,
    the last round is filled up with batches from the start, so that every process takes the
    same number of steps (DDP needs that) and a one-batch epoch still trains. A
    ``DataLoader`` over a map-style dataset is rebuilt over the process's items, so no process
    makes the batches of another.
    """
    if not active():
        return batches
    n_processes, me = world_size(), rank()

    def mine(n: int) -> list[int]:
        return [(me + n_processes * i) % n for i in range(-(-n // n_processes))] if n else []

    if isinstance(batches, torch.utils.data.DataLoader):
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(batches.dataset, mine(len(batches.dataset))),
            batch_size=None,
            num_workers=batches.num_workers,
            pin_memory=batches.pin_memory,
        )
    items = list(batches)
    return [items[i] for i in mine(len(items))]


def mean(value: float) -> float:
    """The mean of ``value`` over the processes."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


def from_main(value: float) -> float:
    """Process 0's ``value``, in every process (so all take the same decisions)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def describe() -> dict:
    """``world_size`` and ``backend`` of this run (``backend`` None outside a group), for the
    stage's timing record: a distributed run says how it ran."""
    return {"world_size": world_size(), "backend": dist.get_backend() if active() else None}


def barrier() -> None:
    if active():
        dist.barrier()


def _device() -> torch.device:
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
