"""The scaling run: each stage's wall time and peak memory as the catalogue grows.

For each size, a project folder gets the default ``params.yaml`` with the synthetic world set to
that many songs of short clips (``--clip-seconds``) and as many users, and the stages run in
order as separate processes: ``musicrec synthesize``, ``validate``, ``features``, ``split``,
``baselines``, ``wmf``, ``evaluate`` (the four reference models, enough to load evaluate as the
full pipeline does). The trained models (cnn, dbn, bow) are left out: their cost is epochs x
songs, with the number of epochs a parameter, and ``benchmarks/cnn_throughput.py`` gives their
per-window rate. Each stage's peak RSS comes from ``wait4``'s resource usage of its own process
(the largest of it and the worker processes it waited for).

``evaluate`` scores ``--max-users`` sampled users per split (``evaluate.max_users``); scoring
every user is users x songs, which is songs squared when users grow with songs.

Results are kept per stage in ``--workdir`` (default: a temporary folder), so a run that was
stopped resumes where it was. The table (with the log-log slope between the two largest sizes:
1 is linear) goes to the ``scaling`` section of ``reports/benchmarks.md`` and the log-log plot to
``reports/benchmark_plots/scaling.png``.

    python benchmarks/scaling.py [--sizes 1000 10000 100000] [--clip-seconds 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from musicrec.io import load_params, replace_section

STAGES = ("synthesize", "validate", "features", "split", "baselines", "wmf", "evaluate")
PLOT = Path("reports/benchmark_plots/scaling.png")


def project_params(n_songs: int, clip_seconds: float, max_users: int) -> dict:
    """The default params with a world of ``n_songs`` songs and users and short clips."""
    params = load_params(Path("params.yaml"))
    params["data"]["root"] = "data/synthetic"
    params["synthesize"].update(
        n_songs=n_songs, n_users=n_songs, clip_seconds=clip_seconds, n_jobs=2
    )
    params["validate"]["min_seconds"] = min(params["validate"]["min_seconds"], clip_seconds / 2)
    params["features"].update(clip_seconds=clip_seconds, n_jobs=2)
    params["evaluate"]["max_users"] = max_users
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


def measure(
    n_songs: int, clip_seconds: float, max_users: int, folder: Path
) -> dict[str, tuple[float, float]]:
    """Every stage's (seconds, peak MB) on a world of ``n_songs``; stages already measured in
    ``folder`` (``results.json``, with the same params) are not run again."""
    project = folder / f"world_{n_songs}"
    project.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_dump(project_params(n_songs, clip_seconds, max_users), sort_keys=False)
    store = project / "results.json"
    if not (project / "params.yaml").exists() or (project / "params.yaml").read_text() != params:
        (project / "params.yaml").write_text(params)
        store.unlink(missing_ok=True)
    results = json.loads(store.read_text()) if store.exists() else {}
    for stage in STAGES:
        if stage not in results:
            results[stage] = run_stage(stage, project)
            store.write_text(json.dumps(results))  # a stopped run resumes after this stage
        seconds, peak = results[stage]
        print(f"{n_songs} songs: {stage} {seconds:.1f} s, {peak:.0f} MB", flush=True)
    return {stage: tuple(results[stage]) for stage in STAGES}


def slope(sizes: list[int], values: list[float]) -> float:
    """The log-log slope between the two largest sizes: 1 is linear, 2 quadratic."""
    return math.log(values[-1] / values[-2]) / math.log(sizes[-1] / sizes[-2])


def table(results: dict[int, dict[str, tuple[float, float]]]) -> list[str]:
    """Markdown rows: each stage's seconds / peak MB per size and the two slopes."""
    sizes = sorted(results)
    head = " | ".join(f"{n:,} songs: s / MB" for n in sizes)
    lines = [f"| stage | {head} | slope, time | slope, memory |", "|---" * (len(sizes) + 3) + "|"]
    for stage in STAGES:
        cells = " | ".join(
            f"{results[n][stage][0]:.1f} / {results[n][stage][1]:.0f}" for n in sizes
        )
        times = [results[n][stage][0] for n in sizes]
        peaks = [results[n][stage][1] for n in sizes]
        lines.append(
            f"| {stage} | {cells} | {slope(sizes, times):.2f} | {slope(sizes, peaks):.2f} |"
        )
    return lines


def plot(results: dict[int, dict[str, tuple[float, float]]], path: Path) -> None:
    """Two log-log panels, wall time and peak memory against songs, a line per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    labels = ("wall time (s)", "peak RSS (MB)")
    for column, (axis, label) in enumerate(zip(axes, labels, strict=True)):
        for stage in STAGES:
            axis.plot(sizes, [results[n][stage][column] for n in sizes], "o-", label=stage)
        # A line of slope 1 through the smallest size's median: what linear growth looks like.
        start = sorted(results[sizes[0]][s][column] for s in STAGES)[len(STAGES) // 2]
        axis.plot(sizes, [start * n / sizes[0] for n in sizes], "k--", lw=1, label="linear")
        axis.set(xscale="log", yscale="log", xlabel="songs (= users)", ylabel=label)
        axis.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle("Each stage's cost as the catalogue grows (log-log)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--clip-seconds", type=float, default=1.0)
    parser.add_argument("--max-users", type=int, default=2000, help="evaluate.max_users")
    parser.add_argument("--workdir", type=Path, help="keep the worlds here and resume from it")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    if len(args.sizes) < 2:
        parser.error("--sizes needs at least two sizes")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.workdir or Path(scratch)
        results = {
            n: measure(n, args.clip_seconds, args.max_users, folder) for n in sorted(args.sizes)
        }
    plot(results, args.plot)
    sizes = " ".join(str(n) for n in sorted(args.sizes))
    lines = [
        "## Scaling run",
        "",
        f"`python benchmarks/scaling.py --sizes {sizes} --clip-seconds {args.clip_seconds:g} "
        f"--max-users {args.max_users}` on {os.cpu_count()} cores: synthetic worlds of that many "
        f"songs ({args.clip_seconds:g}-s clips) and as many users; each stage a process of its "
        f"own, peak RSS from `wait4`; `evaluate` scores {args.max_users:,} sampled users per "
        "split. Slopes are log-log between the two largest sizes (1: linear).",
        "",
        *table(results),
        "",
        f"![scaling]({os.path.relpath(args.plot, args.out.parent)})",
    ]
    replace_section(args.out, "scaling", "\n".join(lines))
    print("\n".join(lines[4:]))
    print(f"-> {args.out}, {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
