"""A corpus of bad audio, generated here: each file gets its documented outcome, the rest goes on.

| case                              | outcome                                                  |
|-----------------------------------|----------------------------------------------------------|
| zero-byte file                    | quarantined: cannot be decoded                           |
| truncated FLAC                    | quarantined: cannot be decoded (the decoder loses sync)  |
| truncated MP3                     | used when its clip decodes (judged on what decodes)      |
| MP3 truncated below min_seconds   | quarantined: too short (its real length)                 |
| text file named .mp3              | quarantined: no audio frames                             |
| WAV with NaN, WAV with Inf        | quarantined: NaN or infinite samples                     |
| digital silence                   | quarantined: silent                                      |
| a constant DC offset              | quarantined: no signal: constant                         |
| an MP3 of an ID3 tag only         | quarantined: no audio frames                             |
| a link out of the data folder     | quarantined unopened: unsafe path; the rest goes on      |
| a 1-sample file                   | quarantined: too short                                   |
| 8 kHz and 96 kHz                  | used, resampled to features.sample_rate                  |
| 6 channels                        | used, mixed down to mono                                 |
| shorter than the clip             | used, zero-padded to the clip length                     |
| an hour long                      | used; only the clip is read                              |
| unsupported container (.m4a)      | quarantined: no audio file in a supported format (named) |
| FLAC data named .wav              | used: the format is read from the content                |
| no read permission                | quarantined: cannot be read                              |
| a played song with no audio       | quarantined: no audio file                               |
| a FIFO named like an audio file   | quarantined unopened: not a regular file (never blocks)  |
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import as_nobody, within_or_let_go

import musicrec.audio as audio
from musicrec.audio import REFUSED, ClipSpec, clip_levels, probe_audio, read_clip
from musicrec.audio_features import FeatureConfig
from musicrec.features import compute_features
from musicrec.messy import OUTCOMES, SR, noise, write_bad_audio
from musicrec.validate import validate_dataset

CLIP = ClipSpec(2.0)
MIN_SECONDS = 1.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Three good songs, every bad-audio case, and a play log of all of them."""
    root = tmp_path_factory.mktemp("bad_audio") / "data"
    for i in range(3):
        (root / "audio").mkdir(parents=True, exist_ok=True)
        sf.write(root / "audio" / f"good{i}.wav", noise(3, seed=i), SR)
    write_bad_audio(root / "audio", CLIP.clip_seconds)
    songs = [f"good{i}" for i in range(3)] + list(OUTCOMES)
    (root / "plays.tsv").write_text(
        "".join(f"u{u}\t{song}\t{u + 1}\n" for u in range(2) for song in songs)
    )
    return root


USED = {"good0", "good1", "good2"} | {s for s, outcome in OUTCOMES.items() if outcome == "used"}
QUARANTINED = {s: outcome for s, outcome in OUTCOMES.items() if outcome != "used"}


def test_each_bad_file_gets_its_outcome_and_the_rest_goes_on(corpus, tmp_path):
    result = validate_dataset(corpus, CLIP, MIN_SECONDS, silence_db=-60.0)
    reasons = {q["song_id"]: q["reasons"] for q in result.summary["audio"]["quarantine"]}
    assert set(reasons) == set(QUARANTINED)
    for song, reason in QUARANTINED.items():
        assert reasons[song].startswith(reason), (song, reasons[song])
    assert set(result.songs["song_id"]) == USED
    songs = result.songs.set_index("song_id")
    # A truncated MP3 is judged on what decodes: 3 s hold the 2-s clip; 0.5 s are too short.
    assert re.match(r"too short: 0\.\d+ s", reasons["bad_truncated_mp3_short"])
    assert reasons["bad_m4a_container"].endswith(
        "(found audio/bad_m4a_container.m4a, supported are wav, flac, ogg, opus, mp3)"
    )
    assert songs.loc["bad_hour_long", "duration_s"] == pytest.approx(3600)
    assert songs.loc["bad_six_channels", "channels"] == 6
    # Every quarantined song is counted in the report by its reason.
    counts = result.summary["audio"]["quarantine_reasons"]
    assert sum(counts.values()) == len(QUARANTINED)

    # The features stage takes every usable song: resampled, mixed down, padded.
    cfg = FeatureConfig(sample_rate=SR, clip_seconds=CLIP.clip_seconds)
    summary = compute_features(corpus, result.songs, cfg, tmp_path / "features", tmp_path / "c")
    assert summary["songs"] == len(USED)
    logmel = np.load(tmp_path / "features" / "logmel.npy")
    assert logmel.shape == (len(USED), cfg.n_mels, cfg.n_frames)
    assert np.isfinite(logmel).all()
    rows = dict(zip(result.songs["song_id"], range(len(result.songs)), strict=True))
    floor = logmel.min()
    # 8 kHz audio has nothing above 4 kHz; 96 kHz audio is resampled with its full band kept.
    assert np.median(logmel[rows["bad_rate_8k"], -8:]) <= floor + 1.0
    assert logmel[rows["bad_rate_96k"], -8:].mean() > floor + 20.0
    # 1.5 s of audio in a 2-s clip: the last quarter is padding, at the floor.
    assert logmel[rows["bad_shorter_than_clip"], :, -10:].max() <= floor + 1.0


def test_an_hour_long_file_is_read_only_as_far_as_the_clip(corpus):
    path = corpus / "audio" / "bad_hour_long.wav"
    tracemalloc.start()
    y, sr = read_clip(path, ClipSpec(10.0, offset_seconds=1800.0))
    probe = probe_audio(path, ClipSpec(10.0))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert y.shape == (10 * sr, 1) and probe["decode_error"] is None
    # The whole file as float32 would be 115 MB; the clip is 320 kB.
    assert peak < 5_000_000


def test_a_file_without_read_permission_is_quarantined_as_unreadable():
    """Root reads whatever the permissions say, so the probe runs as user nobody."""
    folder = Path(tempfile.mkdtemp(prefix="musicrec-perm-"))
    os.chmod(folder, 0o755)
    path = folder / "locked.wav"
    sf.write(path, noise(2), SR)
    os.chmod(path, 0o000)
    try:
        error = as_nobody(lambda: probe_audio(path, ClipSpec(1.0))["decode_error"])
    finally:
        os.chmod(path, 0o644)
    assert error.startswith("PermissionError") or "Permission denied" in error, error


def test_a_link_out_of_the_data_folder_is_quarantined_unopened_and_the_rest_goes_on(tmp_path):
    root = tmp_path / "data"
    (root / "audio").mkdir(parents=True)
    sf.write(root / "audio" / "good.wav", noise(3), SR)
    secret = tmp_path / "secret.wav"  # a readable audio file, so only the path check stops it
    sf.write(secret, noise(3, seed=1), SR)
    (root / "audio" / "escape.wav").symlink_to(secret)
    (root / "plays.tsv").write_text("u1\tgood\t2\nu1\tescape\t3\nu2\tgood\t1\n")
    opened = []
    real_probe = probe_audio

    def spying_probe(path, clip):
        opened.append(Path(path).name)
        return real_probe(path, clip)

    import musicrec.validate as validate

    original, validate.probe_audio = validate.probe_audio, spying_probe
    try:
        result = validate_dataset(root, CLIP, MIN_SECONDS, silence_db=-60.0)
    finally:
        validate.probe_audio = original
    reasons = {q["song_id"]: q["reasons"] for q in result.summary["audio"]["quarantine"]}
    assert reasons["escape"].startswith("unsafe path, not opened: unsafe path 'escape.wav'")
    assert "leads outside" in reasons["escape"]
    assert list(result.songs["song_id"]) == ["good"] and opened == ["good.wav"]


def test_a_constant_signal_and_an_id3_only_mp3_say_why_they_are_quarantined(corpus):
    dc = probe_audio(corpus / "audio" / "bad_dc_offset.wav", CLIP)
    assert dc["rms_db"] > -20 and dc["signal_db"] < -100  # loud, and nothing on it
    id3 = probe_audio(corpus / "audio" / "bad_id3_only_mp3.mp3", CLIP)
    assert id3["decode_error"].startswith("NoAudioFrames: ")
    result = validate_dataset(corpus, CLIP, MIN_SECONDS, silence_db=-60.0)
    reasons = {q["song_id"]: q["reasons"] for q in result.summary["audio"]["quarantine"]}
    assert reasons["bad_dc_offset"].startswith("no signal: constant (a DC offset at -12.0 dBFS")
    assert reasons["bad_silence"].startswith("silent") and ";" not in reasons["bad_silence"]
    assert "possibly a pipe" not in reasons["bad_id3_only_mp3"]


def test_a_fifo_in_the_audio_folder_is_quarantined_unopened_without_blocking(tmp_path):
    root = tmp_path / "data"
    (root / "audio").mkdir(parents=True)
    sf.write(root / "audio" / "good.wav", noise(3), SR)
    fifo = root / "audio" / "pipe.wav"
    os.mkfifo(fifo)  # no writer: opening it for reading would wait forever
    (root / "plays.tsv").write_text("u1\tgood\t2\nu1\tpipe\t3\nu2\tgood\t1\n")

    start = time.perf_counter()
    probe = within_or_let_go(5, fifo, lambda: probe_audio(fifo, CLIP))
    assert time.perf_counter() - start < 0.5
    assert probe["decode_error"] == f"{REFUSED}not a regular file (a FIFO)"

    result = within_or_let_go(300, fifo, lambda: validate_dataset(root, CLIP, MIN_SECONDS, -60.0))
    reasons = {q["song_id"]: q["reasons"] for q in result.summary["audio"]["quarantine"]}
    assert reasons["pipe"].startswith("not a regular file (a FIFO): never decoded")
    assert result.summary["audio"]["quarantine_reasons"] == {"not a regular file": 1}
    assert list(result.songs["song_id"]) == ["good"]


def test_a_file_over_the_audio_size_cap_is_quarantined_undecoded(tmp_path, monkeypatch):
    path = tmp_path / "big.wav"
    sf.write(path, noise(1), SR)
    monkeypatch.setattr(audio, "MAX_AUDIO_BYTES", 1000)
    error = probe_audio(path, CLIP)["decode_error"]
    assert error == f"{REFUSED}larger than 1000 bytes ({path.stat().st_size} bytes)"


def test_levels_of_a_long_clip_are_summed_in_blocks_without_a_float64_copy():
    y = np.random.default_rng(0).standard_normal((8_000_000, 2), dtype=np.float32)
    tracemalloc.start()
    finite, rms_db, signal_db = clip_levels(y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert finite and rms_db == pytest.approx(0.0, abs=0.01)
    # A float64 copy of the clip is 128 MB; a block is 8 MB.
    assert peak < y.nbytes * 2 // 8


def test_levels_in_blocks_are_the_whole_clips_to_rounding(monkeypatch):
    monkeypatch.setattr(audio, "LEVEL_BLOCK_SAMPLES", 1000)  # many blocks, one partial
    y = (0.3 + 0.1 * np.random.default_rng(1).standard_normal((10_001, 3))).astype(np.float32)
    y64 = y.astype(np.float64)
    whole_rms = 10 * np.log10(np.mean(np.square(y64)) + 1e-20)
    whole_signal = 10 * np.log10(np.mean(np.square(y64 - y64.mean(axis=0))) + 1e-20)
    finite, rms_db, signal_db = clip_levels(y)
    assert finite
    assert rms_db == pytest.approx(whole_rms, rel=1e-12)
    assert signal_db == pytest.approx(whole_signal, rel=1e-12)
    # A constant (a DC offset) has no signal at all, not rounding noise.
    assert clip_levels(np.full((5000, 1), 0.25, np.float32))[2] == -200.0
    y[7777, 1] = np.nan
    assert clip_levels(y)[0] is False
