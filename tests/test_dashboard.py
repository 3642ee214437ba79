"""The experiments dashboard: paired comparison, params diff, and a page that renders and sorts."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from musicrec.cli import main as musicrec
from musicrec.dashboard import (
    Experiment,
    differing_params,
    find_experiment,
    flatten,
    metrics_table,
    overview_table,
    paired_differences,
    read_metric_table,
    render_dashboard,
)
from musicrec.errors import MusicrecError


def experiment(name: str, rev: str, maps: dict[str, float], **params) -> Experiment:
    metrics = {
        model: {"cold": {"map@500": v, "auc": 0.5 + v / 2, "users": 10}}
        for model, v in maps.items()
    }
    return Experiment(name, rev, "aaaaaaa", flatten(params), metrics, {})


def test_flatten_and_differing_params():
    assert flatten({"cnn": {"dropout": 0.3, "channels": [1, 2]}, "a": 1}) == {
        "cnn.dropout": 0.3,
        "cnn.channels": [1, 2],
        "a": 1,
    }
    a = experiment("a", "1" * 40, {}, cnn={"dropout": 0.3, "seed": 0}, wmf={"factors": 32})
    b = experiment("b", "2" * 40, {}, cnn={"dropout": 0.5, "seed": 0}, wmf={"factors": 32})
    c = experiment("c", "3" * 40, {}, cnn={"dropout": 0.3, "seed": 0})  # wmf section missing
    assert differing_params([a, b, c]) == {
        "cnn.dropout": [0.3, 0.5, 0.3],
        "wmf.factors": [32, 32, None],
    }


def test_find_experiment_by_name_or_sha_and_a_clear_error():
    experiments = [experiment("main", "abcdef1234" + "0" * 30, {}), experiment("x", "f" * 40, {})]
    assert find_experiment(experiments, "x").name == "x"
    assert find_experiment(experiments, "abcdef1").name == "main"
    with pytest.raises(MusicrecError, match="no experiment named 'nope'.*main.*x"):
        find_experiment(experiments, "nope")


def _scored(users, entry_users, entry_songs, **ranks) -> dict:
    """A split's npz as evaluate writes it: one model per keyword, its entries' ranks."""
    per_user = {
        "users": np.array(users),
        "entry_users": np.array(entry_users, np.int32),
        "entry_songs": np.array(entry_songs, np.int32),
        "n_valid": np.full(len(users), 100, np.int32),
    }
    return per_user | {f"{m}:rank": np.array(r, np.int32) for m, r in ranks.items()}


def test_paired_differences_known_answers():
    # One relevant song per user: AP = 1 / (rank + 1).
    a = _scored([3, 1, 2, 0], [3, 1, 2, 0], [10, 11, 12, 13], m=[9, 4, 3, 1], n=[1, 1, 1, 1])
    a["o:rank"] = a["m:rank"]
    # B lists the same users in another order, plus one A lacks.
    b = _scored(
        [0, 1, 2, 3, 9],
        [0, 1, 2, 3, 9],
        [13, 11, 12, 10, 14],
        m=[0, 1, 1, 4, 0],  # every user gains: 1 vs .5, .5 vs .2, .5 vs .25, .2 vs .1
        n=[0, 3, 3, 1, 0],  # +.5, -.25, -.25, 0
        o=[1, 4, 3, 9, 0],  # the same ranks as A's o
    )
    m, n, o = paired_differences(a, b, "cold", "map@500", n_bootstrap=200, seed=1)
    assert (m.model, m.split, m.users) == ("m", "cold", 4)
    assert m.mean_a == pytest.approx(0.2625) and m.mean_b == pytest.approx(0.55)
    assert m.difference == pytest.approx(0.2875)
    assert 0 < m.low < m.difference < m.high and m.verdict == "B better"
    assert n.difference == pytest.approx(0.0)
    assert n.low < 0 < n.high and n.verdict == "no clear difference"
    # the same ranks: no difference under any resample
    assert (o.difference, o.low, o.high) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
    reversed_ = paired_differences(b, a, "cold", "map@500", n_bootstrap=200, seed=1)[0]
    assert reversed_.verdict == "A better" and reversed_.difference == pytest.approx(-0.2875)
    recall = paired_differences(a, b, "cold", "recall@2", n_bootstrap=50, seed=1)[0]
    assert recall.mean_a == pytest.approx(0.25) and recall.mean_b == pytest.approx(0.75)


def test_a_song_one_experiment_did_not_score_counts_0_there():
    a = _scored([0, 1], [0, 0, 1], [5, 6, 5], m=[0, 1, 0])  # user 0: two songs, AP 1
    b = _scored([0, 1], [0, 1], [5, 5], m=[0, 0])  # user 0 has song 5 only here: AP 1
    (m,) = paired_differences(a, b, "cold", "map@500", n_bootstrap=100, seed=0)
    assert m.mean_a == pytest.approx(1.0) and m.mean_b == pytest.approx(1.0)
    # Song 6 is A's only. Each side is resampled on its own entries, so every user's AP stays
    # 1 on both sides under every resample: the difference is exactly 0 throughout.
    assert (m.difference, m.low, m.high) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)


def test_has_entries_tells_an_experiment_scored_without_per_song_ranks(tmp_path):
    from musicrec.dashboard import has_entries

    assert has_entries(_scored([0], [0], [1], m=[0]))
    assert not has_entries({"users": np.array([0]), "m:map@500": np.array([0.5])})


def test_tables_put_the_best_first_and_sort_on_numbers():
    a = experiment("a", "1" * 40, {"wmf": 0.2, "cnn": 0.3, "random": 0.05})
    b = experiment("b", "2" * 40, {"wmf": 0.25, "cnn": 0.1})
    overview = overview_table([a, b], "cold", "map@500")
    models = re.findall(r"<tr><td class='text'>(\w+)</td>", overview)
    assert models == ["cnn", "wmf", "random"]
    assert "data-value='NaN'>–" in overview  # random has no result in b
    detail = metrics_table([a, b], "cold")
    assert detail.count("<tr><td") == 5 and "data-value='0.25'" in detail


def sample_page() -> str:
    a = experiment("main", "1" * 40, {"wmf": 0.2, "cnn": 0.3, "random": 0.05}, cnn={"d": 0.3})
    b = experiment("wide", "2" * 40, {"wmf": 0.25, "cnn": 0.1, "random": 0.06}, cnn={"d": 0.5})
    return render_dashboard([a, b], "<p>no comparison</p>", "map@500")


def test_page_loads_nothing_from_elsewhere():
    page = sample_page()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "cnn.d" in page  # the differing param


def test_the_csp_allows_no_unsafe_inline_and_hashes_exactly_the_page_s_script_and_style():
    import base64
    import hashlib

    page = sample_page()
    (csp,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    policy = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert "unsafe" not in csp and policy["default-src"] == "'none'"
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)  # the one of each
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert policy[directive] == f"'sha256-{digest}'", tag
    # no style or event-handler attribute, which a hash cannot allow
    assert not re.search(r"<[^>]*\s(style|on\w+)=", page)


def test_page_renders_and_sorts_in_headless_chromium(tmp_path, browser_page):
    path = tmp_path / "dashboard.html"
    path.write_text(sample_page())
    page, requests = browser_page(path)
    rows = page.locator("#overview-cold tbody tr")
    assert rows.count() == 3
    first_column = "#overview-cold tbody tr td:first-child"
    assert page.locator(first_column).all_inner_texts() == ["cnn", "wmf", "random"]
    header = page.locator("#overview-cold th", has_text="wide")
    header.click()  # ascending by the second experiment's mAP
    assert page.locator(first_column).all_inner_texts() == ["random", "cnn", "wmf"]
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()  # and back, descending
    assert page.locator(first_column).all_inner_texts() == ["wmf", "cnn", "random"]
    page.locator("#overview-cold th", has_text="model").click()  # text columns sort too
    assert page.locator(first_column).all_inner_texts() == ["cnn", "random", "wmf"]
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_a_metric_that_is_not_a_number_is_left_out_and_named(capsys):
    text = json.dumps(
        {"wmf": {"cold": {"map@500": 0.25, "auc": "n/a", "users": True}}, "odd": [1, 2]}
    )
    table = read_metric_table(text, "exp-1: metrics.json", lambda v: isinstance(v, float))
    assert table == {"wmf": {"cold": {"map@500": 0.25}}}
    err = capsys.readouterr().err
    assert "exp-1: metrics.json: wmf/cold/auc is 'n/a', not a number" in err
    assert "odd/?: not a table" in err
    assert "0.2500" in metrics_table([Experiment("e", "1" * 40, "b", {}, table, {})], "cold")


def test_a_metrics_file_that_is_not_json_names_file_and_line():
    with pytest.raises(MusicrecError, match=r"exp-1: metrics.json:2: not JSON"):
        read_metric_table('{\n  "wmf": oops}', "exp-1: metrics.json", lambda v: True)


def test_dashboard_out_over_a_folder_or_the_project_is_refused(tmp_path, capsys):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "notes.md").write_text("mine")
    for out, message in ((reports, "is a folder; the dashboard is one HTML file"),
                         (tmp_path, "holds the input --repo")):  # fmt: skip
        assert musicrec(["dashboard", "--repo", str(tmp_path), "--out", str(out)]) == 1
        assert message in capsys.readouterr().err
    assert [p.name for p in reports.iterdir()] == ["notes.md"]
