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


def test_paired_differences_known_answers():
    users = np.array([3, 1, 2, 0])
    a = {"users": users, "m:map@500": np.array([0.1, 0.2, 0.3, 0.4], np.float32)}
    a["n:map@500"] = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
    # B lists the same users in another order, plus one A lacks; m gains 0.1 for every user.
    b_users = np.array([0, 1, 2, 3, 9])
    b = {
        "users": b_users,
        "m:map@500": np.array([0.5, 0.3, 0.4, 0.2, 0.9], np.float32),
        "n:map@500": np.array([0.4, 0.6, 0.5, 0.5, 0.0], np.float32),
    }
    m, n = paired_differences(a, b, "cold", "map@500", n_bootstrap=200, seed=1)
    assert (m.model, m.split, m.users) == ("m", "cold", 4)
    assert m.mean_a == pytest.approx(0.25) and m.mean_b == pytest.approx(0.35)
    assert m.difference == pytest.approx(0.1, abs=1e-6)
    # The same gain for every user: every resample's mean is 0.1, so the interval is a point.
    assert m.low == pytest.approx(0.1, abs=1e-6) and m.high == pytest.approx(0.1, abs=1e-6)
    assert m.verdict == "B better"
    # n: user 0 loses 0.1, user 1 gains 0.1: mean 0, an interval around it.
    assert n.difference == pytest.approx(0.0, abs=1e-6)
    assert n.low < 0 < n.high and n.verdict == "no clear difference"
    reversed_ = paired_differences(b, a, "cold", "map@500", n_bootstrap=200, seed=1)[0]
    assert reversed_.verdict == "A better" and reversed_.difference == pytest.approx(-0.1, abs=1e-6)


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
