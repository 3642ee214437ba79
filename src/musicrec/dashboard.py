"""``musicrec dashboard``: one offline HTML page comparing every DVC experiment of the repository.

The page holds, for each experiment (each commit that has experiments, each of its DVC
experiments, and the workspace when its results are not yet any of those):

- a metrics table per split, sortable by clicking a column header (mAP with its 95% interval);
- the params that differ between experiments;
- the report's plots side by side;
- for two chosen experiments A and B, a paired comparison: the mean over users of B's mAP
  minus A's on the same users, with a 95% bootstrap interval that resamples users and songs,
  per model and split.

Everything is read through DVC at each experiment's revision (the full metrics table,
``reports/evaluation/metrics.json``, ``params.yaml`` and ``reports/figures/`` from git; the
per-user values in ``data/evaluation/<split>.npz`` from the DVC cache, so an experiment pulled
without its data still gets its tables). The page is self-contained: styles, the sorting script
and the PNGs are inline, and it loads nothing from the network, so it opens offline and can be
attached to a pull request or mailed.

    musicrec dashboard                          # -> reports/dashboard.html
    musicrec dashboard --compare main switch2   # paired comparison of these two
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import html
import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import yaml

from musicrec import registry
from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, refuse_output_over_inputs
from musicrec.metrics import (
    TwoWayResamples,
    entry_contributions,
    impute_missing,
    per_user_sums,
    percentile_intervals,
    two_way_means,
)

# The registry's splits, cold (the headline: songs nobody has played) first.
SPLITS = tuple(sorted(registry.SPLITS, key=lambda split: split != "cold"))
# Columns of the metrics tables, by metric name prefix, in this order.
COLUMN_PREFIXES = ("map@", "auc", "ndcg@", "recall@", "r2", "cosine", "users")
FIGURES = ("map_at_500.png", "recall_at_k.png", "training_curves.png", "data.png")


@dataclass
class Experiment:
    """One experiment's results as read at its revision.

    name : str  the DVC experiment name, the branch name of a commit, or ``workspace``.
    rev : str  the full commit sha (``workspace`` for the working tree).
    baseline : str  the short sha of the commit the experiment started from.
    params : dict  flattened params.yaml, ``section.key`` -> value.
    metrics : dict  model -> split -> metric -> value (``reports/evaluation/metrics.json``).
    intervals : dict  model -> split -> metric -> [low, high].
    figures : dict  file name -> PNG bytes.
    """

    name: str
    rev: str
    baseline: str
    params: dict[str, Any]
    metrics: dict
    intervals: dict
    figures: dict[str, bytes] = field(default_factory=dict)

    @property
    def label(self) -> str:
        short = self.rev[:7] if self.rev != "workspace" else "workspace"
        return self.name if self.name == short else f"{self.name} ({short})"


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _read(fs, path: str, binary: bool = False) -> bytes | str | None:
    """A file at the filesystem's revision, or None where it does not exist there."""
    try:
        with fs.open(path, mode="rb" if binary else "r") as handle:
            return handle.read()
    except OSError:  # FileNotFoundError included
        return None


@functools.cache
def _filesystem(root: Path, rev: str):
    """One DVC filesystem per revision, shared by the metrics, figures and per-user reads."""
    from dvc.api import DVCFileSystem

    return DVCFileSystem(str(root), rev=None if rev == "workspace" else rev)


def read_experiment(root: Path, name: str, rev: str, baseline: str) -> Experiment | None:
    """Read one experiment's params, metrics and figures; None if it has no metrics."""
    fs = _filesystem(root, rev)
    # The full table; a revision from before it moved has it at the headline's path.
    metrics_text = _read(fs, registry.FULL_METRICS) or _read(fs, registry.HEADLINE_METRICS)
    if not metrics_text:
        return None
    params_text = _read(fs, "params.yaml") or "{}"
    intervals_text = _read(fs, "reports/evaluation/intervals.json") or "{}"
    figures = {}
    for figure in FIGURES:
        data = _read(fs, f"reports/figures/{figure}", binary=True)
        if data:
            figures[figure] = data
    return Experiment(
        name=name,
        rev=rev,
        baseline=baseline,
        params=flatten(yaml.safe_load(params_text) or {}),
        metrics=read_metric_table(metrics_text, f"{name}: {registry.FULL_METRICS}", _is_number),
        intervals=read_metric_table(
            intervals_text, f"{name}: reports/evaluation/intervals.json", _is_interval
        ),
        figures=figures,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_interval(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))


def read_metric_table(text: str, where: str, valid: Callable[[Any], bool]) -> dict:
    """A model -> split -> metric -> value table from JSON ``text``, keeping only the values
    ``valid`` accepts; each left out is named on stderr, so one odd experiment (another
    version's table, a hand edit) neither breaks the page nor shows as a number.

    Raises
    ------
    MusicrecError
        If ``text`` is not JSON or not a table of that shape (``where`` names the file).
    """
    try:
        tree = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MusicrecError(
            f"{where}:{exc.lineno}: not JSON ({exc.msg}); restore the file from the stage "
            "that writes it (`dvc repro evaluate`)"
        ) from exc
    if not isinstance(tree, dict):
        raise MusicrecError(f"{where}: expected a model -> split -> metric table")
    table: dict = {}
    for model, by_split in tree.items():
        for split, values in (by_split if isinstance(by_split, dict) else {"?": None}).items():
            if not isinstance(values, dict):
                print(f"dashboard: {where}: {model}/{split}: not a table", file=sys.stderr)
                continue
            for metric, value in values.items():
                if valid(value):
                    table.setdefault(model, {}).setdefault(split, {})[metric] = value
                else:
                    print(
                        f"dashboard: {where}: {model}/{split}/{metric} is {value!r:.60}, not a "
                        "number: left out",
                        file=sys.stderr,
                    )
    return table


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise MusicrecError(
            f"git {' '.join(args)} failed in {root}: {result.stderr.strip()}; the dashboard "
            "compares DVC experiments, which need a git repository with at least one commit"
        )
    return result.stdout.strip()


def _commit_name(root: Path, sha: str) -> str:
    """The branch name pointing at a commit, else its short sha."""
    names = _git(root, "branch", "--format=%(refname:short)", "--points-at", sha).split()
    return names[0] if names else sha[:7]


def collect_experiments(root: Path) -> list[Experiment]:
    """Every experiment of the repository with metrics: commits, their DVC experiments, workspace.

    The workspace is kept only where its metrics differ from every committed result (after
    ``dvc exp run`` the workspace holds the experiment's results, which would be listed twice).
    """
    from dvc.repo import Repo

    head = _git(root, "rev-parse", "HEAD")
    with Repo(str(root)) as repo:
        by_baseline = repo.experiments.ls(all_commits=True)
    baselines = [head] + [sha for sha in by_baseline if sha != head]
    experiments: list[Experiment] = []
    for baseline in baselines:
        short = baseline[:7]
        # The commit, then its experiments in the order they were made.
        children = sorted(
            by_baseline.get(baseline, []),
            key=lambda entry: int(_git(root, "log", "-1", "--format=%ct", entry[1]) or 0),
        )
        entries = [(_commit_name(root, baseline), baseline)] + children
        for name, sha in entries:
            found = read_experiment(root, name, sha, short)
            if found is not None:
                experiments.append(found)
    workspace = read_experiment(root, "workspace", "workspace", head[:7])
    if workspace is not None and all(workspace.metrics != e.metrics for e in experiments):
        experiments.append(workspace)
    if not experiments:
        raise MusicrecError(
            f"no experiment in {root} has reports/evaluation/metrics.json; run `make repro` (or "
            "`dvc repro`) first, then `dvc exp run -S ...` for variants"
        )
    return experiments


def differing_params(experiments: list[Experiment]) -> dict[str, list[Any]]:
    """``section.key`` -> the value in each experiment, for keys whose values differ."""
    keys = sorted(set().union(*(e.params for e in experiments)))
    table = {}
    for key in keys:
        values = [e.params.get(key) for e in experiments]
        if any(v != values[0] for v in values[1:]):
            table[key] = values
    return table


def find_experiment(experiments: list[Experiment], wanted: str) -> Experiment:
    """An experiment by name, label or (prefix of) its sha; a clear error listing the choices."""
    for experiment in experiments:
        if wanted in (experiment.name, experiment.label) or (
            len(wanted) >= 4 and experiment.rev.startswith(wanted)
        ):
            return experiment
    choices = ", ".join(e.label for e in experiments)
    raise MusicrecError(f"no experiment named {wanted!r}; the repository has: {choices}")


def load_per_user(root: Path, experiment: Experiment, split: str) -> dict[str, np.ndarray] | None:
    """The per-user values of a split (``data/evaluation/<split>.npz``), or None if absent."""
    data = _read(_filesystem(root, experiment.rev), f"data/evaluation/{split}.npz", binary=True)
    if data is None:
        return None
    with np.load(io.BytesIO(data)) as npz:
        return {key: npz[key] for key in npz.files}


@dataclass
class PairedDifference:
    """B minus A on the users both scored: the mean over users and its 95% interval."""

    model: str
    split: str
    mean_a: float
    mean_b: float
    difference: float
    low: float
    high: float
    users: int

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "B better"
        if self.high < 0:
            return "A better"
        return "no clear difference"


def entry_values(per_user: dict[str, np.ndarray], model: str, metric: str) -> np.ndarray:
    """Each relevant entry's contribution to ``model``'s ``metric`` [shape=(n_entries,)],
    recomputed from the ranks ``evaluate`` stored (:func:`musicrec.metrics.entry_contributions`),
    NaN users imputed as evaluate does. ``metric``: ``map@K``, ``auc``, or ``ndcg``,
    ``recall`` or ``precision`` ``@k``."""
    users, entry_users = per_user["users"], per_user["entry_users"]
    order = np.argsort(users, kind="stable")
    rows = order[np.searchsorted(users[order], entry_users)]
    grouped = np.argsort(rows, kind="stable")  # entry_contributions wants a user's entries together
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(users)))])
    relevant = sp.csr_matrix(
        (np.ones(len(rows)), np.zeros(len(rows), np.int64), indptr), shape=(len(users), 1)
    )
    name, _, cut = metric.partition("@")
    k = int(cut) if cut.isdigit() else 1
    contributions = entry_contributions(
        per_user[f"{model}:rank"][grouped], relevant, per_user["n_valid"], k, [k]
    )
    if metric not in contributions:
        raise MusicrecError(
            f"dashboard: cannot compare on {metric!r}; use map@K, auc, or ndcg, recall or "
            "precision @k"
        )
    values = np.empty(len(rows))
    values[grouped] = impute_missing(
        contributions[metric],
        per_user_sums({metric: contributions[metric]}, relevant)[metric],
        rows[grouped],
    )
    return values


def has_entries(per_user: dict[str, np.ndarray]) -> bool:
    """Whether ``evaluate`` stored per-entry ranks (it has since intervals resample songs)."""
    return {"entry_users", "entry_songs", "n_valid"} <= per_user.keys()


def paired_differences(
    per_user_a: dict[str, np.ndarray],
    per_user_b: dict[str, np.ndarray],
    split: str,
    metric: str,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> list[PairedDifference]:
    """Paired comparison of every model two experiments scored on one split, users and songs
    resampled (:func:`musicrec.metrics.two_way_means`).

    Parameters
    ----------
    per_user_a, per_user_b : dict
        ``data/evaluation/<split>.npz`` as ``evaluate`` writes it: ``users``,
        ``entry_users``, ``entry_songs``, ``n_valid`` and ``<model>:rank``.
    metric : str
        e.g. ``map@500``.

    Users are matched by index, so two experiments with different splits are compared on the
    users they share; their relevant (user, song) entries are matched too, and an entry one
    experiment lacks counts 0 there. One set of resamples of the shared users and of the songs
    either scored is shared by all models, as in evaluate.
    """
    shared = np.intersect1d(per_user_a["users"], per_user_b["users"])
    suffix = ":rank"
    models = sorted(
        key[: -len(suffix)] for key in per_user_a if key.endswith(suffix) and key in per_user_b
    )
    if len(shared) == 0 or not models:
        return []
    sides = []
    for per_user in (per_user_a, per_user_b):
        keep = np.isin(per_user["entry_users"], shared)
        values = np.stack([entry_values(per_user, m, metric)[keep] for m in models], axis=1)
        sides.append((per_user["entry_users"][keep], per_user["entry_songs"][keep], values))
    # One numbering of users (the shared ones) and songs (those either side scored), so the
    # two sides are resampled alike; each side keeps its own entries, so each one's resampled
    # mean is its own metric's (an entry one side lacks counts for nothing there).
    songs = np.unique(np.concatenate([side[1] for side in sides]))
    resamples = TwoWayResamples.draw(
        np.random.default_rng(seed), n_bootstrap, len(shared), len(songs)
    )
    resampled, observed = [], []
    for users, entry_songs, values in sides:
        rows, cols = np.searchsorted(shared, users), np.searchsorted(songs, entry_songs)
        resampled.append(two_way_means(rows, cols, values, resamples))
        observed.append(values.sum(axis=0) / len(shared))
    bounds = percentile_intervals(resampled[1] - resampled[0])
    mean_a, mean_b = observed
    return [
        PairedDifference(
            model, split, mean_a[i], mean_b[i], mean_b[i] - mean_a[i], *bounds[i], len(shared)
        )
        for i, model in enumerate(models)
    ]


# ---------------------------------------------------------------------------------------------
# The page


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;color:#222}
h1{font-size:1.6em} h2{margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;white-space:nowrap}
td.text,th.text{text-align:left}
table.sortable th{cursor:pointer;background:#f3f3f3;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:' \\25B2'}
table.sortable th[aria-sort=descending]::after{content:' \\25BC'}
tr:nth-child(even) td{background:#fafafa}
.better{color:#0a6b0a;font-weight:600} .worse{color:#a11;font-weight:600}
.figures{display:flex;gap:1em;overflow-x:auto;align-items:flex-start}
.figures figure{margin:0;flex:0 0 auto;max-width:48%} .figures img{max-width:100%}
.note{color:#555;font-size:.9em} summary{cursor:pointer;color:#335;margin-bottom:1em}
"""

# Sorting without any library: numbers by their data-value, text otherwise; a second click on
# the same header reverses the order. aria-sort on the header says the current order.
SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column];
        var value = cell.getAttribute('data-value');
        return value === null ? cell.textContent : parseFloat(value);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === 'number' && isNaN(x)) return 1;
        if (typeof y === 'number' && isNaN(y)) return -1;
        var order = x < y ? -1 : x > y ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def csp_hash(source: str) -> str:
    """The CSP source ``'sha256-<base64>'`` that lets an inline ``<script>`` or ``<style>``
    whose text is exactly ``source`` run or apply."""
    digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
    return f"'sha256-{digest}'"


# The browser itself refuses anything but data: images and this page's own style and script,
# named by their hashes: an injected one has another hash ('unsafe-inline' would run it).
CSP = (
    f"default-src 'none'; img-src data:; style-src {csp_hash(STYLE)}; script-src {csp_hash(SCRIPT)}"
)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _metric_columns(experiments: list[Experiment], split: str) -> list[str]:
    names = {
        metric
        for e in experiments
        for by_split in e.metrics.values()
        for metric in by_split.get(split, {})
    }

    def order(name: str) -> tuple[int, float]:
        prefix = next(i for i, p in enumerate(COLUMN_PREFIXES) if name.startswith(p))
        tail = name.split("@")[1] if "@" in name else "0"
        return prefix, float(tail) if tail.replace(".", "").isdigit() else 0.0

    return sorted((n for n in names if n.startswith(COLUMN_PREFIXES)), key=order)


def metrics_table(experiments: list[Experiment], split: str) -> str:
    """One sortable table: a row per (model, experiment) that has results on the split."""
    columns = _metric_columns(experiments, split)
    map_column = next((c for c in columns if c.startswith("map@")), None)
    rows = []
    for experiment in experiments:
        for model, by_split in experiment.metrics.items():
            values = by_split.get(split)
            if not values:
                continue
            cells = [
                f"<td class='text'>{_e(model)}</td>",
                f"<td class='text'>{_e(experiment.label)}</td>",
            ]
            for column in columns:
                value = values.get(column)
                if value is None:
                    cells.append("<td data-value='NaN'>–</td>")
                    continue
                shown = f"{value:.0f}" if column == "users" else f"{value:.4f}"
                interval = experiment.intervals.get(model, {}).get(split, {}).get(column)
                if column == map_column and interval:
                    shown += f" <span class='note'>[{interval[0]:.4f}, {interval[1]:.4f}]</span>"
                cells.append(f"<td data-value='{value!r}'>{shown}</td>")
            rows.append(((values.get(map_column) or 0.0), "<tr>" + "".join(cells) + "</tr>"))
    rows.sort(key=lambda row: -row[0])
    header = "<th class='text'>model</th><th class='text'>experiment</th>" + "".join(
        f"<th{' aria-sort=descending' if c == map_column else ''}>{_e(c)}</th>" for c in columns
    )
    body = "\n".join(row for _, row in rows)
    return (
        f"<table class='sortable' id='metrics-{_e(split)}'><thead><tr>{header}</tr></thead>"
        f"<tbody>\n{body}\n</tbody></table>"
    )


def overview_table(experiments: list[Experiment], split: str, metric: str) -> str:
    """One sortable table: a row per model, a column per experiment, the headline metric."""
    models = sorted({m for e in experiments for m, by in e.metrics.items() if split in by})
    rows = []
    for model in models:
        values = [e.metrics.get(model, {}).get(split, {}).get(metric) for e in experiments]
        cells = "".join(
            "<td data-value='NaN'>–</td>" if v is None else f"<td data-value='{v!r}'>{v:.4f}</td>"
            for v in values
        )
        best = max((v for v in values if v is not None), default=0.0)
        rows.append((best, f"<tr><td class='text'>{_e(model)}</td>{cells}</tr>"))
    rows.sort(key=lambda row: -row[0])
    header = "<th class='text'>model</th>" + "".join(f"<th>{_e(e.label)}</th>" for e in experiments)
    body = "\n".join(row for _, row in rows)
    return (
        f"<table class='sortable' id='overview-{_e(split)}'><thead><tr>{header}</tr></thead>"
        f"<tbody>\n{body}\n</tbody></table>"
    )


def params_table(experiments: list[Experiment]) -> str:
    differing = differing_params(experiments)
    if not differing:
        return "<p class='note'>All experiments have the same params.</p>"
    header = "<th class='text'>param</th>" + "".join(
        f"<th class='text'>{_e(e.label)}</th>" for e in experiments
    )
    rows = "".join(
        f"<tr><td class='text'>{_e(key)}</td>"
        + "".join(f"<td class='text'>{_e(v)}</td>" for v in values)
        + "</tr>"
        for key, values in differing.items()
    )
    return (
        f"<table class='sortable' id='params'><thead><tr>{header}</tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def figures_section(experiments: list[Experiment]) -> str:
    parts = []
    for figure in FIGURES:
        cells = [
            f"<figure><img alt='{_e(figure)} of {_e(e.label)}' "
            f"src='data:image/png;base64,{base64.b64encode(e.figures[figure]).decode()}'>"
            f"<figcaption>{_e(e.label)}</figcaption></figure>"
            for e in experiments
            if figure in e.figures
        ]
        if cells:
            parts.append(f"<h3>{_e(figure)}</h3><div class='figures'>{''.join(cells)}</div>")
    return "\n".join(parts) or "<p class='note'>No figures found (run the report stage).</p>"


def comparison_section(
    a: Experiment, b: Experiment, differences: list[PairedDifference], metric: str, missing: str
) -> str:
    intro = (
        f"<p>A = <b>{_e(a.label)}</b>, B = <b>{_e(b.label)}</b>. For each model and split, the "
        f"mean over users of B's {_e(metric)} minus A's on the same users, with a 95% bootstrap "
        "interval that resamples users and songs. An interval that excludes 0 is a difference "
        f"the evaluation resolves. {_e(missing)}</p>"
    )
    if not differences:
        return intro
    header = "".join(
        f"<th{' class=text' if i < 2 else ''}>{name}</th>"
        for i, name in enumerate(
            ["model", "split", f"A {metric}", f"B {metric}", "B − A", "95% interval", "users"]
        )
    )
    header += "<th class='text'>verdict</th>"
    rows = []
    for d in differences:
        css = {"B better": "better", "A better": "worse"}.get(d.verdict, "")
        rows.append(
            f"<tr><td class='text'>{_e(d.model)}</td><td class='text'>{_e(d.split)}</td>"
            f"<td data-value='{d.mean_a!r}'>{d.mean_a:.4f}</td>"
            f"<td data-value='{d.mean_b!r}'>{d.mean_b:.4f}</td>"
            f"<td data-value='{d.difference!r}'>{d.difference:+.4f}</td>"
            f"<td data-value='{d.low!r}'>[{d.low:+.4f}, {d.high:+.4f}]</td>"
            f"<td data-value='{d.users}'>{d.users}</td>"
            f"<td class='text {css}'>{d.verdict}</td></tr>"
        )
    table = (
        f"<table class='sortable' id='paired'><thead><tr>{header}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return intro + table + _forest_plot(differences, metric)


def _forest_plot(differences: list[PairedDifference], metric: str) -> str:
    """The differences with their intervals, one panel per split, as an inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    splits = [s for s in SPLITS if any(d.split == s for d in differences)]
    height = max(2.5, 0.3 * max(sum(d.split == s for d in differences) for s in splits) + 1)
    fig, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), height), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        rows = [d for d in differences if d.split == split]
        y = np.arange(len(rows))
        for row, d in zip(y, rows, strict=True):
            colour = "#0a6b0a" if d.low > 0 else "#a11" if d.high < 0 else "#555"
            errors = [[d.difference - d.low], [d.high - d.difference]]
            ax.errorbar(d.difference, row, xerr=errors, fmt="o", ms=4, color=colour, capsize=3)
        ax.axvline(0, color="#999", lw=1)
        ax.set_yticks(y, [d.model for d in rows], fontsize=8)
        ax.set_title(split)
        ax.set_xlabel(f"B − A, {metric}")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='paired differences' src='data:image/png;base64,{data}'>"


def render_dashboard(experiments: list[Experiment], comparison_html: str, metric: str) -> str:
    """The whole page: inline style and script, no external resource."""
    listing = "".join(
        f"<tr><td class='text'>{_e(e.name)}</td><td class='text'>{_e(e.rev[:7])}</td>"
        f"<td class='text'>{_e(e.baseline)}</td></tr>"
        for e in experiments
    )
    splits = [s for s in SPLITS if any(s in by for e in experiments for by in e.metrics.values())]
    tables = "\n".join(
        f"<h3>{_e(s)}</h3>{overview_table(experiments, s, metric)}"
        f"<details><summary>every metric, a row per model and experiment</summary>"
        f"{metrics_table(experiments, s)}</details>"
        for s in splits
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>musicrec experiments</title><style>{STYLE}</style></head>
<body>
<h1>musicrec: {len(experiments)} experiments compared</h1>
<p class="note">Made by <code>musicrec dashboard</code> from the DVC experiments of this
repository. Click a column header to sort; click again to reverse.</p>
<table id="experiments"><thead><tr><th class="text">experiment</th><th class="text">rev</th>
<th class="text">baseline</th></tr></thead><tbody>{listing}</tbody></table>
<h2>Metrics per split</h2>
<p class="note">{_e(metric)} of each model (rows) in each experiment (columns); below each
table, every metric with mAP's 95% bootstrap interval (users and songs resampled). Protocol:
README, "How models are scored".</p>
{tables}
<h2>Params that differ</h2>
{params_table(experiments)}
<h2>Paired comparison</h2>
{comparison_html}
<h2>Plots</h2>
{figures_section(experiments)}
<script>{SCRIPT}</script>
</body></html>
"""


def build_dashboard(
    root: Path, compare: tuple[str, str] | None, metric: str, n_bootstrap: int
) -> tuple[str, list[Experiment]]:
    """Collect the experiments and render the page; returns (html, experiments)."""
    experiments = collect_experiments(root)
    if compare is not None:
        a, b = (find_experiment(experiments, name) for name in compare)
    elif len(experiments) >= 2:
        # By default: the first listed (HEAD) against the most recent other experiment.
        a, b = experiments[0], experiments[-1]
    else:
        a = b = None
    if a is None or b is None:
        comparison = "<p class='note'>One experiment only: nothing to compare yet.</p>"
    else:
        differences, absent, stale = [], [], []
        for split in SPLITS:
            per_a, per_b = load_per_user(root, a, split), load_per_user(root, b, split)
            if per_a is None or per_b is None:
                absent.append(split)
            elif not (has_entries(per_a) and has_entries(per_b)):
                stale.append(split)
            else:
                differences += paired_differences(per_a, per_b, split, metric, n_bootstrap)
        notes = []
        if absent:
            notes.append(
                f"Per-user values missing for split(s) {', '.join(absent)}: `dvc pull` (or "
                "`dvc exp pull`) the experiments' data/evaluation to compare them."
            )
        if stale:
            notes.append(
                f"No per-song ranks for split(s) {', '.join(stale)}: an experiment was scored "
                "by a musicrec whose intervals counted users only; `dvc exp apply` it and "
                "`dvc repro evaluate` to compare it."
            )
        missing = " ".join(notes)
        comparison = comparison_section(a, b, differences, metric, missing)
    return render_dashboard(experiments, comparison, metric), experiments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="musicrec dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="the project (default: .)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/dashboard.html"),
        help="the page written (default: reports/dashboard.html)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="two experiments (name, or sha prefix) for the paired comparison "
        "(default: HEAD's results against the last experiment listed)",
    )
    parser.add_argument("--metric", default="map@500", help="paired metric (default: map@500)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args(argv)
    refuse_output_over_inputs(args.out, {"--repo": args.repo})
    if args.out.is_dir():
        raise MusicrecError(
            f"--out {args.out} is a folder; the dashboard is one HTML file: name a file, such "
            f"as {args.out / 'dashboard.html'}"
        )
    page, experiments = build_dashboard(
        args.repo.resolve(),
        tuple(args.compare) if args.compare else None,
        args.metric,
        args.bootstrap,
    )
    with atomic_path(args.out) as tmp:
        tmp.write_text(page)
    print(f"dashboard: {len(experiments)} experiments -> {args.out}")
    for experiment in experiments:
        print(f"  {experiment.label}")
    return 0
