"""Render a music-like clip from a song's attributes (used by the ``synthesize`` stage).

A song is drums in a style-specific 16-step pattern at a tempo, a bass line on the chord roots,
chords of a progression in a key and mode, and a melody that walks the scale, each voice an
additive instrument (a harmonic spectrum and an envelope), mixed with some noise, humanised
timing and per-song variation. Everything a listener could hear about the song's attributes
(style, tempo, mode, brightness, lead timbre, energy, loudness) is in the waveform; nothing else
about the song (its hidden social factors) is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

# Per-style rhythm: 16-step patterns (steps are sixteenth notes) and voicing habits.
# kick/snare/hat: step indices; swing delays off-beat sixteenths by a fraction of a step.
STYLES: dict[str, dict] = {
    "rock": dict(
        tempo=(104, 144),
        kick=[0, 6, 8],
        snare=[4, 12],
        hat=[0, 2, 4, 6, 8, 10, 12, 14],
        swing=0.0,
        drums=1.0,
        bass_steps=[0, 2, 4, 6, 8, 10, 12, 14],
        chord_attack=0.01,
        chord_release=0.1,
        drive=2.5,
        pad="saw",
    ),
    "electronic": dict(
        tempo=(120, 132),
        kick=[0, 4, 8, 12],
        snare=[4, 12],
        hat=[2, 6, 10, 14],
        swing=0.0,
        drums=1.0,
        bass_steps=[2, 6, 10, 14],
        chord_attack=0.005,
        chord_release=0.05,
        drive=1.2,
        pad="square",
    ),
    "jazz": dict(
        tempo=(90, 170),
        kick=[0, 10],
        snare=[7, 15],
        hat=[0, 4, 6, 8, 12, 14],
        swing=0.33,
        drums=0.45,
        bass_steps=[0, 4, 8, 12],
        chord_attack=0.01,
        chord_release=0.3,
        drive=1.0,
        pad="pluck",
    ),
    "hiphop": dict(
        tempo=(80, 98),
        kick=[0, 3, 10],
        snare=[4, 12],
        hat=list(range(0, 16, 2)),
        swing=0.2,
        drums=1.1,
        bass_steps=[0, 3, 10],
        chord_attack=0.02,
        chord_release=0.2,
        drive=1.5,
        pad="sine",
    ),
    "folk": dict(
        tempo=(88, 124),
        kick=[],
        snare=[],
        hat=[0, 4, 8, 12],
        swing=0.1,
        drums=0.25,
        bass_steps=[0, 8],
        chord_attack=0.005,
        chord_release=0.6,
        drive=1.0,
        pad="pluck",
    ),
    "ambient": dict(
        tempo=(60, 80),
        kick=[],
        snare=[],
        hat=[],
        swing=0.0,
        drums=0.0,
        bass_steps=[0],
        chord_attack=0.8,
        chord_release=1.5,
        drive=1.0,
        pad="organ",
    ),
}
STYLE_NAMES = list(STYLES)
LEAD_TIMBRES = ["sine", "square", "saw", "bell"]
MODES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
PROGRESSIONS = {
    "major": [[0, 4, 5, 3], [0, 3, 4, 4], [0, 5, 3, 4]],
    "minor": [[0, 5, 2, 6], [0, 3, 4, 0], [0, 6, 5, 4]],
}


@dataclass(frozen=True)
class SongAttributes:
    """What a song sounds like: the audible attributes the generator renders.

    ``brightness``, ``energy`` and ``loudness`` are in [0, 1]; ``tempo`` in BPM; ``key`` a pitch
    class 0-11.
    """

    style: str
    tempo: float
    key: int
    mode: str
    lead_timbre: str
    brightness: float
    energy: float
    loudness: float


def _harmonic_amps(timbre: str, n: int, brightness: float) -> tuple[np.ndarray, np.ndarray]:
    """Partial frequency ratios and amplitudes of a timbre, rolled off by brightness.

    Returns
    -------
    ratios, amps : np.ndarray [shape=(n,)]
    """
    h = np.arange(1, n + 1, dtype=np.float64)
    if timbre == "sine":
        amps = np.where(h == 1, 1.0, 0.08 / h**2)
    elif timbre == "square":
        amps = np.where(h % 2 == 1, 1.0 / h, 0.0)
    elif timbre == "saw":
        amps = 1.0 / h
    elif timbre == "organ":
        amps = np.array([1.0, 0.7, 0.5, 0.1, 0.4, 0.05, 0.05, 0.3, 0, 0, 0, 0])[:n]
    elif timbre == "pluck":
        amps = 1.0 / h**1.2
    elif timbre == "bell":
        h = np.array([1.0, 2.76, 5.40, 8.93, 13.34, 18.64, 24.8, 31.9])[:n]
        amps = np.array([1.0, 0.6, 0.45, 0.3, 0.2, 0.12, 0.08, 0.05])[:n]
    else:
        raise ValueError(f"unknown timbre {timbre!r}")
    # A dull song loses its upper partials faster; a bright one keeps them.
    rolloff = 2.2 - 2.0 * brightness
    amps = amps * np.arange(1, len(amps) + 1) ** (-rolloff)
    return h, amps


class _Voice:
    """An additive instrument: renders notes, caching each (pitch, length) it has rendered."""

    def __init__(
        self,
        timbre: str,
        brightness: float,
        sr: int,
        attack: float,
        release: float,
        n_partials: int = 8,
        decay: float | None = None,
    ):
        self.ratios, self.amps = _harmonic_amps(timbre, n_partials, brightness)
        self.sr, self.attack, self.release = sr, attack, release
        # Plucked and struck timbres decay, higher partials faster.
        self.decay = decay if decay is not None else (0.35 if timbre in ("pluck", "bell") else None)
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def note(self, midi: int, n_samples: int) -> np.ndarray:
        key = (midi, n_samples)
        if key not in self._cache:
            self._cache[key] = self._render(440.0 * 2 ** ((midi - 69) / 12), n_samples)
        return self._cache[key]

    def _render(self, freq: float, n_samples: int) -> np.ndarray:
        # float32 throughout: notes are short, so phase precision is ample, and it halves the cost.
        t = np.arange(n_samples, dtype=np.float32) / np.float32(self.sr)
        keep = freq * self.ratios < 0.45 * self.sr
        ratios = self.ratios[keep].astype(np.float32)
        amps = self.amps[keep].astype(np.float32)
        partials = np.sin(np.float32(2 * np.pi * freq) * np.outer(ratios, t))
        if self.decay is not None:
            partials *= np.exp(-np.outer(ratios, t) / np.float32(self.decay))
        wave = amps @ partials
        env = np.minimum(1.0, t / max(self.attack, 1e-4))
        tail = max(int(self.release * self.sr), 1)
        if n_samples > 1:
            env[-tail:] *= np.linspace(1.0, 0.0, min(tail, n_samples))
        return (wave * env).astype(np.float32)


def _drum_hits(sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One-shot kick, snare and hat samples, slightly varied per song."""
    t = np.arange(int(0.3 * sr)) / sr
    f0, f1 = rng.uniform(100, 140), rng.uniform(40, 55)
    phase = 2 * np.pi * (f1 * t + (f0 - f1) * 0.04 * (1 - np.exp(-t / 0.04)))
    kick = np.sin(phase) * np.exp(-t / rng.uniform(0.08, 0.15))
    noise = rng.standard_normal(len(t))
    snare = (0.6 * noise + 0.5 * np.sin(2 * np.pi * rng.uniform(170, 220) * t)) * np.exp(-t / 0.07)
    hat = np.diff(noise, prepend=0.0) * np.exp(-t / rng.uniform(0.015, 0.04)) * 0.4
    return {k: v.astype(np.float32) for k, v in dict(kick=kick, snare=snare, hat=hat).items()}


def _place(track: np.ndarray, sample: np.ndarray, start: int, gain: float) -> None:
    if start >= len(track) or start < 0:
        return
    end = min(len(track), start + len(sample))
    track[start:end] += gain * sample[: end - start]


def render_song(
    attrs: SongAttributes, sr: int, seconds: float, seed: int | list[int]
) -> np.ndarray:
    """Render ``seconds`` of audio for a song.

    Parameters
    ----------
    attrs : SongAttributes
    sr : int
        Sample rate in Hz.
    seconds : float
        Clip length.
    seed : int or list of int
        Seeds the song's own variation (progression, melody, humanising, noise).

    Returns
    -------
    y : np.ndarray [shape=(round(seconds * sr),), dtype=float32]
        Mono audio in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    style = STYLES[attrs.style]
    n = int(round(seconds * sr))
    step = 60.0 / attrs.tempo / 4  # a sixteenth note, in seconds
    n_steps = int(np.ceil(seconds / step)) + 1
    step_samples = int(step * sr)

    def onset(i: int) -> int:
        swing = style["swing"] * step if i % 2 == 1 else 0.0
        jitter = rng.normal(0, 0.004) if style["swing"] > 0 else 0.0
        return int((i * step + swing + jitter) * sr)

    # Drums: the style's pattern, every bar, with velocity variation; energy adds ghost hits.
    drums = np.zeros(n, dtype=np.float32)
    hits = _drum_hits(sr, rng)
    for i in range(n_steps):
        pos = i % 16
        for name in ("kick", "snare", "hat"):
            ghost = name == "hat" and pos % 2 == 1 and rng.random() < attrs.energy * 0.8
            if pos in style[name] or ghost:
                _place(drums, hits[name], onset(i), rng.uniform(0.7, 1.0) * (0.5 if ghost else 1))

    # Harmony: a progression in the key and mode, one chord per bar.
    scale = MODES[attrs.mode]
    progression = PROGRESSIONS[attrs.mode][rng.integers(len(PROGRESSIONS[attrs.mode]))]
    n_bars = n_steps // 16 + 1

    def degree_pitch(degree: int, base: int) -> int:
        octave, d = divmod(degree, 7)
        return base + attrs.key + 12 * octave + scale[d]

    pad = _Voice(style["pad"], attrs.brightness, sr, style["chord_attack"], style["chord_release"])
    chords = np.zeros(n, dtype=np.float32)
    bass_voice = _Voice(
        "sine" if attrs.style in ("hiphop", "ambient") else "pluck",
        attrs.brightness * 0.5,
        sr,
        0.005,
        0.05,
        n_partials=5,
    )
    bass = np.zeros(n, dtype=np.float32)
    seventh = attrs.style == "jazz"
    for bar in range(n_bars):
        degree = progression[bar % len(progression)]
        chord_len = 16 * step_samples
        for extra in (0, 2, 4, 6) if seventh else (0, 2, 4):
            _place(
                chords, pad.note(degree_pitch(degree + extra, 48), chord_len), onset(bar * 16), 0.3
            )
        bass_len = int(step_samples * (16 / len(style["bass_steps"])))
        for s in style["bass_steps"]:
            _place(
                bass, bass_voice.note(degree_pitch(degree, 36), bass_len), onset(bar * 16 + s), 0.7
            )

    # Melody: a random walk over the scale; energy sets how many steps get a note.
    lead = _Voice(attrs.lead_timbre, attrs.brightness, sr, 0.01, 0.05, n_partials=8)
    melody = np.zeros(n, dtype=np.float32)
    density = 0.15 + 0.6 * attrs.energy
    degree = int(rng.integers(0, 7))
    for i in range(0, n_steps, 2):
        if rng.random() < density:
            degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), -3, 10))
            length = 2 * step_samples * int(rng.choice([1, 1, 2]))
            _place(melody, lead.note(degree_pitch(degree, 72), length), onset(i), 0.35)

    gains = rng.uniform(0.8, 1.2, size=4)
    mix = (
        style["drums"] * gains[0] * drums * (0.5 + attrs.energy)
        + gains[1] * bass
        + gains[2] * chords
        + gains[3] * melody
    )
    if style["drive"] > 1.0:  # overdrive colours rock and hip-hop
        mix = np.tanh(style["drive"] * mix) / style["drive"]
    # Brightness also sets a one-pole low-pass over the whole mix.
    cutoff = 1200.0 + 9000.0 * attrs.brightness
    a = np.exp(-2 * np.pi * cutoff / sr)
    mix = lfilter([1 - a], [1, -a], mix).astype(np.float32)
    mix += rng.normal(0, 10 ** (-55 / 20), size=n).astype(np.float32)  # a faint noise floor

    # Loudness: the RMS target goes from -26 dBFS (quiet) to -12 dBFS (loud).
    target_rms = 10 ** ((-26 + 14 * attrs.loudness) / 20)
    mix *= target_rms / max(float(np.sqrt(np.mean(mix**2))), 1e-9)
    return np.clip(mix, -1.0, 1.0).astype(np.float32)
