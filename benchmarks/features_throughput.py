"""Feature throughput: the ``features`` stage against a single-process librosa loop.

Both compute the same features (the clip decoded and resampled, log-mel, MFCC and its two
deltas; ``features`` params from ``params.yaml``) for the same ``--songs`` files of the data
folder, each from a cold start (an empty feature cache). The baseline is the loop a user
would write first: ``librosa.load`` then librosa's feature calls, one song after another, in
this process. The stage runs in one process (what its single-precision computation gains
per song), with ``--n-jobs`` worker processes (``features.backend: local``), and with
``--dask`` also on a local Dask cluster. Reported as seconds of audio per second of wall
time, and the ratio. Figures go to the ``features_throughput`` section of
``reports/benchmarks.md``.

    python benchmarks/features_throughput.py [--songs 300] [--n-jobs 2] [--dask]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from musicrec.audio_features import FeatureConfig, librosa_features
from musicrec.features import compute_features
from musicrec.io import load_params, read_tsv, replace_section

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(".cache/numba").resolve()))


def librosa_loop(
    paths: list[Path], cfg: FeatureConfig
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """The plain baseline: one song after another, each distinct clip read and computed with
    librosa's own calls (a clip repeated in a short file is computed once, as the stage does).
    Returns the features and the seconds of audio computed."""
    import librosa

    out, audio_seconds = [], 0.0
    for path in paths:
        windows = cfg.clip_spec.windows(sf.info(str(path)).duration)
        computed: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = {}
        for start, length in windows:
            if (start, length) not in computed:
                y, _ = librosa.load(
                    path, sr=cfg.sample_rate, mono=True, offset=start, duration=length,
                    res_type="soxr_hq",
                )  # fmt: skip
                y = librosa.util.fix_length(y, size=cfg.n_samples)
                computed[(start, length)] = librosa_features(y, cfg)
                audio_seconds += length
        parts = [computed[w] for w in windows]
        logmel, mfcc = (np.hstack([part[i] for part in parts]) for i in (0, 1))
        out.append((logmel.astype(np.float16), mfcc.astype(np.float16)))
    return out, audio_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=300, help="files timed")
    parser.add_argument("--n-jobs", type=int, default=2, help="the stage's worker processes")
    parser.add_argument("--dask", action="store_true", help="also time the dask backend")
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    args = parser.parse_args(argv)
    params = load_params(args.project / "params.yaml")
    section = {
        k: v for k, v in params["features"].items() if k in FeatureConfig.__dataclass_fields__
    }
    cfg = FeatureConfig(**section)
    root = args.project / params["data"]["root"]
    validated = args.project / "data" / "validated" / "songs.tsv"
    if validated.exists():
        songs = read_tsv(validated).head(args.songs)
    else:
        files = sorted((root / "audio").iterdir())[: args.songs]
        songs = pd.DataFrame(
            {"song_id": [f.stem for f in files], "path": [f"audio/{f.name}" for f in files]}
        )
    paths = [root / rel for rel in songs["path"]]
    # librosa's first call compiles (numba) or loads its cache: not part of either figure.
    librosa_loop(paths[:1], cfg)
    runs: dict[str, float] = {}
    start = time.perf_counter()
    baseline, audio_seconds = librosa_loop(paths, cfg)
    runs["librosa loop, 1 process (baseline)"] = time.perf_counter() - start
    stage_runs = [
        ("local", 1, "features stage, 1 process"),
        ("local", args.n_jobs, f"features stage, {args.n_jobs} processes"),
    ]
    if args.dask:
        stage_runs.append(
            ("dask", args.n_jobs, f"features stage, dask LocalCluster of {args.n_jobs}")
        )
    with tempfile.TemporaryDirectory() as folder:
        for run, (backend, n_jobs, label) in enumerate(stage_runs):
            out, cache = Path(folder) / f"out{run}", Path(folder) / f"cache{run}"
            start = time.perf_counter()
            compute_features(root, songs, cfg, out, cache, n_jobs, backend)
            runs[label] = time.perf_counter() - start
            # The same features as the baseline's, to float32 rounding: stored as float16, a
            # value may round the other way, one float16 step (1/16 dB near the -100 dB floor).
            for name, column in (("logmel", 0), ("mfcc", 1)):
                stage = np.load(out / f"{name}.npy", mmap_mode="r")
                for row, song in enumerate(baseline):
                    step = np.spacing(np.abs(song[column])).astype(np.float32)
                    difference = np.abs(stage[row].astype(np.float32) - song[column])
                    if not (difference <= step + 1e-3).all():
                        raise AssertionError(f"{label}: {name} of song {row} differs")
    base = runs["librosa loop, 1 process (baseline)"]
    lines = [
        "## Feature throughput",
        "",
        f"`python benchmarks/features_throughput.py --songs {len(paths)} --n-jobs {args.n_jobs}"
        f"{' --dask' if args.dask else ''}`: {len(paths)} songs of {cfg.clips} clips of "
        f"{cfg.clip_seconds:g} s ({audio_seconds:.0f} s of distinct audio) from "
        f"`{params['data']['root']}`, cold feature cache, on {os.cpu_count()} cores.",
        "",
        "| run | wall s | audio s per s | vs baseline |",
        "|---|---|---|---|",
    ]
    for label, seconds in runs.items():
        lines.append(
            f"| {label} | {seconds:.1f} | {audio_seconds / seconds:.0f} | {base / seconds:.2f}x |"
        )
    replace_section(args.out, "features_throughput", "\n".join(lines))
    print("\n".join(lines[4:]))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
