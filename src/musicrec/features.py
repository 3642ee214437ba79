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
        if self.n_fft < 64 or self.hop_length < 1 or self.hop_length > self.n_fft:
            problems.append("need n_fft >= 64 and 1 <= hop_length <= n_fft")
        if not 1 <= self.n_mfcc <= self.n_mels:
            problems.append("need 1 <= n_mfcc <= n_mels")
        if self.n_frames < 9 or self.offset_seconds < 0:
            # 9 frames: the window the MFCC deltas are computed over.
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
        """A short hash of the params, naming the cache folder they fill."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def load_mono_clip(path: Path, cfg: FeatureConfig) -> np.ndarray:
    """Read a file's clip, mix it to mono, resample it and pad it to the clip length.

    Returns
    -------
    y : np.ndarray [shape=(cfg.n_samples,), dtype=float32]
    """
    import librosa

    y, sr = read_clip(path, ClipSpec(cfg.clip_seconds, cfg.offset_seconds))
    # A mono file's one column is its mean (exactly); numpy's strided mean over a single
    # column costs more than decoding the file.
    y = np.ascontiguousarray(y[:, 0]) if y.shape[1] == 1 else y.mean(axis=1)
    if sr != cfg.sample_rate:
        y = librosa.resample(y, orig_sr=sr, target_sr=cfg.sample_rate, res_type="soxr_hq")
    return librosa.util.fix_length(y.astype(np.float32), size=cfg.n_samples)


@functools.lru_cache(maxsize=4)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's mel filter bank [shape=(n_mels, 1 + n_fft // 2)]."""
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


def compute_song_features(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel and MFCC(+delta, +delta-delta) of one mono clip.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,)]
    cfg : FeatureConfig

    Returns
    -------
    logmel : np.ndarray [shape=(n_mels, n_frames), dtype=float32], dB, floored at -100
    mfcc : np.ndarray [shape=(3 * n_mfcc, n_frames), dtype=float32]
    """
    import librosa

    # librosa.feature.melspectrogram's own steps, with the filter bank built once per process
    # rather than once per song (a test checks the result is the same, bit for bit).
    power = np.abs(librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length)) ** 2
    basis = _mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels)
    mel = np.einsum("...ft,mf->...mt", power, basis, optimize=True)
    logmel = librosa.power_to_db(mel, ref=1.0, amin=10 ** (DB_FLOOR / 10), top_db=None)
    mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=cfg.n_mfcc)
    deltas = [librosa.feature.delta(mfcc, order=order, width=9) for order in (1, 2)]
    return logmel.astype(np.float32), np.vstack([mfcc, *deltas]).astype(np.float32)


def file_digest(path: Path) -> str:
    """Content hash of a file, streamed (the cache key: renaming a file does not recompute)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _compute_chunk(paths: list[Path], cfg: FeatureConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Features of a few songs, as float16 (how they are stored), computed in a worker.

    BLAS runs on one thread: a matrix product summed by two threads can differ in the last
    bit from one summed by one, and the features must not depend on where they were computed.
    """
    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(limits=1, user_api="blas"):
        for path in paths:
            logmel, mfcc = compute_song_features(load_mono_clip(path, cfg), cfg)
            out.append((logmel.astype(np.float16), mfcc.astype(np.float16)))
    return out


def _warm_up_worker(cfg: FeatureConfig) -> None:
    """Import librosa and load its compiled code in a worker, on a second of silence."""
    compute_song_features(np.zeros(cfg.sample_rate, np.float32), cfg)


def _compute_job(job: tuple) -> tuple[list[int], list | None]:
    """A chunk of songs: written into the cache here when ``targets`` are given (a local
    worker shares this machine's disk), else returned for the caller to write (a cluster
    worker may not)."""
    rows, paths, cfg, targets = job
    arrays = _compute_chunk(paths, cfg)
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
    # Fewer entries than songs: some will be computed, so start the workers now.
    work_likely = sum(1 for _ in cache.glob("*/*.npy")) < len(paths)
    with ThreadPoolExecutor(1) as hashing:
        # Hashing (which frees the GIL) runs beside the workers' start-up: each spends about 3 s
        # importing librosa and loading its compiled code before it can take a song.
        digests_done = hashing.submit(lambda: [file_digest(p) for p in paths])
        if local and n_jobs > 1 and work_likely:
            Parallel(n_jobs=n_jobs)(delayed(_warm_up_worker)(cfg) for _ in range(n_jobs))
        digests = digests_done.result()
    targets = [cache / d[:2] / f"{d}.npy" for d in digests]
    todo = [i for i, t in enumerate(targets) if not t.exists()]
    jobs = [
        (rows, [paths[i] for i in rows], cfg, [targets[i] for i in rows] if local else None)
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
            {"config": asdict(cfg), "shapes": shapes, "dtype": "float16", "db_floor": DB_FLOOR},
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
