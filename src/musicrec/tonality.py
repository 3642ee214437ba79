"""A song's key and mode from its chroma: the Krumhansl-Kessler key profiles.

Listeners' taste follows the mode (major or minor) of a song, whatever its key; the log-mel a
CNN reads cannot tell a major third from a minor one, and on the synthetic world no audio model
recovers the mode (a linear probe of their predictions: R^2 0.01). The chroma can: the mean
pitch-class profile of a song, correlated with the 24 rotations of Krumhansl and Kessler's
(1982) probe-tone profiles of C major and C minor, names its best-fitting key and how much
better the best major key fits than the best minor one, the classic key finder of symbolic and
audio MIR (as in Essentia's ``KeyExtractor`` and librosa's examples).

A library: ``audio_context`` reads these descriptors beside the audio models' predictions.
"""

from __future__ import annotations

import numpy as np

# Krumhansl & Kessler (1982), ratings of each pitch class after a C major / C minor context.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
N_PITCH_CLASSES = 12
DESCRIPTOR_NAMES = (
    "major_fit",
    "minor_fit",
    "mode_strength",
    *(f"degree_{i}" for i in range(N_PITCH_CLASSES)),
)


def _standardise(rows: np.ndarray) -> np.ndarray:
    """Each row [shape=(n, 12)] to mean 0 and std 1; a flat row (silence) to zeros."""
    centred = rows - rows.mean(axis=1, keepdims=True)
    std = centred.std(axis=1, keepdims=True)
    return centred / np.where(std > 0, std, 1.0)


def key_correlations(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of each pitch-class profile with every major and minor key.

    Parameters
    ----------
    profiles : np.ndarray [shape=(n, 12)]  pitch-class weights, C first.

    Returns
    -------
    major, minor : np.ndarray [shape=(n, 12)]  column k: the key whose tonic is pitch class k.
    """
    songs = _standardise(np.asarray(profiles, np.float64))
    out = []
    for profile in (MAJOR_PROFILE, MINOR_PROFILE):
        keys = _standardise(np.stack([np.roll(profile, k) for k in range(N_PITCH_CLASSES)]))
        out.append(songs @ keys.T / N_PITCH_CLASSES)
    return out[0], out[1]


def estimate_keys(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best-fitting key of each profile [shape=(n, 12)]: its tonic's pitch class
    [shape=(n,), int] and whether it is major [shape=(n,), bool] (ties: major)."""
    major, minor = key_correlations(profiles)
    is_major = major.max(axis=1) >= minor.max(axis=1)
    tonic = np.where(is_major, major.argmax(axis=1), minor.argmax(axis=1))
    return tonic, is_major


def key_descriptors(chroma: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Key descriptors of each song, from its chroma frames.

    Parameters
    ----------
    chroma : np.ndarray [shape=(n_songs, 12, n_frames)]
        The ``features`` stage's ``chroma.npy`` (float16, memory-mapped is fine: read
        ``chunk`` songs at a time).
    chunk : int

    Returns
    -------
    np.ndarray [shape=(n_songs, 15), float32], columns :data:`DESCRIPTOR_NAMES`:
        the best major key's correlation with the song's mean chroma, the best minor key's,
        their difference (> 0: major), and the mean chroma rotated to start at the best key's
        tonic, summing to 1 (the weight of each scale degree; key-free, as taste is). A
        silent song: zeros, then 1/12 each.
    """
    n_songs = len(chroma)
    out = np.zeros((n_songs, len(DESCRIPTOR_NAMES)), np.float32)
    for start in range(0, n_songs, chunk):
        profiles = np.asarray(chroma[start : start + chunk], np.float32).mean(axis=2)
        major, minor = key_correlations(profiles)
        tonic, _ = estimate_keys(profiles)
        rows = np.arange(len(profiles))[:, None]
        degrees = profiles[rows, (tonic[:, None] + np.arange(N_PITCH_CLASSES)) % 12]
        total = degrees.sum(axis=1, keepdims=True)
        degrees = np.where(total > 0, degrees / np.where(total > 0, total, 1), 1 / 12)
        best_major, best_minor = major.max(axis=1), minor.max(axis=1)
        out[start : start + len(profiles)] = np.column_stack(
            [best_major, best_minor, best_major - best_minor, degrees]
        )
    return out
