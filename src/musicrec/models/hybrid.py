"""Stage ``hybrid``: CF and content combined (Burke 2002), and new users' content profile.

CF is ``wmf``; content is the content model (one that predicts WMF song factors) whose cold-like
ranking of the validation slice is best: each user ranks the validation songs by content scores,
their training plays there being the relevant ones, which no content model trained on. Both
score with the WMF user factors, so their scores share one scale.

- ``hybrid_weighted``: ``w_v * CF + (1 - w_v) * content``, i.e. song vectors
  ``w_v v_wmf + (1 - w_v) v_hat`` (and CF's popularity column, :func:`blend`), with a per-song
  weight that grows with the song's training listeners, ``w_v = n_v / (n_v + k)`` (``k`` from
  ``hybrid.per_song_k``, chosen on the validation task below): the switching rule made soft,
  CF for songs many have played, content for the new ones. One ``w`` for every song
  (``hybrid.weights``) can be added to the candidates, but the task judges a weight only on
  its validation songs, and one ``w`` also acts on every warm song, where the task cannot
  judge content honestly: on the real-audio world a global ``w = 0`` won validation and lost
  to WMF on warm songs.
- ``hybrid_switching``: the content vector for songs with fewer than ``switch_min_plays``
  training plays (cold songs have none), the CF vector otherwise.
- ``hybrid_mixed``: the two ranked lists interleaved, CF first
  (:class:`musicrec.models.vectors.InterleavedModel`).
- ``content_profile`` (``cold_user`` only): a new user is the mean of the content vectors of their
  seed songs.

**Choosing the weight without touching the test.** The validation task is an ``all`` split in
miniature built from training plays only: WMF is refitted without ``validation_holdout`` of
every user's training plays on the other songs and without most plays of the validation songs,
which keep a share from ``validation_ladder`` each (none, 5%, 10%, 20% or 40%: new songs at each
stage of a cold start); users rank all warm songs, the held-out plays being relevant: warm and
cold-like candidates mixed, as the ``all`` split mixes them, and scored as it is. The content
model's vectors live in the original WMF space, so they are carried into the refit's space by
the linear map that takes the original factors of the training songs to the refitted ones
(least squares). Only the validation songs keep them: the content models trained on the other
songs' WMF factors, which saw the held-out plays, so there they take the refit's CF vectors and
every rule is judged where content is honest. The rule with the best mAP@500 on that task is
kept (``reports/hybrid.json`` lists every candidate's score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from musicrec import registry
from musicrec.dataset import Splits, load_splits
from musicrec.errors import MusicrecError
from musicrec.io import load_params, write_json
from musicrec.models.factorization import (
    WMFConfig,
    fit_wmf,
    fitted_config,
    listeners_of,
    with_popularity,
)
from musicrec.models.vectors import (
    InterleavedModel,
    ModelVectors,
    discover_models,
    load_model,
    save_interleaved,
    save_model,
)
from musicrec.ranking import mean_map, plays_part, songs_task, warm_task
from musicrec.stage import read_config, run_stage, stage_parser

HYBRID_SPLITS = list(registry.SPLITS)


@dataclass(frozen=True)
class HybridConfig:
    """``hybrid`` params."""

    # One w for every song: judged on the validation songs only (see the module docstring),
    # so none by default; the per-song rule is what the task can judge.
    weights: tuple[float, ...] = ()
    per_song_k: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
    validation_ladder: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4)  # kept plays' shares
    switch_min_plays: int = 5
    validation_holdout: float = 0.2
    map_k: int = 500
    seed: int = 0
    max_users: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        object.__setattr__(self, "per_song_k", tuple(float(k) for k in self.per_song_k))
        if any(not 0 <= w <= 1 for w in self.weights):
            raise MusicrecError("hybrid.weights: values in [0, 1]")
        if any(k <= 0 for k in self.per_song_k):
            raise MusicrecError("hybrid.per_song_k: values > 0")
        if not self.weights and not self.per_song_k:
            raise MusicrecError("hybrid: give hybrid.per_song_k or hybrid.weights some values")
        if self.switch_min_plays < 1 or not 0 < self.validation_holdout < 1:
            raise MusicrecError("hybrid: need switch_min_plays >= 1, 0 < validation_holdout < 1")
        if self.max_users < 0:
            raise MusicrecError("hybrid.max_users: 0 (every user) or a positive sample size")


@dataclass(frozen=True)
class WeightRule:
    """How ``hybrid_weighted`` weighs CF against content: one ``w`` for every song
    (``kind="global"``), or ``w_v = n_v / (n_v + k)`` from a song's training listeners
    ``n_v`` (``kind="per_song"``, ``value`` = k)."""

    kind: str
    value: float

    def label(self) -> str:
        if self.kind == "global":
            return f"w = {self.value:g}"
        return f"w_v = n_v / (n_v + {self.value:g})"

    def song_weights(self, listeners: np.ndarray) -> np.ndarray:
        """The CF weight of each song [shape=(n_songs, 1)], from its training listeners."""
        n = np.asarray(listeners, np.float64).reshape(-1, 1)
        return np.full_like(n, self.value) if self.kind == "global" else n / (n + self.value)


def candidate_rules(cfg: HybridConfig) -> list[WeightRule]:
    return [WeightRule("global", w) for w in cfg.weights] + [
        WeightRule("per_song", k) for k in cfg.per_song_k
    ]


def blend(cf_songs: np.ndarray, content_songs: np.ndarray, cf_weight) -> np.ndarray:
    """Song vectors ``w * CF + (1 - w) * content`` on WMF's factor columns, with CF's
    popularity column after them (every song keeps its popularity term: CF's knowledge of how
    many listened, zero for a song nobody played).

    Parameters
    ----------
    cf_songs : np.ndarray [shape=(n_songs, d + 1)]  a ``wmf`` model's song vectors.
    content_songs : np.ndarray [shape=(n_songs, d)]  predicted WMF factors.
    cf_weight : float or np.ndarray [shape=(n_songs, 1)]

    Returns
    -------
    np.ndarray [shape=(n_songs, d + 1)]
    """
    d = content_songs.shape[1]
    mixed = cf_weight * cf_songs[:, :d] + (1 - cf_weight) * content_songs
    return np.hstack([mixed, cf_songs[:, d:]])


def _best(scores: dict):
    """The key with the highest score, NaN counting as the lowest (ties: the first)."""
    return max(scores, key=lambda key: -np.inf if np.isnan(scores[key]) else scores[key])


def pick_content_model(
    splits: Splits, candidates: list[ModelVectors], k: int, seed: int, max_users: int = 0
) -> tuple[ModelVectors, dict[str, float]]:
    """The content model that ranks the validation songs best (cold-like), and every score
    (over a sample of ``max_users`` users when > 0)."""
    validation = np.flatnonzero(splits.songs["validation"].to_numpy())
    task = songs_task("validation", splits.matrices["train"], validation, max_users, seed)
    scores = {m.name: mean_map(m, task, k, seed) for m in candidates}
    return next(m for m in candidates if m.name == _best(scores)), scores


def choose_weight(
    splits: Splits,
    wmf: ModelVectors,
    content: ModelVectors,
    wmf_cfg: WMFConfig,
    cfg: HybridConfig,
) -> tuple[WeightRule, dict[WeightRule, float]]:
    """The weight rule of ``hybrid_weighted`` on the validation task of the module docstring,
    and every candidate's validation mAP."""
    rng = np.random.default_rng(cfg.seed)
    train = splits.matrices["train"].tocoo()
    validation = splits.songs["validation"].to_numpy()
    # Each validation song keeps a share of its plays in the refit, taken in turn from
    # validation_ladder: songs at every stage of a cold start, from no listener to some.
    ladder = np.asarray(cfg.validation_ladder, np.float64)
    validation_songs = np.flatnonzero(validation)
    kept_share = np.zeros(len(validation))
    kept_share[validation_songs] = ladder[rng.permutation(len(validation_songs)) % len(ladder)]
    draw = rng.random(train.nnz)
    keep = np.where(
        validation[train.col], draw < kept_share[train.col], draw >= cfg.validation_holdout
    )
    refit_train = plays_part(train, keep)
    users, songs = fit_wmf(refit_train, wmf_cfg)
    listeners = listeners_of(refit_train)
    fitted = np.flatnonzero(listeners > 0)
    # The linear map from the original factor space to the refit's, on the songs both fitted.
    original = wmf.song_vectors[fitted, : wmf_cfg.factors]
    rotation, *_ = np.linalg.lstsq(original, songs[fitted], rcond=None)
    # A content model's vectors of the songs it trained on were fitted to WMF factors of all
    # training plays, the ones held out here included: on this task they would know the
    # answer. Those songs take the refit's CF vectors as their content part, so each rule is
    # judged where content is honest, on the validation songs no content model trained on.
    content_songs = np.where(validation[:, None], content.song_vectors @ rotation, songs)
    task = warm_task(
        "hybrid-validation", splits, refit_train, plays_part(train, ~keep), cfg.max_users, cfg.seed
    )
    users, songs = with_popularity(users, songs, listeners, wmf_cfg.user_popularity())
    results = {}
    for rule in candidate_rules(cfg):
        w = rule.song_weights(listeners)
        mixed = ModelVectors("w", "", ["all"], users, blend(songs, content_songs, w))
        results[rule] = mean_map(mixed, task, cfg.map_k, cfg.seed)
    return _best(results), results


def build_hybrids(
    splits: Splits,
    wmf: ModelVectors,
    content: ModelVectors,
    rule: WeightRule,
    cfg: HybridConfig,
) -> list[ModelVectors | InterleavedModel]:
    """The three hybrids and the new-user content profile."""
    plays = listeners_of(splits.matrices["train"])
    weight = rule.song_weights(plays).astype(np.float32)
    switched = blend(
        wmf.song_vectors, content.song_vectors, (plays >= cfg.switch_min_plays)[:, None]
    )
    new_users = np.flatnonzero(splits.users["role"].to_numpy() == "cold_user")
    seeds = splits.matrices["cold_user_seed"][new_users].tocsr()
    profile = np.zeros((len(wmf.user_vectors), content.song_vectors.shape[1]), np.float32)
    seed_counts = np.maximum(np.diff(seeds.indptr), 1)[:, None]
    profile[new_users] = ((seeds > 0).astype(np.float32) @ content.song_vectors) / seed_counts
    source = f"CF `wmf`, content `{content.name}`"
    return [
        ModelVectors(
            "hybrid_weighted",
            f"CF weighted by {rule.label()}, content by 1 - that ({source})",
            HYBRID_SPLITS,
            wmf.user_vectors,
            blend(wmf.song_vectors, content.song_vectors, weight),
        ),
        ModelVectors(
            "hybrid_switching",
            f"content for songs with < {cfg.switch_min_plays} training plays, else CF ({source})",
            HYBRID_SPLITS,
            wmf.user_vectors,
            switched,
        ),
        InterleavedModel(
            "hybrid_mixed",
            f"CF and content lists interleaved ({source})",
            HYBRID_SPLITS,
            wmf,
            content,
        ),
        ModelVectors(
            "content_profile",
            f"new users as the mean content vector of their seed songs (`{content.name}`)",
            ["cold_user"],
            profile,
            content.song_vectors,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("hybrid", __doc__, ["hybrid"], ("split", "models"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = read_config(params, "hybrid", HybridConfig)
    wmf_cfg = fitted_config(args.models / "wmf")  # the refit uses the tuned settings
    hybrid_names = set(registry.models(stage="hybrid"))  # what this stage writes
    with run_stage("hybrid", args, params, ("hybrid",)) as (record, tracker):
        splits = load_splits(args.split)
        wmf = load_model(args.models / "wmf", splits.index_digest)
        candidates = [
            m
            for m in (load_model(d, splits.index_digest) for d in discover_models(args.models))
            # Audio models only: the hybrids are CF + audio (the context filter is its own
            # family, registry.CONTEXT).
            if m.predicts == "wmf_song_factors"
            and m.name not in hybrid_names
            and registry.model(m.name).family == registry.CONTENT
        ]
        if not candidates:
            raise MusicrecError(
                f"hybrid: no content model in {args.models}; run dvc repro bow cnn first"
            )
        content, content_scores = pick_content_model(
            splits, candidates, cfg.map_k, cfg.seed, cfg.max_users
        )
        rule, rule_scores = choose_weight(splits, wmf, content, wmf_cfg, cfg)
        for model in build_hybrids(splits, wmf, content, rule, cfg):
            if isinstance(model, InterleavedModel):
                save_interleaved(model, args.models / model.name, splits.index_digest)
            else:
                save_model(model, args.models / model.name, index=splits.index_digest)
        scores = {r.label(): v for r, v in rule_scores.items()}
        choice = {
            "content_model": content.name,
            "content_validation_map": content_scores,
            "weight": rule.label(),
            "weight_rule": {"kind": rule.kind, "value": rule.value},
            "weight_validation_map": scores,
        }
        write_json(args.reports / "hybrid.json", choice)
        tracker.log_metrics(choice)
        record.update(content_model=content.name, weight=rule.label())
    table = pd.Series(scores, name="validation mAP").to_string()
    print(f"hybrid: content {content.name}, {rule.label()}\n{table}")
    return 0
