"""Stage ``audio_context``: ``hybrid_audio_context``, a new song's vector from its audio and its
context together.

An audio model predicts the part of a song's WMF factors that can be heard; what its listeners
share beyond the sound (an artist's standing, a scene, a label) no audio reveals, but songs of
the same artist, album or year carry it. So the song's vector is

    v_hat = h + weight * r

- ``h``, what is heard: an audio model's prediction ``a`` (a content model predicting WMF
  factors), or the mean of all of theirs (``audio_mean``: their errors partly cancel); or,
  where ``audio_context.key_descriptors`` lets it, a ridge from ``a`` and the song's key and
  mode (:func:`musicrec.tonality.key_descriptors`, from the chroma) onto the factors, fitted
  on the training songs with its penalty chosen on the validation songs. No audio model
  hears the mode (their log-mel inputs cannot tell a major third from a minor one), and
  taste follows it;
- ``r``: the context filter (:func:`musicrec.models.context.context_regression`) fitted on what
  audio leaves of the factors, ``targets - h``, on the training songs: for each
  metadata column, the shrunk mean residual of the training songs sharing the value, combined
  by ridge. The shrinkage is the gate by how much is known: a value with many training songs
  moves the song a long way, one with few a little, and the songs of an artist no training
  song has (a new artist) all by one and the same vector, which leaves every user's ranking of
  them as the audio model's;
- ``weight`` (of ``audio_context.weights``), the audio model and whether the key is heard are
  what ranks the validation songs best (the candidates include the audio models alone, weight
  0, and the context filter alone, audio model ``none``: the choice is never behind either on
  validation), cold-like (the task the hybrid chooses its content
  model on); but the key is heard only where the best choice with it beats the best without
  it by ``audio_context.key_min_z`` standard errors of the paired per-user difference
  (:func:`key_evidence`). With a handful of validation songs (13 on the real-audio world) a
  choice among twice as many candidates is mostly noise, and there the key won validation by
  1.9 standard errors and lost 0.018 mAP on the cold songs.

An audio model's predictions on its own training songs are closer to their factors than on new
songs, so the residuals there are smaller than a new song's; the weight, chosen on songs the
audio model never trained on, makes up for it (it often lands above 1).

Without context (``songs.csv`` absent or without the columns, so the ``context`` model was
skipped) the stage writes ``data/models/hybrid_audio_context/skipped.json`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from musicrec import registry
from musicrec.errors import MusicrecError
from musicrec.io import load_params
from musicrec.models.content import (
    ContentData,
    content_stage_parser,
    load_content_data,
    ridge_onto_targets,
    target_scaling,
)
from musicrec.models.context import ContextConfig, context_regression, metadata_or_skip
from musicrec.models.vectors import ModelVectors, discover_models, load_model, save_model
from musicrec.ranking import evaluate_on_task, songs_task
from musicrec.stage import DataConfig, read_config, run_stage
from musicrec.tonality import key_descriptors

NAME = "hybrid_audio_context"
AUDIO_MEAN = "audio_mean"  # the candidate that averages the audio models' vectors
CONTEXT_ONLY = "none"  # the candidate that hears nothing: the context filter alone


@dataclass(frozen=True)
class AudioContextConfig:
    """``audio_context`` in params.yaml."""

    weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)  # of r, tried
    key_descriptors: tuple[bool, ...] = (False, True)  # without and with the key, tried
    key_min_z: float = 1.96  # the key is heard only where it wins on validation by this much
    map_k: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if not self.key_descriptors or any(not isinstance(k, bool) for k in self.key_descriptors):
            raise MusicrecError(
                "audio_context.key_descriptors: a list of true/false to try (false: the audio "
                f"model alone; true: plus its key and mode), not {self.key_descriptors!r}"
            )
        object.__setattr__(self, "key_descriptors", tuple(self.key_descriptors))
        if self.key_min_z < 0:
            raise MusicrecError("audio_context.key_min_z: a number of standard errors, >= 0")
        if not self.weights or min(self.weights) < 0 or self.map_k < 1:
            raise MusicrecError("audio_context: need weights >= 0 (at least one) and map_k >= 1")


def hear_with_key(
    audio: np.ndarray, descriptors: np.ndarray, data: ContentData, alphas: tuple[float, ...]
) -> tuple[np.ndarray, float]:
    """``h`` with the key: a ridge from an audio model's prediction and the key descriptors
    onto the WMF factors.

    Parameters
    ----------
    audio : np.ndarray [shape=(n_songs, d)]  ``a``, the audio model's prediction.
    descriptors : np.ndarray [shape=(n_songs, n_descriptors)]  :func:`key_descriptors`.
    data : ContentData  its training songs fit the ridge, its validation songs (which no
        audio model trained on) choose the penalty (of ``alphas``, the context filter's).

    Returns
    -------
    heard : np.ndarray [shape=(n_songs, d), float64]
    alpha : float  the penalty kept.
    """
    train = data.train_songs
    y_mean, y_scale = target_scaling(data.targets[train])
    centre, spread = descriptors[train].mean(axis=0), descriptors[train].std(axis=0)
    # Both inputs on a common scale, so that one penalty fits them: the prediction as its
    # targets are scaled, the descriptors standardised.
    x = np.hstack(
        [(audio - y_mean) / y_scale, (descriptors - centre) / np.where(spread > 0, spread, 1.0)]
    )
    heard, alpha, _ = ridge_onto_targets(x, data.targets, train, data.validation_songs, alphas)
    return heard, alpha


def fit_audio_context(
    metadata: pd.DataFrame,
    data: ContentData,
    audio_models: list[ModelVectors],
    context_cfg: ContextConfig,
    cfg: AudioContextConfig,
    descriptors: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """The song vectors of ``hybrid_audio_context`` and what was chosen.

    Parameters
    ----------
    metadata : pd.DataFrame [shape=(n_songs, n_columns)]  songs.csv's columns, "" unknown.
    data : ContentData  targets, training and validation songs, training plays.
    audio_models : list of ModelVectors  candidates; each song vectors [(n_songs, d)]
        predicting the WMF factors. With more than one, their mean (``audio_mean``) is one too.
    context_cfg : ContextConfig  shrinkage and ridge penalties, as the context filter's.
    cfg : AudioContextConfig
    descriptors : np.ndarray [shape=(n_songs, n_descriptors)], optional
        The songs' key descriptors (:func:`key_descriptors`); without them, or where
        ``cfg.key_descriptors`` holds no true, the key is never heard.

    Returns
    -------
    vectors : np.ndarray [shape=(n_songs, d), float32]
    summary : dict  the audio model, the key or not and the weight kept, and every choice's
        validation mAP (``<audio model>+key`` with the key).
    """
    if not audio_models:
        raise MusicrecError("audio_context: no audio model to combine with the context")
    if len(audio_models) > 1:
        mean = np.mean([m.song_vectors for m in audio_models], axis=0).astype(np.float32)
        audio_models = [
            *audio_models,
            ModelVectors(AUDIO_MEAN, "", ["cold"], data.user_factors, mean),
        ]
    task = songs_task("validation", data.train_plays, data.validation_songs, 0, cfg.seed)
    key_options = [k for k in cfg.key_descriptors if descriptors is not None or not k]
    scores: dict[str, dict[str, float]] = {}
    best: dict[bool, tuple] = {}  # without and with the key: the best choice of each
    # The context filter alone hears nothing: h = 0, and any weight above 0 ranks alike.
    hears_nothing = ModelVectors(CONTEXT_ONLY, "", ["cold"], data.user_factors, 0 * data.targets)
    for audio in [*audio_models, hears_nothing]:
        alone = audio is hears_nothing
        for with_key in [False] if alone else key_options or [False]:
            heard, key_alpha = audio.song_vectors.astype(np.float64), None
            if with_key:
                heard, key_alpha = hear_with_key(heard, descriptors, data, context_cfg.alphas)
            residual_context, alpha, _ = context_regression(
                metadata,
                data.targets - heard,
                data.train_songs,
                data.validation_songs,
                context_cfg,
            )
            label = f"{audio.name}+key" if with_key else audio.name
            scores[label] = {}
            for weight in [1.0] if alone else cfg.weights:
                vectors = (heard + weight * residual_context).astype(np.float32)
                probe = ModelVectors(NAME, "", ["cold"], data.user_factors, vectors)
                per_user = evaluate_on_task(probe, task, cfg.map_k, [10], cfg.seed)
                user_ap = per_user[registry.map_key(cfg.map_k)]
                score = float(np.nanmean(user_ap))
                scores[label][f"{weight:g}"] = round(score, 6)
                if with_key not in best or score > best[with_key][0]:  # ties: smaller weight
                    best[with_key] = (score, audio.name, key_alpha, weight, vectors, alpha, user_ap)
    if not best:
        raise MusicrecError("audio_context: no audio model to combine with the context")
    gain_z = key_evidence(best)
    with_key = gain_z is not None and gain_z >= cfg.key_min_z or False not in best
    score, audio_name, key_alpha, weight, vectors, alpha, _ = best[with_key]
    summary = {
        "audio_model": audio_name,
        "key_descriptors": with_key,
        "key_alpha": key_alpha,
        "key_gain_z": gain_z,
        "weight": weight,
        "alpha": alpha,
        "columns": list(metadata.columns),
        "validation_map": score,
        "validation_map_by_model_and_weight": scores,
    }
    return vectors, summary


def key_evidence(best: dict[bool, tuple]) -> float | None:
    """How far the best choice with the key ranks the validation users above the best one
    without it: the mean of the per-user differences in average precision over their standard
    error (paired: the same users rank both). None where either is missing.

    ``best[with_key]`` ends with the per-user average precisions [shape=(n_users,)], NaN for
    a user with nothing to find."""
    if True not in best or False not in best:
        return None
    gain = best[True][-1] - best[False][-1]
    gain = gain[~np.isnan(gain)]
    if len(gain) < 2:
        return None
    error = gain.std(ddof=1) / np.sqrt(len(gain))
    return float(gain.mean() / error) if error > 0 else float(np.sign(gain.mean()) * np.inf)


def audio_candidates(models_dir: Path, index_digest: str) -> list[ModelVectors]:
    """The audio models under ``models_dir`` that predict WMF factors (registry family
    CONTENT; shuffled controls are references), in registry order."""
    found = []
    for directory in discover_models(models_dir):
        if directory.name not in registry.MODEL_NAMES:
            continue
        if registry.model(directory.name).family != registry.CONTENT:
            continue
        model = load_model(directory, index_digest)
        if model.predicts == "wmf_song_factors":
            found.append(model)
    order = {name: i for i, name in enumerate(registry.MODEL_NAMES)}
    return sorted(found, key=lambda m: order[m.name])


def main(argv: list[str] | None = None) -> int:
    parser = content_stage_parser(
        "audio_context", __doc__, ["data.root", "context", "audio_context"]
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    context_cfg = read_config(params, "context", ContextConfig)
    cfg = read_config(params, "audio_context", AudioContextConfig)
    root = Path(read_config(params, "data", DataConfig).root)
    out = args.models / NAME
    with run_stage("audio_context", args, params, ("context", "audio_context")) as (
        record,
        tracker,
    ):
        data = load_content_data(args.split, args.models / "wmf", args.features)
        metadata = metadata_or_skip(root, args.features, context_cfg.columns, out, record)
        if metadata is None:
            return 0
        candidates = audio_candidates(args.models, data.index_digest)
        if not candidates:
            raise MusicrecError(
                f"audio_context: no audio model in {args.models}; run dvc repro cnn first"
            )
        descriptors = key_descriptors(np.load(args.features / "chroma.npy", mmap_mode="r"))
        vectors, summary = fit_audio_context(
            metadata, data, candidates, context_cfg, cfg, descriptors
        )
        heard = summary["audio_model"] + (" and its key" if summary["key_descriptors"] else "")
        columns = ", ".join(summary["columns"])
        description = (
            f"the context filter alone ({columns}): it ranked the validation songs best"
            if summary["audio_model"] == CONTEXT_ONLY
            else f"audio ({heard}) plus {summary['weight']:g} x the context ({columns}) of what "
            "the audio leaves of the factors"
        )
        save_model(
            ModelVectors(
                NAME,
                description,
                list(registry.CONTENT_SPLITS),
                data.user_factors,
                vectors,
                predicts="wmf_song_factors",
            ),
            out,
            index=data.index_digest,
            config=summary,
        )
        tracker.log_metrics({NAME: {k: summary[k] for k in ("weight", "validation_map")}})
        record.update(
            columns=summary["columns"],
            audio_model=summary["audio_model"],
            key_descriptors=summary["key_descriptors"],
            weight=summary["weight"],
        )
    print(
        f"audio_context: {heard} + {summary['weight']:g} x context residual "
        f"(validation mAP {summary['validation_map']:.4f}) -> {out}"
    )
    return 0
