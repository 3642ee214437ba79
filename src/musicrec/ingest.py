"""``musicrec ingest``: the Million Song Dataset's files as a musicrec data folder.

Turns the Echo Nest Taste Profile triplets (``train_triplets.txt``: user, song id, play count),
the MSD track list (``unique_tracks.txt``: ``track<SEP>song<SEP>artist<SEP>title``),
optionally the list of wrong song-track matches (``sid_mismatches.txt``), and a folder tree of
audio previews named by track id (``<tree>/**/<TRACK_ID>.<ext>``, e.g. ``A/B/C/TRABC...mp3``)
into the layout of docs/design.md, section 2::

    <out>/plays.tsv    the triplets of songs that have a usable preview
    <out>/audio        a link to the preview tree: no audio is copied
    <out>/tracks.csv   song_id,path: the one preview of each song
    <out>/songs.csv    song_id,title,artist (from the track list)
    <out>/ingest.json  what was kept and left out, and why

A song has several tracks in the MSD (the same recording on several releases). The song gets
**one** preview by a fixed rule, instead of validation quarantining it as ambiguous: leave
out tracks the mismatch list names for that song and tracks without a preview file, then take
the largest preview file (the longest audio), ties to the smallest track id. Songs with no
usable preview are left out with their plays, and counted.

Then, as for any folder (README "Your own data")::

    musicrec ingest --triplets train_triplets.txt --tracks unique_tracks.txt \\
        --mismatches sid_mismatches.txt --previews /data/msd_previews --out data/msd
    dvc exp run -S data.root=data/msd -S evaluate.max_users=20000
"""

from __future__ import annotations

import argparse
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from musicrec.audio import AUDIO_EXTENSIONS
from musicrec.errors import MusicrecError
from musicrec.io import (
    MAX_LINE_BYTES,
    atomic_path,
    bounded_lines,
    refuse_output_over_inputs,
    write_json,
)

SEP = "<SEP>"
# sid_mismatches.txt: "ERROR: <SONG_ID TRACK_ID> artist - title != artist - title"
MISMATCH = re.compile(r"^ERROR: <(SO[0-9A-Z]+) (TR[0-9A-Z]+)>")
TRACK_ID = re.compile(r"^TR[0-9A-Z]{16}$")


def read_tracks(path: Path) -> pd.DataFrame:
    """``unique_tracks.txt`` as ``track_id``, ``song_id``, ``artist``, ``title``."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            parts = line.rstrip("\n").split(SEP)
            if len(parts) != 4:
                raise MusicrecError(
                    f"{path}:{number}: expected track<SEP>song<SEP>artist<SEP>title, "
                    f"found {len(parts)} fields"
                )
            rows.append(parts)
    return pd.DataFrame(rows, columns=["track_id", "song_id", "artist", "title"])


def read_mismatches(path: Path | None) -> set[tuple[str, str]]:
    """The (song id, track id) pairs ``sid_mismatches.txt`` says are wrong matches."""
    if path is None:
        return set()
    pairs = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = MISMATCH.match(line)
            if match:
                pairs.add((match.group(1), match.group(2)))
    return pairs


def find_previews(tree: Path, unreadable: list[str] | None = None) -> dict[str, tuple[str, int]]:
    """Every audio file under ``tree`` named by a track id: track id -> (path relative to
    ``tree``, size in bytes). A track with several files keeps the largest.

    A name that is not a regular file (a dangling link, a FIFO, a folder named like a
    preview) is no preview: it is left out, and its path relative to ``tree`` appended to
    ``unreadable`` (``ingest.json`` counts them).
    """
    found: dict[str, tuple[str, int]] = {}
    for directory, _, files in os.walk(tree):
        for name in files:
            stem, _, ext = name.rpartition(".")
            if ext.lower() not in AUDIO_EXTENSIONS or not TRACK_ID.match(stem):
                continue
            path = Path(directory) / name
            try:
                status = path.stat()
            except OSError:
                status = None
            if status is None or not stat.S_ISREG(status.st_mode):
                if unreadable is not None:
                    unreadable.append(str(path.relative_to(tree)))
                continue
            size = status.st_size
            if stem not in found or size > found[stem][1]:
                found[stem] = (str(path.relative_to(tree)), size)
    return found


def triplet_lines(path: Path) -> Iterator[str]:
    """The lines of the triplets file as text, each checked as it is read.

    Raises
    ------
    MusicrecError
        ``file:line: reason`` for a line that is not UTF-8 or longer than
        :data:`MAX_LINE_BYTES` (a triplet is three short fields; a longer line is a damaged or
        wrong file, and would otherwise be held whole in memory).
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(bounded_lines(f), 1):
            if len(raw) > MAX_LINE_BYTES:
                raise MusicrecError(
                    f"{path}:{number}: line longer than {MAX_LINE_BYTES} bytes; a triplet is "
                    "user<TAB>song<TAB>count: is this the Taste Profile's train_triplets.txt?"
                )
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MusicrecError(
                    f"{path}:{number}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                    f"{exc.start + 1}); convert the file to UTF-8 (iconv -f <encoding> -t "
                    "UTF-8)"
                ) from None


def choose_previews(
    tracks: pd.DataFrame, previews: dict[str, tuple[str, int]], mismatches: set[tuple[str, str]]
) -> pd.DataFrame:
    """One preview per song (the rule in the module docstring).

    Returns
    -------
    pd.DataFrame
        ``song_id``, ``track_id``, ``path`` (relative to the preview tree), one row per song
        with a usable preview, sorted by song id.
    """
    usable = tracks[
        [
            t in previews and (s, t) not in mismatches
            for s, t in zip(tracks["song_id"], tracks["track_id"], strict=True)
        ]
    ].copy()
    usable["path"] = [previews[t][0] for t in usable["track_id"]]
    usable["size"] = [previews[t][1] for t in usable["track_id"]]
    usable = usable.sort_values(["song_id", "size", "track_id"], ascending=[True, False, True])
    chosen = usable.drop_duplicates("song_id", keep="first")
    return chosen[["song_id", "track_id", "path"]].reset_index(drop=True)


def ingest(
    triplets: Path,
    tracks_file: Path,
    previews_dir: Path,
    out_dir: Path,
    mismatches_file: Path | None = None,
) -> dict:
    """Write the data folder (atomically) and return what ``ingest.json`` says."""
    refuse_output_over_inputs(
        out_dir,
        {
            "--triplets": triplets,
            "--tracks": tracks_file,
            "--previews": previews_dir,
            "--mismatches": mismatches_file,
        },
    )
    refuse_output_over_inputs(out_dir, {"--previews": previews_dir}, either_way=True)
    previews_dir = Path(previews_dir).resolve()
    if not previews_dir.is_dir():
        raise MusicrecError(f"{previews_dir}: no such folder of previews")
    tracks = read_tracks(tracks_file)
    mismatches = read_mismatches(mismatches_file)
    unreadable: list[str] = []
    previews = find_previews(previews_dir, unreadable)
    chosen = choose_previews(tracks, previews, mismatches)
    keep = set(chosen["song_id"])
    counts = {"rows": 0, "rows_kept": 0, "plays_kept": 0}
    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "audio").symlink_to(previews_dir, target_is_directory=True)
        with open(tmp / "plays.tsv", "w") as dst:
            for line in tqdm(triplet_lines(triplets), desc="ingest: triplets", unit=" rows"):
                counts["rows"] += 1
                song = line.split("\t", 2)[1] if line.count("\t") >= 2 else None
                if song in keep:
                    dst.write(line.rstrip("\r\n") + "\n")
                    counts["rows_kept"] += 1
        chosen[["song_id", "path"]].to_csv(tmp / "tracks.csv", index=False)
        meta = tracks.drop_duplicates("song_id").set_index("song_id").loc[chosen["song_id"]]
        meta.reset_index()[["song_id", "title", "artist"]].to_csv(tmp / "songs.csv", index=False)
        songs_in_list = tracks["song_id"].nunique()
        summary = {
            "songs_in_track_list": int(songs_in_list),
            "songs_with_a_preview": len(chosen),
            "songs_without_a_usable_preview": int(songs_in_list - len(chosen)),
            "songs_with_several_previews": int(
                tracks[tracks["track_id"].isin(previews)].groupby("song_id").size().gt(1).sum()
            ),
            "mismatched_pairs_left_out": len(mismatches),
            "preview_names_not_regular_files": len(unreadable),
            "preview_names_not_regular_files_first": sorted(unreadable)[:20],
            "triplet_rows": counts["rows"],
            "triplet_rows_kept": counts["rows_kept"],
            "previews": str(previews_dir),
            "rule": "per song: drop mismatched and preview-less tracks, then the largest "
            "preview file, ties to the smallest track id",
        }
        write_json(tmp / "ingest.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="musicrec ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--triplets", type=Path, required=True, help="train_triplets.txt")
    parser.add_argument("--tracks", type=Path, required=True, help="unique_tracks.txt")
    parser.add_argument("--previews", type=Path, required=True, help="folder tree of previews")
    parser.add_argument("--mismatches", type=Path, help="sid_mismatches.txt (optional)")
    parser.add_argument("--out", type=Path, required=True, help="the data folder to write")
    args = parser.parse_args(argv)
    for path in (args.triplets, args.tracks, args.mismatches):
        if path is not None and not path.is_file():
            raise MusicrecError(f"{path}: no such file")
    summary = ingest(args.triplets, args.tracks, args.previews, args.out, args.mismatches)
    print(
        f"ingest: {summary['songs_with_a_preview']} of {summary['songs_in_track_list']} songs "
        f"have a preview; {summary['triplet_rows_kept']} of {summary['triplet_rows']} play "
        f"rows kept -> {args.out} (details in {args.out / 'ingest.json'})"
    )
    return 0
