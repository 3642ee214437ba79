"""stats_ridge: a known linear answer is found, and the penalty is chosen on validation."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from musicrec.models.content import ContentData
from musicrec.models.ridge import RidgeConfig, RidgeModel


def test_ridge_recovers_factors_that_are_linear_in_the_clip_statistics(tmp_path):
    rng = np.random.default_rng(0)
    n_songs, frames = 80, 20
    logmel = rng.normal(size=(n_songs, 4, frames)).astype(np.float32)
    mfcc = rng.normal(size=(n_songs, 3, frames)).astype(np.float32)
    logmel[:, 0] += rng.normal(size=(n_songs, 1)) * 3  # a band whose level varies by song
    level = logmel[:, 0].mean(axis=1)
    targets = np.stack([0.05 * level, -0.02 * level], axis=1).astype(np.float32)
    data = ContentData(
        targets=targets,
        user_factors=np.zeros((3, 2), np.float32),
        train_plays=sp.csr_matrix((3, n_songs)),
        train_songs=np.arange(60),
        validation_songs=np.arange(60, 70),
        index_digest="test",
    )
    features = {"logmel": logmel, "mfcc": mfcc}
    model = RidgeModel(RidgeConfig(alphas=(0.1, 1000.0))).fit(features, data, tmp_path)
    held_out = np.arange(70, 80)
    predicted = model.predict(features, held_out)
    np.testing.assert_allclose(predicted, targets[held_out], atol=0.01)
    assert model.alpha == 0.1  # the strong penalty shrinks a true signal: validation says so
    model.save(tmp_path / "saved")
    again = RidgeModel.load(tmp_path / "saved")
    np.testing.assert_array_equal(again.predict(features, held_out), predicted)
