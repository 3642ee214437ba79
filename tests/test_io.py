"""Writing outputs: all or nothing, and a full disk or a read-only folder said plainly."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, as_nobody

from musicrec.errors import MusicrecError
from musicrec.io import (
    OUTPUT_MARKER,
    atomic_path,
    read_yaml,
    refuse_output_over_inputs,
    sweep_stale_temporaries,
    sweep_temporaries,
    write_json,
)
from musicrec.models.vectors import discover_models


def test_a_full_disk_leaves_the_old_output_and_no_temporary(tmp_path):
    final = tmp_path / "metrics.json"
    write_json(final, {"old": 1})
    with pytest.raises(MusicrecError, match=r"cannot write .*metrics.json: the disk is full"):
        with atomic_path(final) as tmp:
            tmp.write_text('{"new": ')  # half written, then the disk fills up
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert final.read_text() == '{\n  "old": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_folder_output_is_replaced_whole_or_not_at_all(tmp_path):
    final = tmp_path / "features"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "a.npy").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "a.npy").write_text("second, unfinished")
            raise RuntimeError("killed midway")
    assert (final / "a.npy").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]


def test_a_read_only_folder_is_a_clear_error():
    folder = Path(tempfile.mkdtemp(prefix="musicrec-ro-"))
    os.chmod(folder, 0o555)
    try:
        message = as_nobody(lambda: write_json(folder / "out" / "x.json", {"a": 1}))
    finally:
        os.chmod(folder, 0o755)
    assert message.startswith("raised MusicrecError"), message
    assert "no permission to write there" in message and "out" in message
    assert not (folder / "out").exists()


def test_an_atomic_write_reaches_the_disk_before_its_name_and_the_rename_after(
    tmp_path, monkeypatch
):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_path(tmp_path / "out") as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
    synced_before = [
        path for kind, path in events[: events.index(("rename", str(tmp_path / "out")))]
    ]
    assert any(p.endswith("/a.txt") for p in synced_before)  # the file's data
    assert events[-1] == ("fsync", str(tmp_path))  # then the folder that holds the new name


def test_read_yaml_reads_the_projects_files_as_safe_load_does_and_refuses_python_tags(tmp_path):
    for name in ("dvc.lock", "dvc.yaml", "params.yaml"):
        assert read_yaml(REPO / name) == yaml.safe_load((REPO / name).read_text()), name
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(yaml.constructor.ConstructorError):
        read_yaml(unsafe)


def test_an_output_over_a_folder_musicrec_did_not_write_is_refused_before_any_work(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years")
    worked = []
    with pytest.raises(MusicrecError, match=r"precious is a folder musicrec did not write"):
        with atomic_path(precious) as tmp:
            worked.append(True)
            tmp.mkdir()
    assert not worked
    assert (precious / "thesis.txt").read_text() == "four years"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_a_folder_musicrec_wrote_carries_its_marker_and_is_replaced_whole(tmp_path):
    final = tmp_path / "out"
    for content in ("first", "second"):
        with atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "a.txt").write_text(content)
    assert (final / OUTPUT_MARKER).is_file()
    assert (final / "a.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_current_folder_as_an_output_is_refused(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MusicrecError, match="did not write"):
        with atomic_path(Path(".")) as tmp:
            tmp.mkdir()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_file_output_onto_a_folder_is_refused_and_the_folder_kept(tmp_path):
    reports = tmp_path / "reports"
    with atomic_path(reports) as tmp:  # a folder musicrec wrote
        tmp.mkdir()
        (tmp / "metrics.json").write_text("{}")
    with pytest.raises(MusicrecError, match="is a folder; the output is a file"):
        write_json(reports, {"page": 1})
    assert (reports / "metrics.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def test_an_output_holding_an_input_is_refused(tmp_path):
    (tmp_path / "work" / "previews").mkdir(parents=True)
    link = tmp_path / "elsewhere"
    link.symlink_to(tmp_path / "work")
    for out in (tmp_path / "work", tmp_path / "work" / "previews", link):
        with pytest.raises(MusicrecError, match="holds the input --previews"):
            refuse_output_over_inputs(out, {"--previews": tmp_path / "work" / "previews"})
    refuse_output_over_inputs(tmp_path / "out", {"--previews": tmp_path / "work" / "previews"})
    # ".." after a link is where the link leads, for the check as for the write.
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere" / "data").mkdir()
    (tmp_path / "hop").symlink_to(tmp_path / "elsewhere" / "sub")
    with pytest.raises(MusicrecError, match="holds the input --plays"):
        refuse_output_over_inputs(
            tmp_path / "hop" / ".." / "data", {"--plays": tmp_path / "elsewhere" / "data" / "p"}
        )
    with pytest.raises(MusicrecError, match="lies inside the input source"):
        refuse_output_over_inputs(tmp_path / "work" / "copy", {"source": tmp_path / "work"}, True)


def test_a_link_to_a_folder_as_an_output_is_refused_before_any_work(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "notes.txt").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(MusicrecError, match="is a link to a folder"):
        with atomic_path(tmp_path / "link") as tmp:
            tmp.mkdir()
    assert (tmp_path / "link").is_symlink()
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["notes.txt"]


# A child process that writes a folder output with atomic_path and is killed (SIGKILL, so no
# cleanup runs) at a chosen moment: "work" inside the write, "rename" between the renames.
KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from musicrec.io import atomic_path
final, moment = Path(sys.argv[1]), sys.argv[2]
real_replace = os.replace
def replace(src, dst):
    real_replace(src, dst)
    if moment == "rename":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
with atomic_path(final) as tmp:
    tmp.mkdir()
    (tmp / "model.json").write_text('{"name": "new"}')
    if moment == "work":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_write(final: Path, moment: str) -> None:
    result = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(final), moment])
    assert result.returncode == -signal.SIGKILL


def _write_model(final: Path, name: str) -> None:
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "model.json").write_text(json.dumps({"name": name}))


def test_a_write_killed_midway_leaves_a_temporary_that_discovery_skips_and_the_next_removes(
    tmp_path,
):
    models = tmp_path / "models"
    _write_model(models / "wmf", "wmf")
    _killed_write(models / "cnn_mse", "work")
    leftovers = [p.name for p in models.iterdir() if p.name.startswith(".cnn_mse.")]
    assert leftovers and (models / leftovers[0] / "model.json").exists()
    assert discover_models(models) == [models / "wmf"]
    assert sweep_stale_temporaries(models / "cnn_mse") == [models / leftovers[0]]
    _write_model(models / "cnn_mse", "cnn_mse")
    assert sorted(p.name for p in models.iterdir()) == ["cnn_mse", "wmf"]


def test_the_feature_cache_sweep_keeps_a_live_writers_temporary(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    names = [
        f".ab12.npy.{dead}.k2j4h5g6.tmp.npy",  # a killed run's
        ".ab13.npy.q1w2e3r4.tmp.npy",  # an earlier musicrec's (no pid)
        f".ab14.npy.{os.getpid()}.z9x8c7v6.tmp.npy",  # a live writer's
        "ab15.npy",  # an entry
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in sweep_temporaries(tmp_path)) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_a_kill_between_the_renames_loses_nothing(tmp_path):
    final = tmp_path / "cnn_mse"
    _write_model(final, "old")
    _killed_write(final, "rename")
    assert not final.exists()  # killed after the old folder went aside
    sweep_stale_temporaries(final)  # what the next write of it does first
    assert json.loads((final / "model.json").read_text()) == {"name": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn_mse"]
