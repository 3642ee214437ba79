"""The ``musicrec`` command: help that helps, and errors without tracebacks."""

from __future__ import annotations

from conftest import run

from musicrec import registry


def test_help_lists_every_stage(tmp_path):
    result = run(["musicrec", "--help"], tmp_path)
    for stage in (*registry.STAGE_NAMES, "dashboard", "recommend", "serve"):
        assert stage in result.stdout
    assert "params.yaml" in run(["musicrec", "features", "--help"], tmp_path).stdout


def test_bad_play_log_exits_1_naming_file_and_line_without_traceback(tmp_path):
    (tmp_path / "data" / "audio").mkdir(parents=True)
    (tmp_path / "data" / "plays.tsv").write_text("u1\ts1\t3\nu1\ts2\tzero\n")
    (tmp_path / "params.yaml").write_text(
        "data: {root: data}\nvalidate: {min_seconds: 1, silence_db: -60}\n"
        "features: {clip_seconds: 1, offset_seconds: 0}\n"
    )
    result = run(["musicrec", "validate"], tmp_path, check=False)
    assert result.returncode == 1
    assert "data/plays.tsv:2: play_count 'zero' is not an integer" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "reports" / "validation" / "ge_play_log.json").exists()


def test_missing_params_file_is_a_clear_error(tmp_path):
    result = run(["musicrec", "split"], tmp_path, check=False)
    assert result.returncode == 1 and "params.yaml: params file not found" in result.stderr


def test_dashboard_outside_a_git_repository_is_a_clear_error(tmp_path):
    result = run(["musicrec", "dashboard"], tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "need a git repository with at least one commit" in result.stderr


def test_cache_prune_help_says_what_it_removes_and_what_it_keeps(tmp_path):
    assert "cache prune" in run(["musicrec", "--help"], tmp_path).stdout
    out = run(["musicrec", "cache", "prune", "--help"], tmp_path).stdout
    assert "removes every key folder but the one that ``params.yaml``" in " ".join(out.split())
    assert "--dry-run" in out and "left alone" in out
    result = run(["musicrec", "cache", "prune"], tmp_path, check=False)  # no params.yaml here
    assert result.returncode == 1 and "params.yaml: params file not found" in result.stderr
