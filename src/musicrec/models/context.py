"""Stage ``context``: the seed paper's context-based filter, a song's vector from its metadata.

A new song has no plays, but often an artist, an album, a genre or a year that songs with plays
share. For each metadata column of ``songs.csv`` named in ``context.columns`` (any categorical
column; ``auto``, the default: every column with at least 2 and at most half as many distinct
values as songs, :func:`musicrec.metadata.categorical_columns`), a song's input is the mean
WMF factors of the training songs with the same value, shrunk towards the training songs'
global mean by ``context.shrinkage`` pseudo-songs:

    m_c(v) = (sum of the factors of the n training songs with value v + k * global mean) / (n + k)

(the global mean itself where the value is empty or no training song has it; a training song's
own factors are left out of its own mean, so the fit learns how far a value's mean carries to
a song *not* in it, as for a cold song). Ridge regression from the concatenated column means to
the song's factors, fitted on the training songs with the penalty of ``context.alphas`` that
predicts the validation songs best, combines the columns: it learns how much each column says.
Song vectors are scored with the WMF user factors, on ``cold`` and ``all`` as the audio models.

A data folder without ``songs.csv``, or without any of the columns, gets no ``context`` model:
the stage writes ``data/models/context/skipped.json`` with the reason (which the report shows)
and ``evaluate`` finds no model there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from musicrec import registry
from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, load_params, read_tsv, write_json
from musicrec.metadata import AUTO, read_metadata
from musicrec.models.content import (
    ContentData,
    content_stage_parser,
    load_content_data,
    ridge_onto_targets,
)
from musicrec.models.vectors import ModelVectors, save_model
from musicrec.stage import DataConfig, read_config, run_stage

NAME = "context"


@dataclass(frozen=True)
class ContextConfig:
    """``context`` in params.yaml."""

    columns: tuple[str, ...] | str = AUTO  # those songs.csv has, or every categorical one
    shrinkage: float = 5.0  # pseudo-songs of the global mean in each value's mean
    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)  # ridge penalties tried

    def __post_init__(self) -> None:
        if isinstance(self.columns, str):
            if self.columns != AUTO:
                raise MusicrecError(
                    f"context.columns: {self.columns!r}; give a list of songs.csv columns or "
                    f"{AUTO!r} (every categorical column)"
                )
        else:
            object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if not self.columns or "song_id" in self.columns:
            raise MusicrecError("context.columns: metadata columns of songs.csv, not song_id")
        if self.shrinkage < 0 or not self.alphas or min(self.alphas) <= 0:
            raise MusicrecError("context: need shrinkage >= 0 and penalties > 0")


def skip_reason(root: Path, metadata: pd.DataFrame, columns: tuple[str, ...] | str) -> str | None:
    """Why no context model can be fitted from ``metadata`` (:func:`read_metadata`'s), or None."""
    path = Path(root) / "songs.csv"
    if not path.exists():
        return f"{path} is absent"
    if metadata.columns.empty and columns == AUTO:
        return (
            f"{path} has no categorical column (context.columns: auto takes those with at "
            "least 2 and at most half as many distinct values as songs)"
        )
    if metadata.columns.empty:
        return f"{path} has none of the columns {', '.join(columns)} (context.columns)"
    if not (metadata != "").any().any():
        return f"{path} has no value in {', '.join(metadata.columns)} for these songs"
    return None


def metadata_or_skip(
    root: Path, features_dir: Path, columns: tuple[str, ...] | str, out: Path, record: dict
) -> pd.DataFrame | None:
    """The metadata a stage fitting on ``songs.csv`` reads (:func:`read_metadata`, in the
    features' song order), or None after writing ``<out>/skipped.json`` with the reason
    (:func:`skip_reason`) and recording it in the stage's timing ``record`` (the report shows
    it). ``context`` and ``audio_context`` skip alike."""
    songs = read_tsv(Path(features_dir) / "songs.tsv")["song_id"]
    metadata = read_metadata(root, songs, columns)
    reason = skip_reason(root, metadata, columns)
    if reason is None:
        return metadata
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / "skipped.json", {"model": out.name, "reason": reason})
    record.update(skipped=reason)
    print(f"{record['stage']}: skipped ({reason})")
    return None


def value_means(
    values: pd.Series, targets: np.ndarray, source: np.ndarray, shrinkage: float
) -> np.ndarray:
    """Each song's shrunk mean of the factors of the ``source`` songs sharing its value.

    Parameters
    ----------
    values : pd.Series [shape=(n_songs,)] one column's text per song ("" = unknown).
    targets : np.ndarray [shape=(n_songs, d)] WMF song factors.
    source : np.ndarray  indices of the songs whose factors make the means (training songs);
        a source song's own factors are left out of its own mean.
    shrinkage : float  pseudo-songs of the global source mean added to every value's mean.

    Returns
    -------
    np.ndarray [shape=(n_songs, d), float64]
    """
    codes, uniques = pd.factorize(values.to_numpy())  # "" gets a code too: masked below
    codes = np.where(values.to_numpy() == "", -1, codes)
    d = targets.shape[1]
    sums = np.zeros((len(uniques) + 1, d))  # the last row: unknown values, always empty
    counts = np.zeros(len(uniques) + 1)
    src_codes = codes[source]
    known = src_codes >= 0
    np.add.at(sums, src_codes[known], targets[source][known])
    np.add.at(counts, src_codes[known], 1.0)
    global_mean = targets[source].mean(axis=0)
    song_sums, song_counts = sums[codes].copy(), counts[codes].copy()  # code -1: the last row
    own = np.zeros(len(values), bool)
    own[source] = True
    own &= codes >= 0
    song_sums[own] -= targets[own]
    song_counts[own] -= 1.0
    weight = song_counts + shrinkage
    means = (song_sums + shrinkage * global_mean) / np.where(weight > 0, weight, 1.0)[:, None]
    return np.where(weight[:, None] > 0, means, global_mean)  # no song and no shrinkage


def context_regression(
    metadata: pd.DataFrame,
    targets: np.ndarray,
    train_songs: np.ndarray,
    validation_songs: np.ndarray,
    cfg: ContextConfig,
) -> tuple[np.ndarray, float, dict[float, float]]:
    """Every song's prediction of ``targets`` from its metadata: the shrunk means of the
    training songs sharing each value (:func:`value_means`), combined by ridge.

    Parameters
    ----------
    metadata : pd.DataFrame [shape=(n_songs, n_columns)]  text, "" unknown.
    targets : np.ndarray [shape=(n_songs, d)]  what to predict (WMF factors, or what an audio
        model left of them); read on ``train_songs`` and ``validation_songs`` only.
    train_songs, validation_songs : np.ndarray  song indices: the means and the ridge come from
        the first, the ridge penalty (of ``cfg.alphas``) is chosen on the second.
    cfg : ContextConfig

    Returns
    -------
    vectors : np.ndarray [shape=(n_songs, d), float64]
    alpha : float  the penalty kept.
    errors : dict  each penalty's mean squared error on the validation songs (scaled targets).
    """
    x = np.hstack(
        [value_means(metadata[c], targets, train_songs, cfg.shrinkage) for c in metadata.columns]
    )
    return ridge_onto_targets(x, targets, train_songs, validation_songs, cfg.alphas)


def fit_context(
    metadata: pd.DataFrame, data: ContentData, cfg: ContextConfig
) -> tuple[np.ndarray, dict]:
    """Every song's context vector and what the fit chose.

    Returns
    -------
    vectors : np.ndarray [shape=(n_songs, d), float32] predicted WMF song factors.
    summary : dict  the columns used, their known share among cold-like songs, the penalty and
        the validation error of each penalty.
    """
    columns = list(metadata.columns)
    vectors, alpha, errors = context_regression(
        metadata, data.targets, data.train_songs, data.validation_songs, cfg
    )
    train_values = {c: set(metadata[c].to_numpy()[data.train_songs]) - {""} for c in columns}
    others = np.setdiff1d(data.songs, data.train_songs)
    summary = {
        "columns": columns,
        # Share of the songs outside training whose value some training song shares.
        "known_share": {
            c: round(
                float(np.isin(metadata[c].to_numpy()[others], list(train_values[c])).mean()), 4
            )
            for c in columns
        },
        "alpha": alpha,
        "validation_error": errors,
    }
    return vectors.astype(np.float32), summary


def main(argv: list[str] | None = None) -> int:
    parser = content_stage_parser(NAME, __doc__, ["data.root", NAME])
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = read_config(params, NAME, ContextConfig)
    root = Path(read_config(params, "data", DataConfig).root)
    out = args.models / NAME
    with run_stage(NAME, args, params, (NAME,)) as (record, tracker):
        data = load_content_data(args.split, args.models / "wmf", args.features)
        metadata = metadata_or_skip(root, args.features, cfg.columns, out, record)
        if metadata is None:
            return 0
        vectors, summary = fit_context(metadata, data, cfg)
        save_model(
            ModelVectors(
                NAME,
                "metadata (" + ", ".join(summary["columns"]) + "): shrunk means of the "
                "training songs' WMF factors per value, combined by ridge",
                list(registry.CONTENT_SPLITS),
                data.user_factors,
                vectors,
                predicts="wmf_song_factors",
            ),
            out,
            index=data.index_digest,
            config=summary,  # config.json: the columns used, their coverage, the penalty
        )
        tracker.log_metrics({NAME: {"alpha": summary["alpha"], **summary["known_share"]}})
        record.update(columns=summary["columns"], alpha=summary["alpha"])
    print(f"context: {', '.join(summary['columns'])} (alpha {summary['alpha']:g}) -> {out}")
    return 0
