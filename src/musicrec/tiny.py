"""The tiny world: the project's params shrunk for smoke runs that must finish in seconds.

The tests build it, and so does ``benchmarks/gpu_check.py --quick`` (the GPU check's CPU mode,
which ``make test`` runs so the check cannot rot between GPU runs). One definition serves both,
so a change to ``params.yaml`` reaches them alike.
"""

from __future__ import annotations

from pathlib import Path

import yaml

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"

# 60 songs of 3 s, 200 listeners: every stage runs, none has enough data to learn much.
TINY_WORLD = dict(
    n_songs=60,
    n_users=200,
    mean_songs_per_user=12,
    clip_seconds=3.0,
    sample_rate=22050,
    audio_share=0.6,
    taste_sharpness=2.5,
    popularity_spread=1.3,
    hidden_dims=4,
    songs_per_artist=6,
    seed=7,
)


# The tiny world's machine settings (musicrec.machine): one process a stage.
TINY_MACHINE = {section: {"n_jobs": 1} for section in ("synthesize", "validate", "features")}


def tiny_params(base: Path = REPO_PARAMS, **overrides: dict) -> dict:
    """``base`` params shrunk for the tiny world, with section ``overrides`` applied."""
    params = yaml.safe_load(Path(base).read_text())
    params["synthesize"].update(TINY_WORLD)
    params["validate"].update(min_seconds=1.0)
    # 5% of 60 songs is one artist's single song here: 10% holds out one of 8 songs. One cold
    # fold (auto would take 5 for 60 songs, and train every model 5 times): the tests that
    # exercise folds ask for them.
    params["split"].update(new_artist_fraction=0.1, cold_folds=1)
    params["features"].update(clip_seconds=3.0)
    params["wmf"].update(factors=8, iterations=5)
    params["tune"].update(trials=4, factors=[4, 8], iterations=[3, 8])
    params["tune_content"].update(bow_mlp=2, dbn=2, width=[16, 32])
    params["evaluate"].update(bootstrap=100, ks=[5, 10, 50])
    params["bow"].update(vocabulary_size=32, frames_per_song=40, pca_components=16, hidden_units=32)
    params["bow_mlp"].update(epochs=10, patience=3)
    params["cnn"].update(
        window_frames=32,
        channels=[16, 16, 16],
        pools=[2, 2],
        dense_units=32,
        wpe_users_per_batch=64,
    )
    params["cnn_training"].update(epochs=3, patience=2)
    params["dbn"].update(layers=[16, 4], pretrain_epochs=3)
    params["dbn_training"].update(epochs=3, patience=2)
    for name, values in overrides.items():
        params[name].update(values)
    return params
