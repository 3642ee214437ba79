"""Recommend latency: top-500 for one listener over 100k and 1M songs, and new-song per file.

**Top-500.** A :class:`musicrec.recommend.Recommender` is given random factors of the default
size (``wmf.factors`` dimensions, float32) for ``--users`` listeners with 30 training plays each
and a catalogue of 100,000 or 1,000,000 songs, and ``for_user(user, 500)`` is timed for
``--queries`` random listeners: the real method, from the matrix-vector product to the table of
500 songs with their metadata. The baseline, timed in the same run on the same queries, ranks by
a full ``argsort`` of the scores instead of :func:`musicrec.recommend.top_n`'s partition.

**new-song.** Needs the artifacts of a ``dvc repro`` in ``--project`` (the default world's).
Catalogue clips are looped into 30-s files in each supported format; after the model is loaded
(``Recommender.warm_up``), ``new_song`` is timed per file: decoding, features, prediction,
listeners and similar songs. The baseline is the ``features`` stage's own work on the same file
(decode + log-mel + MFCC): the part that is not the model.

Figures go to the ``recommend_latency`` section of ``reports/benchmarks.md``.

    python benchmarks/recommend_latency.py [--queries 200] [--project .]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import soundfile as sf

from musicrec.io import load_params, replace_section
from musicrec.models.vectors import ModelVectors
from musicrec.recommend import Recommender

# librosa's compiled code is cached where `musicrec` keeps it, not compiled again here.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(".cache/numba").resolve()))

FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
           "mp3": ("MP3", "MPEG_LAYER_III")}  # fmt: skip


def synthetic_recommender(n_songs: int, n_users: int, dim: int, seed: int = 0) -> Recommender:
    """A Recommender over random factors, its artifacts set in memory instead of read."""
    rng = np.random.default_rng(seed)
    recommender = Recommender(Path("."))
    ids = np.char.add("S", np.arange(n_songs).astype(str))
    recommender.songs = pd.DataFrame(  # cached_property: an assignment replaces the read
        {"song_id": ids, "role": "warm", "title": np.char.add("Track ", ids), "artist": "A"}
    )
    recommender.users = pd.DataFrame(
        {"user_id": np.char.add("U", np.arange(n_users).astype(str)), "role": "warm"}
    )
    plays = rng.integers(0, n_songs, (n_users, 30))
    recommender.train = sp.csr_matrix(
        (np.ones(plays.size, np.float32), (np.repeat(np.arange(n_users), 30), plays.ravel())),
        shape=(n_users, n_songs),
    )
    recommender.metrics = {"random_factors": {"all": {"map@500": 1.0}}}
    recommender.params = {"evaluate": {"seed": 0}}
    recommender._models["random_factors"] = ModelVectors(
        "random_factors",
        "",
        ["all"],
        rng.standard_normal((n_users, dim)).astype(np.float32),
        rng.standard_normal((n_songs, dim)).astype(np.float32),
    )
    return recommender


def time_top_500(recommender: Recommender, queries: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Milliseconds per query: ``for_user`` and the full-sort baseline, on the same users."""
    rng = np.random.default_rng(seed)
    users = recommender.users["user_id"].to_numpy()[
        rng.integers(0, len(recommender.users), queries)
    ]
    model = recommender.model("random_factors")
    for user in users[:5]:  # warm the caches (user index, first allocations)
        recommender.for_user(user, 500)
    ours, baseline = [], []
    for user in users:
        start = time.perf_counter()
        result = recommender.for_user(user, 500)
        ours.append(time.perf_counter() - start)
        u = recommender.user_index[user]
        start = time.perf_counter()
        scores = model.song_vectors @ model.user_vectors[u]
        scores[recommender.train[u].indices] = -np.inf
        full = np.argsort(-scores, kind="stable")[:500]
        baseline.append(time.perf_counter() - start)
        # The same ranking (float32 scores do tie; for_user breaks ties as evaluate does).
        np.testing.assert_allclose(result.items["score"], scores[full], atol=1e-5)
    return {"for_user": np.array(ours) * 1000, "full argsort": np.array(baseline) * 1000}


def thirty_second_files(project: Path, folder: Path, n_files: int) -> list[Path]:
    """Catalogue clips looped to 30 s, written in each supported format in turn."""
    root = Path(load_params(project / "params.yaml")["data"]["root"])
    sources = sorted((project / root / "audio").iterdir())[:n_files]
    files = []
    for i, source in enumerate(sources):
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
        looped = np.resize(samples, (30 * rate, samples.shape[1]))
        extension = list(FORMATS)[i % len(FORMATS)]
        container, subtype = FORMATS[extension]
        path = folder / f"new_{i}.{extension}"
        sf.write(path, looped, rate, format=container, subtype=subtype)
        files.append(path)
    return files


def time_new_song(project: Path, n_files: int) -> tuple[dict[str, np.ndarray], list[str], float]:
    """Milliseconds per 30-s file for ``new_song`` and for its features alone; the load time."""
    from musicrec.audio_features import compute_clips_features, load_mono_clips

    start = time.perf_counter()
    recommender = Recommender(project)
    recommender.warm_up()
    load_seconds = time.perf_counter() - start
    cfg = recommender.feature_config
    ours, features = [], []
    with tempfile.TemporaryDirectory() as folder:
        files = thirty_second_files(project, Path(folder), n_files)
        for path in files:
            start = time.perf_counter()
            recommender.new_song(path)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            compute_clips_features(load_mono_clips(path, cfg), cfg)
            features.append(time.perf_counter() - start)
        kinds = sorted({p.suffix for p in files})
    times = {"new_song": np.array(ours) * 1000, "features only": np.array(features) * 1000}
    return times, kinds, load_seconds


def summary(ms: np.ndarray) -> str:
    return f"{np.median(ms):.2f} | {np.percentile(ms, 99):.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=200, help="listeners timed per size")
    parser.add_argument("--users", type=int, default=10_000, help="listeners in the model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--files", type=int, default=20, help="30-s files for new-song")
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    args = parser.parse_args(argv)
    dim = int(load_params(args.project / "params.yaml")["wmf"]["factors"])
    lines = [
        "## Recommend latency",
        "",
        f"`python benchmarks/recommend_latency.py --queries {args.queries}` on "
        f"{platform.processor() or platform.machine()}: top-500 for one listener "
        f"(`Recommender.for_user`, {dim} random factors, {args.users:,} listeners with 30 "
        "plays each), against a full argsort of the same scores, in ms over "
        f"{args.queries} random listeners.",
        "",
        "| songs | for_user median | p99 | full argsort median | p99 | speed-up (median) |",
        "|---|---|---|---|---|---|",
    ]
    for n_songs in args.sizes:
        times = time_top_500(synthetic_recommender(n_songs, args.users, dim), args.queries)
        ratio = np.median(times["full argsort"]) / np.median(times["for_user"])
        lines.append(
            f"| {n_songs:,} | {summary(times['for_user'])} | {summary(times['full argsort'])} "
            f"| {ratio:.1f}x |"
        )
        print(lines[-1], flush=True)
    if (args.project / "data" / "models").is_dir():
        times, kinds, load_seconds = time_new_song(args.project, args.files)
        share = np.median(times["features only"]) / np.median(times["new_song"])
        lines += [
            "",
            f"`new-song` on {len(times['new_song'])} files of 30 s ({', '.join(kinds)}), after "
            f"loading the artifacts once ({load_seconds:.1f} s, `Recommender.warm_up`), in ms:",
            "",
            "| step | median | p99 |",
            "|---|---|---|",
            f"| new_song (decode, features, predict, listeners, similar songs) | "
            f"{summary(times['new_song'])} |",
            f"| baseline: decode and features alone | {summary(times['features only'])} |",
            "",
            f"Decoding and features are {share:.0%} of the time (median).",
        ]
    replace_section(args.out, "recommend_latency", "\n".join(lines))
    print("\n".join(lines[4:]))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
