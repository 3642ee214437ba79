"""``musicrec cache prune``: stale key folders go, the current one and anything else stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicrec.cache import main, plan_prune, prune

CURRENT, STALE = "0123456789ab", "ba9876543210"
ENTRY = "0123456789abcdef0123456789abcdef.npy"


def _key_folder(cache: Path, key: str, n_bytes: int = 1000) -> Path:
    """A key folder as the features stage lays it out: one entry and a killed write's
    temporary in a two-digit shard."""
    shard = cache / key / "01"
    shard.mkdir(parents=True)
    (shard / ENTRY).write_bytes(b"\0" * n_bytes)
    (shard / f".{ENTRY}.k2j3h4g5.tmp.npy").write_bytes(b"\0" * 10)
    return cache / key


@pytest.fixture
def cache(tmp_path) -> Path:
    """A cache with the current key, a stale one, a killed run's top-level temporary, and
    things prune must leave alone: an unrelated folder, file and dot-temporary, a folder named
    like a key that holds something else, and a link named like a key to a folder outside."""
    cache = tmp_path / ".cache" / "features"
    _key_folder(cache, CURRENT)
    _key_folder(cache, STALE, n_bytes=5000)
    (cache / ".0a1b2c3d4e5f.x7y8z9w0.tmp").mkdir()
    (cache / ".0a1b2c3d4e5f.x7y8z9w0.tmp" / "part").write_bytes(b"\0" * 20)
    (cache / "notes").mkdir()
    (cache / "notes" / "keep.txt").write_text("mine")
    (cache / "README.txt").write_text("mine")
    (cache / ".README.txt.tmp").write_text("mine: a temporary, but not of a key folder")
    _key_folder(cache, "aaaaaaaaaaaa")
    (cache / "aaaaaaaaaaaa" / "precious.txt").write_text("not a cache entry")
    outside = tmp_path / "outside"
    _key_folder(outside, "cccccccccccc")
    (cache / "bbbbbbbbbbbb").symlink_to(outside / "cccccccccccc")
    return cache


LEFT_ALONE = {"README.txt", ".README.txt.tmp", "notes", "aaaaaaaaaaaa", "bbbbbbbbbbbb"}


def test_prune_removes_stale_key_folders_and_temporaries_and_nothing_else(cache):
    plan = prune(cache, CURRENT)
    assert sorted(p.name for p, _ in plan.remove) == [".0a1b2c3d4e5f.x7y8z9w0.tmp", STALE]
    assert plan.bytes_freed == 5000 + 10 + 20
    assert plan.kept == cache / CURRENT
    assert {p.name for p, _ in plan.ignored} == LEFT_ALONE
    assert {p.name for p in cache.iterdir()} == {CURRENT} | LEFT_ALONE
    assert (cache / CURRENT / "01" / ENTRY).stat().st_size == 1000
    assert (cache / "aaaaaaaaaaaa" / "precious.txt").read_text() == "not a cache entry"
    assert (cache / "bbbbbbbbbbbb" / "01" / ENTRY).exists()  # the link's target, untouched
    assert (cache / "notes" / "keep.txt").exists()


def test_a_dry_run_lists_what_prune_would_remove_and_removes_nothing(cache, capsys):
    before = sorted(str(p) for p in cache.rglob("*"))
    params = cache.parent.parent / "params.yaml"
    params.write_text("features: {clip_seconds: 2}\n")
    assert main(["prune", "--cache", str(cache), "--params", str(params), "--dry-run"]) == 0
    assert sorted(str(p) for p in cache.rglob("*")) == before
    out = capsys.readouterr().out
    # The current params' key is none of the folders here: every well-formed key folder goes.
    assert f"would remove {cache / STALE} (0.0 MB (5,010 bytes))" in out
    assert f"would remove {cache / CURRENT}" in out
    assert f"left alone {cache / 'notes'}: not a cache-key folder" in out
    assert f"left alone {cache / 'aaaaaaaaaaaa'}: named like a key, but holds 'precious.txt'" in out
    assert "would remove 3 item(s), 0.0 MB (6,040 bytes) to free" in out


def test_prune_keeps_the_key_of_the_current_params(cache, capsys):
    from musicrec.audio_features import FeatureConfig

    params = cache.parent.parent / "params.yaml"
    params.write_text("features: {clip_seconds: 2, n_jobs: 2}\n")
    key = FeatureConfig(clip_seconds=2).key()
    (cache / CURRENT).rename(cache / key)
    assert main(["prune", "--cache", str(cache), "--params", str(params)]) == 0
    assert f"kept {cache / key}" in capsys.readouterr().out
    assert {p.name for p in cache.iterdir()} == {key} | LEFT_ALONE
    assert plan_prune(cache, key).remove == []
