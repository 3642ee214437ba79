"""One PyTorch training loop for every model that learns from audio (``bow_mlp``, CNNs, DBNs).

Mini-batch training with early stopping on a validation score, a checkpoint written atomically
after every epoch (model, optimiser, config, epoch, best score, history), and resume: a run that
finds the checkpoint of an interrupted run with the same config and inputs goes on from the
epoch after it. Randomness comes from ``(seed, epoch)``, so a resumed run makes the same
batches as an uninterrupted one. Checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from musicrec.errors import MusicrecError
from musicrec.io import atomic_path
from musicrec.models import distributed
from musicrec.tracking import log_epoch

_LOOP_DIGEST = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:8]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation params shared by the trained models."""

    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 8
    seed: int = 0
    device: str = "auto"
    loader_workers: int = 4  # batch-making processes beside a GPU (none on the CPU)
    lr_schedule: str = "constant"  # or "cosine": decays to 0 over ``epochs``
    processes: int = 1  # > 1: data-parallel under torchrun (musicrec.models.distributed)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise MusicrecError("training: epochs, batch_size and patience must be >= 1")
        if self.loader_workers < 0 or self.processes < 1:
            raise MusicrecError("training: need loader_workers >= 0 and processes >= 1")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise MusicrecError("training: need learning_rate > 0 and weight_decay >= 0")
        if self.lr_schedule not in ("constant", "cosine"):
            raise MusicrecError("training: lr_schedule must be constant or cosine")
        if self.device not in ("auto", "cpu", "cuda"):
            raise MusicrecError("training: device must be auto, cpu or cuda")


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA where present, else the CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise MusicrecError("device: cuda was asked for but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch and ask for deterministic kernels.

    On the CPU runs are then bit-for-bit repeatable. On CUDA, cuBLAS is deterministic only
    with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read when its handle is made, so it is
    set here, before the first product); kernels with no deterministic version only warn.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def inputs_digest(*parts: object) -> str:
    """A short hash naming a run's config and inputs (arrays are hashed by content)."""
    digest = hashlib.sha1()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


@dataclass
class TrainResult:
    """The best epoch's weights are loaded into the model; the history has one row per epoch."""

    best_epoch: int
    best_score: float
    history: list[dict]
    resumed_from: int | None


def _load_checkpoint(path: Path, desc: str) -> dict | None:
    """A checkpoint this code wrote, or None (with a message) for anything else.

    ``weights_only=True`` refuses any pickled object but tensors and plain containers, so a
    tampered or foreign file cannot run code; it is then ignored and training starts afresh.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is only ignored
        tqdm.write(f"{desc}: ignoring {path}: not a checkpoint musicrec wrote ({exc})"[:300])
        return None
    return state if isinstance(state, dict) else None


def train(
    model: torch.nn.Module,
    batches: Callable[[np.random.Generator], Iterable],
    step_loss: Callable[[torch.nn.Module, object], torch.Tensor],
    validation_loss: Callable[[torch.nn.Module], float],
    cfg: TrainConfig,
    checkpoint_dir: Path,
    run_id: str,
    desc: str = "train",
    no_weight_decay: tuple[str, ...] = (),
) -> TrainResult:
    """Train ``model`` until the validation loss has not improved for ``cfg.patience`` epochs.

    Parameters
    ----------
    batches : callable
        ``batches(rng)`` yields one epoch of batches, drawn with ``rng``.
    step_loss : callable
        ``step_loss(model, batch)`` returns the loss to minimise on a batch. It must compute
        the loss through ``model``'s forward (under torchrun ``model`` is the DDP wrapper,
        whose forward is what synchronises the gradients).
    validation_loss : callable
        ``validation_loss(model)``: lower is better; called in eval mode without gradients.
    checkpoint_dir : Path
        Holds ``last.pt`` and ``best.pt`` for this ``run_id``.
    run_id : str
        Names the config and inputs (see :func:`inputs_digest`); a checkpoint with another id,
        or one written by another version of this module, is not resumed.
    no_weight_decay : tuple of str
        Names of parameters ``cfg.weight_decay`` does not apply to (embeddings with a prior of
        their own).
    """
    checkpoint_dir = Path(checkpoint_dir)
    # A change to this loop must not resume a checkpoint it wrote before: the id covers it too.
    run_id = f"{run_id}-{_LOOP_DIGEST}"
    optimiser, scheduler = _optimiser(model, cfg, no_weight_decay)
    last = checkpoint_dir / "last.pt"
    progress = _resume(last, run_id, model, optimiser, scheduler, desc)
    # Under torchrun: DDP averages the gradients of every process's share of the batches.
    trained = distributed.wrap(model)
    bar = tqdm(
        range(progress.start, cfg.epochs),
        desc=desc,
        unit="epoch",
        initial=progress.start,
        total=cfg.epochs,
        disable=not distributed.is_main(),
    )
    for epoch in bar:
        if epoch - progress.best_epoch > cfg.patience and progress.best_epoch >= 0:
            break
        record = _epoch(epoch, trained, model, batches, step_loss, validation_loss, optimiser, cfg)
        progress.history.append(record)
        if distributed.is_main():
            log_epoch(desc, record)  # to the stage's W&B run, as it happens
        scheduler.step()
        bar.set_postfix(train=f"{record['train_loss']:.4f}", val=f"{record['val_loss']:.4f}")
        improved = record["val_loss"] < progress.best_score
        if improved:
            progress.best_score, progress.best_epoch = record["val_loss"], epoch
        state = {
            "run_id": run_id,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "config": asdict(cfg),
            "history": progress.history,
            "best_score": progress.best_score,
            "best_epoch": progress.best_epoch,
        }
        if distributed.is_main():
            if improved:
                _save(state, checkpoint_dir / "best.pt")
            _save(state, last)
    distributed.barrier()  # process 0 has written best.pt
    if progress.best_epoch < 0:
        raise MusicrecError(
            f"{desc}: no epoch improved the validation loss (last: "
            f"{progress.history[-1]['val_loss'] if progress.history else 'none'}); a NaN loss "
            "means the training diverged: lower the learning rate, or check the inputs"
        )
    best = torch.load(checkpoint_dir / "best.pt", map_location="cpu", weights_only=True)
    if best.get("run_id") != run_id:  # another run's weights: never used silently
        raise MusicrecError(
            f"{desc}: {checkpoint_dir / 'best.pt'} belongs to another training run; delete "
            f"{checkpoint_dir} and run the stage again"
        )
    model.load_state_dict(best["model"])
    model.eval()
    return TrainResult(
        progress.best_epoch, progress.best_score, progress.history, progress.resumed_from
    )


def _optimiser(
    model: torch.nn.Module, cfg: TrainConfig, no_weight_decay: tuple[str, ...]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (no decay on ``no_weight_decay``) and the learning-rate schedule of ``cfg``."""
    named = dict(model.named_parameters())
    groups = [
        {"params": [p for n, p in named.items() if n not in no_weight_decay]},
        {"params": [p for n, p in named.items() if n in no_weight_decay], "weight_decay": 0.0},
    ]
    optimiser = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    # Cosine decay over the planned epochs: big steps early, fine ones late, when the noise of
    # small batches would otherwise keep the weights wandering around the minimum.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        (lambda e: 0.5 * (1 + math.cos(math.pi * e / cfg.epochs)))
        if cfg.lr_schedule == "cosine"
        else (lambda e: 1.0),
    )
    return optimiser, scheduler


@dataclass
class _Progress:
    """Where a training run stands: what a checkpoint restores."""

    history: list[dict] = field(default_factory=list)
    best_score: float = math.inf
    best_epoch: int = -1
    start: int = 0  # the next epoch to run
    resumed_from: int | None = None


def _resume(last: Path, run_id: str, model, optimiser, scheduler, desc: str) -> _Progress:
    """Restore model, optimiser and schedule from ``last`` when it belongs to ``run_id``."""
    state = _load_checkpoint(last, desc) if last.exists() else None
    if state is None or state.get("run_id") != run_id:
        return _Progress()
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if distributed.is_main():
        tqdm.write(f"{desc}: resuming after epoch {state['epoch'] + 1} from {last}")
    return _Progress(
        state["history"], state["best_score"], state["best_epoch"], state["epoch"] + 1,
        state["epoch"],
    )  # fmt: skip


def _epoch(
    epoch: int,
    trained: torch.nn.Module,
    model: torch.nn.Module,
    batches: Callable[[np.random.Generator], Iterable],
    step_loss: Callable[[torch.nn.Module, object], torch.Tensor],
    validation_loss: Callable[[torch.nn.Module], float],
    optimiser: torch.optim.Optimizer,
    cfg: TrainConfig,
) -> dict:
    """One epoch of training (``trained``: ``model`` or its DDP wrapper), then validation.

    Both seeds derive from ``cfg.seed`` and the epoch alone, so a resumed run draws what an
    uninterrupted one would.
    """
    epoch_start = time.perf_counter()
    torch.manual_seed(cfg.seed * 100_003 + epoch)
    rng = np.random.default_rng([cfg.seed, epoch])
    model.train()
    losses = []
    for batch in distributed.shard(batches(rng)):
        optimiser.zero_grad(set_to_none=True)
        loss = step_loss(trained, batch)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        score = distributed.from_main(float(validation_loss(model)))
    return {
        "epoch": epoch,
        "train_loss": distributed.mean(float(np.mean(losses))),
        "val_loss": score,
        "learning_rate": optimiser.param_groups[0]["lr"],
        # Wall seconds of the epoch, validation included (loss.item() waits for the GPU at
        # every step, so this is the work done, not the work queued).
        "seconds": time.perf_counter() - epoch_start,
    }


def write_loss_curve(history: list[dict], path: Path) -> None:
    """Write a run's history as a CSV (``epoch,train_loss,val_loss``): a DVC plot, and the
    training curves of the report."""
    with atomic_path(Path(path), suffix=".csv") as tmp:
        lines = ["epoch,train_loss,val_loss"]
        lines += [f"{h['epoch']},{h['train_loss']:.6g},{h['val_loss']:.6g}" for h in history]
        tmp.write_text("\n".join(lines) + "\n")


def _save(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
