"""Messy data on purpose: the bad audio and bad log rows real catalogues hold.

``write_bad_audio`` writes one file per case into an ``audio/`` folder and returns what
validation must do with each; ``mix_into`` copies a clean data folder and mixes the cases in,
together with the play-log rows that are repaired (a byte-order mark, a header, zero counts,
duplicate pairs, Windows line endings, no final newline). The hardening tests use both, and so does
``python -m musicrec.messy SRC DEST``, which makes the messy copy of a world the pipeline is
then run on (README, "Bad data").

Nothing here is used by the pipeline itself.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from musicrec.io import atomic_path, refuse_output_over_inputs

SR = 22050

# song id -> what validation does with it: "used", or the start of the quarantine reason.
OUTCOMES = {
    "bad_zero_bytes": "cannot be decoded",
    "bad_truncated_flac": "cannot be decoded",
    "bad_truncated_mp3": "used",
    "bad_truncated_mp3_short": "too short",
    "bad_text_named_mp3": "no audio frames",
    "bad_nan": "NaN or infinite samples",
    "bad_inf": "NaN or infinite samples",
    "bad_silence": "silent",
    "bad_dc_offset": "no signal: constant",
    "bad_id3_only_mp3": "no audio frames",
    "bad_one_sample": "too short",
    "bad_rate_8k": "used",
    "bad_rate_96k": "used",
    "bad_six_channels": "used",
    "bad_shorter_than_clip": "used",
    "bad_hour_long": "used",
    "bad_m4a_container": "no audio file in a supported format",
    "bad_flac_named_wav": "used",
    "bad_no_audio": "no audio file",
}


def noise(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    """White noise at -14 dBFS [shape=(n,) or (n, channels)]."""
    shape = (int(seconds * sr), channels) if channels > 1 else (int(seconds * sr),)
    return 0.2 * np.random.default_rng(seed).standard_normal(shape)


def _truncated(path: Path, fmt: str, seconds: float, keep: float) -> None:
    full = path.with_name(path.name + ".full")
    sf.write(full, noise(seconds), SR, format=fmt)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()


def _hour_long(path: Path, sr: int = 8000) -> None:
    """An hour of 8 kHz noise, written a minute at a time (58 MB on disk, little memory)."""
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as out:
        for minute in range(60):
            out.write(noise(60, sr, seed=minute))


def write_bad_audio(audio: Path, clip_seconds: float) -> dict[str, str]:
    """Write one file per bad-audio case into ``audio``; return ``OUTCOMES``.

    The cases assume ``validate.min_seconds`` below ``clip_seconds`` and at least 0.5 s, and a
    ``validate.silence_db`` around -60: usable files are ``clip_seconds + 1`` s long, the short
    one is three quarters of the clip, and the too-short ones last under 0.5 s.
    """
    audio.mkdir(parents=True, exist_ok=True)
    seconds = clip_seconds + 1
    (audio / "bad_zero_bytes.wav").write_bytes(b"")
    _truncated(audio / "bad_truncated_flac.flac", "FLAC", 2 * seconds, 1 / 3)
    _truncated(audio / "bad_truncated_mp3.mp3", "MP3", 2 * seconds, 3 / 4)
    _truncated(audio / "bad_truncated_mp3_short.mp3", "MP3", 6, 1 / 14)
    (audio / "bad_text_named_mp3.mp3").write_text("not audio at all\n")
    with_nan, with_inf = noise(seconds), noise(seconds)
    with_nan[100], with_inf[200] = np.nan, np.inf
    sf.write(audio / "bad_nan.wav", with_nan, SR, subtype="FLOAT")
    sf.write(audio / "bad_inf.wav", with_inf, SR, subtype="FLOAT")
    sf.write(audio / "bad_silence.wav", np.zeros(int(seconds * SR)), SR)
    sf.write(audio / "bad_dc_offset.wav", np.full(int(seconds * SR), 0.25), SR)
    # An ID3v2.4 tag (10-byte header, 10 bytes of padding) and no MPEG frame after it.
    (audio / "bad_id3_only_mp3.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10))
    sf.write(audio / "bad_one_sample.wav", noise(1)[:1], SR)
    sf.write(audio / "bad_rate_8k.wav", noise(seconds, 8000), 8000)
    sf.write(audio / "bad_rate_96k.wav", noise(seconds, 96000), 96000)
    sf.write(audio / "bad_six_channels.wav", noise(seconds, channels=6), SR)
    sf.write(audio / "bad_shorter_than_clip.wav", noise(0.75 * clip_seconds), SR)
    _hour_long(audio / "bad_hour_long.wav")
    (audio / "bad_m4a_container.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(64))
    sf.write(audio / "bad_flac_named_wav.wav", noise(seconds), SR, format="FLAC")
    return dict(OUTCOMES)


def mix_into(source: Path, dest: Path, clip_seconds: float, seed: int = 0) -> dict:
    """Copy the data folder ``source`` to ``dest`` and mix the bad cases in.

    Audio: every case of ``write_bad_audio``, each played by ten of the source's users. Log:
    a UTF-8 byte-order mark (as Windows tools write), a header row on line 1, ten zero-count
    rows, ten existing pairs split into two rows each, Windows line endings and no final
    newline.

    Returns
    -------
    dict
        ``outcomes`` (song id -> expected outcome) and ``repairs`` (the counts validation must
        report).
    """
    source, final = Path(source), Path(dest)
    refuse_output_over_inputs(final, {"source": source}, either_way=True)
    with atomic_path(final) as dest:
        shutil.copytree(source, dest)
        result = _mix(source, dest, clip_seconds, seed)
    return result


def _mix(source: Path, dest: Path, clip_seconds: float, seed: int) -> dict:
    """:func:`mix_into`'s work on the copy ``dest`` of ``source``."""
    outcomes = write_bad_audio(dest / "audio", clip_seconds)
    lines = (source / "plays.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines]
    rng = np.random.default_rng(seed)
    users = sorted({r[0] for r in rows})
    extra = [
        [user, song, str(1 + rng.integers(5))]
        for song in outcomes
        for user in rng.choice(users, size=10, replace=False)
    ]
    # Ten pairs split in two: the first row keeps one play, a second row carries the rest.
    split_at = rng.choice(np.flatnonzero([int(r[2]) > 1 for r in rows]), size=10, replace=False)
    split_rows = []
    for i in split_at:
        user, song, count = rows[i]
        rows[i] = [user, song, "1"]
        split_rows.append([user, song, str(int(count) - 1)])
    taken = {(r[0], r[1]) for r in rows}
    zero_rows, songs = [], sorted({r[1] for r in rows})
    while len(zero_rows) < 10:
        pair = (str(rng.choice(users)), str(rng.choice(songs)))
        if pair not in taken:
            taken.add(pair)
            zero_rows.append([*pair, "0"])
    body = [["user_id", "song_id", "play_count"], *rows, *extra, *split_rows, *zero_rows]
    text = "\r\n".join("\t".join(r) for r in body)
    (dest / "plays.tsv").write_bytes("\ufeff".encode() + text.encode())
    repairs = {
        "byte_order_marks_removed": 1,
        "header_rows_skipped": 1,
        "zero_count_rows_dropped": 10,
        "duplicate_rows_summed": 10,
    }
    return {"outcomes": outcomes, "repairs": repairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m musicrec.messy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("source", type=Path, help="a clean data folder (e.g. data/synthetic)")
    parser.add_argument(
        "dest",
        type=Path,
        help="where the messy copy goes (replaced if an earlier run wrote it; any other "
        "existing folder is refused)",
    )
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    mixed = mix_into(args.source, args.dest, args.clip_seconds)
    print(f"{args.dest}: {len(mixed['outcomes'])} bad-audio cases and log repairs mixed in")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
