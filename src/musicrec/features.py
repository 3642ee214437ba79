"""Stage ``features``: log-mel spectrograms and MFCCs with deltas for every usable song.

Each song's clip (``features.clip_seconds`` from ``features.offset_seconds``, resampled to
``features.sample_rate``, mixed to mono) becomes

- ``logmel`` [shape=(n_mels, n_frames)]: mel power in dB relative to full scale, floored at
  -100 dB (silence gives the floor), and
- ``mfcc`` [shape=(3 * n_mfcc, n_frames)]: MFCCs of that log-mel, then their first and second
  deltas.

Songs are computed in parallel (``n_jobs`` processes, or a Dask cluster with
``features.backend: dask``) into a per-song cache keyed by the audio file's content and the
feature params, so adding 10 songs to 2,000 computes 10. The outputs stack all
songs into float16 ``.npy`` arrays (which later stages read memory-mapped), in the order of
``data/validated/songs.tsv``; rows are appended one song at a time, so memory stays flat.
"""

from __future__ import annotations

import functools
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from musicrec.audio import ClipSpec, read_clip, resolve_audio
from musicrec.errors import MusicrecError
from musicrec.io import (
    atomic_path,
    load_params,
    read_tsv,
    section,
    stage_timer,
    write_json,
    write_tsv,
)
from musicrec.parallel import map_unordered
from musicrec.stage import stage_parser

DB_FLOOR = -100.0
DELTA_WIDTH = 9  # frames each MFCC delta is fitted over (librosa's default)
# Part of the cache key: bump it when the computation changes, so no old entry is reused.
FEATURE_CODE_VERSION = 2


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

    def __post_init__(self) -> None:
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
        return 1 + self.n_samples // self.hop_length  # librosa's centred framing

    def key(self) -> str:
        """A short hash of the params and of the code's version, naming the cache folder they
        fill."""
        described = {**asdict(self), "code_version": FEATURE_CODE_VERSION}
        return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def load_mono_clip(path: Path, cfg: FeatureConfig) -> np.ndarray:
    """Read a file's clip, mix it to mono, resample it and pad it to the clip length.

    Returns
    -------
    y : np.ndarray [shape=(cfg.n_samples,), dtype=float32]
    """
    y, sr = read_clip(path, ClipSpec(cfg.clip_seconds, cfg.offset_seconds))
    # A mono file's one column is its mean (exactly); numpy's strided mean over a single
    # column costs more than decoding the file.
    y = np.ascontiguousarray(y[:, 0]) if y.shape[1] == 1 else y.mean(axis=1)
    if sr != cfg.sample_rate:
        import librosa  # only here: a worker whose files are at the feature rate never loads it

        y = librosa.resample(y, orig_sr=sr, target_sr=cfg.sample_rate, res_type="soxr_hq")
    y = y[: cfg.n_samples].astype(np.float32)
    return np.pad(y, (0, cfg.n_samples - len(y)))


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

    A song's computation allocates and frees about 10 MB of frames and spectra. By default,
    glibc hands such blocks back to the OS at each free and page-faults them in again for
    the next song: 40% of the feature time here. ``mallopt`` (glibc only; elsewhere nothing
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


def file_digest(path: Path) -> str:
    """Content hash of a file, streamed (the cache key: renaming a file does not recompute)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _compute_chunk(
    paths: list[Path], cfg: FeatureConfig, transforms: Transforms | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Features of a few songs, as float16 (how they are stored), computed in a worker
    (which builds the transforms itself, once, when it is not sent them).

    BLAS runs on one thread: a matrix product summed by two threads can differ in the last
    bit from one summed by one, and the features must not depend on where they were computed.
    """
    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(limits=1, user_api="blas"):
        for path in paths:
            logmel, mfcc = compute_song_features(load_mono_clip(path, cfg), cfg, transforms)
            out.append((logmel.astype(np.float16), mfcc.astype(np.float16)))
    return out


def _warm_up_worker(cfg: FeatureConfig) -> None:
    """Start a local worker and load what it computes with (this module, scipy.fft's plan
    for the frame length) while the parent builds the transforms it will send."""
    import scipy.fft

    scipy.fft.rfft(np.zeros((2, cfg.n_fft), np.float32), axis=1)


def _compute_job(job: tuple) -> tuple[list[int], list | None]:
    """A chunk of songs: written into the cache here when ``targets`` are given (a local
    worker shares this machine's disk), else returned for the caller to write (a cluster
    worker may not)."""
    rows, paths, cfg, transforms, targets = job
    arrays = _compute_chunk(paths, cfg, transforms)
    if targets is None:
        return rows, arrays
    for target, (logmel, mfcc) in zip(targets, arrays, strict=True):
        _write_cache_entry(target, logmel, mfcc)
    return rows, None


def _write_cache_entry(target: Path, logmel: np.ndarray, mfcc: np.ndarray) -> None:
    """One song's entry: logmel's rows then mfcc's, one plain ``.npy`` (a third of the time
    of an ``.npz`` of two arrays, which is a zip file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".npy") as tmp:
        np.save(tmp, np.vstack([logmel, mfcc]))


def compute_features(
    root: Path,
    songs: pd.DataFrame,
    cfg: FeatureConfig,
    out_dir: Path,
    cache_dir: Path,
    n_jobs: int = 1,
    backend: str = "local",
    scheduler: str = "",
) -> dict:
    """Compute (or take from the cache) every song's features and stack them in ``out_dir``.

    Writes ``logmel.npy`` [shape=(n_songs, n_mels, n_frames), float16], ``mfcc.npy``
    [shape=(n_songs, 3 * n_mfcc, n_frames), float16], ``songs.tsv`` (row order) and
    ``features.json`` (params and shapes). Returns counts of computed and cached songs.

    Songs missing from the cache are computed in chunks of 16 by ``backend`` (``local``
    processes or a Dask cluster, :mod:`musicrec.parallel`). Local workers write their songs
    into the cache; a cluster's workers send them back and this process writes them, so
    they only need to read the audio. Each entry is written atomically, so a killed run
    keeps what was done. The outputs are the same, bit for bit, whichever backend computed
    them.
    """
    paths = [resolve_audio(root, rel) for rel in songs["path"]]
    local = backend == "local"
    cache = Path(cache_dir) / cfg.key()
    # A run killed while writing leaves its temporary behind; the entry itself was never made.
    for stale in cache.glob("*/.*.tmp*"):
        stale.unlink(missing_ok=True)
    # Fewer entries than songs: some will be computed, so prepare for that now.
    work_likely = sum(1 for _ in cache.glob("*/*.npy")) < len(paths)
    # Local workers are sent the transforms, built here once, and so never import librosa or
    # scipy.signal. A cluster's workers build their own: sent with each chunk, the 0.3 MB
    # would be held by the scheduler for every task at once (1.6 GB for 100,000 songs).
    with ThreadPoolExecutor(2) as background:
        # Hashing (which frees the GIL) and building the transforms (about 2 s, mostly
        # importing scipy.signal and librosa) run beside the workers' start-up.
        digests_done = background.submit(lambda: [file_digest(p) for p in paths])
        transforms_done = (
            background.submit(feature_transforms, cfg) if local and work_likely else None
        )
        if local and n_jobs > 1 and work_likely:
            Parallel(n_jobs=n_jobs)(delayed(_warm_up_worker)(cfg) for _ in range(n_jobs))
        digests = digests_done.result()
        transforms = transforms_done.result() if transforms_done else None
    targets = [cache / d[:2] / f"{d}.npy" for d in digests]
    todo = [i for i, t in enumerate(targets) if not t.exists()]
    if local and todo and transforms is None:
        transforms = feature_transforms(cfg)
    jobs = [
        (
            rows,
            [paths[i] for i in rows],
            cfg,
            transforms,
            [targets[i] for i in rows] if local else None,
        )
        for rows in (todo[i : i + 16] for i in range(0, len(todo), 16))
    ]
    results = map_unordered(_compute_job, jobs, n_jobs, backend, scheduler)
    with tqdm(total=len(todo), desc=f"features: computing ({backend})", unit="song") as bar:
        for rows, arrays in results:
            for row, (logmel, mfcc) in zip(rows, arrays or [], strict=False):
                _write_cache_entry(targets[row], logmel, mfcc)
            bar.update(len(rows))

    n_songs = len(songs)
    out_dir = Path(out_dir)
    shapes = {
        "logmel": (n_songs, cfg.n_mels, cfg.n_frames),
        "mfcc": (n_songs, 3 * cfg.n_mfcc, cfg.n_frames),
    }
    with atomic_path(out_dir) as tmp, ExitStack() as files:
        tmp.mkdir()
        # Rows are appended in order to plain .npy files rather than set in a memory map:
        # a map's written pages count in the stage's resident memory, which then grows with
        # the catalogue (1.1 GB at 100,000 short clips) though nothing needs them.
        outputs = {name: files.enter_context(open(tmp / f"{name}.npy", "wb")) for name in shapes}
        for name, shape in shapes.items():
            header = {"descr": np.dtype(np.float16).str, "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(outputs[name], header)
        for target in tqdm(targets, desc="features: stacking", unit="song"):
            logmel, mfcc = np.split(np.load(target), [cfg.n_mels])
            if logmel.shape != shapes["logmel"][1:] or mfcc.shape != shapes["mfcc"][1:]:
                raise MusicrecError(
                    f"features: cache entry {target} has the wrong shape; delete it"
                )
            outputs["logmel"].write(np.ascontiguousarray(logmel, np.float16).tobytes())
            outputs["mfcc"].write(np.ascontiguousarray(mfcc, np.float16).tobytes())
        write_tsv(tmp / "songs.tsv", songs[["song_id"]].assign(row=np.arange(n_songs)))
        write_json(
            tmp / "features.json",
            {
                "config": asdict(cfg),
                "code_version": FEATURE_CODE_VERSION,
                "shapes": shapes,
                "dtype": "float16",
                "db_floor": DB_FLOOR,
            },
        )
    return {"songs": n_songs, "computed": len(todo), "cached": n_songs - len(todo)}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        "features", __doc__, ["data.root", "features"], ("validated",), out=Path("data/features")
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/features"),
        help="per-song feature cache (kept between runs; safe to delete)",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    root = Path(section(params, "data")["root"])
    feat = dict(section(params, "features"))
    n_jobs = int(feat.pop("n_jobs", 1))
    backend = str(feat.pop("backend", "local"))
    scheduler = str(feat.pop("scheduler", "") or "")
    cfg = FeatureConfig(**feat)
    with stage_timer("features") as record:
        summary = compute_features(
            root,
            read_tsv(args.validated / "songs.tsv"),
            cfg,
            args.out,
            args.cache,
            n_jobs,
            backend,
            scheduler,
        )
        record.update(summary)
    print(
        f"features: {summary['songs']} songs ({summary['computed']} computed, "
        f"{summary['cached']} from the cache) -> {args.out}"
    )
    return 0
