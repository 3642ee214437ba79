"""Split stability: does a verdict survive a new draw of the split?

Runs the whole pipeline (``scripts/repro.sh``, as ``make repro`` does) on one world at several
``split.seed`` values and nothing else changed, then reports, per deployable model and split:

- the mean mAP@k of each seed and their spread (largest minus smallest);
- the coverage of each seed's 95% interval over the *other* seeds' means: of the ordered pairs
  (seed a, seed b), in how many a's interval holds b's mean, for evaluate's intervals (users
  and songs resampled) and for intervals that resample users only (recomputed here from the
  per-user values, as evaluate made them before). An interval that stands for the uncertainty
  a user cares about (which songs and users a catalogue happens to have) covers another
  draw's mean most of the time; one that counts only the users of one draw does not;
- how many Findings of the report keep their verdict (ahead, behind or no clear difference,
  by the paired interval) on every seed, which change, and how many reverse (ahead on one
  seed, behind on another).

Each seed runs in its own clone of this repository's last commit under ``--workdir`` (the
virtual environment and the feature cache are shared: features do not depend on the split), and
its results are kept there, so a stopped run resumes. The table goes to the
``split_stability_<world>`` section of ``reports/benchmarks.md``.

    python benchmarks/split_stability.py --world synthetic            # seeds 11 12 13
    python benchmarks/split_stability.py --world real --root data/real_world --seeds 11 12 13
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from musicrec import registry
from musicrec.io import replace_section
from musicrec.metrics import Resamples, bootstrap_interval
from musicrec.report import VERDICT_WORDS, findings_section

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SEEDS = (11, 12, 13)
SPLITS = ("warm", "cold", "cold_new_artist", "all", "cold_user")
VERDICT = re.compile("|".join(re.escape(words) for words in VERDICT_WORDS.values()))


def run_seed(repo: Path, project: Path, root: str, seed: int) -> dict:
    """The pipeline on ``root`` with ``split.seed: seed`` in a clone ``project`` of ``repo``.

    Returns
    -------
    dict
        ``seed``, ``seconds``, ``metrics`` (the full table, model -> split -> metric -> value),
        ``intervals`` (model -> split -> metric -> [low, high]), ``paired`` (evaluate's paired
        intervals) and ``users_only`` (:func:`users_only_intervals`).
    """
    subprocess.run(["git", "clone", "--quiet", str(repo), str(project)], check=True)
    (project / ".venv").symlink_to(repo / ".venv")
    (project / ".cache").mkdir()
    (repo / ".cache" / "features").mkdir(parents=True, exist_ok=True)
    (project / ".cache" / "features").symlink_to(repo / ".cache" / "features")
    source = (repo / root).resolve()
    if source.is_dir() and root not in pipeline_outputs(project):  # the real-audio world
        # (a world the pipeline builds, the synthetic one, is built in the clone itself)
        (project / root).parent.mkdir(parents=True, exist_ok=True)
        (project / root).symlink_to(source)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["root"] = root
    params["split"]["seed"] = seed
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, WANDB_MODE="disabled")  # tracking is not what is measured
    started = time.perf_counter()
    with open(project / "repro.log", "w") as log:
        done = subprocess.run(
            ["bash", "scripts/repro.sh"], cwd=project, env=env, stdout=log, stderr=log
        )
    if done.returncode != 0:
        tail = (project / "repro.log").read_text()[-2000:]
        raise RuntimeError(f"the pipeline failed at split.seed {seed}:\n{tail}")
    evaluation = project / "reports" / "evaluation"
    return {
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "metrics": json.loads((evaluation / "metrics.json").read_text()),
        "intervals": json.loads((evaluation / "intervals.json").read_text()),
        "paired": json.loads((evaluation / "paired.json").read_text()),
        "users_only": users_only_intervals(project / "data" / "evaluation", params["evaluate"]),
    }


def users_only_intervals(per_user_dir: Path, evaluate: dict) -> dict:
    """95% intervals that resample users only, of every model's mAP on every split, from the
    per-user values evaluate stored (``data/evaluation/<split>.npz``): model -> split ->
    metric -> [low, high]. The same number of resamples and seed as evaluate."""
    metric = registry.map_key(int(evaluate["map_k"]))
    out: dict = {}
    for path in sorted(per_user_dir.glob("*.npz")):
        with np.load(path) as per_user:
            rng = np.random.default_rng(int(evaluate["seed"]))
            resamples = Resamples.draw(rng, int(evaluate["bootstrap"]), len(per_user["users"]))
            for key in per_user.files:
                model, _, name = key.rpartition(":")
                if name != metric:
                    continue
                values = per_user[key].astype(np.float64)
                values = np.nan_to_num(values, nan=np.nanmean(values))
                low, high = bootstrap_interval(values, resamples)
                out.setdefault(model, {}).setdefault(path.stem, {})[metric] = [low, high]
    return out


def pipeline_outputs(project: Path) -> set[str]:
    """The paths dvc.yaml's stages write (``data/synthetic`` is ``synthesize``'s)."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return {
        next(iter(out)) if isinstance(out, dict) else out
        for stage in stages.values()
        for out in stage.get("outs", [])
    }


def coverage(means: list[float], intervals: list[tuple[float, float]]) -> tuple[int, int]:
    """Of the ordered pairs (a, b) of distinct seeds, in how many a's interval holds b's mean.

    Parameters
    ----------
    means : list of float [length n_seeds]
    intervals : list of (low, high) [length n_seeds]

    Returns
    -------
    (covered, pairs) : tuple of int
    """
    pairs = list(itertools.permutations(range(len(means)), 2))
    covered = sum(intervals[a][0] <= means[b] <= intervals[a][1] for a, b in pairs)
    return covered, len(pairs)


def verdicts(means: dict, intervals: dict, paired: dict) -> dict[str, str]:
    """The report's Findings as finding -> verdict words (the text before a finding's first
    colon names it, numbered where several share it, as the report lists them in one order;
    a finding with no verdict is left out)."""
    found: dict[str, str] = {}
    seen: dict[str, int] = {}
    for line in findings_section(means, intervals, paired).splitlines():
        match = VERDICT.search(line)
        if line.startswith("- ") and match:
            name = line[2:].split(":", 1)[0]
            seen[name] = seen.get(name, 0) + 1
            found[name if seen[name] == 1 else f"{name} ({seen[name]})"] = match.group(0)
    return found


def analyse(results: list[dict], models: tuple[str, ...], metric: str) -> dict:
    """Spread and coverage per (model, split), and the Findings' verdicts per seed.

    Returns
    -------
    dict
        ``rows``: (model, split, means per seed, spread, covered, pairs) for every deployable
        model and split all seeds scored; ``coverage``: split -> (covered, pairs) pooled over
        models, for evaluate's intervals, and ``users_only`` the same for users-only
        intervals; ``findings``: finding -> verdict per seed (those on every seed).
    """
    rows, pooled, pooled_users = [], {}, {}
    for model, split in itertools.product(models, SPLITS):
        if not all(split in r["metrics"].get(model, {}) for r in results):
            continue
        means = [r["metrics"][model][split][metric] for r in results]
        bounds = [tuple(r["intervals"][model][split][metric]) for r in results]
        covered, pairs = coverage(means, bounds)
        rows.append((model, split, means, max(means) - min(means), covered, pairs))
        total = pooled.get(split, (0, 0))
        pooled[split] = (total[0] + covered, total[1] + pairs)
        if all(split in r.get("users_only", {}).get(model, {}) for r in results):
            users = [tuple(r["users_only"][model][split][metric]) for r in results]
            covered, pairs = coverage(means, users)
            total = pooled_users.get(split, (0, 0))
            pooled_users[split] = (total[0] + covered, total[1] + pairs)
    per_seed = [verdicts(r["metrics"], r["intervals"], r.get("paired", {})) for r in results]
    common = set.intersection(*(set(v) for v in per_seed)) if per_seed else set()
    findings = {name: [v[name] for v in per_seed] for name in sorted(common)}
    return {"rows": rows, "coverage": pooled, "users_only": pooled_users, "findings": findings}


def reversed_findings(findings: dict[str, list[str]]) -> list[str]:
    """The findings "ahead" on one seed and "behind" on another."""
    return [
        name for name, v in findings.items() if VERDICT_WORDS[1] in v and VERDICT_WORDS[-1] in v
    ]


def table(world: str, results: list[dict], analysis: dict, metric: str, command: str = "") -> str:
    """The Markdown section for ``reports/benchmarks.md``; ``command`` is the one that ran."""
    seeds = [r["seed"] for r in results]
    times = ", ".join(f"{r['seconds']:.0f} s" for r in results)
    lines = [
        f"### Split stability: the {world} world, `split.seed` {', '.join(map(str, seeds))}",
        "",
        f"`{command or 'python benchmarks/split_stability.py --world ' + world}` (whole "
        "pipeline per seed: "
        f"{times}). Per deployable model and "
        f"split: {metric} per seed, the spread of those means, and how many ordered pairs of "
        "seeds (a, b) have b's mean inside a's 95% interval: evaluate's (users and songs "
        "resampled) and, for comparison, intervals that resample users only.",
        "",
        "| split | evaluate's intervals (users and songs) | users-only intervals |",
        "|---|---|---|",
    ]
    users_only = analysis.get("users_only", {})
    for split, (covered, pairs) in analysis["coverage"].items():
        old = users_only.get(split)
        old_text = f"{old[0]} of {old[1]} ({old[0] / old[1]:.0%})" if old else "n/a"
        lines.append(f"| {split} | {covered} of {pairs} ({covered / pairs:.0%}) | {old_text} |")
    lines += [
        "",
        "| model | split | " + " | ".join(f"seed {s}" for s in seeds) + " | spread | covered |",
        "|---|---|" + "---|" * len(seeds) + "---|---|",
    ]
    for model, split, means, spread, covered, pairs in analysis["rows"]:
        values = " | ".join(f"{m:.4f}" for m in means)
        lines.append(f"| {model} | {split} | {values} | {spread:.4f} | {covered}/{pairs} |")
    findings = analysis["findings"]
    kept = [name for name, v in findings.items() if len(set(v)) == 1]
    reversals = reversed_findings(findings)
    lines += [
        "",
        f"Findings that keep their verdict on every seed: {len(kept)} of {len(findings)}; "
        f"reversed (ahead on one seed, behind on another): {len(reversals)}.",
    ]
    for name, v in findings.items():
        if len(set(v)) > 1:
            lines.append(f"- changes: {name}: " + "; ".join(v))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/split_stability.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--world", default="synthetic", help="its name in the table")
    parser.add_argument(
        "--root",
        default=None,
        help="the data folder, relative to the project (default: params.yaml's data.root)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--workdir", type=Path, help="runs kept here (default: a temporary)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks.md")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("--seeds: at least two, to compare one draw with another")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    root = args.root or params["data"]["root"]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="musicrec-stability-"))
    results = []
    (workdir / args.world).mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        kept = workdir / args.world / f"seed_{seed}.json"
        if kept.exists():
            result = json.loads(kept.read_text())
            if {"paired", "users_only"} <= result.keys():
                results.append(result)
                continue
            # kept by an older version of this script: run that seed again
            shutil.rmtree(workdir / args.world / f"seed_{seed}", ignore_errors=True)
        print(f"split_stability: {args.world}, split.seed {seed} ...", flush=True)
        result = run_seed(REPO, workdir / args.world / f"seed_{seed}", root, seed)
        kept.write_text(json.dumps(result))
        results.append(result)
    any_split = next(iter(next(iter(results[0]["metrics"].values())).values()))
    metric = registry.map_key_in(any_split)
    analysis = analyse(results, registry.deployable(), metric)
    command = f"python benchmarks/split_stability.py --world {args.world}" + (
        f" --root {args.root}" if args.root else ""
    )
    body = table(args.world, results, analysis, metric, command)
    replace_section(args.out, f"split_stability_{args.world}", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
