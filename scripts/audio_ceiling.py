"""How far can any audio model go on the synthetic world? A diagnostic, not a pipeline stage.

The synthetic world knows each song's audible attributes (``truth/song_attributes.csv``): what
a perfect listener would hear. Regressing the WMF song factors on those attributes (ridge, on
the same training songs the content models use) and scoring the cold split exactly as
``evaluate`` does gives the ceiling of "predict WMF factors from what can be heard" on this
world. Adding the mean hidden factors of the artist's other training songs (what no audio
reveals, but an artist's catalogue carries) gives the ceiling of "audio plus artist", the scale
of ``hybrid_audio_context``; adding instead their mean WMF factors gives what a perfect ear plus
the context filter's input could reach. The WMF factors of the cold songs folded in from their
held-out plays give the ceiling of "predict WMF factors perfectly". All are set against the
pipeline's models and ``upper_bound`` in ``reports/audio_ceiling.md``, as mAP and as lift share
``(m - random) / (upper_bound - random)``.

Run after ``dvc repro`` on a synthetic world:

    python scripts/audio_ceiling.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.preprocessing import PolynomialFeatures

from musicrec.dataset import load_splits
from musicrec.io import atomic_path, read_json
from musicrec.metadata import read_metadata
from musicrec.models.context import value_means
from musicrec.models.factorization import fitted_config
from musicrec.models.vectors import ModelVectors, load_model
from musicrec.ranking import evaluate_on_task, split_tasks
from musicrec.synthesize import audible_features


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--out", type=Path, default=Path("reports/audio_ceiling.md"))
    args = parser.parse_args(argv)
    splits = load_splits(Path("data/split"))
    wmf = load_model(Path("data/models/wmf"))
    factors = fitted_config(Path("data/models/wmf")).factors  # the popularity column left out
    wmf = ModelVectors(
        "wmf", "", wmf.splits, wmf.user_vectors[:, :factors], wmf.song_vectors[:, :factors]
    )
    targets = np.load(Path("data/models/wmf/song_targets.npy"))
    attributes = pd.read_csv(args.world / "truth" / "song_attributes.csv").set_index("song_id")
    phi = audible_features(attributes.loc[splits.songs["song_id"]].reset_index())
    role, validation = splits.songs["role"].to_numpy(), splits.songs["validation"].to_numpy()
    train = np.flatnonzero((role == "warm") & ~validation)
    task = split_tasks(splits)["cold"]
    evaluate_cfg = read_json(Path("reports/evaluation/metrics.json"))  # the full table

    def cold_map(song_vectors: np.ndarray) -> float:
        model = ModelVectors("probe", "", ["cold"], wmf.user_vectors, song_vectors)
        return float(np.nanmean(evaluate_on_task(model, task, 500, [10], 13)["map@500"]))

    truth = np.load(args.world / "truth" / "ground_truth.npz")
    order = attributes.index.get_indexer(splits.songs["song_id"])
    artists = read_metadata(args.world, splits.songs["song_id"], ("artist",))["artist"]
    # The artist's other training songs (a song's own left out; none known: the global mean).
    artist_hidden = value_means(artists, truth["song_hidden"][order], train, shrinkage=0.0)
    artist_wmf = value_means(artists, wmf.song_vectors, train, shrinkage=0.0)
    rows = []
    for label, inputs in [
        ("ridge on the true audible attributes", phi),
        ("ridge on their pairwise products", PolynomialFeatures(2).fit_transform(phi)),
        (
            "ridge on the true audible attributes + the mean hidden factors of the artist's "
            "other training songs",
            np.hstack([phi, artist_hidden]),
        ),
        (
            "ridge on the true audible attributes + the mean WMF factors of the artist's other "
            "training songs",
            np.hstack([phi, artist_wmf]),
        ),
    ]:
        predicted = Ridge(alpha=10.0).fit(inputs[train], wmf.song_vectors[train]).predict(inputs)
        rows.append((label, cold_map(predicted.astype(np.float32))))
    rows.append(("WMF factors of the cold songs, folded in", cold_map(targets)))
    upper = evaluate_cfg["upper_bound"]["cold"]["map@500"]
    random = evaluate_cfg["random"]["cold"]["map@500"]
    for name, splits_of_model in evaluate_cfg.items():
        if "cold" in splits_of_model and name not in ("upper_bound",):
            rows.append((f"`{name}` (pipeline)", splits_of_model["cold"]["map@500"]))
    rows.sort(key=lambda r: -r[1])
    lines = [
        "# How far can an audio model go on this world?",
        "",
        "Cold split, mAP@500 (same users, candidates and tie-breaks as `evaluate`); "
        f"`upper_bound` = {upper:.4f}, `random` = {random:.4f}; lift share = (m - random) / "
        "(upper_bound - random). Made by `python scripts/audio_ceiling.py`.",
        "",
        "| song vectors | cold mAP@500 | lift share |",
        "|---|---|---|",
    ]
    lines += [
        f"| {label} | {value:.4f} | {(value - random) / (upper - random):.3f} |"
        for label, value in rows
    ]
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
