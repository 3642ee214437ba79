"""Finding and reading a song's audio: the one mechanism ``validate`` and ``features`` share.

Only the part of a file the clip needs is read (soundfile seeks), so an hour-long file costs
what a 10-second one does.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from musicrec.errors import MusicrecError
from musicrec.io import safe_join

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "opus", "mp3")


CLIP_POSITIONS = ("start", "middle")


@dataclass(frozen=True)
class ClipSpec:
    """Which parts of each file become the song's clips (``features`` params).

    ``clips`` clips of ``clip_seconds`` each are cut, side by side, from one span of
    ``clips * clip_seconds``: from ``offset_seconds`` (``clip_position: start``) or centred in
    the file (``middle``, where ``offset_seconds`` must stay 0). A file shorter than the span
    gives a shorter span (moved earlier when it starts at an offset) over which the clips
    overlap, evenly spread; a file shorter than one clip gives clips of the whole file,
    zero-padded at the end.
    """

    clip_seconds: float
    offset_seconds: float = 0.0
    clips: int = 1
    clip_position: str = "start"

    def __post_init__(self) -> None:
        if self.clips < 1 or self.clip_position not in CLIP_POSITIONS:
            raise MusicrecError(
                f"features params: need clips >= 1 (got {self.clips}) and clip_position one of "
                f"{', '.join(CLIP_POSITIONS)} (got {self.clip_position!r})"
            )
        if self.clip_position == "middle" and self.offset_seconds:
            raise MusicrecError(
                "features params: offset_seconds applies to clip_position: start; with middle the "
                "clips are centred in each file (set offset_seconds: 0)"
            )

    def span(self, duration: float) -> tuple[float, float]:
        """Return ``(start, length)`` in seconds of the part of a file of ``duration`` that
        the clips are cut from (all that is read)."""
        wanted = self.clips * self.clip_seconds
        latest = max(0.0, duration - wanted)
        start = latest / 2 if self.clip_position == "middle" else min(self.offset_seconds, latest)
        return start, min(wanted, duration - start)

    def windows(self, duration: float) -> list[tuple[float, float]]:
        """``(start, length)`` in seconds of each clip, in order, inside a file of ``duration``."""
        start, length = self.span(duration)
        clip = min(self.clip_seconds, length)
        step = (length - clip) / (self.clips - 1) if self.clips > 1 else 0.0
        return [(start + i * step, clip) for i in range(self.clips)]


def find_audio_files(root: Path, song_ids: list[str]) -> dict[str, list[str]]:
    """Map each song id to the audio files that claim it, as paths relative to ``root``.

    With ``<root>/tracks.csv`` (columns ``song_id,path``, paths relative to ``audio/``) paths
    come from it; otherwise a song's file is ``<root>/audio/<song_id>.<ext>``. Every path is
    checked to stay under ``audio/``.

    Returns
    -------
    dict
        song id -> candidate paths (empty list: no audio; several: ambiguous).
    """
    audio_dir = Path(root) / "audio"
    found: dict[str, list[str]] = {song: [] for song in song_ids}
    tracks = Path(root) / "tracks.csv"
    if tracks.exists():
        table = pd.read_csv(tracks, dtype=str, keep_default_na=False)
        if list(table.columns[:2]) != ["song_id", "path"]:
            raise MusicrecError(f"{tracks}: the header must start with 'song_id,path'")
        for song, rel in zip(table["song_id"], table["path"], strict=True):
            if song in found:
                safe_join(audio_dir, rel)
                found[song].append(f"audio/{rel}")
        return found
    if not audio_dir.is_dir():
        raise MusicrecError(f"{audio_dir}: no audio folder (expected <root>/audio/<song_id>.<ext>)")
    by_stem: dict[str, list[str]] = {}
    for path in sorted(audio_dir.iterdir()):
        if path.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS:
            by_stem.setdefault(path.stem, []).append(f"audio/{path.name}")
    for song in found:
        found[song] = by_stem.get(song, [])
    return found


def unsupported_audio_files(root: Path, song_ids: list[str]) -> dict[str, list[str]]:
    """Files ``<root>/audio/<song_id>.<ext>`` whose extension is not a supported format.

    They are never read; validation names them, so that a song quarantined for having no
    audio says what was there instead.
    """
    audio_dir = Path(root) / "audio"
    wanted = set(song_ids)
    found: dict[str, list[str]] = {}
    if audio_dir.is_dir():
        for path in sorted(audio_dir.iterdir()):
            if path.stem in wanted and path.suffix.lower().lstrip(".") not in AUDIO_EXTENSIONS:
                found.setdefault(path.stem, []).append(f"audio/{path.name}")
    return found


def resolve_audio(root: Path, relative: str) -> Path:
    """The file behind a manifest path, refused if it leads outside ``<root>/audio``."""
    return safe_join(Path(root) / "audio", relative.removeprefix("audio/"))


# The most bytes an audio file may hold: what a plain WAV's 32-bit sizes can address. A larger
# file under an audio name is something else (a disk image, an archive), and the feature
# cache's hash would read every byte of it.
MAX_AUDIO_BYTES = 1 << 32
# The start of a probe's decode_error for a file refused before it is decoded: not a regular
# file (a FIFO would block the first read forever, a device may never end) or too large.
REFUSED = "RefusedFile: "

_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class RefusedFile(OSError):
    """An audio path that is not a regular file, or one larger than :data:`MAX_AUDIO_BYTES`:
    never decoded. Its message says what is wrong (``not a regular file (a FIFO)``,
    ``larger than N bytes (M bytes)``); the caller names the file."""


def check_audio_file(path: Path, status: os.stat_result | None = None) -> os.stat_result:
    """Refuse ``path`` unless it is a regular file of at most :data:`MAX_AUDIO_BYTES`.

    Only ``stat`` is asked (or ``status``, an ``fstat`` already made), so nothing is opened:
    opening a FIFO blocks until a writer comes, and opening a device may act on it.

    Raises
    ------
    RefusedFile
        Saying what the file is instead.
    """
    status = status if status is not None else os.stat(path)
    if not stat.S_ISREG(status.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(status.st_mode), "a special file")
        raise RefusedFile(f"not a regular file ({kind})")
    if status.st_size > MAX_AUDIO_BYTES:
        raise RefusedFile(f"larger than {MAX_AUDIO_BYTES} bytes ({status.st_size} bytes)")
    return status


def open_audio_file(path: Path) -> int:
    """A file descriptor for reading ``path``, after :func:`check_audio_file` (the caller
    closes it).

    The open never blocks (``O_NONBLOCK``) and what was opened is checked again, so a FIFO
    put in the file's place after the first check is refused rather than waited on. The
    decoder then opens the path again by name (libsndfile needs the name for its format
    guess), so a swap in the instant between the two opens is not covered.
    """
    check_audio_file(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        check_audio_file(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def audio_digest(path: Path, digest) -> str:
    """The hex digest of an audio file's bytes, read through :func:`open_audio_file` in 1 MB
    blocks (memory stays flat), with at most :data:`MAX_AUDIO_BYTES` read.

    ``digest`` is a fresh ``hashlib`` object; the result is what hashing the whole file
    gives (:func:`musicrec.io.file_digest`).

    Raises
    ------
    RefusedFile
        Not a regular file, or larger than the cap (when checked, or grown since).
    """
    fd = open_audio_file(path)
    left = MAX_AUDIO_BYTES
    with open(fd, "rb", closefd=True) as f:
        while block := f.read(min(1 << 20, left + 1)):
            if len(block) > left:
                raise RefusedFile(f"larger than {MAX_AUDIO_BYTES} bytes (it grew while read)")
            left -= len(block)
            digest.update(block)
    return digest.hexdigest()


# What a file's header may declare before anything is decoded (read_clip checks it): a small
# file that claims 255 channels or a 655 kHz rate would otherwise become hundreds of MB.
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
MAX_DECODED_SAMPLES = 32_000_000  # samples of all channels in the span read: 128 MB float32
DECODABLE_FORMATS = ("WAV", "WAVEX", "FLAC", "OGG", "MP3", "MPEG")  # sf.info(...).format


def check_declared(info: sf._SoundFileInfo, clip: ClipSpec) -> None:
    """Refuse a file whose header declares more than the limits above, before decoding it.

    Raises
    ------
    ValueError
        Saying which limit and what the file declared.
    """
    if info.format not in DECODABLE_FORMATS:
        raise ValueError(f"container {info.format} is not one of wav, flac, ogg and mp3")
    if not 0 < info.samplerate <= MAX_SAMPLE_RATE:
        raise ValueError(f"declares {info.samplerate} Hz (at most {MAX_SAMPLE_RATE:,} Hz read)")
    if not 0 < info.channels <= MAX_CHANNELS:
        raise ValueError(f"declares {info.channels} channels (at most {MAX_CHANNELS} read)")
    _, length = clip.span(info.duration)
    samples = length * info.samplerate * info.channels
    if samples > MAX_DECODED_SAMPLES:
        raise ValueError(
            f"its clips would decode to {samples:,.0f} samples (at most "
            f"{MAX_DECODED_SAMPLES:,}): a lower rate, fewer channels or shorter clips"
        )


def read_clip(
    path: Path, clip: ClipSpec, info: sf._SoundFileInfo | None = None
) -> tuple[np.ndarray, int]:
    """Read the samples of the clips' span (:meth:`ClipSpec.span`), all channels, at the
    file's own rate, after checking what its header declares (:func:`check_declared`).

    Returns
    -------
    y : np.ndarray [shape=(n_samples, n_channels), dtype=float32]
    sr : int
    """
    info = info or sf.info(str(path))
    check_declared(info, clip)
    start, length = clip.span(info.duration)
    y, sr = sf.read(
        str(path),
        start=int(start * info.samplerate),
        frames=max(1, int(round(length * info.samplerate))),
        dtype="float32",
        always_2d=True,
    )
    return y, sr


# The start of a probe's decode_error for a regular, non-empty file in which libsndfile finds no
# audio: it says "File does not exist or is not a regular file (possibly a pipe?)" of an MP3
# that holds only an ID3 tag, which would send a user looking for the wrong problem.
NO_AUDIO_FRAMES = "NoAudioFrames: "


def probe_audio(path: Path, clip: ClipSpec) -> dict:
    """Measure what validation judges: decodable, duration, level and finiteness of the clips.

    Returns a dict with ``decode_error`` (None when the file decodes), ``duration_s``,
    ``sample_rate``, ``channels``, ``rms_db`` (of the clips' span), ``signal_db`` (the same
    with each channel's mean taken away: a constant DC offset has a level but no signal) and
    ``finite``. A path that is not a regular file or is larger than :data:`MAX_AUDIO_BYTES`
    is never decoded: its ``decode_error`` starts with :data:`REFUSED`.
    """
    out = {
        "decode_error": None,
        "duration_s": np.nan,
        "sample_rate": np.nan,
        "channels": np.nan,
        "rms_db": np.nan,
        "signal_db": np.nan,
        "finite": False,
    }
    try:
        # libsndfile reports a file it may not read as a "System error": ask the OS first,
        # which also refuses what is not a regular file before libsndfile's open could block.
        os.close(open_audio_file(path))
        info = sf.info(str(path))
        out.update(
            duration_s=float(info.duration),
            sample_rate=int(info.samplerate),
            channels=int(info.channels),
        )
        y, _ = read_clip(path, clip)
    except RefusedFile as exc:
        out["decode_error"] = f"{REFUSED}{exc}"
        return out
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        out["decode_error"] = f"{type(exc).__name__}: {exc}"
        if "not a regular file" in str(exc) and Path(path).is_file() and Path(path).stat().st_size:
            out["decode_error"] = f"{NO_AUDIO_FRAMES}{exc}"
        return out
    if y.size == 0:
        out["decode_error"] = "no samples could be read"
        return out
    start, length = clip.span(out["duration_s"])
    if y.shape[0] < int(round(length * out["sample_rate"])):
        # The header promised more than the file holds (a truncated MP3 decodes up to where it
        # was cut): the real length is what validation judges.
        out["duration_s"] = start + y.shape[0] / out["sample_rate"]
    out["finite"], out["rms_db"], out["signal_db"] = clip_levels(y)
    return out


# Samples (of all channels) made float64 at a time by clip_levels: 8 MB, whatever the clip.
LEVEL_BLOCK_SAMPLES = 1 << 20


def clip_levels(y: np.ndarray) -> tuple[bool, float, float]:
    """Whether samples are all finite, and their levels, in blocks of float64.

    Sums are float64 scalars over blocks of :data:`LEVEL_BLOCK_SAMPLES` samples, so no
    float64 copy of the clip is made (a capped clip would be 256 MB of it, per thread).

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples, n_channels), dtype=float32]
        At least one sample.

    Returns
    -------
    finite : bool
    rms_db : float
        Mean square of every sample, in dBFS (NaN when not finite).
    signal_db : float
        The same once each channel's mean is taken away (NaN when not finite).
    """
    n_samples, n_channels = y.shape
    step = max(1, LEVEL_BLOCK_SAMPLES // n_channels)
    blocks = [slice(i, min(i + step, n_samples)) for i in range(0, n_samples, step)]
    # One float64 buffer, reused: a new block made while the last is still held would double it.
    buffer = np.empty((min(step, n_samples), n_channels))
    sums, squares = np.zeros(n_channels), 0.0
    for rows in blocks:
        if not np.isfinite(y[rows]).all():
            return False, np.nan, np.nan
        block = buffer[: rows.stop - rows.start]
        np.copyto(block, y[rows])
        sums += block.sum(axis=0)
        squares += float(np.square(block, out=block).sum())
    # A second pass for the spread about the mean: subtracting the mean's square from the
    # mean square would cancel to noise on a loud constant (a DC offset).
    means, varying = sums / n_samples, 0.0
    for rows in blocks:
        block = buffer[: rows.stop - rows.start]
        np.subtract(y[rows], means, out=block)
        varying += float(np.square(block, out=block).sum())
    rms_db = float(10 * np.log10(squares / y.size + 1e-20))
    return True, rms_db, float(10 * np.log10(varying / y.size + 1e-20))
