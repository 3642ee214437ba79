"""Stage ``report``: ``reports/report.md`` and a self-contained ``reports/report.html``.

The comparison table (model x split x metric, 95% intervals, mAP@500 as a fraction of the upper
bound), PNG plots made with matplotlib (recall@k per split, mAP@500 with intervals, the data's
play-count and popularity distributions), the validation summary and each stage's wall time.
The HTML embeds its images and style: it loads nothing from the network.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from musicrec import registry  # noqa: E402
from musicrec.io import atomic_path, glob_outputs, read_json  # noqa: E402
from musicrec.stage import stage_parser
from musicrec.tracking import tracked_run

SPLIT_ORDER = list(registry.SPLITS)
STAGE_ORDER = [name for name in registry.STAGE_NAMES if name != "report"]
HTML_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0;font-size:90%}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}img{max-width:100%}code{background:#f5f5f5}"""


# The figures the report writes, relative to the reports folder: the only images that
# report.html inlines (an image that the data's text smuggled into the markdown is not one).
FIGURES = {
    "recall": "figures/recall_at_k.png",
    "map": "figures/map_at_500.png",
    "data": "figures/data.png",
    "curves": "figures/training_curves.png",
}


def _references_text() -> str:
    """What the report says of the references (the registry's ``REFERENCE`` family)."""
    names = ", ".join(f"`{m}`" for m in registry.models(family=registry.REFERENCE))
    return (
        f"References ({names}) know nothing or saw the held-out plays: they are yardsticks, "
        "not deployable models, and no finding picks one as the best."
    )


def _model_order(means: dict) -> list[str]:
    first = ["upper_bound", "wmf"]
    last = ["popularity", "popularity_oracle", "random"]
    middle = sorted(m for m in means if m not in first + last)
    return [m for m in first if m in means] + middle + [m for m in last if m in means]


def comparison_table(means: dict, intervals: dict, split: str, ks: list[int]) -> str:
    """A markdown table of every model on one split, best mAP@500 first."""
    models = [m for m in _model_order(means) if split in means[m]]
    map_key = registry.map_key_in(means[models[0]][split])
    k_small = ks[0]
    k_mid = ks[min(1, len(ks) - 1)]
    columns = [
        map_key,
        "auc",
        f"ndcg@{k_small}",
        f"recall@{k_small}",
        f"recall@{k_mid}",
        f"precision@{k_small}",
        f"coverage@{k_small}",
    ]
    upper = means.get("upper_bound", {}).get(split, {}).get(map_key)
    models.sort(key=lambda m: -means[m][split][map_key])
    header = [
        "model",
        *(c if c != map_key else f"{c} [95% CI]" for c in columns),
        "% of upper bound",
        "users",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        row, ci = means[model][split], intervals.get(model, {}).get(split, {})
        cells = [md_code(model)]
        for column in columns:
            value = f"{row[column]:.4f}"
            if column in (map_key, "auc") and column in ci:
                value += f" [{ci[column][0]:.4f}, {ci[column][1]:.4f}]"
            cells.append(value)
        cells.append(f"{100 * row[map_key] / upper:.1f}%" if upper else "n/a")
        cells.append(str(row["users"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def factor_agreement_table(means: dict) -> str:
    """R^2 and cosine of content models' predicted factors for cold songs ("" if none)."""
    rows = [(m, v["cold"]) for m, v in means.items() if "r2" in v.get("cold", {})]
    if not rows:
        return ""
    lines = [
        "How close each content model's predicted factors come to the WMF factors of the "
        "cold songs (folded in from their held-out plays with the training user factors).",
        "",
        "| model | R^2 | mean cosine |",
        "|---|---|---|",
    ]
    lines += [
        f"| {md_code(m)} | {v['r2']:.3f} | {v['cosine']:.3f} |"
        for m, v in sorted(rows, key=lambda r: -r[1]["r2"])
    ]
    return "\n".join(lines)


# (the controls are the stages' REFERENCE models: never the best of a family)
CNN_MODELS = registry.models(family=registry.CONTENT, stage="cnn")
BOW_MODELS = registry.models(family=registry.CONTENT, stage="bow")
CONTENT_MODELS = registry.models(family=registry.CONTENT)
HYBRID_MODELS = registry.models(family=registry.HYBRID)


def _best(means: dict, models, split: str) -> str | None:
    present = [m for m in models if split in means.get(m, {})]
    return (
        max(present, key=lambda m: means[m][split][registry.map_key_in(means[m][split])])
        if present
        else None
    )


# How a finding words :func:`_versus`'s verdict.
VERDICT_WORDS = {
    1: "ahead, the paired interval above 0",
    -1: "behind, the paired interval below 0",
    0: "no clear difference, the paired interval holding 0",
}


def _versus(
    means: dict, intervals: dict, paired: dict, a: str, b: str, split: str
) -> tuple[str, int]:
    """``a`` against ``b`` on ``split`` (mAP@500 with intervals) and the verdict from the
    paired 95% interval of a's mAP minus b's (``paired``: split -> a -> b -> [low, high], users
    and songs resampled; :mod:`musicrec.evaluate`): 1 when it lies above 0, -1 below, 0 when
    it holds 0 or is missing."""
    key = registry.map_key_in(means[a][split])
    va, vb = means[a][split][key], means[b][split][key]
    ia = intervals.get(a, {}).get(split, {}).get(key, [va, va])
    ib = intervals.get(b, {}).get(split, {}).get(key, [vb, vb])
    difference = paired.get(split, {}).get(a, {}).get(b)
    if difference is None:
        verdict, gap = 0, "no paired interval"
    else:
        verdict = 1 if difference[0] > 0 else -1 if difference[1] < 0 else 0
        gap = f"difference {va - vb:+.4f} [{difference[0]:+.4f}, {difference[1]:+.4f}]"
    text = (
        f"{md_code(a, cell=False)} {va:.4f} [{ia[0]:.4f}, {ia[1]:.4f}] against "
        f"{md_code(b, cell=False)} {vb:.4f} [{ib[0]:.4f}, {ib[1]:.4f}], {gap}"
    )
    return text, verdict


def lift_share(means: dict, model: str, split: str) -> float | None:
    """``(m - random) / (upper_bound - random)`` of ``model``'s mAP on ``split``: the share of
    the way from knowing nothing to the factors folded in from the held-out plays."""
    try:
        key = registry.map_key_in(means[model][split])
        low, high = means["random"][split][key], means["upper_bound"][split][key]
    except KeyError:
        return None
    return (means[model][split][key] - low) / (high - low) if high > low else None


def _lift_text(means: dict, model: str, split: str) -> str:
    share = lift_share(means, model, split)
    return "" if share is None else f", lift share {share:.3f}"


def context_findings(
    means: dict, intervals: dict, paired: dict, new_artist_songs: int | None = None
) -> list:
    """The issue-18 comparisons: context against audio, the audio+context hybrid against both,
    the contrastive CNN against MSE and WPE, and new artists against the cold split."""
    lines = []
    audio = _best(means, CONTENT_MODELS, "cold")
    if audio and "cold" in means.get("context", {}):
        text, verdict = _versus(means, intervals, paired, "context", audio, "cold")
        lines.append(
            f"- Cold songs, the song's metadata (`context`) against the best audio model: "
            f"{text} ({VERDICT_WORDS[verdict]})."
        )
    if "cold" in means.get("hybrid_audio_context", {}):
        for other in [m for m in ("context", audio) if m and "cold" in means.get(m, {})]:
            text, verdict = _versus(means, intervals, paired, "hybrid_audio_context", other, "cold")
            lines.append(
                f"- Cold songs, audio and context together: {text} ({VERDICT_WORDS[verdict]})."
            )
    if "cold" in means.get("cnn_contrastive", {}):
        for other in [m for m in ("cnn_mse", "cnn_wpe") if "cold" in means.get(m, {})]:
            text, verdict = _versus(means, intervals, paired, "cnn_contrastive", other, "cold")
            lines.append(
                f"- Cold songs, InfoNCE against regression: {text} ({VERDICT_WORDS[verdict]})."
            )
    view = "cold_new_artist"
    if any(view in v for v in means.values()):
        count = f"{new_artist_songs} songs of " if new_artist_songs is not None else ""
        for model in [m for m in ("context", audio, "hybrid_audio_context") if m]:
            if view not in means.get(model, {}) or "random" not in means:
                continue
            text, verdict = _versus(means, intervals, paired, model, "random", view)
            lines.append(
                f"- New artists (`{view}`: {count}artists with no training song), against "
                f"`random`: {text} ({VERDICT_WORDS[verdict]})"
                f"{_lift_text(means, model, view)}; on all "
                f"cold songs{_lift_text(means, model, 'cold') or ' n/a'}."
            )
    return lines


def findings_section(
    means: dict, intervals: dict, paired: dict, new_artist_songs: int | None = None
) -> str:
    """Plain statements of how the reproduced models compare, and where that disagrees with
    the papers (mAP@500, 95% intervals; "ahead" and "behind" are said by the paired interval
    of the difference, ``paired`` as in :func:`_versus`)."""
    lines = []
    cnn, bow = _best(means, CNN_MODELS, "cold"), _best(means, BOW_MODELS, "cold")
    if cnn and bow:
        text, verdict = _versus(means, intervals, paired, cnn, bow, "cold")
        agrees = "as van den Oord et al. found" if verdict == 1 else "unlike van den Oord et al."
        lines.append(
            f"- Cold songs, CNN against bag-of-words: {text} ({VERDICT_WORDS[verdict]}; {agrees})."
        )
    if cnn and "hldbn" in means:
        text, verdict = _versus(means, intervals, paired, "hldbn", cnn, "cold")
        paper = (
            "this agrees with Wang and Wang, who report HLDBN ahead of the CNN"
            if verdict == 1
            else "Wang and Wang report HLDBN ahead of the CNN; here it is not"
        )
        lines.append(
            f"- Cold songs, HLDBN against the best CNN: {text} ({VERDICT_WORDS[verdict]}): {paper}."
        )
    learnt = _best(means, [m for m in CONTENT_MODELS if m != "stats_ridge"], "cold")
    if learnt and "cold" in means.get("stats_ridge", {}):
        text, verdict = _versus(means, intervals, paired, learnt, "stats_ridge", "cold")
        lines.append(
            f"- Cold songs, the best learnt audio model against ridge on the clip's plain "
            f"statistics: {text} ({VERDICT_WORDS[verdict]})."
        )
    for control in (m for m in means if m.endswith("_shuffled")):
        model = control.removesuffix("_shuffled")
        if "cold" in means.get(model, {}) and "cold" in means[control]:
            text, verdict = _versus(means, intervals, paired, model, control, "cold")
            useful = "real audio signal" if verdict == 1 else "not shown to use the audio"
            lines.append(
                f"- Cold songs, {md_code(model, cell=False)} against its shuffled control "
                f"(audio paired with other songs' factors): {text} "
                f"({VERDICT_WORDS[verdict]}: {useful})."
            )
    lines += context_findings(means, intervals, paired, new_artist_songs)
    if "hldbn" in means and "hldbn_nopretrain" in means:
        text, verdict = _versus(means, intervals, paired, "hldbn", "hldbn_nopretrain", "cold")
        lines.append(f"- Pre-training, cold songs: {text} ({VERDICT_WORDS[verdict]}).")
    hybrid = _best(means, HYBRID_MODELS, "all")
    content = _best(means, CONTENT_MODELS, "all")
    if hybrid and "wmf" in means:
        for other in [m for m in ("wmf", content) if m]:
            text, verdict = _versus(means, intervals, paired, hybrid, other, "all")
            lines.append(
                f"- The whole catalogue (`all`), best hybrid: {text} ({VERDICT_WORDS[verdict]})."
            )
    for split in SPLIT_ORDER:
        best = _best(means, [m for m in registry.deployable() if m != "popularity"], split)
        if best and split in means.get("popularity", {}):
            text, verdict = _versus(means, intervals, paired, best, "popularity", split)
            lines.append(
                f"- `{split}`, the best deployable model against popularity on the training "
                f"plays: {text} ({VERDICT_WORDS[verdict]}){_lift_text(means, best, split)}."
            )
    new_user = _best(means, ("wmf", "content_profile"), "cold_user")
    if new_user and "popularity" in means and "cold_user" in means["popularity"]:
        text, verdict = _versus(means, intervals, paired, new_user, "popularity", "cold_user")
        lines.append(f"- New users from their seed plays: {text} ({VERDICT_WORDS[verdict]}).")
    return "\n".join(lines)


def hybrid_choice_section(choice: dict) -> str:
    """Which content model the hybrids use and the CF weight, with their validation scores."""
    models = ", ".join(
        f"{md_code(m, cell=False)} {v:.4f}"
        for m, v in sorted(choice["content_validation_map"].items())
    )
    weights = ", ".join(f"{w}: {v:.4f}" for w, v in choice["weight_validation_map"].items())
    return (
        f"Content model: {md_code(choice['content_model'], cell=False)}, the best cold-like "
        f"ranking of the validation slice (mAP@500: {models}). `hybrid_weighted` gives CF the "
        f"weight {choice['weight']} ({_rule_kind(choice)}), the best on the validation task "
        "built from training plays, which mixes warm and cold-like songs as `all` does "
        f"(mAP@500 per rule: {weights})."
    )


def tuning_section(tuning_dir: Path) -> str:
    """Each search's choice (``reports/tuning/<model>.json``): its values and validation mAP
    against params.yaml's own settings."""
    lines = [
        "| model | trials | chosen | validation mAP@500 | params.yaml's |",
        "|---|---|---|---|---|",
    ]
    popularity = ""
    for path in sorted(Path(tuning_dir).glob("*.json")):
        record = read_json(path)
        if "popularity_validation_map" in record:
            popularity = popularity_text(record)
        if not record["trials"]:
            continue
        chosen = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in record["chosen"].items()
        )
        own = record["params_yaml_map"]
        own_text = f"{own:.4f}" if own is not None else "not tried"
        lines.append(
            f"| {md_code(path.stem)} | {record['trials']} | {chosen} | "
            f"{record['validation_map']:.4f} | {own_text} |"
        )
    if len(lines) == 2:
        return popularity
    searches = (
        "Settings chosen by Optuna's TPE on validation tasks of training plays only (WMF: held-"
        "out plays of warm users; content models: the validation songs, cold-like); "
        "params.yaml's own settings are the first trial.\n\n" + "\n".join(lines)
    )
    return f"{searches}\n\n{popularity}" if popularity else searches


def popularity_text(record: dict) -> str:
    """WMF's popularity weights (``tune``'s record) and each candidate's validation mAP."""
    chosen = record["chosen"]
    scores = record["popularity_validation_map"]

    def listed(name: str) -> str:
        return ", ".join(f"{value}: {score:.4f}" for value, score in scores[name].items())

    return (
        f"WMF's popularity term: weight {chosen['popularity_weight']:g} for known users "
        f"(validation mAP@500 per weight: {listed('popularity_weight')}), and "
        f"{chosen['popularity_weight']:g} + {chosen['new_user_popularity']:g} / k for a new "
        f"user with k seed plays (per gamma, on new users made of training plays: "
        f"{listed('new_user_popularity')})."
    )


def _rule_kind(choice: dict) -> str:
    kind = choice.get("weight_rule", {}).get("kind", "global")
    return "one weight for every song" if kind == "global" else "per song, from its listeners"


def model_colours(models: list[str]) -> dict[str, tuple]:
    """One colour per model, the same in every panel and figure: by the model's place in the
    registry (``tab20`` then ``Dark2`` and ``Set1``: 37 distinct colours), so a model keeps
    its colour across runs and worlds; models the registry does not know come after."""
    palette = [*plt.get_cmap("tab20").colors, *plt.get_cmap("Dark2").colors]
    palette += list(plt.get_cmap("Set1").colors)
    order = list(registry.MODEL_NAMES) + sorted(set(models) - set(registry.MODEL_NAMES))
    return {m: palette[order.index(m) % len(palette)] for m in models}


def _line_style(model: str) -> str:
    """References (the yardsticks) dashed, so they read as bounds, not contenders."""
    return "--" if model in registry.yardsticks() else "-"


def plot_recall(means: dict, ks: list[int], path: Path) -> None:
    """recall@k per split, a panel each, every model its own colour and a legend per panel
    (each panel names the models it draws)."""
    splits = [s for s in SPLIT_ORDER if any(s in v for v in means.values())]
    colours = model_colours(_model_order(means))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 7.4), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for model in _model_order(means):
            if split in means[model]:
                ax.plot(
                    ks,
                    [means[model][split][f"recall@{k}"] for k in ks],
                    marker="o",
                    markersize=3,
                    color=colours[model],
                    linestyle=_line_style(model),
                    label=model,
                )
        ax.set(xscale="log", title=f"{split}", xlabel="k", ylabel="recall@k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    _save(fig, path)


def plot_map(means: dict, intervals: dict, path: Path) -> None:
    """mAP per split with 95% intervals, a bar per model in its own colour (as in the recall
    figure), the legend beside the chart."""
    splits = [s for s in SPLIT_ORDER if any(s in v for v in means.values())]
    models = _model_order(means)
    colours = model_colours(models)
    map_key = registry.map_key_in(next(iter(means.values()))["all"])
    fig, ax = plt.subplots(figsize=(13, 4.4))
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        xs, ys, errs = [], [], [[], []]
        for i, split in enumerate(splits):
            if split in means[model]:
                value = means[model][split][map_key]
                low, high = intervals[model][split][map_key]
                xs.append(i + (j - len(models) / 2 + 0.5) * width)
                ys.append(value)
                errs[0].append(value - low)
                errs[1].append(high - value)
        hatch = "//" if model in registry.yardsticks() else None
        ax.bar(
            xs, ys, width, yerr=errs, capsize=1.5, label=model, color=colours[model], hatch=hatch
        )
    ax.set_xticks(range(len(splits)), splits)
    ax.set(ylabel=f"{map_key} (95% CI)", title=f"{map_key} per split (hatched: references)")
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_data(all_plays: sp.csr_matrix, path: Path) -> None:
    """Play counts, listeners per song (rank-frequency) and songs per user."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    counts = all_plays.data
    bins = np.unique(np.logspace(0, np.log10(counts.max() + 1), 30).astype(int))
    axes[0].hist(counts, bins=bins)
    axes[0].set(
        xscale="log",
        yscale="log",
        title="play count per (user, song)",
        xlabel="plays",
        ylabel="pairs",
    )
    listeners = np.sort(np.asarray((all_plays > 0).sum(axis=0)).ravel())[::-1]
    axes[1].loglog(np.arange(1, len(listeners) + 1), np.maximum(listeners, 0.8))
    axes[1].set(title="song popularity (rank-frequency)", xlabel="song rank", ylabel="listeners")
    per_user = np.diff(all_plays.indptr)
    axes[2].hist(
        per_user, bins=np.unique(np.logspace(0, np.log10(per_user.max() + 1), 30).astype(int))
    )
    axes[2].set(xscale="log", yscale="log", title="songs per user", xlabel="songs", ylabel="users")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_training_curves(plots_dir: Path, path: Path) -> bool:
    """Train and validation loss per epoch of every trained model (``*_loss.csv``).

    Returns False (and draws nothing) where no model has a loss curve.
    """
    curves = sorted(Path(plots_dir).glob("*_loss.csv"))
    if not curves:
        return False
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.2), squeeze=False)
    for ax, curve in zip(axes[0], curves, strict=True):
        history = pd.read_csv(curve)
        ax.plot(history["epoch"], history["train_loss"], label="train")
        ax.plot(history["epoch"], history["val_loss"], label="validation")
        best = history["val_loss"].idxmin()
        ax.axvline(history["epoch"][best], color="grey", ls=":", lw=1)
        ax.set(title=curve.stem.removesuffix("_loss"), xlabel="epoch", ylabel="loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return True


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _repairs_text(repairs: dict) -> str:
    """The play log's documented repairs, in words (empty when there were none)."""
    words = {
        "byte_order_marks_removed": "byte-order mark removed",
        "header_rows_skipped": "header row skipped",
        "zero_count_rows_dropped": "rows with 0 plays dropped",
        "duplicate_rows_summed": "duplicate rows summed into their (user, song) pair",
    }
    done = [f"{count} {words[name]}" for name, count in repairs.items() if count]
    return f" after repairs: {', '.join(done)}" if done else ""


def md_code(text: str, cell: bool = True) -> str:
    """``text`` from the data (an id, a path) as one inline code span: the fence is longer than
    any run of backticks in it (a backtick cannot end the span early) and, inside a table
    ``cell``, ``|`` is escaped (it cannot end the cell; elsewhere the backslash would show)."""
    text = str(text).replace("\n", " ")
    text = text.replace("|", "\\|") if cell else text
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_text(text: str) -> str:
    """``text`` from the data (a decoder's message) as plain text in a table cell: markdown's
    punctuation escaped, so it neither formats nor links nor ends the cell."""
    return re.sub(r"([\\`*_\[\]<>|#!~&])", r"\\\1", str(text).replace("\n", " "))


# Markdown's punctuation in running text; an underscore only where it could open or close
# emphasis, not between two letters or digits (``real_world``), where markdown never does.
_PROSE_MARKUP = re.compile(r"[\\`*\[\]<>|#!~&]|(?<![^\W_])_|_(?![^\W_])")


def md_prose(text: str) -> str:
    """``text`` from the data (a data root, a stage's reason for skipping) inside a sentence,
    escaped as :func:`md_text` does, except the underscores inside words, so that ordinary
    names read the same in report.md."""
    return _PROSE_MARKUP.sub(r"\\\g<0>", " ".join(str(text).splitlines()))


def validation_section(validation: dict) -> str:
    log, audio, dropped = validation["play_log"], validation["audio"], validation["plays_dropped"]
    lines = [
        f"Play log {md_code(log['file'], cell=False)}: {log['rows']} rows, {log['users']} users, "
        f"{log['songs']} songs, all rows valid" + _repairs_text(log.get("repairs", {})) + ".",
        f"Audio: {audio['songs_usable']} of {audio['songs_checked']} songs usable, "
        f"{audio['songs_quarantined']} quarantined; {dropped['rows']} (user, song) rows "
        f"({dropped['play_count']} plays) dropped with them.",
    ]
    if audio["quarantine"]:
        lines += ["", "| song | file | reason |", "|---|---|---|"]
        lines += [
            f"| {md_code(q['song_id'])} | {md_code(q['path'] or '-')} | {md_text(q['reasons'])} |"
            for q in audio["quarantine"][:50]
        ]
        if len(audio["quarantine"]) > 50:
            lines.append(f"\n({len(audio['quarantine']) - 50} more in reports/validation.json)")
    gate = validation.get("gate")
    if gate:
        lines += [
            "",
            f"The gate (`validate.max_*` in params.yaml; drift against "
            f"{md_text(str(gate['drift_compared_with']))}):",
            "",
            "| check | value | limit | passed |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {md_text(c['what'])} (`{name}`) | {c['value']:.1%} | {c['limit']:.1%} | "
            f"{'yes' if c['ok'] else '**no**'} |"
            for name, c in gate.items()
            if isinstance(c, dict)
        ]
    return "\n".join(lines)


def expectation_rows(ge_result: dict) -> list[dict]:
    """One row per expectation of a great-expectations suite result (``reports/validation/
    ge_<suite>.json``): its type, column, arguments, rows checked, unexpected rows and success.
    A play log validated in chunks (``chunks``) gives each expectation's counts summed over
    them, a success only if every chunk passed."""
    chunks = ge_result.get("chunks", [ge_result])
    rows: dict[str, dict] = {}
    for chunk in chunks:
        for i, result in enumerate(chunk.get("results", [])):
            config = result["expectation_config"]
            kwargs = {k: v for k, v in config["kwargs"].items() if k not in ("batch_id", "column")}
            counts = result.get("result", {})
            row = rows.setdefault(
                f"{i}",
                {
                    "expectation": config["type"],
                    "column": config["kwargs"].get("column", ""),
                    "arguments": ", ".join(f"{k}={v}" for k, v in kwargs.items()),
                    "checked": 0,
                    "unexpected": 0,
                    "success": True,
                },
            )
            row["checked"] += int(counts.get("element_count", 0))
            row["unexpected"] += int(counts.get("unexpected_count", 0))
            row["success"] = row["success"] and bool(result.get("success"))
    return list(rows.values())


def expectations_section(validation_dir: Path) -> str:
    """Every expectation great-expectations checked and its result, per suite: the offline
    rendering of its results (GE's Data Docs load their assets from CDNs)."""
    lines = []
    for path in sorted(Path(validation_dir).glob("ge_*.json")):
        rows = expectation_rows(read_json(path))
        if not rows:
            continue
        suite = path.stem.removeprefix("ge_")
        lines += [
            "",
            f"Suite `{suite}` (`{path.name}`):",
            "",
            "| expectation | column | arguments | rows checked | unexpected | passed |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {md_code(r['expectation'])} | {md_code(r['column']) if r['column'] else '-'} | "
            f"{md_text(r['arguments']) or '-'} | {r['checked']} | {r['unexpected']} | "
            f"{'yes' if r['success'] else '**no** (quarantined or refused, above)'} |"
            for r in rows
        ]
    return "\n".join(lines).strip()


def timings_section(timings_dir: Path) -> str:
    rows = []
    for stage in STAGE_ORDER:
        path = timings_dir / f"{stage}.json"
        if path.exists():
            rows.append((stage, json.loads(path.read_text())["wall_seconds"]))
    lines = ["| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in rows]
    lines.append(f"| **total** | {sum(s for _, s in rows):.1f} |")
    return "\n".join(lines)


def skipped_models_text(timings_dir: Path) -> str:
    """The models a stage skipped, with its reason (a stage's timing record ``skipped``)."""
    lines = []
    for stage in STAGE_ORDER:
        path = timings_dir / f"{stage}.json"
        if path.exists() and "skipped" in (record := json.loads(path.read_text())):
            lines.append(f"- `{stage}` skipped: {md_prose(record['skipped'])}")
    return "\n".join(lines)


def folds_text(cold_folds: dict | None) -> str:
    """How many cold folds the split dealt the songs into, and why (``split.json``), or ""."""
    if not cold_folds or cold_folds.get("count", 1) == 1:
        why = f" ({md_prose(cold_folds['why'])})" if cold_folds else ""
        return f" One cold fold{why}: the cold split is one draw of songs."
    return (
        f" {cold_folds.get('cold_songs_scored', '?')} cold songs scored in {cold_folds['count']} "
        f"folds ({md_prose(cold_folds['why'])}): each song is cold in one fold, every model is "
        "trained per fold (fold 0 is the one `recommend` serves), and the cold, all and "
        "new-artist scores pool the folds."
    )


def context_columns_text(timings_dir: Path) -> str:
    """Which songs.csv columns the context models read (their stages' timing records), or ""."""
    lines = []
    for stage in ("context", "audio_context"):
        path = timings_dir / f"{stage}.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        if record.get("columns"):
            columns = ", ".join(md_code(c, cell=False) for c in record["columns"])
            lines.append(f"- `{stage}` read the `songs.csv` columns {columns}.")
    return "\n".join(lines)


def build_report(reports: Path, split_dir: Path) -> str:
    """Write the plots and return the report's markdown (images referenced relative to it)."""
    means = read_json(reports / "evaluation" / "metrics.json")  # the full table
    intervals = read_json(reports / "evaluation" / "intervals.json")
    validation = read_json(reports / "validation.json")
    split_summary = read_json(split_dir / "split.json")
    any_split = next(iter(next(iter(means.values())).values()))
    ks = sorted(int(k.split("@")[1]) for k in any_split if k.startswith("recall@"))
    plot_recall(means, ks, reports / FIGURES["recall"])
    plot_map(means, intervals, reports / FIGURES["map"])
    plot_data(sp.load_npz(split_dir / "all.npz").tocsr(), reports / FIGURES["data"])
    has_curves = plot_training_curves(reports / "plots", reports / FIGURES["curves"])

    songs, users, pairs = split_summary["songs"], split_summary["users"], split_summary["pairs"]
    parts = [
        "# musicrec report",
        f"Data: {songs['total']} songs ({songs.get('cold', 0)} held out cold, "
        f"{songs['validation']} warm songs in the validation slice), {users['total']} users "
        f"({users.get('cold_user', 0)} held out as new users), {pairs['all']} (user, song) pairs."
        f"{folds_text(split_summary.get('cold_folds'))}",
        "Metrics are means over users with 95% intervals that resample users and songs; a "
        "Finding says ahead or behind where the paired interval of the difference excludes 0 "
        "(docs/evaluation.md). "
        f"{_references_text()} `% of upper bound` compares each model's mAP@500 with the "
        "ceiling.",
    ]
    for split in SPLIT_ORDER:
        if any(split in v for v in means.values()):
            parts += [f"## Split `{split}`", comparison_table(means, intervals, split, ks)]
    paired = read_json(reports / "evaluation" / "paired.json")
    new_artist = split_summary.get("cold_folds", {}).get(
        "new_artist_songs_scored", songs.get("new_artist")
    )  # with cold folds, the view pools every fold's new artists
    findings = findings_section(means, intervals, paired, new_artist)
    skipped = "\n".join(
        text
        for text in (
            context_columns_text(reports / "timings"),
            skipped_models_text(reports / "timings"),
        )
        if text
    )
    if skipped:
        findings = f"{findings}\n\n{skipped}" if findings else skipped
    if findings:
        parts = parts[:3] + ["## Findings", findings] + parts[3:]
    choice_path = reports / "hybrid.json"
    if choice_path.exists():
        parts += ["## Hybrid choices", hybrid_choice_section(read_json(choice_path))]
    tuning = tuning_section(reports / "tuning")
    if tuning:
        parts += ["## Tuning", tuning]
    agreement = factor_agreement_table(means)
    if agreement:
        parts += ["## Predicted song factors on cold songs", agreement]
    parts += [
        "## Plots",
        f"![recall@k per split]({FIGURES['recall']})",
        f"![mAP@500 with 95% intervals]({FIGURES['map']})",
        f"![play counts, popularity and activity]({FIGURES['data']})",
    ]
    if has_curves:
        parts += [
            "Training curves (the dotted line marks the epoch whose weights were kept):",
            f"![training curves]({FIGURES['curves']})",
        ]
    parts += [
        "## Validation",
        validation_section(validation),
        "### Every expectation",
        expectations_section(reports / "validation")
        or "(no great-expectations results in reports/validation/)",
        "## Stage wall times",
        timings_section(reports / "timings"),
    ]
    return "\n\n".join(parts) + "\n"


# The page runs no script and loads nothing: its images are inlined, its style is in the page.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def markdown_to_html(markdown: str, base: Path) -> str:
    """Render the report as one HTML page with its figures (:data:`FIGURES`, in ``base``, the
    reports folder) inlined as data URIs; any other image is left a link, which the page's
    CSP does not load."""
    from markdown_it import MarkdownIt

    # html off: raw HTML in the markdown (from ids, paths, decoder messages) is shown as text
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    inside = Path(base).resolve()

    def inline(match: re.Match) -> str:
        path = (inside / match.group(1)).resolve()
        if match.group(1) not in FIGURES.values() or not path.is_relative_to(inside):
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{REPORT_CSP}">'
        f"<title>musicrec report</title>"
        f"<style>{HTML_STYLE}</style></head><body>{body}</body></html>\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("report", __doc__, [], ("split",))
    args = parser.parse_args(argv)
    markdown = build_report(args.reports, args.split)
    with atomic_path(args.reports / "report.md") as tmp:
        tmp.write_text(markdown)
    with atomic_path(args.reports / "report.html") as tmp:
        tmp.write_text(markdown_to_html(markdown, args.reports))
    with tracked_run("report", {}) as tracker:
        tracker.log_images(glob_outputs(args.reports / "figures", "*.png"))
    print(f"report: {args.reports / 'report.md'} and {args.reports / 'report.html'}")
    return 0
