"""The real-audio world builder, on a tiny fabricated Debian package (no download)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from musicrec import real_world
from musicrec.audio import ClipSpec
from musicrec.cli import main as musicrec
from musicrec.errors import MusicrecError
from musicrec.io import file_digest
from musicrec.real_world import RealWorldConfig, Source
from musicrec.taste import affinity
from musicrec.validate import validate_dataset

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
SR = 22050


def _tone(seconds: float, freq: float, beat_hz: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    pulse = 0.5 + 0.5 * (np.sin(2 * np.pi * beat_hz * t) > 0)
    return (0.3 * pulse * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _package(tmp_path, name: str, tracks: dict[str, float]) -> tuple[Source, object]:
    """A .deb holding ``tracks`` (file -> seconds) under usr/share/games/<name>/music/<album>/."""
    root = tmp_path / f"{name}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test music\n"
    )
    doc = root / "usr/share/doc" / name
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nLicense: CC0-1.0\n")
    for i, (file, seconds) in enumerate(sorted(tracks.items())):
        target = root / "usr/share/games" / name / "music" / file
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(target, _tone(seconds, 200 + 150 * i, 1 + i), SR, format="OGG")
    cache = tmp_path / "cache" / "debs"
    cache.mkdir(parents=True, exist_ok=True)
    deb = cache / f"{name}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
                   check=True, capture_output=True)  # fmt: skip
    source = Source(
        name,
        "1.0-1",
        file_digest(deb),
        f"{name} band",
        2020,
        rf"\./usr/share/games/{name}/music/([^/]+)/[^/]+\.ogg$",
        name,
    )
    return source, deb


@pytest.fixture
def packages(tmp_path):
    a = _package(
        tmp_path, "alpha-music", {f"day/a{i}.ogg": 8.0 for i in range(6)} | {"day/sting.ogg": 1.0}
    )
    b = _package(tmp_path, "beta-music", {f"night/b{i}.ogg": 7.0 + i for i in range(6)})
    return tmp_path, (a[0], b[0])


CFG = RealWorldConfig(n_users=60, mean_songs_per_user=4, excerpt_seconds=5.0, min_track_seconds=4.0)


def test_a_package_is_checked_against_its_pinned_digest(packages):
    tmp_path, (alpha, _) = packages
    cache = tmp_path / "cache" / "debs"
    assert real_world.fetch(alpha, cache) == cache / "alpha-music_1.0-1_all.deb"
    with pytest.raises(MusicrecError, match="not the pinned"):
        real_world.fetch(dataclasses.replace(alpha, sha256="0" * 64), cache)


def test_music_and_copyright_come_out_of_the_package(packages):
    tmp_path, (alpha, _) = packages
    deb = tmp_path / "cache" / "debs" / "alpha-music_1.0-1_all.deb"
    tracks = real_world.extract_music(deb, alpha, tmp_path / "out")
    assert [(p.name, album) for p, album, _ in tracks][:2] == [("a0.ogg", "day"), ("a1.ogg", "day")]
    assert tracks[0][2] == "/usr/share/games/alpha-music/music/day/a0.ogg"
    assert len(tracks) == 7 and (tmp_path / "out" / "copyright").read_text().startswith("Files")


def test_the_world_is_valid_deterministic_and_leaves_short_files_out(packages, tmp_path):
    root, sources = packages
    tracks = real_world.collect_tracks(sources, root / "cache")
    copyrights = {
        s.package: root / "cache" / "extracted" / s.package / "copyright" for s in sources
    }
    summary = real_world.build_world(tracks, tmp_path / "world", CFG, copyrights)
    assert summary["songs"] == 12 and summary["sources"] == {"alpha-music": 6, "beta-music": 6}
    songs = pd.read_csv(tmp_path / "world" / "songs.csv")
    assert "R0006" not in set(songs["song_id"])  # the 1-s sting
    assert set(songs["licence"]) == {f"licences/{s.package}.copyright" for s in sources}
    excerpt, rate = sf.read(tmp_path / "world" / "audio" / "R0000.flac")
    assert rate == CFG.sample_rate and len(excerpt) == 5 * CFG.sample_rate and excerpt.ndim == 1
    # The longest beta track (12 s): its excerpt is the middle 5 s, not the start.
    original, _ = sf.read(root / "cache" / "extracted" / "beta-music" / "night" / "b5.ogg")
    start = int(3.5 * SR)
    last = sf.read(tmp_path / "world" / "audio" / "R0012.flac")[0]
    assert np.corrcoef(last[:2000], original[start : start + 2000])[0, 1] > 0.99
    # The pipeline's own validation takes it as it is.
    result = validate_dataset(tmp_path / "world", ClipSpec(5.0), 3.0, -60.0)
    assert len(result.songs) == 12 and result.summary["audio"]["songs_quarantined"] == 0
    # Built again: byte for byte the same folder.
    real_world.build_world(tracks, tmp_path / "again", CFG, copyrights)
    for path in (tmp_path / "world").rglob("*"):
        if path.is_file():
            assert (
                path.read_bytes()
                == (tmp_path / "again" / path.relative_to(tmp_path / "world")).read_bytes()
            ), path


def test_listeners_play_what_their_simulated_taste_prefers():
    rng = np.random.default_rng(0)
    songs = pd.DataFrame({"song_id": [f"R{i:04d}" for i in range(80)], "source": ["a", "b"] * 40})
    descriptors = rng.normal(size=(80, len(real_world.DESCRIPTORS)))
    cfg = dataclasses.replace(CFG, n_users=300, mean_songs_per_user=8)
    plays, truth = real_world.simulate_listening(songs, descriptors, cfg)
    users = plays["user_id"].str[1:].astype(int).to_numpy()
    played = plays["song_id"].str[1:].astype(int).to_numpy()
    random_songs = rng.integers(0, 80, len(played))
    assert (
        affinity(truth, "total", users, played).mean()
        > 0.5 + affinity(truth, "total", users, random_songs).mean()
    )
    assert truth["song_audible"].shape == (80, 2 + len(real_world.DESCRIPTORS))


def test_the_world_is_not_written_over_a_folder_musicrec_did_not_write(packages, capsys):
    tmp_path, _ = packages
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years")
    assert musicrec(["real-world", "--out", str(precious), "--cache", str(tmp_path / "c")]) == 1
    assert "musicrec did not write" in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["thesis.txt"]
    assert not (tmp_path / "c").exists()  # refused before any download


def test_the_world_is_not_written_over_its_own_cache(packages, capsys):
    tmp_path, _ = packages
    before = sorted(p.name for p in (tmp_path / "cache").rglob("*"))
    for out in (tmp_path / "cache", tmp_path):
        assert musicrec(["real-world", "--out", str(out), "--cache", str(tmp_path / "cache")]) == 1
        assert "holds the input --cache" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*")) == before


def test_a_corrupt_package_is_a_clear_error(packages):
    tmp_path, (alpha, _) = packages
    deb = tmp_path / "cache" / "debs" / "alpha-music_1.0-1_all.deb"
    deb.write_bytes(b"!<arch>\nnot really a package")
    corrupt = dataclasses.replace(alpha, sha256=file_digest(deb))
    with pytest.raises(MusicrecError, match="is not a readable Debian package"):
        real_world.collect_tracks((corrupt,), tmp_path / "cache")
    assert not (tmp_path / "cache" / "extracted" / "alpha-music").exists()


def test_without_dpkg_deb_the_world_is_a_clear_error(packages, monkeypatch):
    tmp_path, sources = packages
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MusicrecError, match="dpkg-deb is not installed"):
        real_world.collect_tracks(sources, tmp_path / "cache")


def test_a_package_extracted_before_output_markers_is_extracted_again(packages):
    tmp_path, (alpha, _) = packages
    real_world.collect_tracks((alpha,), tmp_path / "cache")
    target = tmp_path / "cache" / "extracted" / "alpha-music"
    (target / ".musicrec-output").unlink()  # as an earlier musicrec left it
    (target / "stale.ogg").write_bytes(b"left from an earlier build")
    tracks = real_world.collect_tracks((alpha,), tmp_path / "cache")
    assert len(tracks) == 7 and not (target / "stale.ogg").exists()
