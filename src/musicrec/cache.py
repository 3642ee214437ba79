"""``musicrec cache prune``: remove the feature-cache folders the current params no longer use.

The ``features`` stage keeps each song's features in ``.cache/features/<key>/``, where ``<key>``
(12 hex digits) hashes the feature params, the code that computes them and the versions of the
libraries that decode and resample audio (:meth:`musicrec.audio_features.FeatureConfig.key`).
A change of any of them starts a new folder and leaves the old one, hundreds of MB of it,
unused. ``prune`` removes every key folder but the one that ``params.yaml`` (with this
machine's settings) gives now, and the temporaries a killed run left at the top of the cache
(``.<key>.<pid>.<random>.tmp``, or an earlier musicrec's without the pid), and says what it
removed and how many bytes that freed. Anything else in the cache folder is left alone and
named: a folder is removed only when its name is a key and everything in it is laid out as
the stage writes it.

Run it when no ``features`` stage is running (a ``dvc exp run`` queue with other feature params
included): the folders of other params are exactly what it removes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from musicrec.errors import MusicrecError
from musicrec.io import temporary_owner

DEFAULT_CACHE = Path(".cache/features")
# The names the features stage gives: a key folder, a two-digit shard in it, an entry in that
# (a 16-byte blake2b digest, as hex), and the temporaries of a write (io.temporary_owner
# knows their names).
KEY_NAME = re.compile(r"^[0-9a-f]{12}$")
SHARD_NAME = re.compile(r"^[0-9a-f]{2}$")
ENTRY_NAME = re.compile(r"^[0-9a-f]{32}\.npy$")


def _is_key_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary of a key folder: at the top of the cache only those go,
    since --cache pointed at another folder (a home folder, say) must keep its dot-files."""
    return bool(KEY_NAME.match(temporary_owner(name) or ""))


@dataclass
class PrunePlan:
    """What :func:`plan_prune` found at the top of a cache folder.

    Attributes
    ----------
    remove : list of (Path, int)
        Stale key folders and temporaries, each with its size in bytes.
    kept : Path or None
        The current key's folder, when there is one.
    ignored : list of (Path, str)
        Everything else, left alone, each with why.
    """

    remove: list[tuple[Path, int]] = field(default_factory=list)
    kept: Path | None = None
    ignored: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, size in self.remove)


def _is_plain_dir(path: Path) -> bool:
    """A folder itself, not a link to one (a link is never followed into)."""
    return stat.S_ISDIR(os.lstat(path).st_mode)


def _tree_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (or of ``path``, a file), links not followed."""
    if not _is_plain_dir(path):
        return os.lstat(path).st_size
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.lstat(Path(folder) / name).st_size for name in files)
    return total


def _unexpected_in_key_folder(folder: Path) -> str | None:
    """What, inside a folder named like a key, is not laid out as the features stage writes
    (``<shard>/<digest>.npy`` and temporaries, plain files and folders only); None if
    nothing is."""
    for shard in folder.iterdir():
        if not (SHARD_NAME.match(shard.name) and _is_plain_dir(shard)):
            return f"holds {shard.name!r}, which the features stage does not write"
        for entry in shard.iterdir():
            plain = stat.S_ISREG(os.lstat(entry).st_mode)
            if not (plain and (ENTRY_NAME.match(entry.name) or temporary_owner(entry.name))):
                return f"holds {shard.name}/{entry.name!r}, which the features stage does not write"
    return None


def plan_prune(cache: Path, current_key: str) -> PrunePlan:
    """Sort the top of ``cache`` into what :func:`prune` removes, keeps and leaves alone.

    Parameters
    ----------
    cache : Path
        The feature cache (``.cache/features``).
    current_key : str
        The key the current params give; its folder is kept.
    """
    plan = PrunePlan()
    for path in sorted(Path(cache).iterdir()):
        name = path.name
        if name == current_key:
            plan.kept = path
        elif _is_key_temporary(name) and not path.is_symlink():
            plan.remove.append((path, _tree_bytes(path)))
        elif not KEY_NAME.match(name) or not _is_plain_dir(path):
            plan.ignored.append((path, "not a cache-key folder"))
        elif why := _unexpected_in_key_folder(path):
            plan.ignored.append((path, f"named like a key, but {why}"))
        else:
            plan.remove.append((path, _tree_bytes(path)))
    return plan


def prune(cache: Path, current_key: str, dry_run: bool = False) -> PrunePlan:
    """Remove what :func:`plan_prune` finds stale in ``cache`` (nothing with ``dry_run``)."""
    plan = plan_prune(cache, current_key)
    if not dry_run:
        for path, _ in plan.remove:
            if _is_plain_dir(path):
                shutil.rmtree(path)
            else:
                path.unlink()
    return plan


def current_key(params_path: Path) -> str:
    """The cache key the ``features`` params of ``params_path`` give on this machine."""
    from musicrec.audio_features import FeatureConfig
    from musicrec.features import FeaturesRun
    from musicrec.io import load_params
    from musicrec.stage import read_config

    cfg, _ = read_config(load_params(params_path), "features", FeatureConfig, FeaturesRun)
    return cfg.key()


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MB ({n_bytes:,} bytes)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="musicrec cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    pruning = sub.add_parser(
        "prune",
        help="remove the feature-cache folders of other params, code or libraries",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pruning.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="the feature cache (%(default)s)"
    )
    pruning.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="the params whose key is kept (features section; %(default)s)",
    )
    pruning.add_argument(
        "--dry-run", action="store_true", help="list what would be removed, remove nothing"
    )
    args = parser.parse_args(argv)
    key = current_key(args.params)
    if not args.cache.is_dir():
        if args.cache.exists():
            raise MusicrecError(f"{args.cache}: not a folder; pass the feature cache as --cache")
        print(f"cache prune: {args.cache} does not exist; nothing to remove")
        return 0
    plan = prune(args.cache, key, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path, size in plan.remove:
        print(f"{verb} {path} ({_size(size)})")
    for path, why in plan.ignored:
        print(f"left alone {path}: {why}")
    kept = f"kept {plan.kept}" if plan.kept else f"no folder yet for the current key {key}"
    print(
        f"cache prune: {verb} {len(plan.remove)} item(s), {_size(plan.bytes_freed)} "
        f"{'to free' if args.dry_run else 'freed'}; {kept}"
    )
    return 0
