"""Stage ``features``: log-mel spectrograms, MFCCs with deltas and chroma for every usable song.

Each song's clips become a log-mel [shape=(n_mels, clips * n_frames)], MFCCs with deltas
[shape=(3 * n_mfcc, clips * n_frames)] and chroma [shape=(12, clips * n_frames)], computed by
:mod:`musicrec.audio_features`.

Songs are computed in parallel (``n_jobs`` processes, or a Dask cluster with
``features.backend: dask``) into a per-song cache keyed by the audio file's content and the
feature params, so adding 10 songs to 2,000 computes 10. The outputs stack all
songs into float16 ``.npy`` arrays (which later stages read memory-mapped), in the order of
``data/validated/songs.tsv``; rows are appended one song at a time, so memory stays flat.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from musicrec.audio import RefusedFile, audio_digest, resolve_audio
from musicrec.audio_features import (
    DB_FLOOR,
    FEATURE_CODE_VERSION,
    FEATURE_NAMES,
    FeatureConfig,
    Transforms,
    compute_clips_features,
    feature_transforms,
    load_mono_clips,
)
from musicrec.errors import MusicrecError
from musicrec.io import (
    atomic_path,
    load_params,
    read_tsv,
    sweep_temporaries,
    write_json,
    write_tsv,
)
from musicrec.parallel import map_unordered
from musicrec.stage import DataConfig, Workers, read_config, run_stage, stage_parser


def _compute_chunk(
    paths: list[Path], cfg: FeatureConfig, transforms: Transforms | None
) -> list[tuple[np.ndarray, ...]]:
    """Features of a few songs, as float16 (how they are stored), computed in a worker
    (which builds the transforms itself, once, when it is not sent them).

    BLAS runs on one thread: a matrix product summed by two threads can differ in the last
    bit from one summed by one, and the features must not depend on where they were computed.
    """
    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(limits=1, user_api="blas"):
        for path in paths:
            arrays = compute_clips_features(load_mono_clips(path, cfg), cfg, transforms)
            out.append(tuple(a.astype(np.float16) for a in arrays))
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
    for target, song_arrays in zip(targets, arrays, strict=True):
        _write_cache_entry(target, song_arrays)
    return rows, None


def readable_entry(target: Path, cfg: FeatureConfig) -> bool:
    """Whether a cache entry can be used: a ``.npy`` whose header reads, of the shape and type
    ``cfg`` gives. Anything else (absent, empty after a crash, cut short, another shape) is a
    miss: removed, so the song is computed again."""
    rows, frames = sum(cfg.rows.values()), cfg.song_frames
    try:
        with open(target, "rb") as entry:
            version = np.lib.format.read_magic(entry)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(entry)
            whole = entry.tell() + int(np.prod(shape)) * dtype.itemsize
        ok = shape == (rows, frames) and not fortran and dtype == np.float16
        ok = ok and Path(target).stat().st_size == whole
    except FileNotFoundError:
        return False
    except (OSError, ValueError, EOFError):
        ok = False
    if not ok:
        Path(target).unlink(missing_ok=True)
    return ok


def _write_cache_entry(target: Path, arrays: tuple[np.ndarray, ...]) -> None:
    """One song's entry: the rows of each feature (:data:`FEATURE_NAMES` order) one after the
    other, one plain ``.npy`` (a third of the time of an ``.npz`` of the arrays, a zip file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".npy", sweep=False) as tmp:
        np.save(tmp, np.vstack(arrays))


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

    Writes ``logmel.npy`` [shape=(n_songs, n_mels, clips * n_frames), float16], ``mfcc.npy``
    [shape=(n_songs, 3 * n_mfcc, clips * n_frames), float16], ``chroma.npy``
    [shape=(n_songs, 12, clips * n_frames), float16], ``songs.tsv`` (row order) and
    ``features.json`` (params and shapes). Returns counts of computed and cached songs.

    Songs missing from the cache are computed in chunks of 16 by ``backend`` (``local``
    processes or a Dask cluster, :mod:`musicrec.parallel`). Local workers write their songs
    into the cache; a cluster's workers send them back and this process writes them, so
    they only need to read the audio. Each entry is written atomically, so a killed run
    keeps what was done. The outputs are the same, bit for bit, whichever backend computed
    them.
    """
    paths = [resolve_audio(root, rel) for rel in songs["path"]]
    cache = Path(cache_dir) / cfg.key()
    # A run killed while writing leaves its temporary behind; the entry itself was never made.
    for folder in cache.glob("*/"):
        sweep_temporaries(folder)  # (a concurrent run's, its writer alive, are kept)
    targets, transforms = _cache_targets(paths, cfg, cache, n_jobs, backend)
    todo = [i for i, t in enumerate(targets) if not readable_entry(t, cfg)]
    local = backend == "local"
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
            for row, song_arrays in zip(rows, arrays or [], strict=False):
                _write_cache_entry(targets[row], song_arrays)
            bar.update(len(rows))
    _stack(targets, songs, cfg, Path(out_dir))
    return {"songs": len(songs), "computed": len(todo), "cached": len(songs) - len(todo)}


def song_digest(path: Path) -> str:
    """The name of a song's cache entry: a hash of its file's bytes (content, not name:
    renaming a file does not recompute it).

    Only a regular file of at most :data:`musicrec.audio.MAX_AUDIO_BYTES` is read, opened so
    that the open cannot block: a FIFO would wait forever for a writer, a device never end.

    Raises
    ------
    MusicrecError
        For any other file (validate quarantines those: the song list is older than the
        file now at the path, or was not made by validate).
    """
    try:
        return audio_digest(path, hashlib.blake2b(digest_size=16))
    except RefusedFile as exc:
        raise MusicrecError(
            f"{path}: {exc}: features reads only regular audio files within the size cap; "
            "run validate again, which quarantines such a file"
        ) from None


def _cache_targets(
    paths: list[Path], cfg: FeatureConfig, cache: Path, n_jobs: int, backend: str
) -> tuple[list[Path], Transforms | None]:
    """Each song's cache entry (named by its file's digest) and, when songs will be computed
    locally, the transforms to send the workers, both made while the workers start."""
    local = backend == "local"
    # Fewer entries than songs: some will be computed, so prepare for that now.
    work_likely = sum(1 for _ in cache.glob("*/*.npy")) < len(paths)
    # Local workers are sent the transforms, built here once, and so never import librosa or
    # scipy.signal. A cluster's workers build their own: sent with each chunk, the transforms
    # would be held by the scheduler for every task at once.
    with ThreadPoolExecutor(2) as background:
        # Hashing (which frees the GIL) and building the transforms (mostly importing
        # scipy.signal and librosa) run beside the workers' start-up.
        digests_done = background.submit(lambda: [song_digest(p) for p in paths])
        transforms_done = (
            background.submit(feature_transforms, cfg) if local and work_likely else None
        )
        if local and n_jobs > 1 and work_likely:
            Parallel(n_jobs=n_jobs)(delayed(_warm_up_worker)(cfg) for _ in range(n_jobs))
        digests = digests_done.result()
        transforms = transforms_done.result() if transforms_done else None
    return [cache / d[:2] / f"{d}.npy" for d in digests], transforms


def _stack(targets: list[Path], songs: pd.DataFrame, cfg: FeatureConfig, out_dir: Path) -> None:
    """Stack the cache entries, in song order, into the stage's outputs (atomically)."""
    n_songs = len(songs)
    shapes = {name: (n_songs, rows, cfg.song_frames) for name, rows in cfg.rows.items()}
    splits = np.cumsum([cfg.rows[name] for name in FEATURE_NAMES])[:-1]
    with atomic_path(out_dir) as tmp, ExitStack() as files:
        tmp.mkdir()
        # Rows are appended in order to plain .npy files rather than set in a memory map:
        # a map's written pages count in the stage's resident memory, which then grows with
        # the catalogue though nothing needs them.
        outputs = {name: files.enter_context(open(tmp / f"{name}.npy", "wb")) for name in shapes}
        for name, shape in shapes.items():
            header = {"descr": np.dtype(np.float16).str, "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(outputs[name], header)
        for target in tqdm(targets, desc="features: stacking", unit="song"):
            parts = np.split(np.load(target), splits)
            if any(p.shape != shapes[n][1:] for n, p in zip(FEATURE_NAMES, parts, strict=True)):
                raise MusicrecError(
                    f"features: cache entry {target} has the wrong shape; delete it"
                )
            for name, part in zip(FEATURE_NAMES, parts, strict=True):
                outputs[name].write(np.ascontiguousarray(part, np.float16).tobytes())
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


@dataclass(frozen=True)
class FeaturesRun:
    """How the ``features`` stage computes (in params.yaml beside :class:`FeatureConfig`'s
    keys); none of it changes a feature."""

    n_jobs: int = 1  # worker processes (local), or workers of a local Dask cluster
    backend: str = "local"  # local | dask
    scheduler: str = ""  # dask: the scheduler's address; "" starts a local cluster

    def __post_init__(self) -> None:
        Workers(self.n_jobs)
        if self.backend not in ("local", "dask"):
            raise MusicrecError(f"features.backend must be local or dask, not {self.backend!r}")


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
    root = Path(read_config(params, "data", DataConfig).root)
    cfg, run = read_config(params, "features", FeatureConfig, FeaturesRun)
    with run_stage("features", args) as (record, _):
        summary = compute_features(
            root,
            read_tsv(args.validated / "songs.tsv"),
            cfg,
            args.out,
            args.cache,
            run.n_jobs,
            run.backend,
            run.scheduler,
        )
        record.update(summary)
    print(
        f"features: {summary['songs']} songs ({summary['computed']} computed, "
        f"{summary['cached']} from the cache) -> {args.out}"
    )
    return 0
