"""Files from elsewhere are data, never code or paths out of their folder: a static check of
every load in the package, and the real-audio world's album folders."""

from __future__ import annotations

import ast
import io
import re
import tarfile

import pytest
from conftest import REPO

from musicrec import real_world
from musicrec.errors import MusicrecError

SOURCES = sorted((REPO / "src" / "musicrec").rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return ast.literal_eval(keyword.value)
    return None


def test_every_load_in_the_package_refuses_pickles():
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in {"pickle", "dill", "cloudpickle"} for n in names):
                    problems.append(f"{where}:{node.lineno}: imports a pickle module")
        for call, name in _calls(tree):
            line = f"{where}:{call.lineno}: {name}"
            if name == "torch.load" and _keyword(call, "weights_only") is not True:
                problems.append(f"{line} without weights_only=True")
            if name.endswith(("np.load", "numpy.load")) and _keyword(call, "allow_pickle"):
                problems.append(f"{line} with allow_pickle")
            if name in {"joblib.load", "pd.read_pickle", "pandas.read_pickle", "yaml.load"}:
                problems.append(f"{line} can run code from the file it reads")
    assert SOURCES and not problems, "\n".join(problems)


def test_the_album_group_of_every_real_world_source_refuses_dot_dot_and_separators():
    grouped = [s for s in real_world.SOURCES if re.compile(s.music).groups]
    assert grouped and all(real_world.ALBUM_GROUP in s.music for s in grouped)
    for bad in ("", ".", "..", "a/b", "a\\b", "../x"):
        assert not re.fullmatch(real_world.ALBUM_GROUP, bad), bad
    for good in ("Day", "album one", "...", ".hidden", "a..b"):
        assert re.fullmatch(real_world.ALBUM_GROUP, good), good
    supertux = re.compile(grouped[0].music)
    assert supertux.fullmatch("./usr/share/games/supertux2/music/day/a.ogg").group(1) == "day"
    assert supertux.fullmatch("./usr/share/games/supertux2/music/../a.ogg") is None


def test_a_package_member_that_would_land_outside_its_folder_is_refused(tmp_path, monkeypatch):
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        member = tarfile.TarInfo("./usr/share/games/x/music/../evil.ogg")
        member.size = 4
        archive.addfile(member, io.BytesIO(b"evil"))

    class Dpkg:  # dpkg-deb --fsys-tarfile, writing that archive
        def __init__(self, command, stdout):
            self.stdout, self.returncode = io.BytesIO(stream.getvalue()), 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(real_world.subprocess, "Popen", Dpkg)
    # A pattern looser than ALBUM_GROUP, whose album group matches ".."
    loose = real_world.Source(
        "x", "1", "0" * 64, "x", 2020, r"\./usr/share/games/x/music/([^/]+)/[^/]+\.ogg$", "x"
    )
    target = tmp_path / "extracted" / "x"
    with pytest.raises(MusicrecError, match="'./usr/share/games/x/music/../evil.ogg', which would"):
        real_world.extract_music(tmp_path / "x.deb", loose, target)
    assert not (tmp_path / "extracted" / "evil.ogg").exists()
