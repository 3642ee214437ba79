"""Known answers for the key finder (musicrec.tonality)."""

import numpy as np
import pytest

from musicrec.audio_features import FeatureConfig, compute_song_features
from musicrec.tonality import (
    DESCRIPTOR_NAMES,
    MAJOR_PROFILE,
    MINOR_PROFILE,
    estimate_keys,
    key_correlations,
    key_descriptors,
)

CFG = FeatureConfig(clip_seconds=4.0)


def test_each_profile_fits_its_own_key_perfectly_in_every_transposition():
    for shift in range(12):
        profiles = np.stack([np.roll(MAJOR_PROFILE, shift), np.roll(MINOR_PROFILE, shift)])
        major, minor = key_correlations(profiles)
        assert major[0, shift] == pytest.approx(1.0) and minor[1, shift] == pytest.approx(1.0)
        tonic, is_major = estimate_keys(profiles)
        assert tonic.tolist() == [shift, shift] and is_major.tolist() == [True, False]


def _chords(roots_and_thirds: list[tuple[int, int]], tonic_midi: int) -> np.ndarray:
    """One second per chord of sine tones: root in the bass and above, its third and fifth."""
    t = np.arange(CFG.sample_rate) / CFG.sample_rate
    out = []
    for root, third in roots_and_thirds:
        notes = [tonic_midi + root - 12, tonic_midi + root, tonic_midi + root + third,
                 tonic_midi + root + 7]  # fmt: skip
        freqs = [440.0 * 2 ** ((m - 69) / 12) for m in notes]
        out.append(sum(np.sin(2 * np.pi * f * t) for f in freqs) / 8)
    return np.concatenate(out).astype(np.float32)


@pytest.mark.parametrize(
    ("progression", "tonic_midi", "tonic", "major"),
    [
        ([(0, 4), (5, 4), (7, 4), (0, 4)], 62, 2, True),  # I-IV-V-I in D major
        ([(0, 3), (5, 3), (7, 3), (0, 3)], 64, 4, False),  # i-iv-v-i in E minor
        ([(0, 3), (8, 4), (3, 4), (0, 3)], 57, 9, False),  # i-VI-III-i in A minor
    ],
)
def test_audio_of_a_progression_gives_its_key_and_mode(progression, tonic_midi, tonic, major):
    _, _, chroma = compute_song_features(_chords(progression, tonic_midi), CFG)
    descriptors = key_descriptors(chroma[None])
    found_tonic, found_major = estimate_keys(chroma.mean(axis=1)[None])
    assert (int(found_tonic[0]), bool(found_major[0])) == (tonic, major)
    mode_strength = descriptors[0, DESCRIPTOR_NAMES.index("mode_strength")]
    assert (mode_strength > 0) == major
    degrees = descriptors[0, 3:]
    assert degrees.sum() == pytest.approx(1.0, abs=1e-5) and degrees[0] > 1 / 12  # the tonic


def test_descriptors_are_key_free_and_silence_is_neutral():
    rng = np.random.default_rng(0)
    chroma = rng.random((1, 12, 50)).astype(np.float32)
    transposed = np.roll(chroma, 5, axis=1)
    np.testing.assert_allclose(key_descriptors(chroma), key_descriptors(transposed), atol=1e-6)
    silent = key_descriptors(np.zeros((2, 12, 10), np.float16), chunk=1)
    assert silent.shape == (2, len(DESCRIPTOR_NAMES))
    np.testing.assert_allclose(silent[:, :3], 0.0)
    np.testing.assert_allclose(silent[:, 3:], 1 / 12)
