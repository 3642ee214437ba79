"""Features of signals with known answers, and the incremental per-song cache."""

from __future__ import annotations

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import within_or_let_go

from musicrec.audio import ClipSpec
from musicrec.audio_features import (
    DB_FLOOR,
    FeatureConfig,
    compute_clips_features,
    compute_song_features,
    librosa_features,
    load_mono_clips,
)
from musicrec.errors import MusicrecError
from musicrec.features import compute_features

CFG = FeatureConfig(
    sample_rate=22050, n_fft=2048, hop_length=512, n_mels=64, n_mfcc=20, clip_seconds=2.0
)


@pytest.mark.parametrize("freq", [220.0, 1000.0, 4000.0])
def test_pure_tone_peaks_in_the_nearest_mel_bin(freq):
    t = np.arange(CFG.n_samples) / CFG.sample_rate
    logmel, *_ = compute_song_features(0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32), CFG)
    centres = librosa.mel_frequencies(n_mels=CFG.n_mels + 2, fmax=CFG.sample_rate / 2)[1:-1]
    assert int(np.argmax(logmel.mean(axis=1))) == int(np.argmin(np.abs(centres - freq)))


@pytest.mark.parametrize(
    "cfg",
    [CFG, FeatureConfig(sample_rate=16000, n_fft=1024, hop_length=256, n_mels=40, n_mfcc=13,
                        clip_seconds=1.5)],
    ids=["default", "other-params"],
)  # fmt: skip
def test_features_are_librosas_to_float32_rounding(cfg):
    """The stage writes librosa's melspectrogram, power_to_db, mfcc, delta and chroma_stft out
    in single precision; it must agree with them on noise with a loud and a quiet half and a
    tone."""
    rng = np.random.default_rng(0)
    noise = (
        rng.standard_normal(cfg.n_samples)
        * np.repeat([0.3, 0.003], cfg.n_samples // 2 + 1)[: cfg.n_samples]
    )
    t = np.arange(cfg.n_samples) / cfg.sample_rate
    for y in (noise.astype(np.float32), (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)):
        logmel, mfcc, chroma = compute_song_features(y, cfg)
        expected_logmel, expected_mfcc, expected_chroma = librosa_features(y, cfg)
        assert logmel.dtype == mfcc.dtype == chroma.dtype == np.float32
        assert logmel.shape == expected_logmel.shape and mfcc.shape == expected_mfcc.shape
        assert chroma.shape == expected_chroma.shape == (12, cfg.n_frames)
        np.testing.assert_allclose(chroma, expected_chroma, atol=1e-3)
        # Where the power is far below the loudest bin, float32 rounding of the FFT shows.
        audible = expected_logmel > expected_logmel.max() - 60
        np.testing.assert_allclose(logmel[audible], expected_logmel[audible], atol=0.01)
        np.testing.assert_allclose(mfcc, expected_mfcc, atol=0.05)
    for _ in range(2):  # the second call uses the cached transforms
        assert np.array_equal(compute_song_features(y, cfg)[0], logmel)


@pytest.mark.parametrize("n_frames", [9, 10, 17, 431])
def test_deltas_are_librosas_savgol_at_the_edges_and_inside(n_frames):
    from musicrec.audio_features import _delta, feature_transforms

    features = np.random.default_rng(n_frames).standard_normal((5, n_frames)).astype(np.float32)
    kernels = feature_transforms(CFG).delta_kernels
    for order, kernel in zip((1, 2), kernels, strict=True):
        expected = librosa.feature.delta(features, order=order, width=9)
        np.testing.assert_allclose(_delta(features, kernel), expected, atol=1e-5)


def test_mono_and_stereo_files_are_read_as_the_mean_of_their_channels(tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(1)
    stereo = (rng.standard_normal((CFG.n_samples, 2)) * 0.1).astype(np.float32)
    for name, samples in (("mono", stereo[:, :1]), ("stereo", stereo)):
        sf.write(tmp_path / f"{name}.wav", samples, CFG.sample_rate, subtype="FLOAT")
        y = load_mono_clips(tmp_path / f"{name}.wav", CFG)
        assert y.dtype == np.float32 and y.shape == (1, CFG.n_samples)
        assert np.array_equal(y[0], samples.mean(axis=1))


@pytest.mark.parametrize(
    ("spec", "duration", "expected"),
    [
        # Dieleman's middle 30 s of a 4-min track, as three clips side by side.
        (ClipSpec(10.0, clips=3, clip_position="middle"), 240.0, [105.0, 115.0, 125.0]),
        # A 30-s preview: all of it.
        (ClipSpec(10.0, clips=3, clip_position="middle"), 30.0, [0.0, 10.0, 20.0]),
        # Too short for three distinct clips: they overlap, evenly spread.
        (ClipSpec(10.0, clips=3, clip_position="middle"), 20.0, [0.0, 5.0, 10.0]),
        (ClipSpec(10.0, clips=3, clip_position="middle"), 10.0, [0.0, 0.0, 0.0]),
        # From an offset, moved earlier when the file ends before the span does.
        (ClipSpec(10.0, offset_seconds=5.0, clips=2), 60.0, [5.0, 15.0]),
        (ClipSpec(10.0, offset_seconds=50.0, clips=2), 60.0, [40.0, 50.0]),
        (ClipSpec(10.0, offset_seconds=5.0), 12.0, [2.0]),
    ],
)
def test_clips_sit_where_the_params_say(spec, duration, expected):
    windows = spec.windows(duration)
    assert [start for start, _ in windows] == pytest.approx(expected)
    assert all(length == min(10.0, duration) for _, length in windows)


def test_a_songs_clips_are_read_from_their_places_and_computed_side_by_side(tmp_path):
    cfg = FeatureConfig(clip_seconds=2.0, clips=3, clip_position="middle")
    # 10 s whose samples tell the time: the middle 6 s are 2-4, 4-6 and 6-8 s.
    seconds = np.arange(10 * 22050, dtype=np.float32) / 22050
    sf.write(tmp_path / "clock.wav", seconds / 100, 22050, subtype="FLOAT")
    clips = load_mono_clips(tmp_path / "clock.wav", cfg)
    assert clips.shape == (3, 44100)
    np.testing.assert_allclose(clips[:, 0] * 100, [2.0, 4.0, 6.0], atol=1e-4)

    song = compute_clips_features(clips, cfg)
    assert song[0].shape == (cfg.n_mels, cfg.song_frames) and cfg.song_frames == 3 * cfg.n_frames
    assert [a.shape[0] for a in song] == list(cfg.rows.values())
    for i, clip in enumerate(clips):
        part = slice(i * cfg.n_frames, (i + 1) * cfg.n_frames)
        for whole, one in zip(song, compute_song_features(clip, cfg), strict=True):
            assert np.array_equal(whole[:, part], one)


def test_a_file_too_short_for_distinct_clips_repeats_its_one_clip(tmp_path, monkeypatch):
    import musicrec.audio_features as audio_features

    cfg = FeatureConfig(clip_seconds=2.0, clips=3, clip_position="middle")
    sf.write(tmp_path / "short.wav", np.sin(np.arange(44100) / 5.0) / 4, 22050, subtype="FLOAT")
    computed = []
    real = audio_features.compute_song_features
    monkeypatch.setattr(
        audio_features,
        "compute_song_features",
        lambda *a, **k: computed.append(1) or real(*a, **k),
    )
    logmel, *_ = compute_clips_features(load_mono_clips(tmp_path / "short.wav", cfg), cfg)
    assert len(computed) == 1  # the same clip three times is computed once
    thirds = np.split(logmel, 3, axis=1)
    assert np.array_equal(thirds[0], thirds[1]) and np.array_equal(thirds[0], thirds[2])


def test_silence_gives_the_floor_and_shapes_are_as_documented():
    logmel, mfcc, chroma = compute_song_features(np.zeros(CFG.n_samples, np.float32), CFG)
    assert logmel.shape == (64, CFG.n_frames) and mfcc.shape == (60, CFG.n_frames)
    assert chroma.shape == (12, CFG.n_frames) and not chroma.any()  # silence: no pitch class
    np.testing.assert_allclose(logmel, DB_FLOOR, atol=1e-3)
    np.testing.assert_allclose(mfcc[20:], 0.0, atol=1e-4)  # constant input: deltas vanish


def test_louder_signal_has_higher_log_mel_by_its_gain_in_db():
    t = np.arange(CFG.n_samples) / CFG.sample_rate
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    quiet, *_ = compute_song_features(0.1 * tone, CFG)
    loud, *_ = compute_song_features(0.4 * tone, CFG)
    peak = np.argmax(loud.mean(axis=1))
    assert loud[peak].mean() - quiet[peak].mean() == pytest.approx(20 * np.log10(4), abs=0.1)


@pytest.mark.parametrize(
    "bad",
    [
        dict(n_mfcc=0),
        dict(hop_length=4096),
        dict(n_fft=2047),
        dict(clip_seconds=0.01),
        dict(sample_rate=100),
        dict(offset_seconds=-1.0),
        dict(clips=0),
        dict(clip_position="end"),
        dict(clip_position="middle", offset_seconds=5.0),
    ],
)
def test_bad_params_raise_one_clear_error_before_compute(bad):
    with pytest.raises(MusicrecError, match="features params"):
        FeatureConfig(**{**CFG.__dict__, **bad})


def _write_songs(root, ids, rng):
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for song in ids:
        sf.write(root / "audio" / f"{song}.wav", 0.3 * rng.standard_normal(44100), 22050)
    return pd.DataFrame({"song_id": ids, "path": [f"audio/{s}.wav" for s in ids]})


def test_features_are_incremental_and_memory_mapped(tmp_path, monkeypatch):
    from musicrec import audio_features

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    songs = _write_songs(root, [f"s{i}" for i in range(5)], rng)
    first = compute_features(root, songs, CFG, tmp_path / "out1", tmp_path / "cache")
    assert first == {"songs": 5, "computed": 5, "cached": 0}
    more = pd.concat([songs, _write_songs(root, ["s5"], rng)], ignore_index=True)
    second = compute_features(root, more, CFG, tmp_path / "out2", tmp_path / "cache")
    assert second == {"songs": 6, "computed": 1, "cached": 5}
    a = np.load(tmp_path / "out1" / "logmel.npy", mmap_mode="r")
    b = np.load(tmp_path / "out2" / "logmel.npy", mmap_mode="r")
    assert isinstance(b, np.memmap) and b.dtype == np.float16 and b.shape[:2] == (6, 64)
    np.testing.assert_array_equal(a, b[:5])
    # Other params fill another cache: nothing stale is reused.
    other = FeatureConfig(**{**CFG.__dict__, "n_mels": 32})
    third = compute_features(root, more, other, tmp_path / "out3", tmp_path / "cache")
    assert third["computed"] == 6
    # So does a new version of the feature code.
    version = audio_features.FEATURE_CODE_VERSION
    monkeypatch.setattr(audio_features, "FEATURE_CODE_VERSION", version + 1)
    fourth = compute_features(root, more, CFG, tmp_path / "out4", tmp_path / "cache")
    assert fourth["computed"] == 6
    monkeypatch.undo()
    # And an edit of the feature code, or another decoder: no hand-bumped version to forget.
    for changed in ({"code": "edited"}, {"libsndfile": "libsndfile-9.9.9"}):
        described = {**audio_features.code_and_decoders(), **changed}
        monkeypatch.setattr(audio_features, "code_and_decoders", lambda d=described: d)
        again = compute_features(root, more, CFG, tmp_path / "out5", tmp_path / "cache")
        assert again["computed"] == 6, changed
        monkeypatch.undo()


def test_an_unreadable_cache_entry_is_a_miss_and_computed_again(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "data"
    songs = _write_songs(root, [f"s{i}" for i in range(4)], rng)
    compute_features(root, songs, CFG, tmp_path / "out1", tmp_path / "cache")
    entries = sorted((tmp_path / "cache").glob("*/*/*.npy"))
    entries[0].write_bytes(b"")  # a crash before the data reached the disk
    entries[1].write_bytes(entries[1].read_bytes()[:200])  # cut short
    again = compute_features(root, songs, CFG, tmp_path / "out2", tmp_path / "cache")
    assert again == {"songs": 4, "computed": 2, "cached": 2}
    for name in ("logmel.npy", "mfcc.npy"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()


def test_the_dask_backend_gives_the_local_outputs_bit_for_bit(tmp_path):
    """On a LocalCluster on loopback (by its address) and on the one the backend starts."""
    from distributed import LocalCluster

    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    songs = _write_songs(root, [f"s{i}" for i in range(40)], rng)  # 3 chunks of 16
    local = compute_features(root, songs, CFG, tmp_path / "local", tmp_path / "cache_local")
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        on_cluster = compute_features(
            root, songs, CFG, tmp_path / "dask", tmp_path / "cache_dask", 2, "dask",
            cluster.scheduler_address,
        )  # fmt: skip
    assert on_cluster == local == {"songs": 40, "computed": 40, "cached": 0}
    started = compute_features(
        root, songs, CFG, tmp_path / "dask2", tmp_path / "cache_dask2", 2, "dask", ""
    )
    assert started["computed"] == 40
    for name in ("logmel.npy", "mfcc.npy", "songs.tsv"):
        expected = (tmp_path / "local" / name).read_bytes()
        assert (tmp_path / "dask" / name).read_bytes() == expected, name
        assert (tmp_path / "dask2" / name).read_bytes() == expected, name


def test_an_unreachable_scheduler_says_how_to_start_one(tmp_path, monkeypatch):
    from musicrec import parallel

    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", "1s")
    songs = _write_songs(tmp_path / "data", ["s0"], np.random.default_rng(2))
    with pytest.raises(MusicrecError, match="cannot reach the Dask scheduler.*dask scheduler"):
        compute_features(
            tmp_path / "data", songs, CFG, tmp_path / "o", tmp_path / "c", 1, "dask",
            "tcp://127.0.0.1:9",
        )  # fmt: skip
    with pytest.raises(MusicrecError, match="unknown backend 'spark'"):
        compute_features(tmp_path / "data", songs, CFG, tmp_path / "o", tmp_path / "c", 1, "spark")


def test_a_cluster_beyond_this_machine_is_reached_over_mutual_tls_only(tmp_path, monkeypatch):
    from distributed import LocalCluster
    from distributed.security import Security

    from musicrec.parallel import PLAIN_TCP_ENV, TLS_ENV, scheduler_connection

    for env in (*TLS_ENV, PLAIN_TCP_ENV):
        monkeypatch.delenv(env, raising=False)
    assert scheduler_connection("tcp://127.0.0.1:8786") == ("tcp://127.0.0.1:8786", None)
    with pytest.raises(MusicrecError, match="8.8.8.8 is not a loopback or private network"):
        scheduler_connection("tcp://8.8.8.8:8786")
    with pytest.raises(MusicrecError, match="set MUSICREC_DASK_TLS_CA, MUSICREC_DASK_TLS_CERT"):
        scheduler_connection("tls://8.8.8.8:8786")
    with pytest.raises(MusicrecError, match="use tls://"):
        scheduler_connection("ws://8.8.8.8:8786")

    # A real TLS cluster on loopback: the client's files from the environment.
    cluster_security = Security.temporary()  # a self-signed CA, certificate and key (PEM)
    for env, pem in zip(
        TLS_ENV,
        (
            cluster_security.tls_ca_file,
            cluster_security.tls_client_cert,
            cluster_security.tls_client_key,
        ),
        strict=True,
    ):
        (tmp_path / env).write_text(pem)
        monkeypatch.setenv(env, str(tmp_path / env))
    rng = np.random.default_rng(4)
    songs = _write_songs(tmp_path / "data", [f"s{i}" for i in range(3)], rng)
    local = compute_features(tmp_path / "data", songs, CFG, tmp_path / "local", tmp_path / "c1")
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        host="127.0.0.1",
        protocol="tls://",
        security=cluster_security,
        dashboard_address=None,
    ) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        over_tls = compute_features(
            tmp_path / "data", songs, CFG, tmp_path / "tls", tmp_path / "c2", 1, "dask",
            cluster.scheduler_address,
        )  # fmt: skip
    assert over_tls == local
    assert (tmp_path / "tls" / "logmel.npy").read_bytes() == (
        tmp_path / "local" / "logmel.npy"
    ).read_bytes()


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "169.254.169.254", "198.18.0.5", "100.64.0.1", "224.0.0.1", "[::]", "[fe80::1]",
     "[::ffff:169.254.169.254]", "8.8.8.8"],
)  # fmt: skip
@pytest.mark.parametrize("opted_in", [False, True], ids=["default", "opted-in"])
def test_plain_tcp_refuses_unspecified_link_local_and_benchmarking_addresses_even_opted_in(
    host, opted_in, monkeypatch
):
    """``is_private`` holds for most of these; plain tcp:// is for loopback and RFC 1918/ULA."""
    from musicrec.parallel import PLAIN_TCP_ENV, scheduler_connection

    monkeypatch.setenv(PLAIN_TCP_ENV, "1" if opted_in else "")
    with pytest.raises(MusicrecError, match="not a loopback or private network.*use tls://"):
        scheduler_connection(f"tcp://{host}:8786")


def test_plain_tcp_to_a_private_network_needs_the_opt_in(monkeypatch):
    from musicrec.parallel import PLAIN_TCP_ENV, scheduler_connection

    monkeypatch.delenv(PLAIN_TCP_ENV, raising=False)
    assert scheduler_connection("tcp://127.0.0.1:8786") == ("tcp://127.0.0.1:8786", None)
    assert scheduler_connection("tcp://[::1]:8786") == ("tcp://[::1]:8786", None)
    for address in ("tcp://10.1.2.3:8786", "tcp://192.168.0.9:8786", "tcp://[fd00::7]:8786"):
        with pytest.raises(MusicrecError, match="private network address.*ALLOW_PLAIN_TCP=1"):
            scheduler_connection(address)
    monkeypatch.setenv(PLAIN_TCP_ENV, "1")
    assert scheduler_connection("tcp://10.1.2.3:8786") == ("tcp://10.1.2.3:8786", None)
    assert scheduler_connection("tcp://172.16.4.5") == ("tcp://172.16.4.5:8786", None)
    assert scheduler_connection("tcp://[fd00::7]:9000") == ("tcp://[fd00::7]:9000", None)


def test_a_scheduler_host_name_is_resolved_once_and_the_client_connects_to_that_address(
    monkeypatch,
):
    """A second lookup (the client's own) could answer differently: DNS rebinding."""
    import socket

    import distributed

    from musicrec import parallel

    lookups = []
    answers = iter(["10.0.0.5", "203.0.113.7"])  # private first, public after

    def getaddrinfo(host, port, *args, **kwargs):
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    clients = []

    class Client:
        def __init__(self, address, **kwargs):
            clients.append((address, kwargs["security"]))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(distributed, "Client", Client)
    monkeypatch.setenv(parallel.PLAIN_TCP_ENV, "1")
    with parallel.dask_client("tcp://scheduler.example:8786", 1):
        pass
    assert lookups == ["scheduler.example"]
    assert clients == [("tcp://10.0.0.5:8786", None)]
    monkeypatch.delenv(parallel.PLAIN_TCP_ENV)
    with pytest.raises(MusicrecError, match="203.0.113.7 is not a loopback"):
        parallel.scheduler_connection("tcp://scheduler.example:8786")


@pytest.mark.parametrize(("midi", "pitch_class"), [(57, 9), (60, 0), (64, 4), (71, 11)])
def test_a_tone_peaks_in_its_pitch_class_whatever_its_octave(midi, pitch_class):
    t = np.arange(CFG.n_samples) / CFG.sample_rate
    for octave in (0, 12):
        freq = 440.0 * 2 ** ((midi + octave - 69) / 12)
        _, _, chroma = compute_song_features(
            (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), CFG
        )
        assert int(np.argmax(chroma.mean(axis=1))) == pitch_class  # C = 0, A = 9
        assert chroma.max(axis=0) == pytest.approx(1.0)  # each frame's largest class is 1


def test_the_hashing_step_refuses_a_fifo_without_opening_it_and_stops_the_stage(tmp_path):
    import os

    from musicrec.features import song_digest

    rng = np.random.default_rng(0)
    _write_songs(tmp_path, ["good"], rng)
    fifo = tmp_path / "audio" / "pipe.wav"
    os.mkfifo(fifo)  # no writer: opening it for reading would wait forever
    with pytest.raises(MusicrecError, match=r"pipe.wav: not a regular file \(a FIFO\)"):
        within_or_let_go(2, fifo, lambda: song_digest(fifo))
    songs = pd.DataFrame(
        {"song_id": ["good", "pipe"], "path": ["audio/good.wav", "audio/pipe.wav"]}
    )
    with pytest.raises(MusicrecError, match="run validate again, which quarantines such a file"):
        within_or_let_go(
            120,
            fifo,
            lambda: compute_features(tmp_path, songs, CFG, tmp_path / "out", tmp_path / "cache"),
        )
    assert not (tmp_path / "out").exists()


def test_the_hash_reads_no_file_over_the_audio_size_cap_and_keeps_the_entry_names(
    tmp_path, monkeypatch
):
    import hashlib

    import musicrec.audio as audio
    from musicrec.features import song_digest
    from musicrec.io import file_digest

    path = tmp_path / "song.wav"
    sf.write(path, np.random.default_rng(0).standard_normal(3 * 22050) * 0.1, 22050)
    # Regular files are named as the cache has always named them: entries stay valid.
    assert song_digest(path) == file_digest(path, hashlib.blake2b(digest_size=16))
    monkeypatch.setattr(audio, "MAX_AUDIO_BYTES", 1000)
    size = path.stat().st_size
    with pytest.raises(MusicrecError, match=rf"song.wav: larger than 1000 bytes \({size} bytes\)"):
        song_digest(path)


def test_the_cache_key_changes_with_the_resamplers_version(monkeypatch):
    """Resampling is soxr's (librosa's soxr_hq): another soxr computes other samples."""
    import importlib.metadata

    from musicrec.audio_features import code_and_decoders

    installed = importlib.metadata.version

    def soxr_upgraded(package):
        return "999.0" if package == "soxr" else installed(package)

    code_and_decoders.cache_clear()
    try:
        before = CFG.key()
        assert code_and_decoders()["soxr"] == installed("soxr")
        monkeypatch.setattr(importlib.metadata, "version", soxr_upgraded)
        code_and_decoders.cache_clear()
        assert code_and_decoders()["soxr"] == "999.0"
        assert CFG.key() != before
    finally:
        monkeypatch.undo()
        code_and_decoders.cache_clear()
    assert CFG.key() == before


def test_a_loopback_name_answering_ipv6_first_connects_over_ipv4(monkeypatch):
    """`localhost` often resolves to ::1 first, where a scheduler listening on IPv4 is not."""
    import socket

    from musicrec import parallel

    def getaddrinfo(host, port, *args, **kwargs):
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert parallel.scheduler_connection("tcp://localhost:8786") == ("tcp://127.0.0.1:8786", None)
