"""The report's findings say plainly which model is ahead and where that disagrees with a paper."""

from __future__ import annotations

from pathlib import Path

from musicrec.report import VERDICT_WORDS, findings_section

AHEAD, BEHIND, NO_CLEAR = VERDICT_WORDS[1], VERDICT_WORDS[-1], VERDICT_WORDS[0]


def paired_from(means: dict, half_width: float) -> dict:
    """Paired intervals of every difference of means on a split: the difference +- half."""
    paired: dict = {}
    for a, by_split in means.items():
        for split, values in by_split.items():
            for b, other in means.items():
                if b != a and split in other:
                    d = values["map@500"] - other[split]["map@500"]
                    paired.setdefault(split, {}).setdefault(a, {})[b] = [
                        d - half_width,
                        d + half_width,
                    ]
    return paired


def _world(hldbn: float, cnn: float) -> tuple[dict, dict, dict]:
    means = {
        "cnn_wpe": {"cold": {"map@500": cnn}},
        "bow_mlp": {"cold": {"map@500": 0.09}},
        "hldbn": {"cold": {"map@500": hldbn}},
    }
    intervals = {
        name: {"cold": {"map@500": [v["cold"]["map@500"] - 0.005, v["cold"]["map@500"] + 0.005]}}
        for name, v in means.items()
    }
    return means, intervals, paired_from(means, 0.005)


def test_hldbn_behind_the_cnn_is_called_a_disagreement_with_wang_and_wang():
    text = findings_section(*_world(hldbn=0.09, cnn=0.13))
    assert "`hldbn` 0.0900" in text and BEHIND in text
    assert "difference -0.0400 [-0.0450, -0.0350]" in text
    assert "Wang and Wang report HLDBN ahead of the CNN; here it is not" in text
    assert "as van den Oord et al. found" in text  # the CNN is ahead of the bag of words


def test_hldbn_ahead_agrees_and_a_paired_interval_holding_0_is_no_clear_difference():
    assert "agrees with Wang and Wang" in findings_section(*_world(hldbn=0.15, cnn=0.13))
    text = findings_section(*_world(hldbn=0.132, cnn=0.13))
    assert NO_CLEAR in text and "here it is not" in text


def test_the_verdict_is_the_paired_intervals_not_the_overlap_of_the_two_intervals():
    means, intervals, _ = _world(hldbn=0.132, cnn=0.13)
    # the two intervals overlap, but the paired difference is tight and above 0
    paired = {"cold": {"hldbn": {"cnn_wpe": [0.001, 0.003]}}}
    text = findings_section(means, intervals, paired)
    assert "HLDBN against the best CNN" in text and f"({AHEAD})" in text
    # no paired interval: no verdict either way
    assert f"no paired interval ({NO_CLEAR})" in findings_section(means, intervals, {})


def test_no_models_no_findings():
    assert findings_section({"random": {"cold": {"map@500": 0.03}}}, {}, {}) == ""


def test_the_tuning_section_shows_each_search_against_params_own_settings(tmp_path):
    from musicrec.io import write_json
    from musicrec.report import tuning_section

    write_json(
        tmp_path / "bow_mlp.json",
        {
            "chosen": {"learning_rate": 0.00123456, "width": 128},
            "validation_map": 0.25,
            "params_yaml_map": 0.2,
            "trials": 8,
            "trace": [],
        },
    )
    write_json(
        tmp_path / "cnn_mse.json",
        {"chosen": {}, "validation_map": None, "params_yaml_map": None, "trials": 0, "trace": []},
    )
    text = tuning_section(tmp_path)
    assert "| `bow_mlp` | 8 | learning_rate 0.00123, width 128 | 0.2500 | 0.2000 |" in text
    assert "cnn_mse" not in text  # no search, nothing to show
    assert tuning_section(tmp_path / "missing") == ""


def test_each_audio_model_is_judged_against_its_shuffled_control():
    means = {
        "bow_linear": {"cold": {"map@500": 0.09}},
        "bow_linear_shuffled": {"cold": {"map@500": 0.03}},
        "stats_ridge": {"cold": {"map@500": 0.031}},
        "stats_ridge_shuffled": {"cold": {"map@500": 0.03}},
    }
    intervals = {
        name: {"cold": {"map@500": [v["cold"]["map@500"] - 0.005, v["cold"]["map@500"] + 0.005]}}
        for name, v in means.items()
    }
    text = findings_section(means, intervals, paired_from(means, 0.005))
    assert "`bow_linear` against its shuffled control" in text
    assert f"{AHEAD}: real audio signal" in text
    assert f"{NO_CLEAR}: not shown to use the audio" in text  # stats_ridge's


def test_context_audio_hybrid_contrastive_and_new_artist_findings():
    cold = {
        "random": 0.03,
        "upper_bound": 0.53,
        "context": 0.09,
        "cnn_mse": 0.11,
        "cnn_wpe": 0.10,
        "cnn_contrastive": 0.111,
        "cnn_mse_shuffled": 0.5,  # a control is never "the best audio model"
        "hybrid_audio_context": 0.155,
    }
    new = {"random": 0.05, "upper_bound": 0.55, "context": 0.052, "cnn_contrastive": 0.08}
    new["hybrid_audio_context"] = 0.08
    means = {m: {"cold": {"map@500": v}} for m, v in cold.items()}
    for m, v in new.items():
        means[m]["cold_new_artist"] = {"map@500": v}
    intervals = {
        m: {s: {"map@500": [v["map@500"] - 0.004, v["map@500"] + 0.004]} for s, v in by.items()}
        for m, by in means.items()
    }
    text = findings_section(means, intervals, paired_from(means, 0.004), new_artist_songs=104)
    assert (
        "the song's metadata (`context`) against the best audio model: `context` 0.0900 "
        "[0.0860, 0.0940] against `cnn_contrastive` 0.1110" in text
    )
    assert "`hybrid_audio_context` 0.1550 [0.1510, 0.1590] against `context`" in text
    assert (
        "InfoNCE against regression: `cnn_contrastive` 0.1110 [0.1070, 0.1150] against "
        f"`cnn_mse` 0.1100 [0.1060, 0.1140], difference +0.0010 [-0.0030, +0.0050] ({NO_CLEAR})"
        in text
    )
    # new artists: context knows nothing there; lift shares on the view and on all cold songs
    assert "(`cold_new_artist`: 104 songs of artists with no training song)" in text
    assert "`context` 0.0520 [0.0480, 0.0560] against `random` 0.0500" in text
    assert f"({NO_CLEAR}), lift share 0.004; on all cold songs, lift share 0.120" in text
    assert "`hybrid_audio_context` 0.0800" in text and "lift share 0.250" in text


def test_ids_paths_and_decoder_messages_cannot_inject_markup_into_the_report(tmp_path):
    from musicrec.report import REPORT_CSP, markdown_to_html, validation_section

    validation = {
        "play_log": {"file": "plays.tsv", "rows": 3, "users": 2, "songs": 2, "repairs": {}},
        "audio": {
            "songs_usable": 1,
            "songs_checked": 2,
            "songs_quarantined": 1,
            "quarantine": [
                {
                    "song_id": "s2`<b>x</b>",
                    "path": "audio/a<svg onload=alert(1)>.wav",
                    "reasons": "cannot be decoded (<img src=x onerror=alert(2)> | [link](http://x))",
                }
            ],
        },
        "plays_dropped": {"rows": 1, "play_count": 3},
    }
    html = markdown_to_html(validation_section(validation), tmp_path)
    assert "<svg" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;svg onload=alert(1)&gt;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<a " not in html  # no link either
    # one row of three cells: the backtick and the pipe ended neither the code span nor the cell
    row = html.split("<tbody>")[1]
    assert row.count("<td>") == 3 and "s2`&lt;b&gt;x&lt;/b&gt;" in row
    assert f'content="{REPORT_CSP}"' in html and "script" not in REPORT_CSP
    # raw HTML written into the markdown itself is shown, not run
    assert "<script>" not in markdown_to_html("<script>alert(3)</script>", tmp_path)


def test_every_model_keeps_one_colour_and_every_recall_panel_names_its_models(monkeypatch):
    import musicrec.report as report
    from musicrec import registry

    everyone = report.model_colours(list(registry.MODEL_NAMES))
    assert len(set(everyone.values())) == len(registry.MODEL_NAMES)  # no colour twice
    some = report.model_colours(["random", "cnn_mse"])
    assert some == {"random": everyone["random"], "cnn_mse": everyone["cnn_mse"]}

    ks = [10, 50]
    point = {"map@500": 0.1, "recall@10": 0.1, "recall@50": 0.2}
    means = {
        "wmf": {"warm": point, "all": point},
        "cnn_mse": {"cold": point, "all": point},
        "random": {"warm": point, "cold": point, "all": point},
    }
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig))
    report.plot_recall(means, ks, None)
    axes = figures[0].axes
    named = {ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()] for ax in axes}
    assert named == {
        "warm": ["wmf", "random"],
        "cold": ["cnn_mse", "random"],
        "all": ["wmf", "cnn_mse", "random"],
    }
    colour = {line.get_label(): line.get_color() for ax in axes for line in ax.get_lines()}
    for ax in axes:  # the same colour for a model in every panel
        for line in ax.get_lines():
            assert line.get_color() == colour[line.get_label()]
    intervals = {m: {s: {"map@500": [0.09, 0.11]} for s in v} for m, v in means.items()}
    report.plot_map(means, intervals, None)
    containers = [c for c in figures[1].axes[0].containers if hasattr(c, "patches")]
    bars = {c.get_label(): c.patches[0].get_facecolor()[:3] for c in containers}
    assert bars == {m: tuple(everyone[m][:3]) for m in means}


def test_every_expectation_is_rendered_with_counts_summed_over_chunks():
    from musicrec.report import expectation_rows

    def result(ok: bool, checked: int, bad: int) -> dict:
        return {
            "success": ok,
            "expectation_config": {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"batch_id": "b", "column": "count", "min_value": 0},
            },
            "result": {"element_count": checked, "unexpected_count": bad},
        }

    play_log = {
        "chunks": [{"results": [result(True, 500, 0)]}, {"results": [result(False, 20, 2)]}]
    }
    (row,) = expectation_rows(play_log)
    assert row == {
        "expectation": "expect_column_values_to_be_between",
        "column": "count",
        "arguments": "min_value=0",
        "checked": 520,
        "unexpected": 2,
        "success": False,
    }
    assert expectation_rows({"results": [result(True, 7, 0)]})[0]["checked"] == 7


def _hostile_reports(tmp_path):
    """A reports folder two levels under ``tmp_path`` beside a ``secret.png`` that a data
    root's ``../../secret.png`` reaches, and a stage that skipped naming that root."""
    import base64
    import json

    secret = b"\x89PNG secret bytes"
    (tmp_path / "secret.png").write_bytes(secret)
    reports = tmp_path / "project" / "reports"
    (reports / "timings").mkdir(parents=True)
    root = "data/x![a](../../secret.png)"
    record = {"wall_seconds": 1.0, "skipped": f"data.root is {root}"}
    (reports / "timings" / "synthesize.json").write_text(json.dumps(record))
    return reports, root, base64.b64encode(secret).decode()


def test_a_hostile_data_root_is_escaped_in_report_md_and_pulls_no_outside_png_into_html(
    tmp_path,
):
    from musicrec.report import markdown_to_html, skipped_models_text, validation_section

    reports, root, secret = _hostile_reports(tmp_path)
    markdown = skipped_models_text(reports / "timings")
    assert markdown == r"- `synthesize` skipped: data.root is data/x\!\[a\](../../secret.png)"
    html = markdown_to_html(markdown, reports)
    assert "<img" not in html and secret not in html and f"data.root is {root}" in html
    # The play log's path holds the root too: a backtick in it cannot end its code span.
    log = {"file": f"{root}`![b](../../secret.png)`/plays.tsv", "rows": 3, "users": 1}
    validation = {
        "play_log": log | {"songs": 1, "repairs": {}},
        "audio": {"songs_usable": 1, "songs_checked": 1, "songs_quarantined": 0, "quarantine": []},
        "plays_dropped": {"rows": 0, "play_count": 0},
    }
    html = markdown_to_html(validation_section(validation), reports)
    assert "<img" not in html and secret not in html


def test_report_html_inlines_only_the_report_s_own_figures_inside_the_reports_folder(tmp_path):
    import base64

    from musicrec.report import FIGURES, markdown_to_html

    reports, _, secret = _hostile_reports(tmp_path)
    (reports / "figures").mkdir()
    own = b"\x89PNG the report's figure"
    (reports / FIGURES["data"]).write_bytes(own)
    (reports / "figures" / "other.png").write_bytes(own)
    (reports / FIGURES["recall"]).symlink_to(tmp_path / "secret.png")  # leads outside
    html = markdown_to_html(
        f"![d]({FIGURES['data']}) ![s](../../secret.png) ![o](figures/other.png) "
        f"![r]({FIGURES['recall']})",
        reports,
    )
    assert html.count("data:image/png;base64,") == 1 and base64.b64encode(own).decode() in html
    assert secret not in html
    assert 'src="../../secret.png"' in html and 'src="figures/other.png"' in html


def test_a_hostile_model_name_stays_one_code_span_in_the_tables_and_findings():
    from musicrec.report import comparison_table, findings_section, markdown_to_html

    name = "cnn`![a](../../secret.png)`"  # a model.json's name, from dvc get
    row = {"map@500": 0.1, "auc": 0.6, "users": 9, "ndcg@10": 0.2, "recall@10": 0.3}
    row |= {"recall@50": 0.4, "precision@10": 0.05, "coverage@10": 0.5}
    means = {name: {"cold": row}, f"{name}_shuffled": {"cold": row}}
    table, findings = comparison_table(means, {}, "cold", [10, 50]), findings_section(means, {}, {})
    assert "| `` cnn`![a](../../secret.png)` `` |" in table
    assert "- Cold songs, `` cnn`![a](../../secret.png)` `` against its shuffled" in findings
    markdown = f"{table}\n\n{findings}"
    assert "<img" not in markdown_to_html(markdown, Path("."))


def test_the_tuning_section_shows_wmfs_popularity_weights_even_without_a_search(tmp_path):
    from musicrec.io import write_json
    from musicrec.report import tuning_section

    chosen = {"factors": 8, "popularity_weight": 0.5, "new_user_popularity": 2.0}
    write_json(
        tmp_path / "wmf.json",
        {
            "chosen": chosen,
            "validation_map": None,
            "params_yaml_map": None,
            "trials": 0,
            "trace": [],
            "popularity_validation_map": {
                "popularity_weight": {"0.0": 0.2, "0.5": 0.25},
                "new_user_popularity": {"0.0": 0.1, "2.0": 0.12},
            },
        },
    )
    text = tuning_section(tmp_path)
    assert (
        "weight 0.5 for known users (validation mAP@500 per weight: 0.0: 0.2000, 0.5: 0.2500)"
        in text
    )
    assert (
        "0.5 + 2 / k for a new user with k seed plays" in text
        and "0.0: 0.1000, 2.0: 0.1200" in text
    )
