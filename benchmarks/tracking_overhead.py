"""What W&B tracking costs: a whole pipeline run with tracking offline vs disabled.

Runs the full pipeline of the project in ``--project`` (default: this checkout) several times,
as ``make repro`` runs it (``scripts/repro.sh --force``: one shared W&B service for the stages),
alternating ``WANDB_MODE=disabled`` and ``WANDB_MODE=offline`` so that drift in the machine's
speed falls on both, and reports the ratio of the median wall times. Where it can (as root on
Linux), each run is started inside a fresh network namespace with ``unshare -n``: no interface
but loopback, so the network is unreachable, as the issue's acceptance asks. The figures go to
the ``tracking_overhead`` section of ``reports/benchmarks.md``.

    python benchmarks/tracking_overhead.py [--rounds 2] [--warmup 1] [--project .]
        [--out reports/benchmarks.md]

One round is two full pipeline runs (about 5-6 minutes on the default world and 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from musicrec.io import replace_section

MODES = ("disabled", "offline")


def isolated_prefix() -> list[str]:
    """``unshare -n`` where it works here (no network at all), else nothing."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


def timed_repro(project: Path, mode: str, prefix: list[str], command: list[str]) -> float:
    """Wall seconds of one pipeline run with ``WANDB_MODE=mode``; raises if it fails."""
    env = dict(
        os.environ, WANDB_MODE=mode, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )
    start = time.perf_counter()
    result = subprocess.run(prefix + command, cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} with WANDB_MODE={mode} failed:\n{result.stderr[-3000:]}"
        )
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=2, help="runs per mode")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed runs first (default 1): the first run on a machine also fills the page "
        "cache and numba's cache, which made it twice as slow as the next here",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    parser.add_argument(
        "--command",
        default="bash scripts/repro.sh --force",
        help="the pipeline command timed (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    prefix = isolated_prefix()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.warmup):
        seconds = timed_repro(args.project, "disabled", prefix, shlex.split(args.command))
        print(f"warm-up (not counted): {seconds:.1f} s", flush=True)
    for round_index in range(args.rounds):
        # Alternate which mode goes first, so a slow start or a warming cache favours neither.
        order = MODES if round_index % 2 == 0 else MODES[::-1]
        for mode in order:
            seconds = timed_repro(args.project, mode, prefix, shlex.split(args.command))
            times[mode].append(seconds)
            print(f"round {round_index + 1}: WANDB_MODE={mode}: {seconds:.1f} s", flush=True)
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    ratio = medians["offline"] / medians["disabled"]
    network = "inside `unshare -n` (no network)" if prefix else "with the network as it is"
    lines = [
        "## Tracking overhead",
        "",
        f"`python benchmarks/tracking_overhead.py --rounds {args.rounds}`: `{args.command}` of "
        f"the whole pipeline {network}, alternating the modes after {args.warmup} untimed "
        "warm-up run(s); wall seconds per run.",
        "",
        "| WANDB_MODE | runs (s) | median (s) |",
        "|---|---|---|",
    ]
    for mode in MODES:
        runs = ", ".join(f"{t:.1f}" for t in times[mode])
        lines.append(f"| {mode} | {runs} | {medians[mode]:.1f} |")
    lines += ["", f"offline / disabled: **{ratio:.3f}** (target: at most 1.05)."]
    replace_section(args.out, "tracking_overhead", "\n".join(lines))
    print(f"offline / disabled = {ratio:.3f} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
