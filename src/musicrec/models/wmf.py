"""Stage ``wmf``: weighted matrix factorisation of play counts (Hu, Koren, Volinsky 2008).

The factorisation itself (confidence, ALS, fold-in) is :mod:`musicrec.models.factorization`.
The settings are params.yaml's ``wmf`` section with the values the ``tune`` stage chose on
validation (``data/tune/wmf.json``); ``data/models/wmf/config.json`` records what was used.

Two models come out of one stage:

- ``wmf``: fitted on the training plays, with the popularity column that ``tune`` weighed
  (:mod:`musicrec.models.factorization`: ``u'v + beta_u p_v``). Its song factors (the columns
  before the popularity one) are the targets that audio models learn to predict, and its user
  factors score every content model. Cold songs have no plays, so their WMF factors are zero:
  CF cannot rank them. New users (``cold_user``) are folded in from their seed plays with
  implicit's ``recalculate_user``, the song factors held fixed, and weigh popularity by their
  number of seed plays.
- ``upper_bound``: the same fit on all plays, cold songs and held-out plays included (as in van
  den Oord et al. 2013): the ceiling any audio model that predicts factors could reach.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from musicrec import registry
from musicrec.dataset import load_splits
from musicrec.io import load_params, read_json
from musicrec.models.factorization import (
    WMFConfig,
    fit_wmf,
    fold_in_new_users,
    listeners_of,
    song_targets,
    with_popularity,
)
from musicrec.models.vectors import ModelVectors, save_model
from musicrec.stage import read_config, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("wmf", __doc__, ["wmf"], ("split", "models"))
    parser.add_argument(
        "--tune",
        type=Path,
        default=Path("data/tune/wmf.json"),
        help="the values the tune stage chose (default: data/tune/wmf.json)",
    )
    args = parser.parse_args(argv)
    # params.yaml's wmf section with the values the tune stage chose on validation.
    params = load_params(args.params)
    cfg = replace(read_config(params, "wmf", WMFConfig), **read_json(args.tune))
    # A W&B run, so that the artifact graph runs from the splits through WMF to what uses it.
    with run_stage("wmf", args, params, ("wmf",)) as (record, _):
        splits = load_splits(args.split)
        users, songs = fit_wmf(splits.matrices["train"], cfg)
        targets = song_targets(songs, users, splits, cfg)
        listeners = listeners_of(splits.matrices["train"])
        users, songs = with_popularity(users, songs, listeners, cfg.user_popularity())
        users = fold_in_new_users(users, songs, splits, cfg)
        save_model(
            ModelVectors(
                "wmf",
                "WMF (implicit ALS) on the training plays plus a popularity term; new users "
                "folded in from their seeds",
                list(registry.SPLITS),
                users,
                songs,
            ),
            args.models / "wmf",
            extras={"song_targets": targets},
            index=splits.index_digest,
            config=asdict(cfg),
        )
        users, songs = fit_wmf(splits.matrices["all"], cfg)
        save_model(
            ModelVectors(
                "upper_bound",
                "WMF on all plays, held-out ones included",
                list(registry.SPLITS),
                users,
                songs,
            ),
            args.models / "upper_bound",
            index=splits.index_digest,
        )
        record.update(
            factors=cfg.factors,
            iterations=cfg.iterations,
            popularity_weight=cfg.popularity_weight,
            new_user_popularity=cfg.new_user_popularity,
        )
    print(f"wmf: {cfg.factors} factors, fitted on train and on all plays -> {args.models}")
    return 0
