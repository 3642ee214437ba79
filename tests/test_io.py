"""Writing outputs: all or nothing, and a full disk or a read-only folder said plainly."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, as_nobody

from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, read_yaml, write_json


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
