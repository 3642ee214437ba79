"""The one format every model hands to ``evaluate``: user and song vectors.

A model's folder ``data/models/<name>/`` holds

- ``model.json``: ``{"name", "description", "splits": [...], "predicts"}``: the splits the
  model can score (a subset of ``warm``, ``cold``, ``all``, ``cold_user``); ``predicts`` is
  ``"wmf_song_factors"`` for a content model whose song vectors predict WMF's song factors
  (``evaluate`` then also reports R^2 and cosine against ``data/models/wmf/song_targets.npy``:
  the WMF factors of every song, cold songs folded in), else absent; ``"index"``: the digest
  of the song and user ids the vectors are in the order of (:func:`musicrec.dataset.ids_digest`),
  which ``evaluate`` and ``recommend`` check against ``data/split`` when they load the folder;
- ``user_vectors.npy`` [shape=(n_users, d), float32] and ``song_vectors.npy``
  [shape=(n_songs, d), float32] in the index order of ``data/split/users.tsv`` and
  ``songs.tsv``. A user's score for a song is the dot product of their vectors.

One variant is not a dot product: an interleaved model (``"kind": "interleaved"`` in its
``model.json``) holds two such folders, ``first/`` and ``second/``, and ranks by interleaving
their lists (:class:`InterleavedModel`).

``evaluate`` scores every folder under ``data/models/`` that has a ``model.json``; a new model
plugs in by writing this format, with no change to ``evaluate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicrec import registry
from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, glob_outputs


@dataclass
class ModelVectors:
    """A model's output: ``score(u, v) = user_vectors[u] @ song_vectors[v]``."""

    name: str
    description: str
    splits: list[str]
    user_vectors: np.ndarray
    song_vectors: np.ndarray
    predicts: str | None = None
    index: str | None = None  # the ids digest of the split it was fitted on

    def __post_init__(self) -> None:
        unknown = set(self.splits) - set(registry.SPLITS)
        if unknown:
            raise MusicrecError(f"model {self.name}: unknown splits {sorted(unknown)}")
        if (
            self.user_vectors.ndim != 2
            or self.song_vectors.ndim != 2
            or (self.user_vectors.shape[1] != self.song_vectors.shape[1])
        ):
            raise MusicrecError(
                f"model {self.name}: user vectors {self.user_vectors.shape} and song vectors "
                f"{self.song_vectors.shape} must be 2-D with the same width"
            )

    def scores(self, users: np.ndarray, songs: np.ndarray) -> np.ndarray:
        """Scores [shape=(len(users), len(songs))] of the given user and song indices."""
        return self.user_vectors[users] @ self.song_vectors[songs].T


@dataclass
class InterleavedModel:
    """Two models' ranked lists interleaved, first model first (the "mixed" hybrid).

    A user's list takes the first model's best song, then the second's, then the first's next,
    and so on, a song appearing where it comes first. As a score: minus the position
    ``min(2 * rank_first, 2 * rank_second + 1)``, ranks counted from 0 over the songs asked for.
    """

    name: str
    description: str
    splits: list[str]
    first: ModelVectors
    second: ModelVectors
    predicts: str | None = None
    index: str | None = None

    def scores(self, users: np.ndarray, songs: np.ndarray) -> np.ndarray:
        """Scores [shape=(len(users), len(songs))]: minus each song's interleaved position."""
        ranks = [
            np.argsort(np.argsort(-m.scores(users, songs), axis=1, kind="stable"), axis=1)
            for m in (self.first, self.second)
        ]
        return -np.minimum(2 * ranks[0], 2 * ranks[1] + 1).astype(np.float64)


def save_model(
    model: ModelVectors,
    out_dir: Path,
    extras: dict[str, np.ndarray] | None = None,
    predictor=None,
    index: str | None = None,
    config: dict | None = None,
) -> None:
    """Write a model's folder atomically.

    ``extras`` are further arrays saved as ``<key>.npy``; a ``predictor`` (anything with a
    ``save(directory)`` method) is saved into ``predictor/``; ``index`` (else
    ``model.index``) is the ids digest of the split the model was fitted on
    (``Splits.index_digest``); ``config``, the settings it was fitted with, is saved as
    ``config.json`` for the tools that refit or extend it (``wmf``'s, for fold-in).
    """
    index = index or model.index
    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir()
        if predictor is not None:
            predictor.save(tmp / "predictor")
        np.save(tmp / "user_vectors.npy", model.user_vectors.astype(np.float32))
        np.save(tmp / "song_vectors.npy", model.song_vectors.astype(np.float32))
        for key, array in (extras or {}).items():
            np.save(tmp / f"{key}.npy", array)
        if config is not None:
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        meta = {
            "name": model.name,
            "description": model.description,
            "splits": model.splits,
            "dim": int(model.song_vectors.shape[1]),
        }
        if model.predicts:
            meta["predicts"] = model.predicts
        if index:
            meta["index"] = index
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")


def save_interleaved(model: InterleavedModel, out_dir: Path, index: str | None = None) -> None:
    """Write an interleaved model: ``model.json`` (``"kind": "interleaved"``) and its two
    component models in ``first/`` and ``second/`` (``index``: as in :func:`save_model`)."""
    index = index or model.index
    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir()
        save_model(model.first, tmp / "first", index=index)
        save_model(model.second, tmp / "second", index=index)
        meta = {
            "name": model.name,
            "description": model.description,
            "splits": model.splits,
            "kind": "interleaved",
        }
        if index:
            meta["index"] = index
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_model(model_dir: Path, index: str | None = None) -> ModelVectors | InterleavedModel:
    """Read a model's folder.

    Parameters
    ----------
    model_dir : Path
    index : str, optional
        The ids digest of the split the caller scores on (``Splits.index_digest``). When
        given, a folder fitted on other songs or users, or recording none, is refused: its
        rows would be scored against the wrong songs.
    """
    model_dir = Path(model_dir)
    meta_path = model_dir / "model.json"
    if not meta_path.exists():
        raise MusicrecError(f"{model_dir}: no model.json; run the stage that trains this model")
    meta = json.loads(meta_path.read_text())
    if index is not None and meta.get("index") != index:
        raise MusicrecError(
            f"{model_dir} was fitted on other songs or users than the split holds (its index "
            f"{meta.get('index')!r}, the split's {index!r}): run `dvc repro` to retrain it"
        )
    if meta.get("kind") == "interleaved":
        return InterleavedModel(
            meta["name"],
            meta.get("description", ""),
            list(meta["splits"]),
            load_model(model_dir / "first", index),
            load_model(model_dir / "second", index),
            index=meta.get("index"),
        )
    return ModelVectors(
        meta["name"],
        meta.get("description", ""),
        list(meta["splits"]),
        np.load(model_dir / "user_vectors.npy"),
        np.load(model_dir / "song_vectors.npy"),
        meta.get("predicts"),
        meta.get("index"),
    )


def discover_models(models_dir: Path) -> list[Path]:
    """Every model folder (one with a ``model.json``) under ``models_dir``, sorted by name;
    never the dot-named temporary of a write that was killed."""
    return [p.parent for p in glob_outputs(models_dir, "*/model.json")]
