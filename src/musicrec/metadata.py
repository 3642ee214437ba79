"""Song metadata: the columns of ``<data root>/songs.csv`` beside the audio (artist, album, genre,
year, any categorical column), read the one way that the split (new artists) and the context
filter need them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from musicrec.errors import MusicrecError

# ``context.columns: auto``: every column that looks categorical for the songs at hand.
AUTO = "auto"


def categorical_columns(table: pd.DataFrame) -> list[str]:
    """The columns of ``table`` [shape=(n_songs, n_columns), text, "" unknown] with at least 2
    distinct known values and at most half as many as there are songs with a known value, in
    file order.

    A value shared by no other song says nothing about a new song, so ids, titles, file paths
    and free text (nearly one value per song) fall out, even when only some songs have one, as
    do constant columns; what is left is what songs have in common: artist, album, genre,
    year, label, source.
    """
    keep = []
    for column in table.columns:
        known = table[column][table[column] != ""]
        if 2 <= known.nunique() <= len(known) / 2:
            keep.append(column)
    return keep


def read_metadata(root: Path, song_ids: pd.Series, columns: tuple[str, ...] | str) -> pd.DataFrame:
    """The ``columns`` of ``<root>/songs.csv`` that exist, one row per song of ``song_ids`` in
    that order, as text ("" where a song or a value is missing).

    Parameters
    ----------
    root : Path  the data folder.
    song_ids : pd.Series [shape=(n_songs,)]  the songs, in the order wanted.
    columns : tuple of str, or "auto"  the columns wanted (those songs.csv lacks are left
        out), or every categorical one for these songs (:func:`categorical_columns`).

    Returns
    -------
    pd.DataFrame [shape=(n_songs, n_present)]  no columns when songs.csv is absent.

    Raises
    ------
    MusicrecError
        When songs.csv cannot be read as CSV text (saying which file and why).
    """
    path = Path(root) / "songs.csv"
    if not path.exists():
        return pd.DataFrame(index=range(len(song_ids)))
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise MusicrecError(
            f"{path}: cannot be read as UTF-8 CSV ({type(exc).__name__}: {exc}); fix the file "
            "or remove it (the context model and the new-artist view are then skipped)"
        ) from exc
    if "song_id" not in table.columns:
        raise MusicrecError(f"{path}: no song_id column (header: {', '.join(table.columns)})")
    wanted = [c for c in table.columns if c != "song_id"] if columns == AUTO else columns
    present = [c for c in wanted if c in table.columns]
    table = table.drop_duplicates("song_id").set_index("song_id")[present]
    table = table.reindex(song_ids.to_numpy()).fillna("").reset_index(drop=True)
    return table[categorical_columns(table)] if columns == AUTO else table
