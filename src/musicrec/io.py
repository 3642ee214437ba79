"""File helpers every stage shares: atomic writes, safe paths, params, timings.

Every output is written to a temporary name in the same folder and renamed into place, so an
interrupted stage never leaves a half-written file that a later stage could take for a result.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from musicrec.errors import MusicrecError
from musicrec.machine import MACHINE_FILE, apply_machine_settings

PARAMS_FILE = Path("params.yaml")


def read_yaml(path: Path) -> Any:
    """A YAML file's content (safe loading), parsed by libyaml where PyYAML has it: ``dvc.lock``
    takes a tenth of the time, which every tracked stage reads (musicrec.tracking)."""
    # What yaml.safe_load does, with the C loader where there is one: only a safe loader is
    # ever built here (tests/test_untrusted.py holds every load in the package to that).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(Path(path).read_text())
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the whole ``params.yaml`` (each stage then takes only its own sections), with the
    machine settings (:mod:`musicrec.machine`) filled in."""
    path = Path(path)
    if not path.exists():
        raise MusicrecError(
            f"{path}: params file not found; run from the project root or pass --params"
        )
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    # How stages compute (processes, cluster, loader workers) comes from the machine, not from
    # the file DVC tracks: changing it reruns nothing.
    return apply_machine_settings(params, path.parent / MACHINE_FILE)


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """Return ``params[name]``, with an error that names the missing section."""
    if name not in params:
        raise MusicrecError(f"params.yaml has no '{name}' section")
    return params[name]


# Write failures a user can fix, and how to say them.
WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is used up: free some space",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "no permission to write there: fix the folder's permissions",
    errno.EPERM: "no permission to write there: fix the folder's permissions",
}


def _write_failure(final: Path, exc: OSError) -> MusicrecError:
    return MusicrecError(
        f"cannot write {final}: {WRITE_FAILURES[exc.errno]} ({exc.strerror}); "
        "nothing was half-written, run the stage again"
    )


def _fsync_tree(path: Path, files: bool = True) -> None:
    """Flush ``path`` to disk: a file, or a folder with (``files``) every file under it. A
    crash after a rename must not leave a name pointing at data the disk never got (an empty
    cache entry, say); filesystems that cannot sync a folder are let be."""
    paths = [path]
    if files and path.is_dir():
        paths += sorted(path.rglob("*"))
    for item in paths:
        if item.is_symlink() or (item.is_file() and not files):
            continue
        try:
            fd = os.open(item, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass  # (a folder on some filesystems)
        finally:
            os.close(fd)


# The file musicrec writes into every folder it outputs. A folder that exists without it was
# not written by musicrec (a user's folder named by ``--out``), and is never replaced.
OUTPUT_MARKER = ".musicrec-output"
_MARKER_TEXT = (
    "This folder was written by musicrec. The next run that writes it replaces it whole;\n"
    "keep nothing of your own here.\n"
)
# A temporary's name: ``.<final>.<pid>.<random>.tmp<suffix>``, or ``.aside`` for an old
# folder moved out of the way; the pid says whether the writer is still alive (a name without
# one is an earlier musicrec's, whose writers are gone).
_TEMPORARY = re.compile(
    r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.(?P<kind>tmp|aside)(?:\.[A-Za-z0-9]+)?$"
)
# The longest line read from a text file a user brings (a play log, triplets): their rows
# are a few short fields, so a longer line is a damaged or wrong file, refused before it is
# held whole in memory.
MAX_LINE_BYTES = 1 << 16


def temporary_owner(name: str) -> str | None:
    """The name of the output whose temporary :func:`atomic_path` called ``name``, or None
    if ``name`` is not one of its temporaries (``.<output>.<pid>.<random>.tmp<suffix>``)."""
    match = _TEMPORARY.match(name)
    return match["name"] if match else None


def bounded_lines(file: BinaryIO) -> Iterator[bytes]:
    """The lines of a file opened in binary mode, none read past :data:`MAX_LINE_BYTES` + 1
    bytes: a longer line comes out cut there (``len(line) > MAX_LINE_BYTES``), for the caller
    to refuse with its ``file:line``."""
    return iter(functools.partial(file.readline, MAX_LINE_BYTES + 1), b"")


def output_path(path: Path) -> Path:
    """The absolute path an output named ``path`` is written at: its folder with every link
    and ``..`` resolved, and its own name kept (a link named as an output is the link)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        return path.resolve()
    return path.parent.resolve() / path.name


def is_hidden(path: Path, below: Path) -> bool:
    """Whether any part of ``path`` under ``below`` is a dot-name: a temporary of an
    interrupted write, or a file no stage made (``.DS_Store``); discovery skips them."""
    return any(part.startswith(".") for part in Path(path).relative_to(below).parts)


def glob_outputs(folder: Path, pattern: str) -> list[Path]:
    """``folder.glob(pattern)`` without dot-names, sorted: what stages wrote, never the
    temporaries of a write that was killed (pathlib's ``*`` matches those too)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(pattern) if not is_hidden(p, folder))


def is_musicrec_output(folder: Path) -> bool:
    """Whether ``folder`` holds musicrec's marker file (:data:`OUTPUT_MARKER`)."""
    marker = Path(folder) / OUTPUT_MARKER
    return marker.is_file() and not marker.is_symlink()


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on this machine, which writes the output's folder)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _remove(path: Path) -> None:
    """Delete a file, a link or a folder tree; what is already gone is let be."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale_temporaries(final: Path) -> list[Path]:
    """Remove what killed writes of ``final`` left beside it, and return what was removed.

    Only names this module makes for ``final`` are touched, and only those of a process that
    is gone. If ``final`` itself is missing while a killed replacement left the old folder
    aside, that folder is put back first: a kill between the two renames loses nothing.
    """
    final = Path(final)
    return sweep_temporaries(final.parent, only=final.name)


def sweep_temporaries(folder: Path, only: str | None = None) -> list[Path]:
    """Remove the temporaries dead writers left in ``folder`` (of the output named ``only``,
    or of any), and return what was removed; an output whose replacement was killed between
    its renames is put back from its aside copy instead."""
    folder = Path(folder)
    stale = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing, or not ours to read: nothing to sweep
        return []
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or (only is not None and match["name"] != only):
            continue
        if match["pid"] is None or not _pid_alive(int(match["pid"])):
            stale.append((match["kind"], match["name"], folder / entry.name))
    removed = []
    for kind, name, path in sorted(stale):
        if kind == "aside" and not os.path.lexists(folder / name):
            os.replace(path, folder / name)
            continue
        _remove(path)
        removed.append(path)
    return removed


def refuse_unowned(final: Path) -> None:
    """Raise unless ``final`` may be replaced: missing, a file, an empty folder or a folder
    musicrec wrote (its marker file)."""
    final = Path(final)
    if final.is_symlink() or not final.is_dir():
        return
    if is_musicrec_output(final) or not any(final.iterdir()):
        return
    raise MusicrecError(
        f"{final} is a folder musicrec did not write (it has no {OUTPUT_MARKER} file), so it "
        "is left as it is: choose a new or empty folder for the output, or move this one away"
    )


def refuse_output_over_inputs(
    out: Path, inputs: dict[str, Path | None], either_way: bool = False
) -> None:
    """Raise if the output ``out`` is one of ``inputs`` (option name -> path) or holds one:
    replacing ``out`` would delete that input. With ``either_way``, also if ``out`` lies
    inside one of them (a copy of a folder written into that folder).

    The output is compared where :func:`atomic_path` writes it (:func:`output_path`), each
    input where its links lead, so a link into the output counts too.
    """
    # (A link named as the output is refused by atomic_path; here it counts as where it leads.)
    target = Path(out).resolve() if Path(out).is_symlink() else output_path(out)
    for option, path in inputs.items():
        if path is None:
            continue
        source = Path(path).resolve()
        if source == target or source.is_relative_to(target):
            raise MusicrecError(
                f"--out {out} holds the input {option} {path}: writing the output would replace "
                "it. Choose an --out outside every input"
            )
        if either_way and target.is_relative_to(source):
            raise MusicrecError(
                f"--out {out} lies inside the input {option} {path}: choose an --out outside it"
            )


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str = "", sweep: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` only on success.

    Works for files and folders. On an exception the temporary is removed and ``final`` is
    left as it was; a full disk or a folder that cannot be written is a ``MusicrecError``
    that says so.

    A folder output gets musicrec's marker file (:data:`OUTPUT_MARKER`), and an existing
    folder is replaced only if it has one (or is empty): a folder of the user's named as an
    output is refused before any work, never deleted. The old folder is renamed aside before
    the new one is renamed in, and deleted only after, so a kill between the steps loses
    nothing (the next write of ``final`` puts it back).

    Parameters
    ----------
    final : Path
        The output's name.
    suffix : str
        Appended to the temporary's name (numpy adds ``.npy``/``.npz`` to names without it).
    sweep : bool
        Remove the temporaries killed writes of ``final`` left (:func:`sweep_stale_temporaries`)
        first. Off for writers of many small files in one folder (the feature cache), which
        sweep their folder once themselves.
    """
    shown, final = final, output_path(final)
    if not final.name:
        raise MusicrecError(f"{shown}: the file system root cannot be an output")
    if final.is_symlink() and final.is_dir():
        raise MusicrecError(
            f"{shown} is a link to a folder: name the folder itself, or a new path, as the output"
        )
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if sweep:
            sweep_stale_temporaries(final)
        refuse_unowned(final)
        # The suffix goes last: numpy appends ".npy"/".npz" to names that do not end with it.
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp" + suffix, dir=final.parent
        )
    except OSError as exc:
        if exc.errno in WRITE_FAILURES:
            raise _write_failure(final, exc) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    aside = None
    try:
        yield tmp
        if tmp.is_dir():
            (tmp / OUTPUT_MARKER).write_text(_MARKER_TEXT)
        _fsync_tree(tmp)  # the data on disk before the name points at it
        if final.is_dir() and not final.is_symlink():
            if not tmp.is_dir():
                raise MusicrecError(
                    f"{final} is a folder; the output is a file: name a file path instead"
                )
            refuse_unowned(final)  # (again: the folder may have changed during the work)
            aside = Path(tmp_name[: -len(".tmp" + suffix)] + ".aside")
            os.replace(final, aside)
        elif tmp.is_dir() and os.path.lexists(final):
            raise MusicrecError(
                f"{final} is a file or a link; the output is a folder: name a new folder instead"
            )
        os.replace(tmp, final)
        _fsync_tree(final.parent, files=False)  # and the rename itself
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException as exc:
        _remove(tmp)
        if aside is not None and not os.path.lexists(final):
            os.replace(aside, final)
        if isinstance(exc, OSError) and exc.errno in WRITE_FAILURES:
            raise _write_failure(final, exc) from exc
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def read_json(path: Path) -> Any:
    """Read a JSON file, saying which stage to run if it is missing."""
    path = Path(path)
    if not path.exists():
        raise MusicrecError(f"{path} not found: run the stage that writes it (dvc repro)")
    return json.loads(path.read_text())


def write_tsv(path: Path, table: pd.DataFrame, header: bool = True) -> None:
    """Write a table as tab-separated text, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, header=header)


def read_tsv(path: Path) -> pd.DataFrame:
    """Read a table written by :func:`write_tsv` (ids stay strings)."""
    path = Path(path)
    if not path.exists():
        raise MusicrecError(f"{path} not found: run the stage that writes it (dvc repro)")
    return pd.read_csv(
        path, sep="\t", dtype={"song_id": str, "user_id": str}, keep_default_na=False
    )


def write_npy(path: Path, array: np.ndarray) -> None:
    """Save one array as ``.npy``, atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def write_sparse(path: Path, matrix: sp.spmatrix) -> None:
    """Save a sparse matrix as ``.npz`` (CSR), atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        sp.save_npz(tmp, sp.csr_matrix(matrix))


def safe_join(base: Path, relative: str) -> Path:
    """Join ``relative`` onto ``base`` and refuse any result outside ``base``.

    Ids and manifest entries come from data files a user brought, so they never become paths
    without this check (no ``..``, no absolute paths, no symlink escape).
    """
    base = Path(base).resolve()
    if not relative or "\x00" in relative:
        raise MusicrecError(f"unsafe path {relative!r}: empty or contains NUL")
    candidate = (base / relative).resolve()
    if not candidate.is_relative_to(base):
        raise MusicrecError(f"unsafe path {relative!r}: it leads outside {base}")
    return candidate


@contextlib.contextmanager
def stage_timer(stage: str, reports_dir: Path = Path("reports")) -> Iterator[dict[str, Any]]:
    """Time a stage and write ``reports/timings/<stage>.json`` when it succeeds.

    The yielded dict may be filled with extra figures (counts, sizes) worth reporting.
    """
    record: dict[str, Any] = {"stage": stage}
    start = time.perf_counter()
    yield record
    record["wall_seconds"] = round(time.perf_counter() - start, 3)
    write_json(Path(reports_dir) / "timings" / f"{stage}.json", record)


def replace_section(path: Path, name: str, body: str, title: str = "# Benchmarks") -> None:
    """Replace (or append) the ``<!-- name -->`` ... ``<!-- /name -->`` block of ``path``.

    Several scripts share one Markdown file (``reports/benchmarks.md``); each owns its block.
    """
    block = f"<!-- {name} -->\n{body.strip()}\n<!-- /{name} -->\n"
    text = path.read_text() if path.exists() else f"{title}\n"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def file_digest(path: Path, digest=None) -> str:
    """The hex digest of a file's bytes, streamed in 1 MB blocks (memory stays flat).

    ``digest`` is a fresh ``hashlib`` object (default SHA-256).
    """
    digest = digest if digest is not None else hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
