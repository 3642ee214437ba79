"""GPU check: train the audio models on CUDA, score them, time them, write ``reports/gpu.md``.

One prepared command proves the GPU path whenever a GPU machine is at hand (README "On a GPU").
In a scratch folder it builds a world with the stages' own code, then

1. trains ``cnn_mse``, ``cnn_wpe``, ``cnn_contrastive``, ``hldbn``, ``hldbn_nopretrain`` and
   ``hybrid_dbn`` on the device (the models' own ``fit``, as the ``cnn`` and ``dbn`` stages call
   it) and scores them on the ``cold`` split with ``evaluate``'s functions;
2. compares each cold mAP@k with the CPU result of the same params: the committed
   ``reports/evaluation/metrics.json`` and its bootstrap interval for the default world, or a
   CPU run made by this check for any other world (``--reference cpu``, the ``--quick`` default);
3. times seconds per epoch and training windows per second against the committed CPU figures,
   and the CNN's training and inference throughput on this machine's CPU and device alike;
4. runs one epoch of the ``cnn`` stage under ``torchrun`` (NCCL on a GPU, gloo on CPUs), two
   processes first, one if that fails, and says which ran;
5. tries implicit's CUDA ALS through ``fit_wmf`` and says exactly why not where it cannot;
6. runs the ``gpu`` pytest marker (``--pytest``).

Every part runs even when one before it failed; what failed is written with its reason. The
report is rewritten after each part, so a run stopped at a time limit still leaves one.

On a GPU machine without dvc, great-expectations or implicit (see the README), the world's
validated plays, splits and WMF factors are made here first and carried (``prepare``); the
audio and the features, far too big to carry, are made there by ``synthesize`` and
``features``::

    python benchmarks/gpu_check.py prepare --to .gpucheck/prepared   # here, after dvc repro wmf
    python benchmarks/gpu_check.py --prepared .gpucheck/prepared --pytest   # on the GPU machine

CPU mode, which ``make test`` runs so that the check cannot rot between GPU runs (a tiny world,
under a minute on 2 cores)::

    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu.md
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# On a GPU machine the package is not installed (its Python is newer than the project allows):
# the checkout's src/ is imported instead, as it is by the processes this check starts.
sys.path.insert(0, str(REPO / "src"))

from musicrec import registry  # noqa: E402 - after src/ is on the path

CNN_MODELS = ("cnn_mse", "cnn_wpe", "cnn_contrastive")
DBN_MODELS = ("hldbn", "hldbn_nopretrain", "hybrid_dbn")
MODELS = CNN_MODELS + DBN_MODELS
# What ``prepare`` carries: the outputs of validate, split and wmf (the stages whose packages a
# bare GPU machine lacks), and a fingerprint of the world they were made from.
PREPARED = ("data/validated", "data/split", "data/models/wmf")


# -- the report -------------------------------------------------------------------------------
class Report:
    """Sections of ``gpu.md``, written again after every part; figures also go to ``.json``."""

    def __init__(self, path: Path, title: str):
        self.path, self.title = Path(path), title
        self.sections: list[tuple[str, list[str]]] = []
        self.figures: dict = {}

    def add(self, heading: str, lines: list[str]) -> None:
        self.sections.append((heading, lines))
        self.write()

    def write(self) -> None:
        text = [f"# {self.title}", ""]
        for heading, lines in self.sections:
            text += [f"## {heading}", "", *lines, ""]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("\n".join(text))
        tmp.replace(self.path)
        figures = self.path.with_suffix(".json")
        figures.with_name(f".{figures.name}.tmp").write_text(
            json.dumps(self.figures, indent=2, default=str)
        )
        figures.with_name(f".{figures.name}.tmp").replace(figures)


def run_part(report: Report, heading: str, part: Callable[[], list[str]]) -> bool:
    """Run one part; on failure record the exception and the last frames, and go on."""
    start = time.perf_counter()
    print(f"gpu_check: {heading} ...", flush=True)
    try:
        lines = part()
        ok = True
    except Exception as exc:  # noqa: BLE001 - every failure is a finding to report
        frames = traceback.format_exception(exc)
        lines = [
            f"**Failed**: `{type(exc).__name__}: {str(exc)[:600]}`",
            "",
            "```",
            *"".join(frames[-4:]).rstrip().splitlines()[-25:],
            "```",
        ]
        ok = False
    seconds = time.perf_counter() - start
    report.figures.setdefault("part_seconds", {})[heading] = round(seconds, 1)
    report.add(heading, [*lines, "", f"_({seconds:.0f} s)_"])
    print(f"gpu_check: {heading}: {'done' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
    return ok


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment for a process the check starts: the checkout's ``src/`` first on the
    path (the package is not installed on a GPU machine), plus ``extra``."""
    path = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def world_fingerprint(root: Path) -> dict:
    """Hashes of a world's play log and of its first audio files (sorted by name)."""
    from musicrec.io import file_digest

    audio = sorted((root / "audio").iterdir())[:5]
    return {
        "plays.tsv": file_digest(root / "plays.tsv", hashlib.sha1()),
        "audio": {p.name: file_digest(p, hashlib.sha1()) for p in audio},
    }


# -- the environment --------------------------------------------------------------------------
def environment(device) -> list[str]:
    import numpy
    import torch

    rows = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch CUDA build": torch.version.cuda or "none (CPU build)",
        "numpy": numpy.__version__,
        "CPU cores": os.cpu_count(),
        "device used": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows.update(
            {
                "GPU": torch.cuda.get_device_name(device),
                "GPU memory": f"{props.total_memory / 2**30:.0f} GiB",
                "multiprocessors": props.multi_processor_count,
                "bf16 supported": torch.cuda.is_bf16_supported(),
            }
        )
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            rows["driver"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            rows["driver"] = f"nvidia-smi did not answer ({exc})"
        try:
            rows["NCCL"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception as exc:  # noqa: BLE001 - reported
            rows["NCCL"] = f"unknown ({exc})"
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows.items()]]


# -- the world --------------------------------------------------------------------------------
def stage(name: str, *args: str) -> float:
    """Run ``musicrec <name>`` in this process (the stage's own main) and time it."""
    from musicrec.cli import main as cli

    start = time.perf_counter()
    code = cli([name, *args])
    if code != 0:
        raise RuntimeError(f"musicrec {name} exited with {code}")
    return time.perf_counter() - start


def build_world(work: Path, params: dict, prepared: Path | None, figures: dict) -> list[str]:
    """synthesize (and validate, split, wmf unless ``prepared``), then features, in ``work``."""
    import yaml

    # Absolute paths: the feature workers (reused between runs in one process) may have
    # started in another folder than this one.
    params = {**params, "data": {**params["data"], "root": str(work / "data" / "synthetic")}}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seconds = {}
    with working_directory(work):
        seconds["synthesize"] = stage("synthesize")
        if prepared is None:
            for name in ("validate", "split", "tune", "wmf"):
                seconds[name] = stage(name)
            source = "validate, split, tune and wmf run here"
        else:
            for relative in PREPARED:
                shutil.copytree(prepared / relative, work / relative)
            source = f"validate, split and wmf carried from `{prepared.name}` (`prepare`)"
        seconds["features"] = stage("features", "--cache", str(work / ".cache" / "features"))
    figures["world_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    synth = params["synthesize"]
    lines = [
        f"World: {synth['n_songs']} songs of {synth['clip_seconds']} s, {synth['n_users']} "
        f"listeners (seed {synth['seed']}); {source}.",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in seconds.items()],
    ]
    if prepared is not None:
        expected = json.loads((prepared / "fingerprint.json").read_text())
        found = world_fingerprint(work / "data" / "synthetic")
        same_log = expected["plays.tsv"] == found["plays.tsv"]
        same_audio = sum(expected["audio"].get(k) == v for k, v in found["audio"].items())
        figures["world_matches_prepared"] = {"plays": same_log, "audio_files": same_audio}
        lines += [
            "",
            f"The world synthesised here matches the one the carried files were made from: "
            f"play log {'identical' if same_log else 'DIFFERENT'}; {same_audio} of "
            f"{len(found['audio'])} audio files compared byte-identical.",
        ]
        if not same_log:
            raise RuntimeError("the synthesised play log differs from the prepared world's")
    return lines


# -- training and scoring ---------------------------------------------------------------------
def train_models(work: Path, params: dict, device: str, tag: str) -> dict:
    """Fit the five models on ``device`` as the cnn and dbn stages do; save them under
    ``work/data/models_<tag>``. Returns per-model timing figures."""
    import numpy as np

    from musicrec.audio import ClipSpec
    from musicrec.models.cnn import CNNConfig, CNNModel
    from musicrec.models.content import load_content_data, save_content_model
    from musicrec.models.dbn import DBNConfig, fit_models
    from musicrec.models.training import TrainConfig
    from musicrec.stage import read_shared

    data_dir = work / "data"
    data = load_content_data(data_dir / "split", data_dir / "models" / "wmf", data_dir / "features")
    features = {
        k: np.load(data_dir / "features" / f"{k}.npy", mmap_mode="r") for k in ("logmel", "mfcc")
    }
    out, checkpoints = data_dir / f"models_{tag}", work / ".cache" / f"checkpoints_{tag}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(checkpoints, ignore_errors=True)
    cnn_params = {k: v for k, v in params["cnn"].items() if k not in ("objectives", "controls")}
    dbn_params = {k: v for k, v in params["dbn"].items() if k != "models"}
    cnn_train = TrainConfig(**{**params["cnn_training"], "device": device, "processes": 1})
    dbn_train = TrainConfig(**{**params["dbn_training"], "device": device, "processes": 1})

    def fitted():  # as the stages fit them: cnn's objectives, then dbn's kinds
        for name in CNN_MODELS:
            model = CNNModel(
                name.removeprefix("cnn_"),
                CNNConfig(**cnn_params),
                cnn_train,
                read_shared(params, "features", ClipSpec).clips,
            )
            yield model.fit(features, data, checkpoints / name)
        dbn_cfg = DBNConfig(**dbn_params)
        yield from fit_models(DBN_MODELS, dbn_cfg, dbn_train, features, data, checkpoints)

    timings: dict = {}
    start = time.perf_counter()
    for model in fitted():
        save_content_model(out, model, features, data)
        epochs = [h["seconds"] for h in model.history]
        timings[model.name] = {
            "fit_seconds": round(time.perf_counter() - start, 2),
            "epochs": len(epochs),
            "seconds_per_epoch": round(float(np.median(epochs)), 4),
        }
        if model.name.startswith("cnn_"):
            windows = len(data.train_songs) * int(params["cnn"]["windows_per_song"])
            timings[model.name]["training_windows_per_second"] = round(
                windows / np.median(epochs), 1
            )
        start = time.perf_counter()
    return timings


def score_cold(work: Path, params: dict, tag: str) -> tuple[dict, dict]:
    """Cold mAP@k of the models under ``models_<tag>`` with ``evaluate``'s own functions and
    params (bootstrap, seed), so the intervals compare with the pipeline's."""
    import numpy as np

    from musicrec.dataset import load_splits
    from musicrec.models.vectors import load_model

    models = []
    for name in MODELS:
        model = load_model(work / "data" / f"models_{tag}" / name)
        model.splits = ["cold"]
        models.append(model)
    song_targets = np.load(work / "data" / "models" / "wmf" / "song_targets.npy")
    return evaluate_with_params(load_splits(work / "data" / "split"), models, params, song_targets)


def evaluate_with_params(splits, models: list, params: dict, song_targets=None) -> tuple:
    """``evaluate_models`` with the ``evaluate`` params, read as the stage reads them."""
    from musicrec.evaluate import evaluate_models

    cfg = params["evaluate"]
    evaluation = evaluate_models(
        splits,
        models,
        int(cfg["map_k"]),
        sorted(int(k) for k in cfg["ks"]),
        int(cfg["bootstrap"]),
        int(cfg["seed"]),
        song_targets,
        int(cfg.get("max_users", 0)),
    )
    return evaluation.means, evaluation.intervals


def compare_line(name: str, device_value: float, ref: tuple, dev_interval) -> str:
    """One table row: device mean and interval against the reference mean and interval."""
    ref_mean, (low, high) = ref
    inside = low <= device_value <= high
    verdict = (
        "inside the CPU interval" if inside else f"outside it by {device_value - ref_mean:+.4f}"
    )
    return (
        f"| {name} | {device_value:.4f} [{dev_interval[0]:.4f}, {dev_interval[1]:.4f}] | "
        f"{ref_mean:.4f} [{low:.4f}, {high:.4f}] | {device_value - ref_mean:+.4f} | {verdict} |"
    )


def models_part(work: Path, params: dict, device, args, report: Report) -> list[str]:
    metric = registry.map_key(params["evaluate"]["map_k"])
    timings = train_models(work, params, device.type, device.type)
    means, intervals = score_cold(work, params, device.type)
    report.figures["train"] = timings
    report.figures["cold"] = {m: means[m]["cold"] for m in MODELS}
    same_inputs = args.prepared / "reference" if args.prepared is not None else None
    if args.reference == "committed" and same_inputs is not None and same_inputs.exists():
        # The CPU pipeline run on exactly the carried splits and WMF factors.
        ref_means = json.loads((same_inputs / "metrics.json").read_text())
        ref_intervals = json.loads((same_inputs / "intervals.json").read_text())
        ref_name = (
            "the CPU pipeline run (2 cores) that made the carried splits and WMF factors, "
            "and its bootstrap interval"
        )
        ref_timings = committed_cpu_timings(same_inputs)
    elif args.reference == "committed":
        ref_means = json.loads((REPO / "reports" / "evaluation" / "metrics.json").read_text())
        ref_intervals = json.loads((REPO / "reports" / "evaluation" / "intervals.json").read_text())
        ref_name = "committed `reports/evaluation/metrics.json` (CPU, 2 cores; its interval)"
        ref_timings = committed_cpu_timings(REPO / "reports" / "timings")
    else:
        cpu_timings = train_models(work, params, "cpu", "reference")
        ref_means, ref_intervals = score_cold(work, params, "reference")
        ref_name = "a CPU run of the same params made by this check, on this machine"
        ref_timings = {m: t["seconds_per_epoch"] for m, t in cpu_timings.items()}
        report.figures["reference_train"] = cpu_timings
    committed = json.loads((REPO / "reports" / "evaluation" / "metrics.json").read_text())
    report.figures["reference_cold"] = {m: ref_means[m]["cold"] for m in MODELS}
    rows = []
    outside = 0
    for m in MODELS:
        value = means[m]["cold"][metric]
        ref = (ref_means[m]["cold"][metric], ref_intervals[m]["cold"][metric])
        outside += not (ref[1][0] <= value <= ref[1][1])
        row = compare_line(m, value, ref, intervals[m]["cold"][metric])
        rows.append(f"{row} {committed.get(m, {}).get('cold', {}).get(metric, float('nan')):.4f} |")
    report.figures["cold_outside_reference_interval"] = outside
    lines = [
        f"Cold {metric} on `{device.type}` against {ref_name}; 95% bootstrap intervals over users "
        f"({params['evaluate']['bootstrap']} resamples, seed {params['evaluate']['seed']}).",
        "",
        f"| model | {device.type} | CPU reference | difference | verdict | committed CPU run |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"{len(MODELS) - outside} of {len(MODELS)} models inside the CPU interval. The "
        "interval is over users only: it holds the evaluation's sampling error, not training's "
        "run-to-run spread, which the last column shows (the committed run, on an earlier WMF "
        "fit of the same plays, against the reference).",
        "",
        "Training on the device: the models' own `fit`, early stopping included (epochs run, "
        "median wall seconds per epoch with validation, training windows per second of the "
        "CNNs from that median):",
        "",
        "| model | epochs | s/epoch | CPU s/epoch (reference) | speed-up | windows/s | fit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in MODELS:
        t, ref_seconds = timings[m], ref_timings.get(m)
        speed = f"{ref_seconds / t['seconds_per_epoch']:.1f}x" if ref_seconds else "n/a"
        lines.append(
            f"| {m} | {t['epochs']} | {t['seconds_per_epoch']:.3f} | "
            f"{f'{ref_seconds:.3f}' if ref_seconds else 'n/a'} | {speed} | "
            f"{t.get('training_windows_per_second', '')} | {t['fit_seconds']:.1f} |"
        )
    if args.reference == "committed":
        lines += [
            "",
            "CPU s/epoch of the reference run is the `cnn` (`dbn`) stage's wall time in "
            "`reports/timings/`, less its searches' time on settings not kept, divided by its "
            "epochs, over its models: loading and saving "
            "included, so it flatters the GPU a little; the throughput part below compares "
            "like with like.",
        ]
    return lines


def committed_cpu_timings(timings_dir: Path) -> dict:
    """CPU seconds per epoch of a pipeline run: stage wall time, less the time its searches
    spent on settings not kept (``<model>_search_seconds``), over its epochs."""
    out = {}
    for stage_name, names in (("cnn", CNN_MODELS), ("dbn", DBN_MODELS)):
        path = timings_dir / f"{stage_name}.json"
        if not path.exists():
            continue
        timing = json.loads(path.read_text())
        # Every model the stage trained, shuffled controls included: all share its wall time.
        epochs = sum(int(v) for k, v in timing.items() if k.endswith("_epochs"))
        searching = sum(float(v) for k, v in timing.items() if k.endswith("_search_seconds"))
        for n in names:
            if epochs:
                out[n] = (timing["wall_seconds"] - searching) / epochs
    return out


# -- throughput -------------------------------------------------------------------------------
def throughput_part(params: dict, device, args, report: Report) -> list[str]:
    """The CNN's training windows/s and inference clips/s on this CPU and on the device, with
    the functions of ``benchmarks/cnn_throughput.py``."""
    bench = runpy.run_path(str(REPO / "benchmarks" / "cnn_throughput.py"))
    clip_frames = bench["clip_frames"](params["features"])
    batch = int(params["cnn_training"]["batch_size"])
    steps, clips = (2, 4) if args.quick else (30, 128)

    def label(name: str) -> str:
        return f"cpu ({os.cpu_count()} cores)" if name == "cpu" else name

    rows = {}
    for name in dict.fromkeys(["cpu", device.type]):
        model = bench["build_model"](params, name)
        rows[name] = (
            bench["training_windows_per_second"](model, batch, steps),
            bench["inference_clips_per_second"](model, clip_frames, clips),
        )
    report.figures["throughput"] = {
        k: {"windows_per_s": w, "clips_per_s": c} for k, (w, c) in rows.items()
    }
    committed = None if args.quick else committed_throughput()
    lines = [
        f"`benchmarks/cnn_throughput.py`'s functions, {steps} timed steps of batches of {batch} "
        f"windows, {clips} clips of {clip_frames} frames, on this machine:",
        "",
        "| device | training windows/s | inference clips/s |",
        "|---|---|---|",
        *[f"| {label(k)} | {w:.0f} | {c:.1f} |" for k, (w, c) in rows.items()],
    ]
    if committed:
        lines.append(
            f"| committed CPU figure (2 cores, `reports/benchmarks.md`) | {committed[0]:.0f} | "
            f"{committed[1]:.1f} |"
        )
    if device.type != "cpu":
        w, c = rows[device.type]
        lines += [
            "",
            f"{device.type} / this CPU: {w / rows['cpu'][0]:.1f}x training, "
            f"{c / rows['cpu'][1]:.1f}x inference"
            + (
                f"; {device.type} / the committed 2-core CPU: {w / committed[0]:.1f}x training, "
                f"{c / committed[1]:.1f}x inference."
                if committed
                else "."
            ),
        ]
    return lines


def committed_throughput() -> tuple[float, float] | None:
    text = (REPO / "reports" / "benchmarks.md").read_text()
    match = re.search(r"^\| cpu \| ([\d.]+) \| ([\d.]+) \|$", text, re.MULTILINE)
    return (float(match.group(1)), float(match.group(2))) if match else None


# -- torchrun ---------------------------------------------------------------------------------
def torchrun_part(work: Path, params: dict, device, report: Report, seconds_left) -> list[str]:
    """One epoch of ``musicrec cnn`` (cnn_mse) under torchrun: 2 processes, else 1."""
    import yaml

    lines = []
    env = subprocess_env(WANDB_MODE="disabled", NCCL_DEBUG="WARN")  # NCCL says why it refuses
    results = {}
    for processes in (2, 1):
        run_dir = work / f"torchrun_{processes}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir()
        p = json.loads(json.dumps(params))
        p["cnn"]["objectives"], p["cnn"]["controls"] = ["mse"], []
        p["cnn_training"].update(epochs=1, processes=processes, device=device.type)
        (run_dir / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        folders = ["--split", str(work / "data/split"), "--features", str(work / "data/features")]
        command = [sys.executable, "-m", "musicrec", "cnn", *folders]
        command += ["--models", str(run_dir / "models"), "--checkpoints", str(run_dir / "ckpt")]
        # processes = 1 would train in this process without a group; name torchrun instead.
        if processes == 1:
            command[1:2] = [
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node=1",
                "-m",
            ]
        # The stage reads data/models/wmf relative to --models' parent: link it in.
        (run_dir / "models").mkdir()
        (run_dir / "models" / "wmf").symlink_to(work / "data" / "models" / "wmf")
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                cwd=run_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=max(30, min(150, seconds_left() - 60)),
            )
            code, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            code, output = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
            output = output.decode() if isinstance(output, bytes) else output
        seconds = time.perf_counter() - start
        timing_path = run_dir / "reports" / "timings" / "cnn.json"
        timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
        results[processes] = {"exit": code, "seconds": round(seconds, 1), **timing}
        text = [line for line in output.splitlines() if "%|" not in line]
        # The reason is usually far from the end (torchrun's summary comes last): keep the
        # lines that name an error or NCCL's warnings, then the end.
        telling = [line for line in text if re.search(r"Error|NCCL WARN|Duplicate|refuse", line)]
        tail = list(dict.fromkeys(telling[:12] + text[-6:]))
        ok = code == 0 and timing.get("world_size") == processes
        lines += [
            f"**{processes} process{'es' if processes > 1 else ''}**: exit {code} in "
            f"{seconds:.0f} s; the stage's timing record says world size "
            f"{timing.get('world_size')}, backend {timing.get('backend')}, "
            f"device {timing.get('device')}.",
            "",
        ]
        if ok:
            break
        lines += ["```", *[line[:300] for line in tail], "```", ""]
    report.figures["torchrun"] = results
    ran = [n for n, r in results.items() if r["exit"] == 0 and r.get("world_size") == n]
    if not ran:
        raise RuntimeError("torchrun: neither 2 processes nor 1 trained an epoch")
    if ran == [2] and device.type == "cuda":
        lines.append(f"Two processes shared the one GPU on {results[2]['backend']}.")
    elif ran == [2]:
        lines.append(f"Two processes trained together on {results[2]['backend']}.")
    else:
        lines.append(
            f"Two processes did not run (above); world size 1 on {results[1]['backend']} did."
        )
    return lines


# -- implicit's CUDA ALS ----------------------------------------------------------------------
def implicit_part(work: Path, params: dict, device, report: Report) -> list[str]:
    """implicit's CUDA ALS through ``fit_wmf``, against its CPU ALS on the same plays."""
    import numpy as np

    from musicrec.models.factorization import load_cuda_libraries

    preloaded = load_cuda_libraries()  # what fit_wmf does first
    import implicit
    import implicit.gpu

    lines = [
        f"implicit {implicit.__version__}: `HAS_CUDA` = {implicit.gpu.HAS_CUDA}, `HAS_RMM` = "
        f"{implicit.gpu.HAS_RMM}"
        + (f" (preloaded {', '.join(preloaded)})" if preloaded else "")
        + ".",
        "",
    ]
    figures = {"has_cuda": implicit.gpu.HAS_CUDA, "has_rmm": implicit.gpu.HAS_RMM}
    report.figures["implicit"] = figures
    if not implicit.gpu.HAS_CUDA:
        reasons = []
        for module in ("rmm", "implicit.gpu._cuda"):
            try:
                __import__(module)
                reasons.append(f"`import {module}` works")
            except Exception as exc:  # noqa: BLE001 - the reason is the finding
                reasons.append(f"`import {module}` fails: `{type(exc).__name__}: {exc}`")
        figures["why_not"] = reasons
        return [*lines, "CUDA ALS could not run: " + "; ".join(reasons) + "."]
    from musicrec.dataset import load_splits
    from musicrec.models import factorization
    from musicrec.models.vectors import ModelVectors

    splits = load_splits(work / "data" / "split")
    cfg = factorization.WMFConfig(**params["wmf"])
    fits = {}
    for name, use_gpu in (("gpu", True), ("cpu", False)):
        implicit.gpu.HAS_CUDA = use_gpu  # fit_wmf asks implicit's factory for this
        try:
            start = time.perf_counter()
            users, songs = factorization.fit_wmf(splits.matrices["train"], cfg)
            fits[name] = (time.perf_counter() - start, users, songs)
        finally:
            implicit.gpu.HAS_CUDA = True
    models = [
        ModelVectors(f"wmf_{n}", "", ["warm"], u.astype(np.float32), s.astype(np.float32))
        for n, (_, u, s) in fits.items()
    ]
    means, intervals = evaluate_with_params(splits, models, params)
    metric = registry.map_key(params["evaluate"]["map_k"])
    for n, (seconds, _, _) in fits.items():
        figures[n] = {
            "seconds": round(seconds, 2),
            "warm_" + metric: means[f"wmf_{n}"]["warm"][metric],
        }
    return lines + [
        f"`fit_wmf` on the training plays ({cfg.factors} factors, {cfg.iterations} iterations):",
        "",
        f"| ALS | seconds | warm {metric} [95% interval] |",
        "|---|---|---|",
        *[
            f"| {n} | {seconds:.2f} | {means[f'wmf_{n}']['warm'][metric]:.4f} "
            f"{intervals[f'wmf_{n}']['warm'][metric]} |"
            for n, (seconds, _, _) in fits.items()
        ],
    ]


# -- the gpu pytest marker --------------------------------------------------------------------
def pytest_part(report: Report) -> list[str]:
    env = subprocess_env()
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, "tests/models/test_gpu.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    tail = done.stdout.strip().splitlines()[-15:]
    report.figures["pytest_gpu"] = {"exit": done.returncode, "summary": tail[-1] if tail else ""}
    if done.returncode != 0:
        raise RuntimeError(
            "pytest -m gpu failed:\n" + "\n".join(tail + done.stderr.splitlines()[-5:])
        )
    return ["`pytest -m gpu tests/models/test_gpu.py`:", "", "```", *tail, "```"]


# -- prepare ----------------------------------------------------------------------------------
def prepare(project: Path, target: Path, params_path: Path, reference: Path | None) -> int:
    """Copy validate's, split's and wmf's outputs and the world's fingerprint for carrying;
    with ``reference``, a reports folder of a CPU pipeline run on exactly these outputs (its
    ``evaluation/metrics.json``, ``evaluation/intervals.json`` and ``timings/``)."""
    import yaml

    from musicrec.io import atomic_path, refuse_output_over_inputs

    params = yaml.safe_load(params_path.read_text())
    root = project / params["data"]["root"]
    refuse_output_over_inputs(target, {"the project": project}, either_way=False)
    refuse_output_over_inputs(target, {"its data": project / "data"}, either_way=True)
    # Replaced whole, and only if an earlier prepare wrote it: never a folder of the user's.
    with atomic_path(target) as tmp:
        for relative in PREPARED:
            shutil.copytree(project / relative, tmp / relative)
        (tmp / "fingerprint.json").write_text(json.dumps(world_fingerprint(root), indent=2))
        shutil.copy(params_path, tmp / "params.yaml")
        if reference is not None:
            (tmp / "reference").mkdir()
            for relative in (
                "evaluation/metrics.json",
                "evaluation/intervals.json",
                "timings/cnn.json",
                "timings/dbn.json",
            ):
                shutil.copy(reference / relative, tmp / "reference" / Path(relative).name)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"gpu_check prepare: {target} ({size / 2**20:.1f} MB) from {project}")
    return 0


# -- main -------------------------------------------------------------------------------------
def check_params(args) -> dict:
    """The params the check trains with: the project's, or the tiny world's with ``--quick``;
    the machine's cores for the data stages; W&B off."""
    import yaml

    from musicrec.tiny import tiny_params

    if args.quick:
        params = tiny_params(args.params)
    elif args.prepared is not None:
        params = yaml.safe_load((args.prepared / "params.yaml").read_text())
    else:
        params = yaml.safe_load(args.params.read_text())
    params["data"]["root"] = "data/synthetic"
    cores = os.cpu_count() or 1
    for section in ("synthesize", "validate", "features"):
        params[section]["n_jobs"] = min(cores, 16)
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=["check", "prepare"], default="check")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="the tiny world (CPU mode)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument(
        "--prepared", type=Path, help="validated/split/wmf outputs made by `prepare`"
    )
    parser.add_argument(
        "--reference",
        choices=["committed", "cpu"],
        help="CPU result compared with: committed metrics (default world) or a CPU run here "
        "(default: cpu with --quick, else committed)",
    )
    parser.add_argument("--pytest", action="store_true", help="also run `pytest -m gpu`")
    parser.add_argument(
        "--budget",
        type=float,
        default=450.0,
        help="seconds: a part that would start later is skipped, saying so (default 450)",
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], help="parts to leave out (torchrun, implicit, throughput)"
    )
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "gpu.md")
    parser.add_argument(
        "--to", type=Path, default=REPO / ".gpucheck" / "prepared", help="prepare: where"
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=REPO,
        help="prepare: the project whose data/ (after `dvc repro wmf`) is carried",
    )
    parser.add_argument(
        "--reference-reports",
        type=Path,
        help="prepare: reports/ of a CPU pipeline run on the world being carried",
    )
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return prepare(args.project, args.to, args.params, args.reference_reports)
    args.reference = args.reference or ("cpu" if args.quick else "committed")
    if args.prepared is not None:
        args.prepared = args.prepared.resolve()  # the world is built in another folder
    saved = dict(os.environ)
    try:
        # The stages run in this process: no W&B runs for a check. Restored after, so that
        # a caller (a test session) keeps its own settings.
        os.environ.update(WANDB_MODE="disabled", DO_NOT_TRACK="1")
        os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
        return check(args, argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run the check's parts (``main`` has parsed the command line)."""
    import torch

    from musicrec.models.training import pick_device

    device = pick_device(args.device)
    params = check_params(args)
    started = time.perf_counter()
    report = Report(
        args.out, f"GPU check: {device.type}" + (" (quick, tiny world)" if args.quick else "")
    )
    report.figures.update(device=str(device), torch=torch.__version__, quick=args.quick)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: working in {work}; report -> {args.out}", flush=True)
    report.add(
        "How this was made",
        [
            f"`python benchmarks/gpu_check.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
            f"on {time.strftime('%Y-%m-%d')}.",
        ],
    )

    def seconds_left() -> float:
        return args.budget - (time.perf_counter() - started)

    def part(heading: str, function, needs: bool = True, skip_name: str = "") -> bool:
        if not needs or skip_name in args.skip:
            return False
        if seconds_left() <= 0:
            report.add(heading, [f"**Skipped**: the {args.budget:.0f}-s budget was spent."])
            return False
        return run_part(report, heading, function)

    part("Machine", lambda: environment(device))
    world_ok = part("World", lambda: build_world(work, params, args.prepared, report.figures))
    part("Models on the device", lambda: models_part(work, params, device, args, report), world_ok)
    part(
        "CNN throughput", lambda: throughput_part(params, device, args, report), True, "throughput"
    )
    part(
        "torchrun",
        lambda: torchrun_part(work, params, device, report, seconds_left),
        world_ok,
        "torchrun",
    )
    part(
        "implicit's CUDA ALS",
        lambda: implicit_part(work, params, device, report),
        world_ok,
        "implicit",
    )
    part("gpu marker tests", lambda: pytest_part(report), args.pytest)
    total = time.perf_counter() - started
    report.figures["total_seconds"] = round(total, 1)
    failed = [
        h
        for h, lines in report.sections
        if lines and lines[0].startswith(("**Failed", "**Skipped"))
    ]
    report.figures["failed_parts"] = failed
    report.add(
        "Summary",
        [
            f"{len(report.sections) - 1} parts in {total:.0f} s; failed or skipped: "
            f"{', '.join(failed) or 'none'}."
        ],
    )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"gpu_check: {total:.0f} s; failed parts: {failed or 'none'} -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
