"""The argument parser every stage's ``main()`` starts from, so their ``--help`` reads alike."""

from __future__ import annotations

import argparse
from pathlib import Path

# The project layout dvc.yaml uses: option name -> (default folder, what it holds).
LAYOUT = {
    "validated": (Path("data/validated"), "validated data (validate's output)"),
    "split": (Path("data/split"), "evaluation splits (split's output)"),
    "models": (Path("data/models"), "one folder per model"),
    "reports": (Path("reports"), "reports, metrics and timings"),
    "per_user": (Path("data/evaluation"), "per-user metric values"),
}


def stage_parser(
    stage: str,
    doc: str | None,
    sections: list[str],
    folders: tuple[str, ...] = (),
    out: Path | None = None,
) -> argparse.ArgumentParser:
    """A parser for ``musicrec <stage>`` with the module docstring as its description.

    Parameters
    ----------
    stage : str
        The subcommand name.
    doc : str
        The stage module's docstring (shown whole by ``--help``).
    sections : list of str
        The params.yaml sections the stage reads, named in the ``--params`` help.
    folders : tuple of str
        Keys of ``LAYOUT``: the standard folders the stage reads or writes, as options
        (``per_user`` becomes ``--per-user``).
    out : Path, optional
        The default of an ``--out`` option, for a stage with an output folder of its own.
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
    for name in folders:
        default, what = LAYOUT[name]
        option = "--" + name.replace("_", "-")
        parser.add_argument(option, type=Path, default=default, help=f"{what} (default: {default})")
    if out is not None:
        parser.add_argument("--out", type=Path, default=out, help=f"output folder (default: {out})")
    return parser
