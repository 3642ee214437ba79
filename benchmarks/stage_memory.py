"""Peak memory of ``features`` and ``evaluate`` as the catalogue grows: 1k against 10k songs.

For each size, a project folder gets the default ``params.yaml`` with the synthetic world set
to that many songs of short clips (2 s) and as many users, and the stages run in order as
separate processes (``musicrec synthesize``, ``validate``, ``features``, ``split``,
``baselines``, ``wmf``, ``evaluate``: the four reference models, enough to load evaluate as the
full pipeline does). Each stage's peak RSS comes from ``wait4``'s resource usage of its own
process (the largest of it and the worker processes it waited for). The figures go to the
``stage_memory`` section of ``reports/benchmarks.md``.

    python benchmarks/stage_memory.py [--sizes 1000 10000] [--clip-seconds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from musicrec.io import load_params, replace_section

STAGES = ("synthesize", "validate", "features", "split", "baselines", "wmf", "evaluate")
MEASURED = ("features", "evaluate")


def project_params(n_songs: int, clip_seconds: float) -> dict:
    """The default params with a world of ``n_songs`` songs and users and short clips."""
    params = load_params(Path("params.yaml"))
    params["data"]["root"] = "data/synthetic"
    params["synthesize"].update(
        n_songs=n_songs, n_users=n_songs, clip_seconds=clip_seconds, n_jobs=2
    )
    params["validate"]["min_seconds"] = min(params["validate"]["min_seconds"], clip_seconds / 2)
    params["features"].update(clip_seconds=clip_seconds, n_jobs=2)
    return params


def run_stage(stage: str, project: Path) -> tuple[float, float]:
    """Run ``musicrec <stage>`` in ``project``; its wall seconds and peak RSS in MB."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    # librosa's numba code compiles once into this checkout's cache, not once per world.
    env.setdefault("NUMBA_CACHE_DIR", str(Path(".cache/numba").resolve()))
    start = time.perf_counter()
    with open(project / f"{stage}.log", "w") as log:
        child = subprocess.Popen(["musicrec", stage], cwd=project, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"musicrec {stage} failed:\n{(project / f'{stage}.log').read_text()}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in kB on Linux


def measure(n_songs: int, clip_seconds: float, folder: Path) -> dict[str, tuple[float, float]]:
    project = folder / f"world_{n_songs}"
    project.mkdir()
    (project / "params.yaml").write_text(
        yaml.safe_dump(project_params(n_songs, clip_seconds), sort_keys=False)
    )
    results = {}
    for stage in STAGES:
        results[stage] = run_stage(stage, project)
        print(f"{n_songs} songs: {stage} {results[stage][0]:.1f} s, {results[stage][1]:.0f} MB")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    args = parser.parse_args(argv)
    small, large = args.sizes
    with tempfile.TemporaryDirectory() as folder:
        results = {n: measure(n, args.clip_seconds, Path(folder)) for n in (small, large)}
    lines = [
        "## Stage memory as the catalogue grows",
        "",
        f"`python benchmarks/stage_memory.py --sizes {small} {large} --clip-seconds "
        f"{args.clip_seconds:g}`: synthetic worlds of that many songs ({args.clip_seconds:g}-s "
        "clips) and users; each stage a process of its own, peak RSS from `wait4`.",
        "",
        f"| stage | {small:,} songs: s / peak MB | {large:,} songs: s / peak MB | peak ratio |",
        "|---|---|---|---|",
    ]
    for stage in STAGES:
        (ta, ma), (tb, mb) = results[small][stage], results[large][stage]
        bold = "**" if stage in MEASURED else ""
        lines.append(
            f"| {bold}{stage}{bold} | {ta:.1f} / {ma:.0f} | {tb:.1f} / {mb:.0f} | {mb / ma:.2f} |"
        )
    replace_section(args.out, "stage_memory", "\n".join(lines))
    print("\n".join(lines[4:]))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
