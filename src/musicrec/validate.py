"""Stage ``validate``: check the play log and the audio with great-expectations suites.

The play log must be usable as a whole: any bad row stops the pipeline with a message that names
the file, the line and the problem. A song whose audio is unusable is quarantined with a reason,
its plays are dropped and counted, and the pipeline goes on, unless the batch as a whole fails
the gate (:func:`gate_checks`): too many songs quarantined, too many play rows dropped, or,
against the last accepted data of the same data root, too large a change in the number of play
rows or in the distribution of play counts. Each limit is a param, and the error names it.
Nothing under the data folder is ever changed: the clean log and the usable-song manifest are
written to ``data/validated/``, the summary to ``reports/validation.json`` (which keeps the
last accepted data's figures, ``accepted``, for the next run's drift checks) and
great-expectations' results to ``reports/validation/``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from musicrec.audio import (
    AUDIO_EXTENSIONS,
    NO_AUDIO_FRAMES,
    REFUSED,
    ClipSpec,
    find_audio_files,
    probe_audio,
    resolve_audio,
    unsupported_audio_files,
)
from musicrec.errors import MusicrecError, PlayLogError
from musicrec.io import (
    MAX_LINE_BYTES,
    bounded_lines,
    load_params,
    read_json,
    write_json,
    write_tsv,
)
from musicrec.stage import DataConfig, Workers, read_config, read_shared, run_stage, stage_parser

# A safe id: not empty, not '.' or '..', no path separator, no control character.
SAFE_ID_REGEX = r"^(?!\.\.?$)[^/\\\x00-\x1f\x7f]+$"
PLAY_LOG_COLUMNS = ["user_id", "song_id", "play_count"]
MAX_ERRORS_SHOWN = 20
# Lines of the play log read, validated and turned into codes at a time.
CHUNK_LINES = 500_000
# ... and the most bytes of them: a chunk of long lines ends early, so memory stays bounded.
CHUNK_BYTES = 128 << 20
# Lines read between checks of their length and of the chunk's size: a long line's pieces
# (each at most MAX_LINE_BYTES) fill at most one batch, 1 MB, before it is refused.
_BATCH_LINES = 16
# The most plays one row may count: every count up to it is exact as a float (it is under
# 2**53), and a sum of as many rows as a log can hold stays far below 2**63.
MAX_PLAY_COUNT = 10**9
# The start of a song's decode_error when its file is a link leading out of <root>/audio.
UNSAFE = "UnsafePath: "
# Play counts are compared as shares of rows per power of two: 1, 2-3, 4-7, ..., 2**20 and more.
PLAY_COUNT_BINS = 21


@dataclass
class ValidationResult:
    """What ``validate_dataset`` found.

    plays : clean log (``user_id``, ``song_id``, ``play_count``) of usable songs only.
    songs : manifest of usable songs (``song_id``, ``path`` relative to the data root, duration,
        sample rate, channels).
    summary : counts, the quarantine list with reasons, the log's status.
    ge_results : great-expectations' validation results as JSON dicts, by suite name.
    """

    plays: pd.DataFrame
    songs: pd.DataFrame
    summary: dict
    ge_results: dict


def _gx_context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")  # writes nothing to disk, contacts no one
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return gx, context


def run_suite(frame: pd.DataFrame, name: str, expectations: list, result_format: dict | str):
    """Validate ``frame`` against ``expectations`` in a throwaway great-expectations context."""
    gx, context = _gx_context()
    asset = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    return batch.validate(suite, result_format=result_format)


def play_log_expectations() -> list:
    """The play-log suite: one expectation per rule of docs/design.md, section 2."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeBetween(column="n_fields", min_value=3, max_value=3),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="song_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="play_count"),
        gxe.ExpectColumnValuesToMatchRegex(column="user_id", regex=SAFE_ID_REGEX),
        gxe.ExpectColumnValuesToMatchRegex(column="song_id", regex=SAFE_ID_REGEX),
        gxe.ExpectColumnValuesToMatchRegex(column="play_count", regex=r"^-?[0-9]+$"),
        # 0 plays is repaired (the row is dropped); a negative count is an error, and so is
        # one past MAX_PLAY_COUNT (a corrupt value: it would wrap or lose digits downstream).
        gxe.ExpectColumnValuesToBeBetween(column="count", min_value=0, max_value=MAX_PLAY_COUNT),
    ]


def _describe_log_failure(kind: str, column: str | None, row: pd.Series) -> str:
    value = row.get(column) if column else None
    if kind == "expect_column_values_to_be_between" and column == "n_fields":
        return (
            f"expected 3 tab-separated fields (user_id, song_id, play_count), "
            f"found {row['n_fields']}"
        )
    if kind == "expect_column_values_to_not_be_null":
        return f"empty {column}"
    if kind == "expect_column_values_to_match_regex" and column == "play_count":
        return f"play_count {value!r} is not an integer"
    if kind == "expect_column_values_to_match_regex":
        return (
            f"{column} {value!r} is not a safe id (no '/', '\\', control characters, "
            f"and not '.' or '..')"
        )
    if kind == "expect_column_values_to_be_between" and column == "count":
        if str(row["play_count"]).startswith("-"):
            return f"play_count {row['play_count']} is negative"
        return (
            f"play_count {row['play_count']} is above the most one row may count "
            f"({MAX_PLAY_COUNT:,}): a corrupt value"
        )
    return f"{kind} failed on {column}"


def _fields_table(text: str, first_line: int) -> pd.DataFrame:
    """Raw text fields of some lines of the log, indexed by their 1-based line numbers."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    fields = [line.removesuffix("\r").split("\t") for line in lines]
    padded = [(f + [None, None, None])[:3] for f in fields]
    index = np.arange(first_line, first_line + len(lines))
    table = pd.DataFrame(padded, columns=PLAY_LOG_COLUMNS, index=index)
    table = table.replace({"": None})
    table.insert(0, "n_fields", [len(f) for f in fields])
    table["count"] = pd.to_numeric(table["play_count"], errors="coerce")
    return table


UTF8_BOM = b"\xef\xbb\xbf"


def _read_chunk(
    path: Path, reader: Iterator[bytes], chunk_lines: int, first_line: int
) -> list[bytes]:
    """The log's next lines, from ``reader`` (lines of at most ``MAX_LINE_BYTES + 1`` bytes):
    ``chunk_lines`` of them, fewer once they hold :data:`CHUNK_BYTES` or at the end of the file.

    Raises
    ------
    MusicrecError
        ``file:line: line longer than N bytes``, for the first line over
        :data:`MAX_LINE_BYTES` (line ending included).
    """
    lines: list[bytes] = []
    size = 0
    while len(lines) < chunk_lines and size < CHUNK_BYTES:
        batch = list(itertools.islice(reader, min(_BATCH_LINES, chunk_lines - len(lines))))
        if not batch:
            break
        if max(map(len, batch)) > MAX_LINE_BYTES:
            at = next(i for i, line in enumerate(batch) if len(line) > MAX_LINE_BYTES)
            raise MusicrecError(
                f"{path}:{first_line + len(lines) + at}: line longer than {MAX_LINE_BYTES} "
                "bytes; a row is user_id<TAB>song_id<TAB>play_count: is this the play log, "
                "and are its line endings intact?"
            )
        lines += batch
        size += sum(map(len, batch))
    return lines


def iter_play_log(
    path: Path, chunk_lines: int = CHUNK_LINES, repairs: dict | None = None
) -> Iterator[pd.DataFrame]:
    """Read ``plays.tsv`` as raw text fields, ``chunk_lines`` lines at a time.

    Only one chunk's text is held at once (at most :data:`CHUNK_BYTES` of it, and no line
    longer than :data:`MAX_LINE_BYTES`), so a log of any length reads in bounded memory.
    Windows line endings are accepted. A UTF-8 byte-order mark at the start (what Windows tools
    write) is removed, and counted in ``repairs["byte_order_marks_removed"]`` when given: left
    in, it would glue itself to the first user id and make a user of its own. Bytes that are
    not UTF-8 stop with the line they are on.

    Yields
    ------
    pd.DataFrame
        Indexed by 1-based line number; columns ``n_fields``, ``user_id``, ``song_id``,
        ``play_count`` (str, or None when empty or absent) and ``count`` (the count as a
        number, NaN if it is not one).
    """
    path = Path(path)
    if not path.exists():
        raise MusicrecError(f"{path}: play log not found (expected <root>/plays.tsv)")
    first_line = 1
    with open(path, "rb") as log:
        # A read with a limit: a line longer than the longest allowed is cut there, so it is
        # refused without being held whole.
        reader = bounded_lines(log)
        while lines := _read_chunk(path, reader, chunk_lines, first_line):
            raw = b"".join(lines)
            if first_line == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
                if repairs is not None:
                    repairs["byte_order_marks_removed"] = 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = first_line + raw[: exc.start].count(b"\n")
                raise MusicrecError(
                    f"{path}:{line}: bytes that are not UTF-8 ({exc.reason})"
                ) from None
            yield _fields_table(text, first_line)
            first_line += len(lines)


def _bad_lines(result, table: pd.DataFrame) -> dict[int, str]:
    """Line number -> the first problem found on it, from a failed suite's results."""
    problems: dict[int, str] = {}
    for res in result.results:
        if res.success:
            continue
        kwargs = res.expectation_config.kwargs
        for line in res.result.get("unexpected_index_list") or []:
            line = int(line)
            if line not in problems:
                problems[line] = _describe_log_failure(
                    res.expectation_config.type, kwargs.get("column"), table.loc[line]
                )
    return problems


class _Codes:
    """Integer codes for ids, in order of first appearance; each id is stored once."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def encode(self, ids: pd.Series) -> np.ndarray:
        """Codes [shape=(len(ids),), int32] of ``ids``, numbering the new ones."""
        for new in pd.unique(ids):
            self.index.setdefault(new, len(self.index))
        return ids.map(self.index).to_numpy(np.int32)

    def categorical(self, codes: np.ndarray) -> pd.Categorical:
        return pd.Categorical.from_codes(codes, categories=list(self.index))


def check_play_log(path: Path, chunk_lines: int = CHUNK_LINES) -> tuple[pd.DataFrame, dict, dict]:
    """Validate the play log; return the clean log, great-expectations' result and the repairs.

    The log is streamed: each chunk of ``chunk_lines`` lines is validated by the suite and
    kept only as categorical codes, so memory grows with the number of distinct ids and rows
    kept, never with the text. Three things are repaired rather than refused, and counted
    (``repairs``):

    - a UTF-8 byte-order mark before line 1 is removed;
    - a header row ``user_id, song_id, play_count`` on line 1 is skipped;
    - a row with a play count of 0 says nothing was played: it is dropped;
    - several rows for one (user, song) pair are summed into one, as the plays they are.

    Returns
    -------
    plays : pd.DataFrame
        ``user_id``, ``song_id`` (categorical) and ``play_count`` (int64), in file order.
    ge_result : dict
        ``success`` and great-expectations' result of each chunk (``chunks``).
    repairs : dict

    Raises
    ------
    MusicrecError
        If any row breaks a rule, naming ``file:line: problem`` for the first rows found.
    """
    repairs = {
        "byte_order_marks_removed": 0,
        "header_rows_skipped": 0,
        "zero_count_rows_dropped": 0,
        "duplicate_rows_summed": 0,
    }
    problems: dict[int, str] = {}
    n_bad, n_rows, chunks = 0, 0, []
    # Rows are kept as integer codes; each distinct id is stored once, in its _Codes.
    user_codes, song_codes = _Codes(), _Codes()
    users: list[np.ndarray] = []
    songs: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for table in iter_play_log(path, chunk_lines, repairs):
        if table.index[0] == 1 and table.iloc[0][PLAY_LOG_COLUMNS].tolist() == PLAY_LOG_COLUMNS:
            table = table.iloc[1:]
            repairs["header_rows_skipped"] = 1
        if table.empty:
            continue
        n_rows += len(table)
        result = run_suite(
            table,
            "play_log",
            play_log_expectations(),
            {"result_format": "COMPLETE", "unexpected_index_column_names": None},
        )
        chunks.append(result.to_json_dict())
        found = _bad_lines(result, table)
        n_bad += len(found)
        if len(problems) < MAX_ERRORS_SHOWN:
            problems.update(found)
        if n_bad:
            continue  # the log is refused: keep reading only to report every bad line
        played = table["count"] > 0
        repairs["zero_count_rows_dropped"] += int((~played).sum())
        users.append(user_codes.encode(table.loc[played, "user_id"]))
        songs.append(song_codes.encode(table.loc[played, "song_id"]))
        counts.append(table.loc[played, "count"].to_numpy(np.int64))
    if n_rows == 0:
        raise MusicrecError(f"{path}: the play log is empty")
    ge_json = {"success": n_bad == 0, "chunks": chunks}
    if n_bad:
        shown = [f"{path}:{line}: {problems[line]}" for line in sorted(problems)[:MAX_ERRORS_SHOWN]]
        more = n_bad - len(shown)
        tail = f"\n... and {more} more bad lines" if more > 0 else ""
        raise PlayLogError(
            f"the play log is unusable ({n_bad} bad lines); fix these and rerun:\n"
            + "\n".join(shown)
            + tail,
            bad_lines=n_bad,
            ge_result=ge_json,
        )
    user, song, count = (np.concatenate(parts) for parts in (users, songs, counts))
    # One key per (user, song) pair; factorize numbers them in order of first appearance.
    pair_ids, first_pairs = pd.factorize(user.astype(np.int64) * len(song_codes) + song)
    if len(first_pairs) < len(pair_ids):
        repairs["duplicate_rows_summed"] = len(pair_ids) - len(first_pairs)
        # Summed as integers: float sums lose plays above 2**53.
        count = pd.Series(count).groupby(pair_ids).sum().to_numpy(np.int64)
        user, song = first_pairs // len(song_codes), first_pairs % len(song_codes)
    plays = pd.DataFrame(
        {
            "user_id": user_codes.categorical(user),
            "song_id": song_codes.categorical(song),
            "play_count": count,
        }
    )
    return plays, ge_json, repairs


def audio_expectations(min_seconds: float, silence_db: float) -> list:
    """The audio-manifest suite: each played song has one decodable, long, audible, finite file
    that holds a signal (``signal_db``, the level once each channel's constant part is taken
    away: a DC offset alone is loud but carries nothing)."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeBetween(column="n_files", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="n_files", max_value=1),
        gxe.ExpectColumnValuesToBeNull(column="decode_error"),
        gxe.ExpectColumnValuesToBeBetween(column="duration_s", min_value=min_seconds),
        gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="rms_db", min_value=silence_db),
        # (null where the clip is silent already: one reason is enough)
        gxe.ExpectColumnValuesToBeBetween(column="signal_db", min_value=silence_db),
    ]


def _describe_audio_failure(kind: str, kwargs: dict, row: pd.Series) -> str:
    column = kwargs.get("column")
    if column == "n_files" and kwargs.get("min_value") is not None and row["path"]:
        return (
            f"no audio file in a supported format (found {row['path'].replace(';', ', ')}, "
            f"supported are {', '.join(AUDIO_EXTENSIONS)})"
        )
    if column == "n_files" and kwargs.get("min_value") is not None:
        return "no audio file"
    if column == "n_files":
        return f"several audio files claim this id: {row['path']}"
    if column == "decode_error" and str(row["decode_error"]).startswith("PermissionError"):
        return f"cannot be read ({row['decode_error']})"
    if column == "decode_error" and str(row["decode_error"]).startswith(UNSAFE):
        return f"unsafe path, not opened: {row['decode_error'].removeprefix(UNSAFE)}"
    if column == "decode_error" and str(row["decode_error"]).startswith(REFUSED):
        # "not a regular file (a FIFO)" or "larger than N bytes (M bytes)"; no "; " in it,
        # which separates a song's reasons.
        return (
            f"{row['decode_error'].removeprefix(REFUSED)}: never decoded, put the audio file "
            "itself there (a plain file, not a pipe, device, folder or archive)"
        )
    if column == "decode_error" and str(row["decode_error"]).startswith(NO_AUDIO_FRAMES):
        return (
            "no audio frames: the decoder found no audio in this file (only tags, such as an "
            "ID3 header, or text or another format under an audio file's name?)"
        )
    if column == "decode_error":
        return f"cannot be decoded ({row['decode_error']})"
    if column == "duration_s":
        return f"too short: {row['duration_s']:.2f} s < {kwargs['min_value']} s"
    if column == "finite":
        return "NaN or infinite samples"
    if column == "rms_db":
        return f"silent: clip level {row['rms_db']:.1f} dBFS < {kwargs['min_value']} dBFS"
    if column == "signal_db":
        return (
            f"no signal: constant (a DC offset at {row['rms_db']:.1f} dBFS with "
            f"{row['signal_db']:.1f} dBFS of variation on it)"
        )
    return f"{kind} failed"


def check_audio(
    root: Path,
    song_ids: list[str],
    clip: ClipSpec,
    min_seconds: float,
    silence_db: float,
    n_jobs: int = 1,
) -> tuple[pd.DataFrame, dict]:
    """Probe every played song's audio and validate the manifest.

    Returns
    -------
    manifest : pd.DataFrame
        One row per song: ``song_id``, ``path`` (relative to ``root``), the probe's measures and
        ``reasons`` (empty string for a usable song, else why it is quarantined).
    ge_result : dict
    """
    files = find_audio_files(root, song_ids)
    unsupported = unsupported_audio_files(root, [s for s, paths in files.items() if not paths])
    rows = [
        {
            "song_id": song,
            "n_files": len(paths),
            "path": ";".join(paths or unsupported.get(song, [])),
        }
        for song, paths in files.items()
    ]
    empty_probe = {
        "decode_error": None,
        "duration_s": np.nan,
        "sample_rate": np.nan,
        "channels": np.nan,
        "rms_db": np.nan,
        "signal_db": np.nan,
        "finite": None,
    }
    for row in rows:
        row.update(empty_probe)
    single = []
    for i, row in enumerate(rows):
        if row["n_files"] != 1:
            continue
        try:
            single.append((i, resolve_audio(root, files[row["song_id"]][0])))
        except MusicrecError as exc:  # a link out of the folder: quarantined, never opened
            row["decode_error"] = f"{UNSAFE}{exc}"
    probes = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
        delayed(probe_audio)(path, clip) for _, path in single
    )
    for (i, _), probe in tqdm(
        zip(single, probes, strict=True),
        total=len(single),
        desc="validate: probing audio",
        unit="song",
    ):
        if probe["decode_error"] is not None:
            probe["finite"] = None  # undecodable: judged by decode_error alone
        if probe["rms_db"] < silence_db or probe["duration_s"] < min_seconds:
            probe["signal_db"] = np.nan  # silent or too short: judged by that alone
        rows[i].update(probe)
    manifest = pd.DataFrame(rows)
    result = run_suite(
        manifest, "audio_manifest", audio_expectations(min_seconds, silence_db), "COMPLETE"
    )
    reasons: dict[int, list[str]] = {}
    for res in result.results:
        for i in res.result.get("unexpected_index_list") or []:
            reasons.setdefault(int(i), []).append(
                _describe_audio_failure(
                    res.expectation_config.type, res.expectation_config.kwargs, manifest.loc[int(i)]
                )
            )
    manifest["reasons"] = ["; ".join(reasons.get(i, [])) for i in range(len(manifest))]
    return manifest, result.to_json_dict()


def validate_dataset(
    root: Path, clip: ClipSpec, min_seconds: float, silence_db: float, n_jobs: int = 1
) -> ValidationResult:
    """Validate a data folder (docs/design.md, section 2 layout); quarantine unusable songs."""
    root = Path(root)
    plays, ge_plays, repairs = check_play_log(root / "plays.tsv")
    song_ids = sorted(plays["song_id"].unique())
    manifest, ge_audio = check_audio(root, song_ids, clip, min_seconds, silence_db, n_jobs)
    bad = manifest["reasons"] != ""
    quarantined = manifest.loc[bad, ["song_id", "path", "reasons"]]
    usable_ids = set(manifest.loc[~bad, "song_id"])
    keep = plays["song_id"].isin(usable_ids)
    songs = manifest.loc[~bad, ["song_id", "path", "duration_s", "sample_rate", "channels"]]
    # Sorted by id: a song's row here is its index in every later array (musicrec.dataset).
    songs = songs.astype({"sample_rate": int, "channels": int})
    songs = songs.sort_values("song_id", kind="stable").reset_index(drop=True)
    reason_counts: dict[str, int] = {}
    for reasons in quarantined["reasons"]:
        for reason in reasons.split("; "):
            key = reason.split(" (")[0].split(":")[0]
            reason_counts[key] = reason_counts.get(key, 0) + 1
    summary = {
        "data_root": str(root),
        "play_log": {
            "file": str(root / "plays.tsv"),
            "rows": len(plays),
            "ok": True,
            "users": int(plays["user_id"].nunique()),
            "songs": len(song_ids),
            "total_play_count": int(plays["play_count"].sum()),
            "play_count_histogram": play_count_histogram(plays["play_count"].to_numpy()),
            "repairs": repairs,
        },
        "audio": {
            "songs_checked": len(manifest),
            "songs_usable": len(songs),
            "songs_quarantined": int(bad.sum()),
            "quarantine_reasons": reason_counts,
            "quarantine": quarantined.to_dict("records"),
        },
        "plays_dropped": {
            "rows": int((~keep).sum()),
            "play_count": int(plays.loc[~keep, "play_count"].sum()),
        },
        "plays_kept": {"rows": int(keep.sum()), "users": int(plays.loc[keep, "user_id"].nunique())},
    }
    return ValidationResult(
        plays.loc[keep].reset_index(drop=True),
        songs,
        summary,
        {"play_log": ge_plays, "audio_manifest": ge_audio},
    )


def play_count_histogram(counts: np.ndarray) -> list[float]:
    """Share of play rows per power of two of their count [len PLAY_COUNT_BINS]: bin ``b``
    holds counts in ``[2**b, 2**(b+1))``, the last one everything above."""
    bins = np.minimum(np.floor(np.log2(np.maximum(counts, 1))), PLAY_COUNT_BINS - 1)
    shares = np.bincount(bins.astype(np.int64), minlength=PLAY_COUNT_BINS) / max(len(counts), 1)
    return [round(float(x), 6) for x in shares]


@dataclass(frozen=True)
class ValidateConfig:
    """``validate`` in params.yaml (``n_jobs``: :class:`musicrec.stage.Workers`)."""

    min_seconds: float = 3.0  # shorter files are quarantined
    silence_db: float = -60.0  # clips quieter than this (RMS, dBFS) are quarantined
    # The gate (:func:`gate_checks`); a limit of null is not checked.
    max_quarantined_share: float | None = 0.2  # of the played songs
    max_dropped_play_share: float | None = 0.2  # of the play rows, dropped with their songs
    max_row_change: float | None = 0.5  # |rows / accepted rows - 1|, same data root
    max_play_count_drift: float | None = 0.2  # total variation of the play-count shares

    def __post_init__(self) -> None:
        if self.min_seconds < 0 or self.silence_db > 0:
            raise MusicrecError("validate: need min_seconds >= 0 and silence_db <= 0 (dBFS)")
        for name in GATE_PARAMS:
            limit = getattr(self, name)
            if limit is not None and (not isinstance(limit, int | float) or limit < 0):
                raise MusicrecError(f"validate.{name}: a share >= 0, or null, not {limit!r}")


GATE_PARAMS = (
    "max_quarantined_share",
    "max_dropped_play_share",
    "max_row_change",
    "max_play_count_drift",
)


def accepted_figures(summary: dict) -> dict:
    """What the next run's drift checks compare with: the data root, the play rows and their
    play-count shares."""
    log = summary["play_log"]
    return {
        "data_root": summary["data_root"],
        "rows": log["rows"],
        "play_count_histogram": log["play_count_histogram"],
    }


def gate_checks(summary: dict, accepted: dict | None, cfg: ValidateConfig) -> dict:
    """The batch's gate: each check's value, its limit (the param) and whether it passed.

    Parameters
    ----------
    summary : dict  :func:`validate_dataset`'s summary.
    accepted : dict or None  :func:`accepted_figures` of the last accepted run; the drift
        checks are made only where it is of the same data root.
    cfg : ValidateConfig

    Returns
    -------
    dict  ``{param name: {"value", "limit", "ok", "what"}}`` of the checks made, and
        ``"drift_compared_with"``: the accepted data root, or why there was none.
    """
    audio, log = summary["audio"], summary["play_log"]
    values = {
        "max_quarantined_share": (
            audio["songs_quarantined"] / max(audio["songs_checked"], 1),
            "share of the played songs quarantined",
        ),
        "max_dropped_play_share": (
            summary["plays_dropped"]["rows"] / max(log["rows"], 1),
            "share of the play rows dropped with their songs",
        ),
    }
    same_root = accepted is not None and accepted.get("data_root") == summary["data_root"]
    if same_root:
        values["max_row_change"] = (
            abs(log["rows"] / max(accepted["rows"], 1) - 1),
            f"change in play rows against the last accepted data ({accepted['rows']} rows)",
        )
        then = np.asarray(accepted["play_count_histogram"])
        now = np.asarray(log["play_count_histogram"])
        values["max_play_count_drift"] = (
            0.5 * float(np.abs(now - then).sum()),
            "total variation between the play-count shares (per power of two) and the last "
            "accepted data's",
        )
    checks: dict = {
        "drift_compared_with": summary["data_root"]
        if same_root
        else "nothing: no accepted data of this data root yet (drift not checked)"
    }
    for name, (value, what) in values.items():
        limit = getattr(cfg, name)
        if limit is not None:
            checks[name] = {
                "value": round(value, 6),
                "limit": limit,
                "ok": value <= limit,
                "what": what,
            }
    return checks


def gate_failures(checks: dict) -> list[str]:
    """One line per failed check of :func:`gate_checks`, naming its param."""
    return [
        f"{c['what']}: {c['value']:.1%}, over validate.{name} = {c['limit']:.1%}"
        for name, c in checks.items()
        if isinstance(c, dict) and not c["ok"]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        "validate",
        __doc__,
        [
            "data.root",
            "validate",
            "features.clip_seconds",
            "features.offset_seconds",
            "features.clips",
            "features.clip_position",
        ],
        out=Path("data/validated"),
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    root = Path(read_config(params, "data", DataConfig).root)
    cfg, workers = read_config(params, "validate", ValidateConfig, Workers)
    clip = read_shared(params, "features", ClipSpec)
    summary_path = args.reports / "validation.json"
    # The summary persists between runs (dvc.yaml): its ``accepted`` figures are the last
    # accepted data's, whatever this run finds.
    previous = read_json(summary_path) if summary_path.exists() else {}
    accepted = previous.get("accepted")
    with run_stage("validate", args) as (record, _):
        try:
            result = validate_dataset(root, clip, cfg.min_seconds, cfg.silence_db, workers.n_jobs)
        except PlayLogError as exc:
            write_json(args.reports / "validation" / "ge_play_log.json", exc.ge_result)
            write_json(
                summary_path,
                {
                    "data_root": str(root),
                    "play_log": {
                        "file": str(root / "plays.tsv"),
                        "ok": False,
                        "bad_lines": exc.bad_lines,
                        "errors": str(exc),
                    },
                    "accepted": accepted,
                },
            )
            raise
        checks = gate_checks(result.summary, accepted, cfg)
        failures = gate_failures(checks)
        result.summary["gate"] = checks
        if failures:
            write_json(summary_path, {**result.summary, "accepted": accepted})
            raise MusicrecError(
                f"validate: the data in {root} fails the validation gate, so nothing is "
                "trained on it:\n  "
                + "\n  ".join(failures)
                + "\nFix the data (reports/validation.json lists every quarantined song and "
                "why), or, if this is expected, raise the limit in params.yaml (null: not "
                "checked)."
            )
        result.summary["accepted"] = accepted_figures(result.summary)
        write_tsv(args.out / "plays.tsv", result.plays)
        write_tsv(args.out / "songs.tsv", result.songs)
        for name, ge in result.ge_results.items():
            write_json(args.reports / "validation" / f"ge_{name}.json", ge)
        write_json(summary_path, result.summary)
        record.update(
            rows=result.summary["play_log"]["rows"],
            quarantined=result.summary["audio"]["songs_quarantined"],
        )
    audio = result.summary["audio"]
    print(
        f"validate: {len(result.plays)} plays kept, {audio['songs_usable']} songs usable, "
        f"{audio['songs_quarantined']} quarantined {audio['quarantine_reasons'] or ''}"
    )
    return 0
