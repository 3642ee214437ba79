"""CNN throughput: training windows per second and inference clips per second.

Builds the ``cnn`` stage's network from ``params.yaml`` (``cnn`` and ``features`` sections)
and times it on random log-mel input of the default shape, on the CPU and, where there is one,
on the GPU (bf16 autocast, as the stage trains there). Each device is timed in the same run, so
the GPU/CPU ratio compares like with like. The figures go to ``reports/benchmarks.md`` (its
``cnn_throughput`` section is replaced; other benchmarks keep theirs).

    python benchmarks/cnn_throughput.py [--steps 20] [--clips 64] [--out reports/benchmarks.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import numpy as np
import torch

from musicrec.audio_features import FeatureConfig
from musicrec.io import load_params, replace_section
from musicrec.models.cnn import CNNConfig, CNNModel
from musicrec.models.training import TrainConfig


def build_model(params: dict, device: str) -> CNNModel:
    cnn = dict(params["cnn"])
    cnn.pop("objectives", None)
    cnn.pop("controls", None)
    train_cfg = TrainConfig(**{**params["cnn_training"], "device": device})
    model = CNNModel("mse", CNNConfig(**cnn), train_cfg)
    n_mels = int(params["features"]["n_mels"])
    n_out = int(params["wmf"]["factors"])
    model.scales = {
        "mel_mean": np.zeros(n_mels, np.float32),
        "mel_std": np.ones(n_mels, np.float32),
        "y_mean": np.zeros(n_out, np.float32),
        "y_std": np.ones(n_out, np.float32),
    }
    model._build(n_mels, n_out)
    return model


def clip_frames(features: dict) -> int:
    """Frames of a clip under the ``features`` params, as the features stage counts them."""
    fields = {f.name for f in dataclasses.fields(FeatureConfig)}
    return FeatureConfig(**{k: v for k, v in features.items() if k in fields}).n_frames


def training_windows_per_second(model: CNNModel, batch_size: int, steps: int) -> float:
    """Forward, backward and an AdamW step on batches of random windows."""
    n_mels, width = len(model.scales["mel_mean"]), model.cfg.window_frames
    optimiser = torch.optim.AdamW(model.net.parameters(), lr=1e-3)
    x = torch.randn(batch_size, n_mels, width)
    y = torch.randn(batch_size, len(model.scales["y_mean"]), device=model.device)
    model.net.train()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model._forward(x.to(model.device)), y)
        loss.backward()
        optimiser.step()

    for _ in range(3):  # warm-up: allocations, kernel selection
        step()
    _sync(model.device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(model.device)
    return steps * batch_size / (time.perf_counter() - start)


def inference_clips_per_second(model: CNNModel, clip_frames: int, n_clips: int) -> float:
    """Whole-clip predictions (windows spanning the clip, averaged), as the stage predicts."""
    shape = (n_clips, len(model.scales["mel_mean"]), clip_frames)
    features = {"logmel": np.random.default_rng(0).normal(size=shape).astype(np.float32)}
    model.predict(features, np.arange(min(4, n_clips)))  # warm-up
    _sync(model.device)
    start = time.perf_counter()
    model.predict(features, np.arange(n_clips))
    _sync(model.device)
    return n_clips / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--clips", type=int, default=64, help="clips predicted")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    torch.manual_seed(0)
    frames = clip_frames(params["features"])
    batch = int(params["cnn_training"]["batch_size"])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = {}
    for device in devices:
        model = build_model(params, device)
        rows[device] = (
            training_windows_per_second(model, batch, args.steps),
            inference_clips_per_second(model, frames, args.clips),
        )
        print(f"{device}: {rows[device][0]:.0f} training windows/s, {rows[device][1]:.1f} clips/s")
    name = torch.cuda.get_device_name(0) if "cuda" in rows else ""
    lines = [
        "## CNN throughput",
        "",
        f"`python benchmarks/cnn_throughput.py` (torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads on {platform.processor() or platform.machine()}"
        f"{', GPU ' + name if name else ', no GPU'}); the default `cnn` params: windows of "
        f"{params['cnn']['window_frames']} frames, batches of {batch}, clips of {frames} "
        "frames.",
        "",
        "| device | training windows/s | inference clips/s |",
        "|---|---|---|",
    ]
    lines += [f"| {d} | {t:.0f} | {c:.1f} |" for d, (t, c) in rows.items()]
    if "cuda" in rows:
        lines += [
            "",
            f"GPU/CPU: {rows['cuda'][0] / rows['cpu'][0]:.1f}x training, "
            f"{rows['cuda'][1] / rows['cpu'][1]:.1f}x inference.",
        ]
    replace_section(args.out, "cnn_throughput", "\n".join(lines))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
