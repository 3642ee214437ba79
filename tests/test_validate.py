"""Validation: each kind of bad row stops with file:line; each kind of bad audio is quarantined."""

from __future__ import annotations

import hashlib
import json
import runpy
import shutil
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO

from musicrec import validate
from musicrec.audio import ClipSpec
from musicrec.errors import MusicrecError, PlayLogError
from musicrec.validate import (
    GATE_PARAMS,
    PLAY_COUNT_BINS,
    ValidateConfig,
    accepted_figures,
    check_play_log,
    gate_checks,
    gate_failures,
    play_count_histogram,
    validate_dataset,
)

GOOD = "u1\ts1\t3\nu2\ts1\t1\nu2\ts2\t5\n"


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("u3\ts1", "expected 3 tab-separated fields"),
        ("u3\ts1\t2\textra", "expected 3 tab-separated fields"),
        ("u3\ts1\t-4", "play_count -4 is negative"),
        # 2**63 would wrap negative as an int64; 2**53 + 1 would lose a play as a float
        ("u3\ts1\t9223372036854775808", "play_count 9223372036854775808 is above the most"),
        ("u3\ts1\t9007199254740993", "is above the most one row may count (1,000,000,000)"),
        ("u3\ts1\t-99999999999999999999", "is negative"),
        ("user_id\tsong_id\tplay_count", "'play_count' is not an integer"),  # a header below line 1
        ("u3\ts1\t 2", "' 2' is not an integer"),
        ("u3\ts/1\t2", "is not a safe id"),
        ("u3\ts\x001\t2", "is not a safe id"),
        ("u3\ts1\t2.5", "'2.5' is not an integer"),
        ("u3\ts1\tmany", "'many' is not an integer"),
        ("\ts1\t2", "empty user_id"),
        ("u3\t../etc/passwd\t2", "is not a safe id"),
        ("u3\t..\t2", "is not a safe id"),
        ("u\x013\ts1\t2", "is not a safe id"),
        ("u3\ts\\1\t2", "is not a safe id"),
    ],
)
def test_each_bad_row_stops_with_file_line_and_reason(tmp_path, bad_line, problem):
    path = tmp_path / "plays.tsv"
    path.write_text(GOOD + bad_line + "\n")
    with pytest.raises(MusicrecError) as info:
        check_play_log(path)
    message = str(info.value)
    assert f"{path}:4: " in message and problem in message


def test_non_utf8_bytes_name_their_line(tmp_path):
    path = tmp_path / "plays.tsv"
    path.write_bytes(GOOD.encode() + b"u\xff\ts1\t2\n")
    with pytest.raises(MusicrecError, match=r"plays.tsv:4: bytes that are not UTF-8"):
        check_play_log(path)


def test_windows_line_endings_and_missing_final_newline_are_fine(tmp_path):
    path = tmp_path / "plays.tsv"
    path.write_bytes(GOOD.replace("\n", "\r\n").rstrip("\r\n").encode())
    clean, ge, repairs = check_play_log(path)
    assert clean["play_count"].tolist() == [3, 1, 5] and ge["success"]
    assert not any(repairs.values())


def test_header_zero_counts_and_duplicates_are_repaired_and_counted(tmp_path):
    path = tmp_path / "plays.tsv"
    path.write_text("user_id\tsong_id\tplay_count\n" + GOOD + "u1\ts1\t7\nu3\ts2\t0\nu1\ts1\t1\n")
    clean, ge, repairs = check_play_log(path)
    assert repairs == {
        "byte_order_marks_removed": 0,
        "header_rows_skipped": 1,
        "zero_count_rows_dropped": 1,
        "duplicate_rows_summed": 2,
    }
    assert clean.values.tolist() == [["u1", "s1", 11], ["u2", "s1", 1], ["u2", "s2", 5]]


@pytest.mark.parametrize("header", ["", "user_id\tsong_id\tplay_count\n"])
def test_a_byte_order_mark_is_removed_and_counted_not_glued_to_the_first_user(tmp_path, header):
    path = tmp_path / "plays.tsv"
    path.write_bytes("\ufeff".encode() + (header + "u1\ts1\t2\nu1\ts2\t1\nu2\ts1\t4\n").encode())
    clean, _, repairs = check_play_log(path, chunk_lines=2)  # the mark is in the first chunk only
    assert repairs["byte_order_marks_removed"] == 1
    assert repairs["header_rows_skipped"] == (1 if header else 0)
    assert sorted(set(clean["user_id"])) == ["u1", "u2"]  # one u1, not "\ufeffu1" and "u1"
    # a mark anywhere else is a character of an id, as any other
    path.write_bytes(b"u1\ts1\t2\n" + "\ufeffu1\ts2\t1\n".encode())
    clean, _, repairs = check_play_log(path)
    assert repairs["byte_order_marks_removed"] == 0 and clean["user_id"].nunique() == 2


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def messy_folder(tmp_path):
    """Five songs with usable audio and six with each kind of unusable audio."""
    root = tmp_path / "data"
    audio = root / "audio"
    audio.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sr = 16000
    for i in range(5):
        sf.write(audio / f"good{i}.wav", 0.2 * rng.standard_normal((2 * sr, 2)), sr)
    (audio / "text.mp3").write_text("this is not audio\n")
    sf.write(audio / "silent.wav", np.zeros(2 * sr), sr)
    nan_audio = 0.2 * rng.standard_normal(2 * sr)
    nan_audio[100] = np.nan
    sf.write(audio / "nans.wav", nan_audio, sr, subtype="FLOAT")
    sf.write(audio / "short.wav", 0.2 * rng.standard_normal(sr // 4), sr)
    sf.write(audio / "twice.wav", 0.2 * rng.standard_normal(2 * sr), sr)
    sf.write(audio / "twice.flac", 0.2 * rng.standard_normal(2 * sr), sr)
    songs = [f"good{i}" for i in range(5)] + ["text", "silent", "nans", "short", "twice", "missing"]
    (root / "plays.tsv").write_text(
        "".join(f"u{u}\t{s}\t{u + 1}\n" for u in range(3) for s in songs)
    )
    return root


def test_unusable_songs_are_quarantined_with_reasons_and_raw_data_is_untouched(messy_folder):
    before = _tree_digest(messy_folder)
    result = validate_dataset(messy_folder, ClipSpec(1.0), min_seconds=1.0, silence_db=-60.0)
    assert _tree_digest(messy_folder) == before
    reasons = {q["song_id"]: q["reasons"] for q in result.summary["audio"]["quarantine"]}
    assert set(reasons) == {"text", "silent", "nans", "short", "twice", "missing"}
    assert reasons["text"].startswith("no audio frames")  # a text file named .mp3
    assert reasons["silent"].startswith("silent")
    assert reasons["nans"] == "NaN or infinite samples"
    assert reasons["short"].startswith("too short: 0.25 s")
    assert reasons["twice"].startswith("several audio files")
    assert reasons["missing"] == "no audio file"
    assert sorted(result.songs["song_id"]) == [f"good{i}" for i in range(5)]
    assert set(result.plays["song_id"]) == set(result.songs["song_id"])
    assert result.summary["plays_dropped"] == {"rows": 18, "play_count": 36}
    assert result.summary["audio"]["quarantine_reasons"]["no audio file"] == 1
    assert result.ge_results["audio_manifest"]["success"] is False


def test_tracks_csv_maps_ids_to_paths_and_refuses_escapes(messy_folder):
    shutil.copy(messy_folder / "audio" / "good0.wav", messy_folder / "audio" / "renamed.wav")
    (messy_folder / "tracks.csv").write_text("song_id,path\ngood0,renamed.wav\n")
    (messy_folder / "plays.tsv").write_text("u1\tgood0\t2\n")
    result = validate_dataset(messy_folder, ClipSpec(1.0), 1.0, -60.0)
    assert result.songs["path"].tolist() == ["audio/renamed.wav"]
    (messy_folder / "tracks.csv").write_text("song_id,path\ngood0,../plays.tsv\n")
    with pytest.raises(MusicrecError, match="leads outside"):
        validate_dataset(messy_folder, ClipSpec(1.0), 1.0, -60.0)


LOG_WITH_REPAIRS = (
    "user_id\tsong_id\tplay_count\n" + GOOD + "u1\ts1\t7\nu3\ts2\t0\nu4\ts9\t2\nu1\ts1\t1\n"
)


@pytest.mark.parametrize("chunk_lines", [1, 2, 3, 1000])
def test_a_log_read_in_chunks_gives_what_it_gives_whole(tmp_path, chunk_lines):
    path = tmp_path / "plays.tsv"
    path.write_text(LOG_WITH_REPAIRS)
    whole, _, whole_repairs = check_play_log(path)
    clean, ge, repairs = check_play_log(path, chunk_lines=chunk_lines)
    assert clean.astype(str).values.tolist() == whole.astype(str).values.tolist()
    assert clean.values.tolist()[0] == ["u1", "s1", 11]  # file order; duplicates summed
    assert repairs == whole_repairs and ge["success"]


@pytest.mark.parametrize("chunk_lines", [2, 3])
def test_bad_lines_are_named_by_their_line_in_the_file_across_chunks(tmp_path, chunk_lines):
    path = tmp_path / "plays.tsv"
    path.write_text(GOOD + "u4\ts1\t1\nu5\ts1\t1\nu6\ts1\tx\nu7\ts1\t-1\n")
    with pytest.raises(PlayLogError) as info:
        check_play_log(path, chunk_lines=chunk_lines)
    message = str(info.value)
    assert "(2 bad lines)" in message
    # The fields the stage writes to reports/validation.json, on the error itself.
    assert info.value.bad_lines == 2 and info.value.ge_result["success"] is False
    assert f"{path}:6: play_count 'x' is not an integer" in message
    assert f"{path}:7: play_count -1 is negative" in message
    path.write_bytes(GOOD.encode() + b"u4\ts1\t1\nu\xff\ts1\t2\n")
    with pytest.raises(MusicrecError, match=r"plays.tsv:5: bytes that are not UTF-8"):
        check_play_log(path, chunk_lines=chunk_lines)


def test_an_overlong_line_stops_naming_file_and_line_before_it_is_held_whole(tmp_path):
    path = tmp_path / "plays.tsv"
    at_the_limit = "u1\t" + "s" * (validate.MAX_LINE_BYTES - 6) + "\t3\n"  # newline included
    assert len(at_the_limit) == validate.MAX_LINE_BYTES
    overlong = "u2\t" + "s" * 20_000_000 + "\t1\n"  # one 20-MB id
    path.write_text(at_the_limit + overlong + GOOD)
    tracemalloc.start()
    with pytest.raises(MusicrecError) as info:
        check_play_log(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert str(info.value).startswith(
        f"{path}:2: line longer than {validate.MAX_LINE_BYTES} bytes; a row is user_id"
    )
    assert peak < 2_000_000  # the line is read only as far as the limit


@pytest.mark.parametrize("batch_lines", [1, 2])
def test_a_chunk_ends_at_its_byte_budget_and_lines_keep_their_numbers(
    tmp_path, monkeypatch, batch_lines
):
    path = tmp_path / "plays.tsv"
    path.write_text(LOG_WITH_REPAIRS)
    whole, _, whole_repairs = check_play_log(path)
    monkeypatch.setattr(validate, "CHUNK_BYTES", 20)  # two or three short lines a chunk
    monkeypatch.setattr(validate, "_BATCH_LINES", batch_lines)
    chunks = list(validate.iter_play_log(path))
    assert 3 <= len(chunks) < len(LOG_WITH_REPAIRS.splitlines())
    assert [line for chunk in chunks for line in chunk.index] == list(range(1, 9))
    clean, _, repairs = check_play_log(path)
    assert clean.astype(str).values.tolist() == whole.astype(str).values.tolist()
    assert repairs == whole_repairs
    path.write_text(GOOD + "u4\ts1\t1\nu5\ts1\t1\nu6\ts1\tx\n")
    with pytest.raises(PlayLogError, match=r"plays.tsv:6: play_count 'x' is not an integer"):
        check_play_log(path)


@pytest.mark.slow  # validates a log of millions of lines twice, in fresh processes
def test_a_streamed_log_grows_memory_far_less_than_reading_it_whole(tmp_path):
    """600k lines against 60k: the streamed reader's peak RSS grows under half the whole's."""
    benchmark = runpy.run_path(str(REPO / "benchmarks" / "play_log_memory.py"))
    # A catalogue of 20,000 songs: the distinct ids, which any reader must keep, stop growing.
    results = benchmark["compare"](tmp_path, 600_000, 50_000, catalogue=20_000)
    assert results["streamed"][600_000]["rows"] == results["whole"][600_000]["rows"] > 599_000
    growth = {
        mode: by_size[600_000]["peak_mb"] - by_size[60_000]["peak_mb"]
        for mode, by_size in results.items()
    }
    assert growth["streamed"] < growth["whole"] / 2, growth


def test_play_count_shares_fall_in_powers_of_two():
    shares = play_count_histogram(np.array([1, 1, 2, 3, 4, 7, 8, 2**30]))
    assert len(shares) == PLAY_COUNT_BINS and sum(shares) == pytest.approx(1.0)
    assert shares[:4] == [0.25, 0.25, 0.25, 0.125]  # 1 | 2-3 | 4-7 | 8-15
    assert shares[-1] == 0.125  # 2**20 and more


def _summary(root="data/w", checked=100, quarantined=0, rows=1000, dropped=0, counts=(1, 2)):
    return {
        "data_root": root,
        "play_log": {"rows": rows, "play_count_histogram": play_count_histogram(np.array(counts))},
        "audio": {"songs_checked": checked, "songs_quarantined": quarantined},
        "plays_dropped": {"rows": dropped},
    }


def test_the_gate_names_each_limit_a_batch_breaks():
    cfg = ValidateConfig()
    accepted = accepted_figures(_summary())
    fine = gate_checks(_summary(quarantined=20, dropped=200, rows=1400), accepted, cfg)
    assert gate_failures(fine) == [] and fine["drift_compared_with"] == "data/w"
    assert fine["max_row_change"]["value"] == pytest.approx(0.4)
    bad = gate_checks(
        _summary(quarantined=60, dropped=600, rows=400, counts=(64, 64)), accepted, cfg
    )
    failures = gate_failures(bad)
    for name in GATE_PARAMS:
        assert sum(f"validate.{name} " in f for f in failures) == 1, (name, failures)
    assert bad["max_play_count_drift"]["value"] == pytest.approx(1.0)  # nothing in common
    # Another data root, or none accepted yet: no drift checks; a null limit: not checked.
    other = gate_checks(_summary(root="data/other", rows=10), accepted, cfg)
    assert "max_row_change" not in other and "drift not checked" in other["drift_compared_with"]
    off = gate_checks(_summary(quarantined=90), None, ValidateConfig(max_quarantined_share=None))
    assert "max_quarantined_share" not in off and gate_failures(off) == []
    with pytest.raises(MusicrecError, match="validate.max_row_change"):
        ValidateConfig(max_row_change=-1)


def _five_songs(root, users: int):
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        sf.write(audio / f"s{i}.wav", 0.2 * rng.standard_normal(16000), 16000)
    (root / "plays.tsv").write_text(
        "".join(f"u{u}\ts{i}\t{1 + (u + i) % 3}\n" for u in range(users) for i in range(5))
    )


def test_the_stage_stops_on_drift_from_the_last_accepted_data_and_keeps_it(tmp_path):
    from musicrec.validate import main

    root = tmp_path / "data" / "w"
    _five_songs(root, users=20)
    params = tmp_path / "params.yaml"
    params.write_text(
        f"data: {{root: {root}}}\nvalidate: {{min_seconds: 0.5, n_jobs: 1}}\n"
        "features: {clip_seconds: 1.0}\n"
    )
    args = ["--params", str(params), "--reports", str(tmp_path / "r"), "--out", str(tmp_path / "v")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "r" / "validation.json").read_text())
    assert summary["accepted"]["rows"] == 100 and summary["gate"]["max_quarantined_share"]["ok"]
    _five_songs(root, users=5)  # a quarter of the rows: a broken export, say
    with pytest.raises(MusicrecError, match=r"validate\.max_row_change = 50\.0%"):
        main(args)
    after = json.loads((tmp_path / "r" / "validation.json").read_text())
    assert after["accepted"]["rows"] == 100  # still the last accepted data
    assert after["gate"]["max_row_change"]["ok"] is False
