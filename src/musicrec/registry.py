"""The one place that names the pipeline's splits, stages and models.

Every list of them elsewhere (the command line, the report, ``recommend``, the hybrid stage, the
content-model loader, the tests) reads this module, so adding a model is one module plus one
entry in :data:`MODELS`, and adding a stage one entry in :data:`STAGES` (and ``dvc.yaml``, which a
test holds to this table).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from musicrec.errors import MusicrecError

# The evaluation splits (docs/design.md, section 4), in the order reports show them.
SPLITS: tuple[str, ...] = ("warm", "cold", "all", "cold_user", "cold_new_artist")
# The splits a model that predicts song vectors from audio alone is scored on.
CONTENT_SPLITS: tuple[str, ...] = ("cold", "all")
# Views: a part of another split, scored for every model scored on that split. cold_new_artist
# ranks the cold songs of artists held out whole (no song of theirs in training); a data folder
# without artists has no such songs, and no such view.
VIEWS: dict[str, str] = {"cold_new_artist": "cold"}


def scores_on(model_splits: list[str] | tuple[str, ...], split: str) -> bool:
    """Whether a model declaring ``model_splits`` is scored on ``split`` (or the view's split)."""
    return split in model_splits or VIEWS.get(split) in model_splits


# evaluate's outputs: the DVC metric (each deployable model's mAP per split: what experiments
# are compared on) and the full table (every metric of every model on every split).
HEADLINE_METRICS = "reports/metrics.json"
FULL_METRICS = "reports/evaluation/metrics.json"


def map_key(map_k: int) -> str:
    """The metrics key of mAP at ``map_k`` (``evaluate.map_k``): ``map@500`` by default."""
    return f"map@{int(map_k)}"


def map_key_in(split_metrics: dict) -> str:
    """The mAP key of one model's metrics on one split (``{"map@500": ..., "auc": ...}``): the
    readers of ``metrics.json`` find it there, whatever ``evaluate.map_k`` was."""
    try:
        return next(k for k in split_metrics if k.startswith("map@"))
    except StopIteration:
        raise MusicrecError(
            f"no map@k among the metrics {sorted(split_metrics)}; run dvc repro evaluate"
        ) from None


@dataclass(frozen=True)
class Stage:
    """A stage of the DAG: ``musicrec <name>`` runs ``module``'s ``main``."""

    name: str
    module: str
    help: str


# In DAG order: the order `dvc repro` runs them and the report lists their timings.
STAGES: tuple[Stage, ...] = (
    Stage(
        "synthesize", "musicrec.synthesize", "generate the synthetic music world (audio + plays)"
    ),
    Stage("validate", "musicrec.validate", "check plays and audio; quarantine unusable songs"),
    Stage("features", "musicrec.features", "log-mel and MFCC features, cached per song"),
    Stage("split", "musicrec.split", "cold / warm / all / cold_user evaluation splits"),
    Stage("baselines", "musicrec.models.baselines", "random and popularity references"),
    Stage("tune", "musicrec.models.tune", "WMF's settings chosen on validation (Optuna TPE)"),
    Stage("wmf", "musicrec.models.wmf", "weighted matrix factorisation and the upper bound"),
    Stage("ridge", "musicrec.models.ridge", "stats_ridge: ridge on a clip's plain statistics"),
    Stage("context", "musicrec.models.context", "context: song vectors from songs.csv metadata"),
    Stage("bow", "musicrec.models.bow", "MFCC bag-of-words baselines: bow_linear and bow_mlp"),
    Stage(
        "cnn",
        "musicrec.models.cnn",
        "CNN on log-mel windows: cnn_mse, cnn_wpe, cnn_contrastive (and a shuffled control)",
    ),
    Stage("dbn", "musicrec.models.dbn", "Wang & Wang's DBN: hldbn, hldbn_nopretrain, hybrid_dbn"),
    Stage(
        "audio_context",
        "musicrec.models.audio_context",
        "hybrid_audio_context: audio plus the context of what audio leaves",
    ),
    Stage(
        "hybrid",
        "musicrec.models.hybrid",
        "weighted, switching and mixed hybrids; content profile",
    ),
    Stage("folds", "musicrec.folds", "every model trained again on each cold fold after the first"),
    Stage("evaluate", "musicrec.evaluate", "score every model on every split"),
    Stage("report", "musicrec.report", "write reports/report.md and report.html"),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

# Model families (docs/design.md, section 1).
REFERENCE = "reference"  # a yardstick: knows nothing, or saw the held-out plays
BASELINE = "baseline"  # deployable, not personalised: what any model must beat
COLLABORATIVE = "collaborative"
CONTENT = "content"  # song vectors from audio
CONTEXT = "context"  # song vectors from metadata (artist, album, genre, year)
HYBRID = "hybrid"
NEW_USER = "new_user"


@dataclass(frozen=True)
class ModelSpec:
    """One model: what the report, ``recommend`` and the loaders need to know of it.

    name : its folder under ``data/models/`` and its key in ``metrics.json``.
    stage : the stage that writes it.
    family : :data:`REFERENCE`, :data:`BASELINE`, :data:`COLLABORATIVE`, :data:`CONTENT`,
        :data:`CONTEXT`, :data:`HYBRID` or :data:`NEW_USER`.
    recommends : whether ``recommend`` may pick it as the best model (references such as
        ``upper_bound``, which saw held-out plays, and ``random`` may not).
    predictor : ``"module:Class"`` of the fitted model kept in ``<folder>/predictor/`` (the
        models that can score a song never seen), or None.
    """

    name: str
    stage: str
    family: str
    recommends: bool = True
    predictor: str | None = None

    def load_predictor_class(self) -> type:
        """The class whose ``load`` reads this model's ``predictor/`` folder."""
        if self.predictor is None:
            raise MusicrecError(f"model {self.name} keeps no predictor")
        module, _, name = self.predictor.partition(":")
        return getattr(importlib.import_module(module), name)


_BOW = "musicrec.models.bow:BowModel"
_CNN = "musicrec.models.cnn:CNNModel"
_DBN = "musicrec.models.dbn:DBNModel"

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("random", "baselines", REFERENCE, recommends=False),
    # Counts the training plays only: what a real system could run.
    ModelSpec("popularity", "baselines", BASELINE),
    # Sees every play, held-out ones included: a reference, never a recommendation.
    ModelSpec("popularity_oracle", "baselines", REFERENCE, recommends=False),
    ModelSpec("wmf", "wmf", COLLABORATIVE),
    ModelSpec("upper_bound", "wmf", REFERENCE, recommends=False),
    ModelSpec("stats_ridge", "ridge", CONTENT, predictor="musicrec.models.ridge:RidgeModel"),
    # Shuffled controls: the model fitted on audio paired with other songs' factors. What it
    # scores is not audio signal; an audio model is useful only ahead of its control.
    ModelSpec("stats_ridge_shuffled", "ridge", REFERENCE, recommends=False),
    ModelSpec("context", "context", CONTEXT),
    ModelSpec("bow_linear", "bow", CONTENT, predictor=_BOW),
    ModelSpec("bow_linear_shuffled", "bow", REFERENCE, recommends=False),
    ModelSpec("bow_mlp", "bow", CONTENT, predictor=_BOW),
    ModelSpec("cnn_mse", "cnn", CONTENT, predictor=_CNN),
    ModelSpec("cnn_wpe", "cnn", CONTENT, predictor=_CNN),
    ModelSpec("cnn_contrastive", "cnn", CONTENT, predictor=_CNN),
    ModelSpec("cnn_mse_shuffled", "cnn", REFERENCE, recommends=False),
    ModelSpec("hldbn", "dbn", CONTENT, predictor=_DBN),
    ModelSpec("hldbn_nopretrain", "dbn", CONTENT, predictor=_DBN),
    ModelSpec("hybrid_dbn", "dbn", HYBRID, predictor=_DBN),
    # A cold song's vector from its audio and its metadata together.
    ModelSpec("hybrid_audio_context", "audio_context", HYBRID),
    ModelSpec("hybrid_weighted", "hybrid", HYBRID),
    ModelSpec("hybrid_switching", "hybrid", HYBRID),
    ModelSpec("hybrid_mixed", "hybrid", HYBRID),
    ModelSpec("content_profile", "hybrid", NEW_USER),
)
MODEL_NAMES: tuple[str, ...] = tuple(m.name for m in MODELS)


def model(name: str) -> ModelSpec:
    """The registry entry of ``name``; a clear error for a model it does not know."""
    for spec in MODELS:
        if spec.name == name:
            return spec
    known = ", ".join(m.name for m in MODELS)
    raise MusicrecError(f"no model {name!r} in musicrec.registry.MODELS (known: {known})")


def yardsticks() -> tuple[str, ...]:
    """Models that are references, not recommenders (``recommends`` False): ``recommend``
    never picks them as the best model."""
    return tuple(m.name for m in MODELS if not m.recommends)


def deployable() -> tuple[str, ...]:
    """Models a real system could run (everything but the references), in registry order."""
    return tuple(m.name for m in MODELS if m.family != REFERENCE)


def models(
    family: str | None = None, stage: str | None = None, prefix: str = ""
) -> tuple[str, ...]:
    """Names of the registered models of a ``family`` and/or ``stage``, in registry order."""
    return tuple(
        m.name
        for m in MODELS
        if (family is None or m.family == family)
        and (stage is None or m.stage == stage)
        and m.name.startswith(prefix)
    )
