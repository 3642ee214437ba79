"""Log-mel, MFCC and chroma features of one clip: the params, the transforms and the computation.

A library: the ``features`` stage computes every song with it, and ``recommend`` a new song.
A song is ``clips`` clips of ``clip_seconds`` (where in the file: :class:`musicrec.audio.ClipSpec`),
each resampled to ``sample_rate`` and mixed to mono. Each clip becomes

- ``logmel`` [shape=(n_mels, n_frames)]: mel power in dB relative to full scale, floored at
  -100 dB (silence gives the floor), and
- ``mfcc`` [shape=(3 * n_mfcc, n_frames)]: MFCCs of that log-mel, then their first and second
  deltas, and
- ``chroma`` [shape=(12, n_frames)]: the power of each pitch class (C, C#, ..., B; equal
  temperament at A = 440 Hz), each frame scaled so that its largest class is 1 (librosa's
  ``chroma_stft``), from a longer window (``chroma_n_fft``) on the same frame centres: a
  semitone at 65 Hz is 3.9 Hz, and 2,048 points at 22,050 Hz resolve 10.8. Sixty-four mel
  bands cannot tell a major third from a minor one; the pitch classes can, so the key and
  mode of a song are read from them (:mod:`musicrec.tonality`),

and a song's features are its clips' side by side along time,
[shape=(rows, clips * n_frames)]: a model that pools over frames reads them as one, and one
that crops windows (the CNN) keeps each window inside one clip.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from musicrec.audio import ClipSpec, check_audio_file, read_clip
from musicrec.errors import MusicrecError

DB_FLOOR = -100.0
N_CHROMA = 12  # pitch classes
# The features of a song, in the order they are computed, cached and stacked.
FEATURE_NAMES = ("logmel", "mfcc", "chroma")
DELTA_WIDTH = 9  # frames each MFCC delta is fitted over (librosa's default)
# Part of the cache key: bump it when the computation changes, so no old entry is reused.
FEATURE_CODE_VERSION = 3  # 3: chroma


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
    # Resampling is librosa's soxr_hq, which soxr computes: an upgrade of either changes the
    # samples of every file not at the feature rate. Read from the installed metadata: neither
    # is imported until a file needs resampling.
    for package in ("librosa", "soxr"):
        versions[package] = _installed_version(package)
    return versions


def _installed_version(package: str) -> str:
    """The installed version of ``package``, or ``"absent"`` (the key then says so)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except Exception:  # noqa: BLE001 - absent or unreadable: the key says so
        return "absent"


@dataclass(frozen=True)
class FeatureConfig:
    """Feature params (``features`` in params.yaml). Validated before any compute."""

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 64
    n_mfcc: int = 20
    chroma_n_fft: int = 8192  # the chroma's window: 2.7-Hz bins, semitones apart down to 45 Hz
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
        if self.chroma_n_fft < self.n_fft or self.chroma_n_fft % 2:
            problems.append("need an even chroma_n_fft >= n_fft")
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
    def rows(self) -> dict[str, int]:
        """Rows of each feature of a frame, in :data:`FEATURE_NAMES` order."""
        return {"logmel": self.n_mels, "mfcc": 3 * self.n_mfcc, "chroma": N_CHROMA}

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

    Raises
    ------
    musicrec.audio.RefusedFile
        For a path that is not a regular file or is larger than the audio size cap.
    """
    check_audio_file(path)  # a FIFO would block libsndfile's open forever
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A song's features: :func:`compute_song_features` of each of its clips
    [shape=(n_clips, n_samples)], side by side along time.

    A clip equal to an earlier one (a file too short for distinct clips) is not computed
    again.

    Returns
    -------
    logmel : np.ndarray [shape=(n_mels, n_clips * n_frames), dtype=float32]
    mfcc : np.ndarray [shape=(3 * n_mfcc, n_clips * n_frames), dtype=float32]
    chroma : np.ndarray [shape=(12, n_clips * n_frames), dtype=float32]
    """
    done: list[tuple[np.ndarray, tuple[np.ndarray, ...]]] = []
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
    chroma_window : np.ndarray [shape=(chroma_n_fft,), dtype=float32]
        Periodic Hann window of the chroma's frames.
    chroma_basis : np.ndarray [shape=(12, 1 + chroma_n_fft // 2), dtype=float32]
        ``librosa.filters.chroma`` at A = 440 Hz (``tuning=0``: estimating each song's tuning
        would make the filters depend on the song).
    delta_kernels : np.ndarray [shape=(2, 9, 9), dtype=float32]
        For delta orders 1 and 2, the Savitzky-Golay filter (``librosa.feature.delta``:
        width 9, ``mode="interp"``) as a linear map on 9 frames: column 4 is the kernel of
        every inner frame, columns 0-3 and 5-8 give the first and last 4 frames, where the
        filter fits a polynomial to the 9 frames at the edge.
    """

    window: np.ndarray
    mel_basis: np.ndarray
    chroma_window: np.ndarray
    chroma_basis: np.ndarray
    delta_kernels: np.ndarray


@functools.lru_cache(maxsize=4)
def feature_transforms(cfg: FeatureConfig) -> Transforms:
    """The :class:`Transforms` of ``cfg`` (cached: built once per process)."""
    import librosa
    import scipy.signal

    window = scipy.signal.get_window("hann", cfg.n_fft, fftbins=True).astype(np.float32)
    chroma_window = scipy.signal.get_window("hann", cfg.chroma_n_fft, fftbins=True)
    mel_basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)
    chroma_basis = librosa.filters.chroma(
        sr=cfg.sample_rate, n_fft=cfg.chroma_n_fft, tuning=0.0, n_chroma=N_CHROMA
    )
    # savgol_filter is linear: filtering the 9 unit impulses gives its matrix on 9 frames.
    impulses = np.eye(DELTA_WIDTH)
    delta_kernels = np.stack([
        scipy.signal.savgol_filter(
            impulses, DELTA_WIDTH, polyorder=order, deriv=order, axis=-1, mode="interp"
        )
        for order in (1, 2)
    ])  # fmt: skip
    return Transforms(
        window,
        mel_basis.astype(np.float32),
        chroma_window.astype(np.float32),
        chroma_basis.astype(np.float32),
        delta_kernels.astype(np.float32),
    )


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-mel, MFCC(+delta, +delta-delta) and chroma of one mono clip.

    librosa's ``melspectrogram``, ``power_to_db``, ``mfcc``, ``delta`` and ``chroma_stft``
    (default arguments but ``tuning=0``: centred frames padded with zeros, Hann window; the
    chroma's spectrum of ``chroma_n_fft`` points), written out in single precision
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
    chroma : np.ndarray [shape=(12, n_frames), dtype=float32], each frame's largest class 1
        (a silent frame: 0)
    """
    import scipy.fft

    _keep_freed_memory()
    if transforms is None:
        transforms = feature_transforms(cfg)
    y = np.asarray(y, np.float32)

    def power_spectrum(n_fft: int, window: np.ndarray) -> np.ndarray:
        """Centred frames' power [shape=(n_frames, 1 + n_fft // 2)]: the same frame centres
        whatever ``n_fft``."""
        padded = np.pad(y, n_fft // 2)
        frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[:: cfg.hop_length]
        spectrum = scipy.fft.rfft(frames * window, axis=1)
        return spectrum.real**2 + spectrum.imag**2

    power = power_spectrum(cfg.n_fft, transforms.window)
    mel = transforms.mel_basis @ power.T
    logmel = 10.0 * np.log10(np.maximum(mel, np.float32(10 ** (DB_FLOOR / 10))))
    mfcc = scipy.fft.dct(logmel, type=2, norm="ortho", axis=0)[: cfg.n_mfcc]
    deltas = [_delta(mfcc, kernel) for kernel in transforms.delta_kernels]
    if cfg.chroma_n_fft != cfg.n_fft:
        power = power_spectrum(cfg.chroma_n_fft, transforms.chroma_window)
    chroma = transforms.chroma_basis @ power.T
    # librosa's normalize(norm=inf): a frame below the smallest normal float stays as it is.
    peak = chroma.max(axis=0)
    chroma /= np.where(peak < np.finfo(np.float32).tiny, np.float32(1), peak)
    return logmel, np.vstack([mfcc, *deltas]), chroma


def librosa_features(
    y: np.ndarray, cfg: FeatureConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`compute_song_features` computes, through librosa's own calls: the
    reference it is tested against and the benchmark's baseline. Same shapes, float32."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels
    )
    logmel = librosa.power_to_db(mel, ref=1.0, amin=10 ** (DB_FLOOR / 10), top_db=None)
    mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=cfg.n_mfcc)
    deltas = [librosa.feature.delta(mfcc, order=order, width=DELTA_WIDTH) for order in (1, 2)]
    power = np.abs(librosa.stft(y, n_fft=cfg.chroma_n_fft, hop_length=cfg.hop_length)) ** 2
    chroma = librosa.feature.chroma_stft(
        S=power, sr=cfg.sample_rate, n_fft=cfg.chroma_n_fft, tuning=0.0, n_chroma=N_CHROMA
    )
    return logmel, np.vstack([mfcc, *deltas]), chroma
