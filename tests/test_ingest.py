"""``musicrec ingest`` on a small fabricated tree in the Million Song Dataset's shapes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import soundfile as sf

from musicrec.audio import ClipSpec
from musicrec.cli import main as musicrec
from musicrec.validate import validate_dataset

SR = 22050


def _track(n: int) -> str:
    return f"TR{n:016d}"


def _preview(tree, track: str, seconds: float, ext: str = "wav") -> None:
    folder = tree / track[2] / track[3] / track[4]
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(folder / f"{track}.{ext}", 0.3 * np.sin(2 * np.pi * 220 * t), SR)


def test_three_commands_turn_msd_files_into_a_valid_folder(tmp_path):
    tree = tmp_path / "previews"
    songs = [f"SO{n:016d}" for n in range(6)]
    lines = []
    for i, song in enumerate(songs):
        lines.append(f"{_track(10 * i)}<SEP>{song}<SEP>Artist {i}<SEP>Title {i}")
        _preview(tree, _track(10 * i), 4.0)
    # Song 0 has a second, longer preview: the rule picks the larger file.
    lines.append(f"{_track(1)}<SEP>{songs[0]}<SEP>Artist 0<SEP>Title 0 (remaster)")
    _preview(tree, _track(1), 6.0)
    # Song 1's only preview is a known wrong match; song 2 has no preview file at all.
    (tree / _track(20)[2] / _track(20)[3] / _track(20)[4] / f"{_track(20)}.wav").unlink()
    (tmp_path / "unique_tracks.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "sid_mismatches.txt").write_text(
        f"ERROR: <{songs[1]} {_track(10)}> Artist 1  -  Title 1 != Someone  -  Else\n"
    )
    plays = [f"U{u}\t{song}\t{1 + u % 3}" for u in range(8) for song in songs]
    (tmp_path / "train_triplets.txt").write_text("\n".join(plays) + "\n")

    out = tmp_path / "msd"
    assert musicrec([
        "ingest", "--triplets", str(tmp_path / "train_triplets.txt"),
        "--tracks", str(tmp_path / "unique_tracks.txt"),
        "--mismatches", str(tmp_path / "sid_mismatches.txt"),
        "--previews", str(tree), "--out", str(out),
    ]) == 0  # fmt: skip

    tracks = pd.read_csv(out / "tracks.csv")
    assert tracks["song_id"].tolist() == [songs[0], songs[3], songs[4], songs[5]]
    assert tracks["path"][0].endswith(f"{_track(1)}.wav")  # the longer of song 0's previews
    assert (out / "audio").is_symlink() and not any(out.glob("audio/*.wav"))  # nothing copied
    summary = json.loads((out / "ingest.json").read_text())
    assert summary["songs_with_a_preview"] == 4 and summary["songs_with_several_previews"] == 1
    assert summary["triplet_rows"] == 48 and summary["triplet_rows_kept"] == 32
    meta = pd.read_csv(out / "songs.csv")
    assert meta.loc[meta["song_id"] == songs[3], "artist"].item() == "Artist 3"
    # The folder is what validation expects: every kept song usable, none ambiguous.
    result = validate_dataset(out, ClipSpec(3.0), 1.0, -60.0)
    assert len(result.songs) == 4 and result.summary["audio"]["songs_quarantined"] == 0
    assert len(result.plays) == 32
