"""Song metadata: the columns of ``<data root>/songs.csv`` beside the audio (artist, album, genre,
year, any categorical column), read the one way that the split (new artists) and the context
filter need them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from musicrec.errors import MusicrecError


def read_metadata(root: Path, song_ids: pd.Series, columns: tuple[str, ...]) -> pd.DataFrame:
    """The ``columns`` of ``<root>/songs.csv`` that exist, one row per song of ``song_ids`` in
    that order, as text ("" where a song or a value is missing).

    Parameters
    ----------
    root : Path  the data folder.
    song_ids : pd.Series [shape=(n_songs,)]  the songs, in the order wanted.
    columns : tuple of str  the columns wanted; those songs.csv lacks are left out.

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
    present = [c for c in columns if c in table.columns]
    table = table.drop_duplicates("song_id").set_index("song_id")[present]
    return table.reindex(song_ids.to_numpy()).fillna("").reset_index(drop=True)
