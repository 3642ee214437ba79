"""The messy copy of a world (``python -m musicrec.messy``) never writes over other folders."""

from __future__ import annotations

import pytest

from musicrec.errors import MusicrecError
from musicrec.messy import main as messy


def test_the_messy_copy_refuses_a_folder_it_did_not_write_and_keeps_its_files(tmp_path):
    source = tmp_path / "world"
    (source / "audio").mkdir(parents=True)
    (source / "plays.tsv").write_text("u\ts\t1\n")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years")
    with pytest.raises(MusicrecError, match="musicrec did not write"):
        messy([str(source), str(precious)])
    assert [p.name for p in precious.iterdir()] == ["thesis.txt"]
    for dest in (source, tmp_path):
        with pytest.raises(MusicrecError, match="holds the input source"):
            messy([str(source), str(dest)])
    assert sorted(p.name for p in source.iterdir()) == ["audio", "plays.tsv"]
