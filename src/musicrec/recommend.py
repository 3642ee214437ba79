"""Recommending from the artifacts of the last ``dvc repro``: the product the pipeline trains.

Four questions, answered by :class:`Recommender` (shared by the command line and
``musicrec serve``):

- **a known listener** (``musicrec recommend --user ID``): the model's scores over the whole
  catalogue, the songs the listener played in training left out: exactly the ranking
  ``evaluate`` scores on the ``all`` split. The default model is the best on ``all`` by
  mAP@500 in ``reports/evaluation/metrics.json`` (``upper_bound``, which saw the held-out
  plays, is a yardstick and never chosen).
- **a new listener** (``musicrec recommend --seed-songs ID,ID``): from a few songs they like,
  by WMF fold-in (one least-squares solve against the fitted song factors) or by the content
  profile (the mean content vector of the seeds), whichever scored better on ``cold_user``;
  ranked over the warm songs, as ``evaluate`` ranks for new users.
- **a brand-new song** (``musicrec new-song PATH``): its clip decoded and turned into features
  exactly as the ``features`` stage does, its vector predicted by the audio model (the best on
  ``cold`` that has a predictor), then the listeners whose vectors score it highest and the
  catalogue songs nearest to it (cosine).
- **similar songs** (``musicrec similar SONG_ID``): nearest by cosine of WMF factors among warm
  songs for a warm song; by the audio model's predicted vectors over the whole catalogue for a
  cold song, which has no plays to factorise.
"""

from __future__ import annotations

import bisect
import difflib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from musicrec import registry
from musicrec.dataset import ids_digest
from musicrec.errors import MusicrecError
from musicrec.io import load_params, read_json, read_tsv, read_yaml, section
from musicrec.metrics import top_k
from musicrec.models.vectors import InterleavedModel, ModelVectors, load_model
from musicrec.stage import DataConfig, read_config


class UnknownIdError(MusicrecError):
    """A user or song id that is not in the catalogue."""


class MissingArtifactError(MusicrecError):
    """An artifact of the pipeline is missing: a stage has not run."""


def top_n(
    scores: np.ndarray,
    n: int,
    excluded: np.ndarray | None = None,
    tiebreak: Callable[[], np.ndarray] | None = None,
) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first.

    Parameters
    ----------
    scores : np.ndarray [shape=(n_items,)]
    excluded : np.ndarray [shape=(k,), dtype=int], optional
        Items never returned.
    tiebreak : callable, optional
        Returns keys [shape=(n_items,)] that order equal scores, lower first (``evaluate``'s
        random keys); called only when the top ``n`` holds a tie. Without it, the lower index
        comes first.

    Returns
    -------
    np.ndarray [shape=(min(n, n_items - k),), dtype=int64]

    :func:`musicrec.metrics.top_k`, which ``evaluate`` ranks with: ``argpartition`` finds the
    best ``n`` in linear time, so only they are sorted (a top-500 over a million songs is one
    pass, not a full sort).
    """
    scores = np.asarray(scores)
    if excluded is not None and len(excluded):
        scores = scores.copy()
        scores[excluded] = -np.inf
    n_valid = len(scores) - (len(np.unique(excluded)) if excluded is not None else 0)
    keys = (lambda row: tiebreak()) if tiebreak is not None else None
    return top_k(scores[None, :], max(0, min(n, n_valid)), keys)[0]


def _masked_top_n(
    scores: np.ndarray, n: int, excluded: np.ndarray | None, skip: int | None = None
) -> np.ndarray:
    """Indices of the ``n`` highest ``scores`` outside ``excluded`` and ``skip``, best first.

    Parameters
    ----------
    scores : np.ndarray [shape=(n_items,)]
        Overwritten: the excluded items become ``-inf`` (a request's own array, so masking it
        in place spares a copy of its size).
    excluded : np.ndarray [shape=(n_items,), dtype=bool], optional
        Items never returned.
    skip : int, optional
        One more item never returned (the query's own song).

    Returns
    -------
    np.ndarray [shape=(min(n, n_allowed),), dtype=int64]

    Equal scores come in index order, as :func:`top_n` orders them over a subset of the items
    taken in index order: the same ranking as scoring only the allowed items.
    """
    n_allowed = len(scores)
    if excluded is not None:
        np.copyto(scores, -np.inf, where=excluded)
        n_allowed -= int(np.count_nonzero(excluded))
    if skip is not None and (excluded is None or not excluded[skip]):
        scores[skip] = -np.inf
        n_allowed -= 1
    return top_n(scores, min(n, n_allowed))


def _cosine_neighbours(
    vectors: np.ndarray,
    norms: np.ndarray,
    query: np.ndarray,
    n: int,
    excluded: np.ndarray | None,
    skip: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` songs nearest ``query`` by cosine, excluded ones left out; (indices, cosines).

    Parameters
    ----------
    vectors : np.ndarray [shape=(n_songs, d), dtype=float32]
        Song vectors, read in place (:meth:`Recommender.cosine_space`).
    norms : np.ndarray [shape=(n_songs,), dtype=float32]
        Their lengths, ``np.linalg.norm(vectors, axis=1)``.
    query : np.ndarray [shape=(d,)]
    excluded : np.ndarray [shape=(n_songs,), dtype=bool], optional
        Songs never returned (those that are not candidates).
    skip : int, optional
        A song never returned (the query's own).

    Returns
    -------
    indices : np.ndarray [shape=(min(n, n_candidates),), dtype=int64]
    cosines : np.ndarray [shape=(min(n, n_candidates),), dtype=float32]

    One matrix-vector product over every song, then a mask: a request allocates a few arrays
    of ``n_songs`` scalars, never a copy of the matrix. The cosine is the formula of scoring
    the candidate rows alone (``rows @ q / max(|rows| * |q|, 1e-12)``) in float32; the
    product over all rows may round a last digit differently, so only cosines equal to about
    1e-7 could swap places.
    """
    cosine = vectors @ query.astype(np.float32)
    denominator = norms * max(float(np.linalg.norm(query)), 1e-12)
    np.maximum(denominator, 1e-12, out=denominator)
    cosine /= denominator
    del denominator  # freed before the ranking allocates its own arrays
    best = _masked_top_n(cosine, n, excluded, skip)
    return best, cosine[best]


@dataclass
class Recommendations:
    """A ranked list and how it was made (printed as a table or as JSON)."""

    kind: str
    query: dict
    model: str
    method: str
    items: pd.DataFrame
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {
            "kind": self.kind,
            "query": self.query,
            "model": self.model,
            "method": self.method,
            "items": self.items.to_dict(orient="records"),
        }
        out.update({name: table.to_dict(orient="records") for name, table in self.extra.items()})
        if self.notes:
            out["notes"] = self.notes
        return out

    def to_text(self) -> str:
        query = ", ".join(f"{k} {v}" for k, v in self.query.items())
        lines = [f"{self.kind} for {query}", f"model {self.model}: {self.method}"]
        lines += [f"note: {note}" for note in self.notes]
        for title, table in [("", self.items), *self.extra.items()]:
            if title:
                lines += ["", title.replace("_", " ") + ":"]
            lines.append(table.to_string(index=False) if len(table) else "(none)")
        return "\n".join(lines)


def near_ids(ident: str, sorted_ids: list[str], n: int = 3, neighbours: int = 8) -> list[str]:
    """Up to ``n`` known ids like ``ident``, for a "did you mean" hint, in bounded time.

    Only the ``neighbours`` ids on each side of where ``ident`` would sort are compared (a
    binary search, then difflib on at most 2 x ``neighbours`` ids): a typo after the first
    characters is found among a million ids in microseconds, where comparing every id took
    seconds per unknown id. An id longer than 200 characters gets no hint.
    """
    if len(ident) > 200 or not sorted_ids:
        return []
    at = bisect.bisect_left(sorted_ids, ident)
    nearby = sorted_ids[max(0, at - neighbours) : at + neighbours]
    return difflib.get_close_matches(ident, nearby, n=n)


class Recommender:
    """The trained artifacts of a project folder, loaded lazily and kept for many queries.

    Parameters
    ----------
    project : Path
        The folder ``dvc repro`` ran in (it holds ``params.yaml``, ``data/`` and ``reports/``).
    """

    def __init__(self, project: Path = Path(".")):
        self.project = Path(project)
        self._models: dict[str, ModelVectors | InterleavedModel] = {}
        self._predictors: dict[str, object] = {}
        self._sorted: dict[str, list[str]] = {}  # each kind's ids, sorted, for hints
        self._cosine: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # cosine_space's, by model

    # -- artifacts --------------------------------------------------------------------------
    def _need(self, relative: str) -> Path:
        """The artifact's path, or an error that names the stage that writes it."""
        path = self.project / relative
        if not path.exists():
            stage = self.stage_writing(relative)
            how = f"run `dvc repro {stage}`" if stage else "run `make repro`"
            raise MissingArtifactError(
                f"{path} is missing: {how} first (or `make repro` for everything)"
            )
        return path

    def stage_writing(self, relative: str) -> str | None:
        """The ``dvc.yaml`` stage whose outputs hold ``relative`` (None if none does)."""
        dvc_yaml = self.project / "dvc.yaml"
        if not dvc_yaml.exists():
            return None
        stages = read_yaml(dvc_yaml).get("stages", {})
        for name, stage in stages.items():
            for out in stage.get("outs", []) + stage.get("metrics", []):
                out = next(iter(out)) if isinstance(out, dict) else out
                if relative == out or relative.startswith(out.rstrip("/") + "/"):
                    return name
        return None

    @cached_property
    def songs(self) -> pd.DataFrame:
        """``data/split/songs.tsv`` (song_id, role) with title and artist where known."""
        songs = read_tsv(self._need("data/split/songs.tsv"))[["song_id", "role"]]
        root = read_config(self.params, "data", DataConfig).root
        metadata = self.project / root / "songs.csv"
        if metadata.exists():
            meta = pd.read_csv(metadata, dtype=str, keep_default_na=False)
            keep = [c for c in ("song_id", "title", "artist") if c in meta.columns]
            songs = songs.merge(meta[keep].drop_duplicates("song_id"), on="song_id", how="left")
            # A song missing from songs.csv gets empty text, not NaN (which JSON cannot carry).
            songs[keep[1:]] = songs[keep[1:]].fillna("")
        return songs

    @cached_property
    def users(self) -> pd.DataFrame:
        return read_tsv(self._need("data/split/users.tsv"))

    @cached_property
    def index_digest(self) -> str:
        """The split's ids digest, which every model folder must record (``load_model``)."""
        return ids_digest(self.songs["song_id"], self.users["user_id"])

    @cached_property
    def song_index(self) -> dict[str, int]:
        return {song: i for i, song in enumerate(self.songs["song_id"])}

    @cached_property
    def user_index(self) -> dict[str, int]:
        return {user: i for i, user in enumerate(self.users["user_id"])}

    @cached_property
    def train(self) -> sp.csr_matrix:
        """Training plays [shape=(n_users, n_songs)]: what the models saw."""
        return sp.load_npz(self._need("data/split/train.npz")).tocsr()

    @cached_property
    def params(self) -> dict:
        return load_params(self.project / "params.yaml")

    @cached_property
    def metrics(self) -> dict:
        return read_json(self._need(registry.FULL_METRICS))

    @cached_property
    def warm_songs(self) -> np.ndarray:
        return np.flatnonzero(self.songs["role"].to_numpy() == "warm")

    @cached_property
    def warm_users(self) -> np.ndarray:
        """Users who trained the models (held-out ``cold_user`` ones are not among them)."""
        return np.flatnonzero(self.users["role"].to_numpy() == "warm")

    @cached_property
    def not_warm_songs(self) -> np.ndarray:
        """[shape=(n_songs,), dtype=bool]: the songs a warm song's neighbours leave out."""
        return self.songs["role"].to_numpy() != "warm"

    @cached_property
    def not_warm_users(self) -> np.ndarray:
        """[shape=(n_users,), dtype=bool]: the users a new song's listeners leave out."""
        return self.users["role"].to_numpy() != "warm"

    def tiebreak_keys(self, user: int) -> np.ndarray:
        """The keys [shape=(n_songs,)] that break ties for ``user`` as ``evaluate`` did on
        ``all``, so that even a model with equal scores (popularity) ranks as it was scored."""
        from musicrec.metrics import tiebreak_keys
        from musicrec.ranking import draw_tiebreak_seeds

        seed = int(section(self.params, "evaluate")["seed"])
        split_seed = draw_tiebreak_seeds(np.random.default_rng(seed))["all"]
        return tiebreak_keys(np.array([user]), len(self.songs), split_seed)[0]

    def model(self, name: str) -> ModelVectors | InterleavedModel:
        """The model called ``name``: only a name that ``reports/evaluation/metrics.json``
        scored, checked before any file is touched (a name from a query is never a path:
        ``wmf/.`` or ``../models/wmf`` would load another copy, and an absolute path would probe
        folders), loaded once and kept under that name."""
        if name not in self.metrics:
            raise UnknownIdError(
                f"no model {name!r} was trained and scored (reports/evaluation/metrics.json); "
                f"trained models: {', '.join(sorted(self.metrics))}"
            )
        if name not in self._models:
            folder = self._need(f"data/models/{name}/model.json").parent
            self._models[name] = load_model(folder, self.index_digest)
        return self._models[name]

    def cosine_space(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Model ``name``'s song vectors as cosine ranking reads them, computed once.

        Returns
        -------
        vectors : np.ndarray [shape=(n_songs, d), dtype=float32]
            The model's own array where it is float32 already (as ``load_model`` reads it),
            else a float32 copy made here once, not per request.
        norms : np.ndarray [shape=(n_songs,), dtype=float32]
            ``np.linalg.norm(vectors, axis=1)``.
        """
        if name not in self._cosine:
            vectors = self.model(name).song_vectors
            if name == "wmf":  # songs are alike by their factors, not by their popularity
                vectors = vectors[:, : self.wmf_config.factors]
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self._cosine[name] = (vectors, np.linalg.norm(vectors, axis=1))
        return self._cosine[name]

    @cached_property
    def wmf_config(self):
        """The settings the ``wmf`` model was fitted with (its factor columns, its popularity
        weights)."""
        from musicrec.models.factorization import fitted_config

        return fitted_config(self._need("data/models/wmf/config.json").parent)

    def best_model(self, split: str, require=lambda name: True) -> str:
        """The model with the highest mAP@k on ``split`` (the registry's yardsticks left out)."""
        yardsticks = registry.yardsticks()
        scored = {
            name: splits[split][registry.map_key_in(splits[split])]
            for name, splits in self.metrics.items()
            if split in splits and name not in yardsticks and require(name)
        }
        if not scored:
            raise MusicrecError(
                f"reports/evaluation/metrics.json has no model for the {split} split that fits; "
                "run `dvc repro` to train and evaluate the models"
            )
        return max(scored, key=scored.get)

    def predictor(self, name: str):
        """The fitted content model of ``name`` (its ``predictor/`` folder)."""
        if name not in self._predictors:
            from musicrec.models.content import load_predictor

            self._predictors[name] = load_predictor(
                self._need(f"data/models/{name}/predictor/config.json").parent,
                n_users=len(self.users),
                n_songs=len(self.songs),
            )
        return self._predictors[name]

    @cached_property
    def audio_model(self) -> str:
        """The best model on ``cold`` that can predict a song's vector from its audio."""
        models = self.project / "data/models"
        with_predictor = [name for name in self.metrics if (models / name / "predictor").is_dir()]
        if not with_predictor:
            raise MissingArtifactError(
                f"no model in {models} can predict from audio (none has a predictor/ folder): "
                "run `dvc repro cnn` (or bow, dbn) first"
            )
        return self.best_model("cold", lambda name: name in with_predictor)

    @cached_property
    def feature_config(self):
        from musicrec.audio_features import FeatureConfig

        stored = read_json(self._need("data/features/features.json"))
        return FeatureConfig(**stored["config"])

    def warm_up(self) -> None:
        """Load everything a query needs now, not during the first one."""
        _ = self.songs, self.users, self.song_index, self.user_index, self.train, self.warm_users
        _ = self.not_warm_songs, self.not_warm_users
        for name in {self.best_model("all"), self.audio_model, "wmf"}:
            self.model(name)
        for name in {self.audio_model, "wmf"}:  # the models `similar` and `new_song` rank by
            self.cosine_space(name)
        # The first clip pays for building the feature transforms (the librosa and
        # scipy.signal imports): pay it now.
        self.predict_clip(np.zeros(self.feature_config.n_samples, np.float32))
        if (self.project / "data/models/content_profile").is_dir():
            self.model("content_profile")

    # -- lookups ----------------------------------------------------------------------------
    def _lookup(self, kind: str, ident: str, index: dict[str, int]) -> int:
        if ident in index:
            return index[ident]
        close = near_ids(ident, self._sorted_ids(kind, index))
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownIdError(f"unknown {kind} id {ident!r} ({len(index):,} {kind}s known){hint}")

    def _sorted_ids(self, kind: str, index: dict[str, int]) -> list[str]:
        if kind not in self._sorted:
            self._sorted[kind] = sorted(index)
        return self._sorted[kind]

    def song(self, song_id: str) -> int:
        return self._lookup("song", song_id, self.song_index)

    def user(self, user_id: str) -> int:
        return self._lookup("user", user_id, self.user_index)

    def _song_table(self, songs: np.ndarray, scores: np.ndarray, column: str) -> pd.DataFrame:
        table = self.songs.iloc[songs].reset_index(drop=True)
        table.insert(0, "rank", np.arange(1, len(songs) + 1))
        table.insert(2, column, np.round(scores.astype(np.float64), 6))
        return table

    # -- the four operations ----------------------------------------------------------------
    def for_user(self, user_id: str, n: int = 10, model: str | None = None) -> Recommendations:
        """Top ``n`` songs for a known listener, their training plays left out."""
        u = self.user(user_id)
        if self.users["role"].iat[u] != "warm":
            raise MusicrecError(
                f"user {user_id!r} was held out of training (a cold_user, to test new "
                "listeners): recommend from their songs with --seed-songs"
            )
        name = model or self.best_model("all")
        chosen = self.model(name)
        if "all" not in chosen.splits:
            raise MusicrecError(
                f"model {name} does not rank the whole catalogue for known users (it scores "
                f"{', '.join(chosen.splits)}); pick one of "
                + ", ".join(m for m, s in self.metrics.items() if "all" in s)
            )
        if isinstance(chosen, ModelVectors):
            # One matrix-vector product over the catalogue (``scores`` would copy the songs).
            scores = chosen.song_vectors @ chosen.user_vectors[u]
        else:
            scores = chosen.scores(np.array([u]), np.arange(len(self.songs)))[0]
        played = self.train[u].indices
        best = top_n(scores, n, played, lambda: self.tiebreak_keys(u))
        return Recommendations(
            "recommendations",
            {"user": user_id, "n": n},
            name,
            "model scores over all songs, training plays left out (evaluate's `all` ranking)",
            self._song_table(best, scores[best], "score"),
        )

    def for_seed_songs(self, song_ids: list[str], n: int = 10) -> Recommendations:
        """Top ``n`` warm songs for a new listener who likes ``song_ids``."""
        seeds = np.unique([self.song(s) for s in song_ids])
        if len(seeds) == 0:
            raise MusicrecError("give at least one seed song id")
        method = self.best_model("cold_user", lambda m: m in ("wmf", "content_profile"))
        notes = []
        if method == "wmf" and not np.isin(seeds, self.warm_songs).any():
            # Fold-in knows songs only by their plays; cold seeds have none.
            notes.append("no seed song has training plays, so WMF fold-in cannot use them")
            method = "content_profile"
        if method == "wmf":
            from musicrec.models.factorization import new_user_vectors

            song_vectors = self.model("wmf").song_vectors
            # Fold-in uses the warm seeds only (a cold song has no factors), and so does the
            # popularity weight: it is set by the number of plays the profile rests on.
            warm_seeds = seeds[np.isin(seeds, self.warm_songs)]
            plays = sp.csr_matrix(
                (
                    np.ones(len(warm_seeds), np.float32),
                    (np.zeros(len(warm_seeds), int), warm_seeds),
                ),
                shape=(1, len(self.songs)),
            )
            user_vector = new_user_vectors(song_vectors, plays, self.wmf_config)[0]
            how = (
                "WMF fold-in of the seed songs (one play each), scored by WMF with its "
                "popularity term for that many seed plays"
            )
        else:
            song_vectors = self.model("content_profile").song_vectors
            user_vector = song_vectors[seeds].mean(axis=0)
            how = "content profile: the mean content vector of the seed songs"
        candidates = self.warm_songs
        scores = song_vectors[candidates] @ user_vector
        best = top_n(scores, n, np.flatnonzero(np.isin(candidates, seeds)))
        return Recommendations(
            "recommendations",
            {"seed_songs": ",".join(song_ids), "n": n},
            method,
            how + "; ranked over the warm songs",
            self._song_table(candidates[best], scores[best], "score"),
            notes=notes,
        )

    def new_song(
        self, audio: Path, n_users: int = 10, n_songs: int = 10, name: str | None = None
    ) -> Recommendations:
        """Listeners and similar songs for a song that is not in the catalogue."""
        vector, _ = self.predict_audio(audio, name)
        model_name = self.audio_model
        model = self.model(model_name)
        # Every user scored in place, the others masked: no copy of the warm users' rows.
        user_scores = model.user_vectors @ vector
        best_users = _masked_top_n(user_scores, n_users, self.not_warm_users)
        listeners = pd.DataFrame(
            {
                "rank": np.arange(1, len(best_users) + 1),
                "user_id": self.users["user_id"].to_numpy()[best_users],
                "score": np.round(user_scores[best_users].astype(np.float64), 6),
            }
        )
        songs, cosine = _cosine_neighbours(
            *self.cosine_space(model_name), vector, n_songs, None, None
        )
        return Recommendations(
            "listeners",
            {"audio": name or Path(audio).name},
            model_name,
            "vector predicted from the audio, scored by the model's user vectors; "
            "similar songs by cosine",
            listeners,
            {"similar_songs": self._song_table(songs, cosine, "cosine")},
        )

    def predict_audio(self, audio: Path, name: str | None = None) -> tuple[np.ndarray, float]:
        """The audio model's vector [shape=(d,)] for an audio file, and the seconds it took.

        Decoding and features are the ``features`` stage's own functions with its stored
        config, so a song already in the catalogue gets the vector the model gave it.
        ``name`` is how errors call the file (an upload's name, not its temporary path): the
        path is replaced by it in the decoder's own messages too, which quote the path.
        """
        import soundfile as sf

        from musicrec.audio import open_audio_file
        from musicrec.audio_features import load_mono_clips

        name = name or str(audio)
        self.predictor(self.audio_model)  # missing artifacts first: they are the bigger problem
        start = time.perf_counter()
        try:
            # Checked and opened without blocking first: a FIFO would hang the decoder, and
            # libsndfile calls a permission problem a "System error".
            os.close(open_audio_file(Path(audio)))
            clip = load_mono_clips(Path(audio), self.feature_config)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            reason = str(exc).replace(str(audio), name)
            raise MusicrecError(
                f"{name}: cannot be read as audio ({type(exc).__name__}: {reason}); supported "
                "formats are wav, flac, ogg/vorbis, ogg/opus and mp3"
            ) from exc
        except MemoryError as exc:  # (the declared sizes were checked; this is the last guard)
            raise MusicrecError(f"{name}: decoding it needs more memory than there is") from exc
        if not np.isfinite(clip).all():
            raise MusicrecError(f"{name}: the decoded samples hold NaN or Inf")
        return self.predict_clip(clip), time.perf_counter() - start

    def predict_clip(self, clip: np.ndarray) -> np.ndarray:
        """The audio model's vector [shape=(d,)] for a song's mono clips
        [shape=(clips, n_samples)] (one clip [shape=(n_samples,)] stands for all of them).

        The features are rounded to float16, as the ``features`` stage stores them.
        """
        from musicrec.audio_features import FEATURE_NAMES, compute_clips_features

        cfg = self.feature_config
        clips = np.broadcast_to(clip, (cfg.clips, cfg.n_samples))
        features = {
            name: array[None].astype(np.float16)
            for name, array in zip(FEATURE_NAMES, compute_clips_features(clips, cfg), strict=True)
        }
        vector = self.predictor(self.audio_model).predict_new(features)[0]
        return np.asarray(vector, np.float32)

    def similar(self, song_id: str, n: int = 10) -> Recommendations:
        """Songs nearest ``song_id``: by WMF factors if it is warm, else by predicted vectors."""
        v = self.song(song_id)
        if self.songs["role"].iat[v] == "warm":
            name, excluded = "wmf", self.not_warm_songs
            method = "cosine of WMF song factors, over the warm songs"
        else:
            name, excluded = self.audio_model, None
            method = "cold song: cosine of vectors predicted from audio, over all songs"
        vectors, norms = self.cosine_space(name)
        query = vectors[v]
        songs, cosine = _cosine_neighbours(vectors, norms, query, n, excluded, v)
        return Recommendations(
            "similar songs",
            {"song": song_id, "n": n},
            name,
            method,
            self._song_table(songs, cosine, "cosine"),
        )


def _print(result: Recommendations, as_json: bool) -> None:
    print(json.dumps(result.to_dict(), indent=2) if as_json else result.to_text())


def _common(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--project",
        type=Path,
        default=Path("."),
        help="the folder `dvc repro` ran in (default: the current one)",
    )


def _parser(prog: str, description: str):
    import argparse

    return argparse.ArgumentParser(
        prog=f"musicrec {prog}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Reads the artifacts of the last `dvc repro` (data/split, data/models, "
        "reports/evaluation/metrics.json); see `musicrec recommend --help` for how models are "
        "chosen.",
    )


def main_recommend(argv: list[str] | None = None) -> int:
    parser = _parser("recommend", __doc__)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="ID", help="a listener in data/split/users.tsv")
    who.add_argument(
        "--seed-songs", metavar="ID,ID,...", help="songs a new listener likes, comma-separated"
    )
    parser.add_argument("-n", type=int, default=10, help="how many songs (default: 10)")
    parser.add_argument(
        "--model", help="model for --user (default: the best on the all split in metrics.json)"
    )
    _common(parser)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("-n must be at least 1")
    recommender = Recommender(args.project)
    if args.user is not None:
        result = recommender.for_user(args.user, args.n, args.model)
    else:
        if args.model:
            parser.error(
                "--model applies to --user; a new listener gets the better of "
                "fold-in and content profile on cold_user"
            )
        seeds = [s.strip() for s in args.seed_songs.split(",") if s.strip()]
        result = recommender.for_seed_songs(seeds, args.n)
    _print(result, args.json)
    return 0


def main_new_song(argv: list[str] | None = None) -> int:
    parser = _parser(
        "new-song", "Listeners and similar songs for audio files not in the catalogue."
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="audio files")
    parser.add_argument("-n", type=int, default=10, help="listeners and songs each (default: 10)")
    _common(parser)
    args = parser.parse_args(argv)
    recommender = Recommender(args.project)
    recommender.warm_up()
    results = [recommender.new_song(path, args.n, args.n) for path in args.paths]
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print("\n\n".join(r.to_text() for r in results))
    return 0


def main_similar(argv: list[str] | None = None) -> int:
    parser = _parser("similar", "Catalogue songs most similar to a song.")
    parser.add_argument("song_id", metavar="SONG_ID", help="a song in data/split/songs.tsv")
    parser.add_argument("-n", type=int, default=10, help="how many songs (default: 10)")
    _common(parser)
    args = parser.parse_args(argv)
    _print(Recommender(args.project).similar(args.song_id, args.n), args.json)
    return 0
