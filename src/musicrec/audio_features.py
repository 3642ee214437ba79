"""Log-mel and MFCC features of one clip: the params, the transforms and the computation.

A library: the ``features`` stage computes every song with it, and ``recommend`` a new song.
A song is ``clips`` clips of ``clip_seconds`` (where in the file: :class:`musicrec.audio.ClipSpec`),
each resampled to ``sample_rate`` and mixed to mono. Each clip becomes

- ``logmel`` [shape=(n_mels, n_frames)]: mel power in dB relative to full scale, floored at
  -100 dB (silence gives the floor), and
- ``mfcc`` [shape=(3 * n_mfcc, n_frames)]: MFCCs of that log-mel, then their first and second
  deltas,

and a song's features are its clips' side by side along time,
[shape=(n_mels, clips * n_frames)] and [shape=(3 * n_mfcc, clips * n_frames)]: a model that
pools over frames reads them as one, and one that crops windows (the CNN) keeps each window
inside one clip.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from musicrec.audio import ClipSpec, read_clip
from musicrec.errors import MusicrecError

DB_FLOOR = -100.0
DELTA_WIDTH = 9  # frames each MFCC delta is fitted over (librosa's default)
# Part of the cache key: bump it when the computation changes, so no old entry is reused.
FEATURE_CODE_VERSION = 2


@functools.cache
def code_and_decoders() -> dict[str, str]:
    """What a song's features depend on besides the params and the file: the source of the
    code that reads and computes them (``audio.py`` and this module, hashed) and the versions
    of the libraries that decode and transform audio. Part of the cache key, so that neither
    an edit nor an upgrade reuses an entry computed another way (no hand-bumped version to
    forget)."""
    import scipy

    sources = [Path(__file__), Path(__file__).with_name("audio.py")]
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    versions = {"code": digest, "numpy": np.__version__, "scipy": scipy.__version__}
    versions["soundfile"] = sf.__version__
    versions["libsndfile"] = sf.__libsndfile_version__
    try:
        from importlib.metadata import version

        versions["librosa"] = version("librosa")  # (not imported: only resampling needs it)
    except Exception:  # noqa: BLE001 - absent: the key says so
        versions["librosa"] = "absent"
    return versions


@dataclass(frozen=True)
class FeatureConfig:
    """Feature params (``features`` in params.yaml). Validated before any compute."""

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 64
    n_mfcc: int = 20
    clip_seconds: float = 10.0
    offset_seconds: float = 0.0
    # params.yaml asks for 3 clips from the middle; these defaults are what a features.json
    # written before the two keys existed meant (one clip from offset_seconds).
    clips: int = 1
    clip_position: str = "start"

    def __post_init__(self) -> None:
        self.clip_spec  # noqa: B018 (checks clips, clip_position and offset_seconds)
        problems = []
        if self.sample_rate < 4000:
            problems.append("sample_rate must be >= 4000")
        if self.n_fft < 64 or self.n_fft % 2 or not 1 <= self.hop_length <= self.n_fft:
            # Even: centred frames of odd length number one fewer than n_frames when hop
            # divides n_samples.
            problems.append("need an even n_fft >= 64 and 1 <= hop_length <= n_fft")
        if not 1 <= self.n_mfcc <= self.n_mels:
            problems.append("need 1 <= n_mfcc <= n_mels")
        if self.n_frames < DELTA_WIDTH or self.offset_seconds < 0:
            problems.append("clip_seconds must span at least 9 hops; offset_seconds >= 0")
        if problems:
            raise MusicrecError("features params: " + "; ".join(problems))

    @property
    def n_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Frames of one clip."""
        return 1 + self.n_samples // self.hop_length  # librosa's centred framing

    @property
    def song_frames(self) -> int:
        """Frames of a song's features: its clips side by side."""
        return self.clips * self.n_frames

    @property
    def clip_spec(self) -> ClipSpec:
        return ClipSpec(self.clip_seconds, self.offset_seconds, self.clips, self.clip_position)

    def key(self) -> str:
        """A short hash of the params, the code and the decoders (:func:`code_and_decoders`),
        naming the cache folder they fill."""
        described = {
            **asdict(self),
            "code_version": FEATURE_CODE_VERSION,
            **code_and_decoders(),
        }
        return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def load_mono_clips(path: Path, cfg: FeatureConfig) -> np.ndarray:
    """Read a file's clips, mixed to mono, resampled and each padded to the clip length.

    Returns
    -------
    y : np.ndarray [shape=(cfg.clips, cfg.n_samples), dtype=float32]
    """
    spec, info = cfg.clip_spec, sf.info(str(path))
    y, sr = read_clip(path, spec, info)  # the span the clips are cut from, read once
    # A mono file's one column is its mean (exactly); numpy's strided mean over a single
    # column costs more than decoding the file.
    y = np.ascontiguousarray(y[:, 0]) if y.shape[1] == 1 else y.mean(axis=1)
    if sr != cfg.sample_rate:
        import librosa  # only here: a worker whose files are at the feature rate never loads it

        y = librosa.resample(y, orig_sr=sr, target_sr=cfg.sample_rate, res_type="soxr_hq")
    y = y.astype(np.float32)
    windows = spec.windows(info.duration)
    first = windows[0][0]
    out = np.zeros((cfg.clips, cfg.n_samples), np.float32)
    for i, (start, _) in enumerate(windows):
        offset = int(round((start - first) * cfg.sample_rate))
        clip = y[offset : offset + cfg.n_samples]
        out[i, : len(clip)] = clip
    return out


def compute_clips_features(
    clips: np.ndarray, cfg: FeatureConfig, transforms: Transforms | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A song's features: :func:`compute_song_features` of each of its clips
    [shape=(n_clips, n_samples)], side by side along time.

    A clip equal to an earlier one (a file too short for distinct clips) is not computed
    again.

    Returns
    -------
    logmel : np.ndarray [shape=(n_mels, n_clips * n_frames), dtype=float32]
    mfcc : np.ndarray [shape=(3 * n_mfcc, n_clips * n_frames), dtype=float32]
    """
    done: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]] = []
    per_clip = []
    for clip in np.atleast_2d(clips):
        same = next((f for c, f in done if np.array_equal(c, clip)), None)
        if same is None:
            same = compute_song_features(clip, cfg, transforms)
            done.append((clip, same))
        per_clip.append(same)
    return tuple(np.hstack(part) for part in zip(*per_clip, strict=True))


@dataclass(frozen=True)
class Transforms:
    """What the per-song computation applies, built once from the params (with librosa and
    scipy.signal) and sent to the local workers, which then need neither.

    Attributes
    ----------
    window : np.ndarray [shape=(n_fft,), dtype=float32]
        Periodic Hann window (librosa's default).
    mel_basis : np.ndarray [shape=(n_mels, 1 + n_fft // 2), dtype=float32]
        ``librosa.filters.mel`` (Slaney scale and norm).
    delta_kernels : np.ndarray [shape=(2, 9, 9), dtype=float32]
        For delta orders 1 and 2, the Savitzky-Golay filter (``librosa.feature.delta``:
        width 9, ``mode="interp"``) as a linear map on 9 frames: column 4 is the kernel of
        every inner frame, columns 0-3 and 5-8 give the first and last 4 frames, where the
        filter fits a polynomial to the 9 frames at the edge.
    """

    window: np.ndarray
    mel_basis: np.ndarray
    delta_kernels: np.ndarray


@functools.lru_cache(maxsize=4)
def feature_transforms(cfg: FeatureConfig) -> Transforms:
    """The :class:`Transforms` of ``cfg`` (cached: built once per process)."""
    import librosa
    import scipy.signal

    window = scipy.signal.get_window("hann", cfg.n_fft, fftbins=True).astype(np.float32)
    mel_basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)
    # savgol_filter is linear: filtering the 9 unit impulses gives its matrix on 9 frames.
    impulses = np.eye(DELTA_WIDTH)
    delta_kernels = np.stack([
        scipy.signal.savgol_filter(
            impulses, DELTA_WIDTH, polyorder=order, deriv=order, axis=-1, mode="interp"
        )
        for order in (1, 2)
    ])  # fmt: skip
    return Transforms(window, mel_basis.astype(np.float32), delta_kernels.astype(np.float32))


def _delta(features: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``librosa.feature.delta(features, width=9, order=...)`` along frames, from its
    :attr:`Transforms.delta_kernels` matrix [shape=(9, 9)]; ``features`` [shape=(n, n_frames)]."""
    half = DELTA_WIDTH // 2
    inner = np.lib.stride_tricks.sliding_window_view(features, DELTA_WIDTH, axis=1)
    return np.hstack([
        features[:, :DELTA_WIDTH] @ kernel[:, :half],
        inner @ kernel[:, half],
        features[:, -DELTA_WIDTH:] @ kernel[:, half + 1 :],
    ])  # fmt: skip


@functools.cache
def _keep_freed_memory() -> None:
    """Let this process's allocator keep freed blocks of up to 32 MB instead of returning them.

    A song's computation allocates and frees megabytes of frames and spectra. By default,
    glibc hands such blocks back to the OS at each free and page-faults them in again for
    the next song, a large share of the feature time (``reports/benchmarks.md``, features
    throughput). ``mallopt`` (glibc only; elsewhere nothing
    changes) makes them reusable, for at most 64 MB held; the results are the same. Set once
    per process, by the first song it computes (a worker, or ``serve`` for new songs).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)


def compute_song_features(
    y: np.ndarray, cfg: FeatureConfig, transforms: Transforms | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel and MFCC(+delta, +delta-delta) of one mono clip.

    librosa's ``melspectrogram``, ``power_to_db``, ``mfcc`` and ``delta`` (default
    arguments: centred frames padded with zeros, Hann window), written out in single precision
    on contiguous frames: half the time per song of calling librosa, which computes the
    FFT in double precision. The results agree with librosa's to float32 rounding
    (tested); they are stored as float16.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,), dtype=float32]
    cfg : FeatureConfig
    transforms : Transforms, optional
        ``feature_transforms(cfg)``, passed by callers that built it elsewhere.

    Returns
    -------
    logmel : np.ndarray [shape=(n_mels, n_frames), dtype=float32], dB, floored at -100
    mfcc : np.ndarray [shape=(3 * n_mfcc, n_frames), dtype=float32]
    """
    import scipy.fft

    _keep_freed_memory()
    if transforms is None:
        transforms = feature_transforms(cfg)
    padded = np.pad(np.asarray(y, np.float32), cfg.n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[:: cfg.hop_length]
    spectrum = scipy.fft.rfft(frames * transforms.window, axis=1)  # (n_frames, 1 + n_fft/2)
    power = spectrum.real**2 + spectrum.imag**2
    mel = transforms.mel_basis @ power.T
    logmel = 10.0 * np.log10(np.maximum(mel, np.float32(10 ** (DB_FLOOR / 10))))
    mfcc = scipy.fft.dct(logmel, type=2, norm="ortho", axis=0)[: cfg.n_mfcc]
    deltas = [_delta(mfcc, kernel) for kernel in transforms.delta_kernels]
    return logmel, np.vstack([mfcc, *deltas])


def librosa_features(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`compute_song_features` computes, through librosa's own calls: the
    reference it is tested against and the benchmark's baseline. Same shapes, float32."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels
    )
    logmel = librosa.power_to_db(mel, ref=1.0, amin=10 ** (DB_FLOOR / 10), top_db=None)
    mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=cfg.n_mfcc)
    deltas = [librosa.feature.delta(mfcc, order=order, width=DELTA_WIDTH) for order in (1, 2)]
    return logmel, np.vstack([mfcc, *deltas])
