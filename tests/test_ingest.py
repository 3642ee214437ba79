"""``musicrec ingest`` on a small fabricated tree in the Million Song Dataset's shapes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import soundfile as sf

from musicrec.audio import ClipSpec
from musicrec.cli import main as musicrec
from musicrec.ingest import MAX_LINE_BYTES
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


def _msd_files(tmp_path, n_songs: int = 3) -> list[str]:
    """A small track list, triplets and preview tree; the ingest arguments without --out."""
    tree = tmp_path / "work" / "previews"
    songs = [f"SO{n:016d}" for n in range(n_songs)]
    lines = []
    for i, song in enumerate(songs):
        lines.append(f"{_track(10 * i)}<SEP>{song}<SEP>Artist {i}<SEP>Title {i}")
        _preview(tree, _track(10 * i), 1.0)
    (tmp_path / "unique_tracks.txt").write_text("\n".join(lines) + "\n")
    plays = [f"U{u}\t{song}\t1" for u in range(3) for song in songs]
    (tmp_path / "train_triplets.txt").write_text("\n".join(plays) + "\n")
    return [
        "ingest", "--triplets", str(tmp_path / "train_triplets.txt"),
        "--tracks", str(tmp_path / "unique_tracks.txt"), "--previews", str(tree),
    ]  # fmt: skip


def _tree_listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_ingest_over_a_folder_it_did_not_write_refuses_and_keeps_every_file(tmp_path, capsys):
    args = _msd_files(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years")
    assert musicrec([*args, "--out", str(precious)]) == 1
    assert "musicrec did not write" in capsys.readouterr().err
    assert _tree_listing(precious) == ["thesis.txt"]
    assert (precious / "thesis.txt").read_text() == "four years"


def test_ingest_with_out_holding_the_previews_refuses_and_keeps_them(tmp_path, capsys):
    args = _msd_files(tmp_path)
    work = tmp_path / "work"
    before = _tree_listing(work)
    for out in (work, work / "previews"):
        assert musicrec([*args, "--out", str(out)]) == 1
        assert "holds the input --previews" in capsys.readouterr().err
    assert _tree_listing(work) == before and len(before) > 3


def test_ingest_rewrites_a_folder_it_wrote(tmp_path):
    args = _msd_files(tmp_path)
    out = tmp_path / "msd"
    assert musicrec([*args, "--out", str(out)]) == 0
    assert musicrec([*args, "--out", str(out)]) == 0
    assert json.loads((out / "ingest.json").read_text())["songs_with_a_preview"] == 3


def test_ingest_leaves_out_and_counts_a_dangling_link_among_the_previews(tmp_path):
    args = _msd_files(tmp_path)
    preview = next((tmp_path / "work" / "previews").rglob(f"{_track(0)}.wav"))
    preview.unlink()
    preview.symlink_to(tmp_path / "gone.wav")
    assert musicrec([*args, "--out", str(tmp_path / "msd")]) == 0
    summary = json.loads((tmp_path / "msd" / "ingest.json").read_text())
    assert summary["songs_with_a_preview"] == 2
    assert summary["preview_names_not_regular_files"] == 1
    assert summary["preview_names_not_regular_files_first"][0].endswith(f"{_track(0)}.wav")


def test_ingest_names_file_and_line_of_triplets_that_are_not_utf8(tmp_path, capsys):
    args = _msd_files(tmp_path)
    triplets = tmp_path / "train_triplets.txt"
    triplets.write_bytes(triplets.read_bytes() + b"U\xe9\tSO0000000000000000\t1\n")
    assert musicrec([*args, "--out", str(tmp_path / "msd")]) == 1
    err = capsys.readouterr().err
    assert f"{triplets}:10: not UTF-8 text (byte 0xe9 at column 2)" in err
    assert "Traceback" not in err and not (tmp_path / "msd").exists()


def test_ingest_names_file_and_line_of_an_overlong_triplet_line(tmp_path, capsys):
    args = _msd_files(tmp_path)
    triplets = tmp_path / "train_triplets.txt"
    triplets.write_bytes(b"U1\tSO0\t1\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\n")
    assert musicrec([*args, "--out", str(tmp_path / "msd")]) == 1
    assert f"{triplets}:2: line longer than {MAX_LINE_BYTES} bytes" in capsys.readouterr().err
