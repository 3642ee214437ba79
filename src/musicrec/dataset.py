"""The split data set that every stage after ``split`` reads: one index of songs and users.

A song's index is its row in ``data/validated/songs.tsv`` (sorted by id), and the same row in
the features' arrays, ``data/split/songs.tsv``, every play matrix and every model's song
vectors. A user's index is their row in ``data/split/users.tsv`` (sorted by id). Nothing maps
one order to another: a stage that reads two of these files checks that they agree
(:func:`check_same_songs`), and a model folder records the digest of the ids it was fitted on
(:attr:`Splits.index_digest`), which ``evaluate`` and ``recommend`` check on load.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import scipy.sparse as sp

from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, read_tsv, write_json

MATRICES = ("train", "warm_test", "cold_test", "cold_user_seed", "cold_user_test", "all")


def ids_digest(song_ids, user_ids) -> str:
    """A short digest of an index: the song ids then the user ids, in order.

    Parameters
    ----------
    song_ids, user_ids : sequence of str [shape=(n_songs,), (n_users,)]
    """
    digest = hashlib.sha256()
    for ids in (song_ids, user_ids):
        digest.update("\n".join(map(str, ids)).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def check_same_songs(expected: pd.Series, found: pd.Series, what: str, fix: str) -> None:
    """Raise a :class:`MusicrecError` unless ``found`` lists the song ids of ``expected`` in
    the same order (the one song order; ``what`` names the second list, ``fix`` the remedy)."""
    if len(expected) == len(found) and (expected.to_numpy() == found.to_numpy()).all():
        return
    mismatch = next(
        (i for i, (a, b) in enumerate(zip(expected, found, strict=False)) if a != b),
        min(len(expected), len(found)),
    )
    raise MusicrecError(
        f"{what} does not list the songs of the split in the same order ({len(found)} songs "
        f"against {len(expected)}; first difference at row {mismatch}): {fix}"
    )


@dataclass
class Splits:
    """The outcome of :func:`make_splits`.

    songs : ``song_id``, ``role`` (warm | cold), ``validation`` (bool), ``new_artist`` (bool: a
        cold song of an artist held out whole), in index order.
    users : ``user_id``, ``role`` (warm | cold_user), in index order.
    matrices : name -> CSR [shape=(n_users, n_songs)] of play counts, names in ``MATRICES``.
    """

    songs: pd.DataFrame
    users: pd.DataFrame
    matrices: dict[str, sp.csr_matrix]

    @property
    def index_digest(self) -> str:
        """The :func:`ids_digest` of this index: what a model fitted on it records."""
        return ids_digest(self.songs["song_id"], self.users["user_id"])


def write_splits(
    splits: Splits,
    out_dir: Path,
    folds: list[Splits] | None = None,
    fold_choice: dict | None = None,
) -> dict:
    """Write a :class:`Splits` to a folder atomically; return its summary.

    ``folds``: the splits of cold folds 1 to K-1 (:mod:`musicrec.split`), written inside it to
    ``folds/<k>/`` (each a split folder :func:`load_splits` reads); ``fold_choice`` (``count``
    K and ``why``) goes in ``split.json`` as ``cold_folds``.
    """
    folds = folds or []
    summary = split_summary(splits)
    summary["cold_folds"] = fold_choice or {"count": 1 + len(folds), "why": "split.cold_folds"}
    if folds:
        every = [splits, *folds]
        summary["cold_folds"]["cold_songs_scored"] = sum(
            int((f.songs["role"] == "cold").sum()) for f in every
        )
        summary["cold_folds"]["new_artist_songs_scored"] = sum(
            int(f.songs["new_artist"].sum()) for f in every
        )
    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir()
        _write_split_files(splits, tmp)
        for k, fold in enumerate(folds, start=1):
            (tmp / "folds" / str(k)).mkdir(parents=True)
            _write_split_files(fold, tmp / "folds" / str(k))
            write_json(tmp / "folds" / str(k) / "split.json", split_summary(fold))
        write_json(tmp / "split.json", summary)
    return summary


def split_summary(splits: Splits) -> dict:
    """Counts of songs, users and pairs per role and matrix (``split.json``)."""
    return {
        "songs": {
            "total": len(splits.songs),
            **splits.songs["role"].value_counts().to_dict(),
            "validation": int(splits.songs["validation"].sum()),
            "new_artist": int(splits.songs["new_artist"].sum()),
        },
        "users": {"total": len(splits.users), **splits.users["role"].value_counts().to_dict()},
        "pairs": {name: int(m.nnz) for name, m in splits.matrices.items()},
    }


def _write_split_files(splits: Splits, folder: Path) -> None:
    splits.songs.to_csv(folder / "songs.tsv", sep="\t", index=False)
    splits.users.to_csv(folder / "users.tsv", sep="\t", index=False)
    for name, matrix in splits.matrices.items():
        sp.save_npz(folder / f"{name}.npz", matrix)


def fold_split_dirs(split_dir: Path) -> list[Path]:
    """The split folders of every cold fold, fold 0 (``split_dir`` itself) first."""
    folds = Path(split_dir) / "folds"
    if not folds.is_dir():
        return [Path(split_dir)]
    extra = sorted((p for p in folds.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [Path(split_dir), *extra]


def load_splits(split_dir: Path) -> Splits:
    """Read what :func:`write_splits` wrote."""
    split_dir = Path(split_dir)
    songs, users = read_tsv(split_dir / "songs.tsv"), read_tsv(split_dir / "users.tsv")
    for flag in ("validation", "new_artist"):  # a split written before new artists: none
        songs[flag] = (
            songs.get(flag, pd.Series(False, index=songs.index)).astype(str).str.lower() == "true"
        )
    matrices = {name: sp.load_npz(split_dir / f"{name}.npz").tocsr() for name in MATRICES}
    return Splits(songs, users, matrices)
