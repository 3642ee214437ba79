"""The ``musicrec`` command: one subcommand per pipeline stage (DVC runs them; so can you),
and the tools that work on the pipeline's results."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from musicrec import __version__, registry
from musicrec.errors import MusicrecError

STAGES = {s.name: (s.module, s.help) for s in registry.STAGES}

# Not stages of the DAG: they read the results of many runs.
TOOLS = {
    "dashboard": ("musicrec.dashboard", "offline HTML page comparing every DVC experiment"),
    "recommend": ("musicrec.recommend:main_recommend", "top songs for a listener or a new one"),
    "new-song": ("musicrec.recommend:main_new_song", "listeners and similar songs for audio"),
    "similar": ("musicrec.recommend:main_similar", "songs most like a catalogue song"),
    "serve": ("musicrec.serve", "the recommend operations over HTTP (JSON, OpenAPI)"),
    "real-world": ("musicrec.real_world", "build the real-audio world from Debian's game music"),
    "ingest": ("musicrec.ingest", "Taste Profile triplets + MSD track list + previews -> data"),
    "cache": ("musicrec.cache", "cache prune: remove feature-cache folders of old params/code"),
}
COMMANDS = {**STAGES, **TOOLS}

EPILOG = """\
The usual way to run everything is `make repro` (or `dvc repro` inside the virtual
environment); each stage reads its own section of params.yaml. Run `musicrec STAGE --help`
for a stage's options. After `dvc exp run` variants, `musicrec dashboard` compares them in
reports/dashboard.html. Data layout and protocol: README.md and docs/design.md."""


def _quiet_offline_environment() -> None:
    """No network, ever: tracking and telemetry off unless the user set otherwise."""
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_ERROR_REPORTING": "false",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "NUMBA_CACHE_DIR": str(Path(".cache/numba").resolve()),
        "MPLCONFIGDIR": str(Path(".cache/matplotlib").resolve()),
    }.items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="musicrec",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Content-based music recommendation pipeline: the stages of the DVC DAG, "
        "and dashboard, which compares DVC experiments.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"musicrec {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    stage, rest = argv[0], argv[1:]
    _quiet_offline_environment()
    module_name, _, function = COMMANDS[stage][0].partition(":")
    entry = getattr(importlib.import_module(module_name), function or "main")
    try:
        return int(entry(rest) or 0)
    except MusicrecError as exc:
        print(f"musicrec {stage}: error: {exc}", file=sys.stderr)
        return 1
