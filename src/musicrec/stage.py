"""The argument parser every stage's ``main()`` starts from, so their ``--help`` reads alike."""

from __future__ import annotations

import argparse
from pathlib import Path


def stage_parser(stage: str, doc: str | None, sections: list[str]) -> argparse.ArgumentParser:
    """A parser for ``musicrec <stage>`` with the module docstring as its description.

    Parameters
    ----------
    stage : str
        The subcommand name.
    doc : str
        The stage module's docstring (shown whole by ``--help``).
    sections : list of str
        The params.yaml sections the stage reads, named in the ``--params`` help.
    """
    parser = argparse.ArgumentParser(
        prog=f"musicrec {stage}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Paths default to the project layout that dvc.yaml uses; run from the project root.",
    )
    if sections:
        parser.add_argument(
            "--params",
            type=Path,
            default=Path("params.yaml"),
            help=f"params file (default: params.yaml); reads {', '.join(sections)}",
        )
    return parser
