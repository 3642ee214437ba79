"""``musicrec recommend``, ``new-song`` and ``similar`` on the artifacts of a trained tiny world.

The acceptance check of the recommend issue is here: a listener's top-N from the command line is
exactly the ranking ``evaluate`` scored for the same model on the ``all`` split.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import soundfile as sf
import yaml
from conftest import run

from musicrec.dataset import load_splits
from musicrec.metrics import rank_positions, tiebreak_keys
from musicrec.models.factorization import WMFConfig, with_popularity
from musicrec.models.vectors import load_model
from musicrec.ranking import draw_tiebreak_seeds, split_tasks
from musicrec.recommend import Recommender, top_n
from musicrec.registry import yardsticks


def recommend_json(project, *args: str) -> dict:
    return json.loads(run(["musicrec", *args, "--json"], project).stdout)


# -- top_n ----------------------------------------------------------------------------------
def test_top_n_sorts_the_best_and_breaks_ties_by_index():
    scores = np.array([0.5, 2.0, 0.5, 3.0, 0.5, -1.0])
    assert top_n(scores, 3).tolist() == [3, 1, 0]
    assert top_n(scores, 4).tolist() == [3, 1, 0, 2]  # the tie at the cut goes to lower indices
    assert top_n(scores, 3, excluded=np.array([3, 0])).tolist() == [1, 2, 4]
    assert top_n(scores, 99, excluded=np.array([1])).tolist() == [3, 0, 2, 4, 5]
    assert top_n(scores, 5, excluded=np.arange(6)).tolist() == []


def test_top_n_asks_for_tiebreak_keys_only_when_the_top_holds_a_tie():
    asked = []

    def keys():
        asked.append(True)
        return np.array([5.0, 4.0, 3.0, 2.0, 1.0])

    assert top_n(np.array([1.0, 3.0, 2.0, 0.0, 0.0]), 3, tiebreak=keys).tolist() == [1, 2, 0]
    assert not asked
    assert top_n(np.array([1.0, 3.0, 2.0, 0.0, 0.0]), 4, tiebreak=keys).tolist() == [1, 2, 0, 4]
    assert asked


def test_top_n_equals_a_full_sort_on_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(100_000).astype(np.float32)
    excluded = rng.choice(100_000, 500, replace=False)
    masked = np.where(np.isin(np.arange(100_000), excluded), -np.inf, scores)
    full = np.argsort(-masked, kind="stable")  # float32 normals do tie: lower index first
    assert top_n(scores, 500, excluded).tolist() == full[:500].tolist()


# -- a known listener -----------------------------------------------------------------------
def evaluate_ranking(project, model_name: str, user_index: int) -> np.ndarray:
    """The songs in the order evaluate ranks them for a user on the all split, ties included."""
    seed = yaml.safe_load((project / "params.yaml").read_text())["evaluate"]["seed"]
    all_seed = draw_tiebreak_seeds(np.random.default_rng(seed))["all"]
    task = split_tasks(load_splits(project / "data" / "split"))["all"]
    row = int(np.flatnonzero(task.users == user_index)[0])
    model = load_model(project / "data" / "models" / model_name)
    scores = model.scores(task.users[row : row + 1], task.candidates)
    excluded = task.excluded[row].toarray() > 0
    keys = tiebreak_keys(task.users[row : row + 1], len(task.candidates), all_seed)
    positions = rank_positions(scores, excluded, keys)[0]
    n_valid = int((~excluded).sum())
    return task.candidates[np.argsort(positions)[:n_valid]]


def test_the_cli_top_n_is_the_ranking_evaluate_scored(trained_project):
    metrics = json.loads((trained_project / "reports" / "evaluation" / "metrics.json").read_text())
    best = max(
        (m for m in metrics if "all" in metrics[m] and m not in yardsticks()),
        key=lambda m: metrics[m]["all"]["map@500"],
    )
    recommender = Recommender(trained_project)
    task = split_tasks(load_splits(trained_project / "data" / "split"))["all"]
    for user_index in task.users[:3]:
        user = recommender.users["user_id"].iat[user_index]
        default = recommend_json(trained_project, "recommend", "--user", user, "-n", "15")
        assert default["model"] == best
        results = {best: default}
        for name in ("cnn_wpe", "hybrid_mixed"):  # a content model, an interleaved one
            args = ("recommend", "--user", user, "--model", name, "-n", "15")
            results[name] = recommend_json(trained_project, *args)
        for name, result in results.items():
            expected = recommender.songs["song_id"].to_numpy()[
                evaluate_ranking(trained_project, name, user_index)[:15]
            ]
            assert [item["song_id"] for item in result["items"]] == expected.tolist(), name
            played = set(recommender.train[user_index].indices)
            assert not played & {recommender.song(i["song_id"]) for i in result["items"]}
            scores = [item["score"] for item in result["items"]]
            assert scores == sorted(scores, reverse=True)


def test_items_carry_the_catalogue_metadata(trained_project, tiny_world):
    item = recommend_json(trained_project, "recommend", "--user", "U000001", "-n", "1")["items"][0]
    import pandas as pd

    songs = pd.read_csv(tiny_world / "songs.csv", dtype=str).set_index("song_id")
    assert (item["title"], item["artist"]) == tuple(songs.loc[item["song_id"], ["title", "artist"]])
    # The table is the same list, readable: a header, then one row per song.
    table = run(["musicrec", "recommend", "--user", "U000001", "-n", "2"], trained_project).stdout
    lines = table.splitlines()
    assert lines[0] == "recommendations for user U000001, n 2"
    assert lines[2].split() == ["rank", "song_id", "score", "role", "title", "artist"]
    assert lines[3].split()[:2] == ["1", item["song_id"]] and len(lines) == 5


def test_songs_missing_from_the_metadata_get_empty_text_in_valid_json(
    trained_project, tiny_world, tmp_path
):
    world, project = tmp_path / "world", tmp_path / "project"
    shutil.copytree(tiny_world, world)
    shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("wandb", ".cache"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["root"] = str(world)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (world / "songs.csv").write_text("song_id,title,artist\n")  # no song described
    output = run(["musicrec", "recommend", "--user", "U000001", "-n", "3", "--json"], project)
    strict = json.loads(output.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert [(i["title"], i["artist"]) for i in strict["items"]] == [("", "")] * 3


# -- a new listener -------------------------------------------------------------------------
def test_seed_songs_use_the_better_new_user_method_and_leave_the_seeds_out(trained_project):
    recommender = Recommender(trained_project)
    metrics = recommender.metrics
    better = max(("wmf", "content_profile"), key=lambda m: metrics[m]["cold_user"]["map@500"])
    seeds = recommender.songs["song_id"].to_numpy()[recommender.warm_songs[:4]].tolist()
    result = recommend_json(trained_project, "recommend", "--seed-songs", ",".join(seeds))
    assert result["model"] == better
    ids = [item["song_id"] for item in result["items"]]
    assert len(ids) == 10 and not set(ids) & set(seeds)
    assert {item["role"] for item in result["items"]} == {"warm"}
    # The profile method, checked by hand: the mean content vector of the seeds.
    profile = recommender.model("content_profile").song_vectors
    rows = [recommender.song(s) for s in seeds]
    scores = profile[recommender.warm_songs] @ profile[rows].mean(axis=0)
    scores[np.isin(recommender.warm_songs, rows)] = -np.inf
    if better == "content_profile":
        expected = recommender.warm_songs[np.argsort(-scores, kind="stable")[:10]]
        assert ids == recommender.songs["song_id"].to_numpy()[expected].tolist()
    other = recommender.for_seed_songs(seeds[:1])
    assert other.items["song_id"].tolist() != ids  # the seeds matter


def test_cold_seeds_fall_back_to_the_content_profile(trained_project):
    recommender = Recommender(trained_project)
    cold = recommender.songs.loc[recommender.songs["role"] == "cold", "song_id"].tolist()[:2]
    result = recommender.for_seed_songs(cold, 5)
    assert result.model == "content_profile" and len(result.items) == 5
    if recommender.best_model("cold_user", lambda m: m in ("wmf", "content_profile")) == "wmf":
        assert result.notes and "fold-in" in result.notes[0]


# -- a new song, similar songs ---------------------------------------------------------------
def test_new_song_from_a_catalogue_file_gets_the_vector_the_model_gave_it(
    trained_project, tiny_world, tmp_path
):
    recommender = Recommender(trained_project)
    song = recommender.songs["song_id"].iat[0]
    source = next((tiny_world / "audio").glob(f"{song}.*"))
    model = recommender.model(recommender.audio_model)
    vector, _ = recommender.predict_audio(source)
    np.testing.assert_allclose(vector, model.song_vectors[0], rtol=1e-4, atol=1e-5)
    # Another container of the same samples: the same vector, up to the codec.
    samples, rate = sf.read(source)
    sf.write(tmp_path / "copy.wav", samples, rate, subtype="FLOAT")
    result = recommend_json(trained_project, "new-song", str(tmp_path / "copy.wav"), "-n", "5")[0]
    assert result["model"] == recommender.audio_model
    assert result["similar_songs"][0]["song_id"] == song
    assert result["similar_songs"][0]["cosine"] == pytest.approx(1.0, abs=1e-4)
    warm_users = np.flatnonzero(recommender.users["role"] == "warm")
    expected = warm_users[np.argsort(-(model.user_vectors[warm_users] @ vector))[:5]]
    assert [i["user_id"] for i in result["items"]] == recommender.users["user_id"].to_numpy()[
        expected
    ].tolist()


def test_similar_uses_cf_factors_for_warm_songs_and_audio_for_cold_ones(trained_project):
    recommender = Recommender(trained_project)
    warm = recommender.songs["song_id"].iat[recommender.warm_songs[0]]
    cold = recommender.songs.loc[recommender.songs["role"] == "cold", "song_id"].iat[0]
    for song, model, candidates in [
        (warm, "wmf", recommender.warm_songs),
        (cold, recommender.audio_model, np.arange(len(recommender.songs))),
    ]:
        result = recommend_json(trained_project, "similar", song, "-n", "4")
        assert result["model"] == model
        vectors = recommender.model(model).song_vectors
        query = vectors[recommender.song(song)]
        with np.errstate(invalid="ignore"):  # cold songs have zero WMF factors
            cosine = vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)
        ranked = [
            c for c in candidates[np.argsort(-cosine[candidates])] if c != recommender.song(song)
        ]
        assert [recommender.song(i["song_id"]) for i in result["items"]] == ranked[:4]


# -- errors ---------------------------------------------------------------------------------
def test_errors_say_what_is_wrong_without_a_traceback(trained_project, tmp_path):
    cases = [
        (["recommend", "--user", "U00001"], "unknown user id 'U00001'"),
        (["recommend", "--user", "U000001", "--model", "nope"], "no model 'nope'"),
        (["recommend", "--seed-songs", "S000001,XYZ"], "unknown song id 'XYZ'"),
        (["similar", "nope"], "unknown song id 'nope'"),
        (["new-song", str(trained_project / "params.yaml")], "cannot be read as audio"),
        (["new-song", str(tmp_path / "missing.mp3")], "cannot be read as audio"),
        (["recommend", "--user", "U000001", "--model", "content_profile"], "does not rank"),
        (["new-song", str(tmp_path / "pipe.mp3")], "not a regular file (a FIFO)"),  # no hang
    ]
    os.mkfifo(tmp_path / "pipe.mp3")
    cold_user = Recommender(trained_project).users.query("role == 'cold_user'")["user_id"].iat[0]
    cases.append((["recommend", "--user", cold_user], "--seed-songs"))
    for args, message in cases:
        result = run(["musicrec", *args], trained_project, check=False)
        assert result.returncode == 1, args
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_missing_artifacts_name_the_stage_to_run(trained_project, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("wandb", ".cache"))
    for predictor in (project / "data" / "models").glob("*/predictor"):
        shutil.rmtree(predictor)
    result = run(["musicrec", "new-song", str(project / "x.wav")], project, check=False)
    assert "can predict from audio" in result.stderr and "run `dvc repro cnn`" in result.stderr
    (project / "reports" / "evaluation" / "metrics.json").unlink()
    result = run(["musicrec", "recommend", "--user", "U000001"], project, check=False)
    assert result.returncode == 1
    assert "reports/evaluation/metrics.json is missing: run `dvc repro evaluate`" in result.stderr


def test_near_ids_suggests_from_a_bounded_neighbourhood():
    from musicrec.recommend import near_ids

    class Counted(list):
        reads = 0

        def __getitem__(self, key):
            Counted.reads += 1
            return super().__getitem__(key)

    ids = Counted(sorted(f"U{i:07d}" for i in range(1_000_000)))
    assert "U0001234" in near_ids("U0001234x", ids)  # a typo at the end
    Counted.reads = 0
    assert near_ids("U000123", ids)[0].startswith("U000123")
    # a binary search and one slice: about 20 reads of a million ids, where difflib over all
    # of them compared every one
    assert Counted.reads < 30
    assert near_ids("x" * 201, ids) == [] and near_ids("U1", []) == []


# -- the precomputed cosine path ------------------------------------------------------------
def synthetic_recommender(
    project, n_songs: int = 2000, n_users: int = 300, dim: int = 16, seed: int = 0
) -> Recommender:
    """A Recommender whose artifacts are set in memory, not read (as
    ``benchmarks/recommend_latency.py`` makes one): a fifth of the songs cold (zero WMF
    factors, as WMF leaves them), a tenth of the users held out, a ``wmf`` model, an audio
    model ``cnn`` whose predictor and feature config are stand-ins, and a content profile (the
    better for new listeners)."""
    from musicrec.audio_features import FeatureConfig
    from musicrec.models.vectors import ModelVectors

    rng = np.random.default_rng(seed)
    recommender = Recommender(project)
    ids = np.char.add("S", np.arange(n_songs).astype(str))
    song_roles = np.where(rng.random(n_songs) < 0.2, "cold", "warm")
    recommender.songs = pd.DataFrame(  # cached_property: an assignment replaces the read
        {"song_id": ids, "role": song_roles, "title": np.char.add("T", ids), "artist": "A"}
    )
    user_roles = np.where(rng.random(n_users) < 0.1, "cold_user", "warm")
    recommender.users = pd.DataFrame(
        {"user_id": np.char.add("U", np.arange(n_users).astype(str)), "role": user_roles}
    )
    recommender.train = sp.csr_matrix((n_users, n_songs), dtype=np.float32)
    recommender.metrics = {
        "wmf": {"all": {"map@500": 0.5}, "cold_user": {"map@500": 0.2}},
        "cnn": {"all": {"map@500": 0.4}, "cold": {"map@500": 0.3}},
        "content_profile": {"cold_user": {"map@500": 0.3}},
    }
    recommender.params = {"evaluate": {"seed": 0}}
    recommender.audio_model = "cnn"
    recommender.feature_config = FeatureConfig()
    wmf_songs = rng.standard_normal((n_songs, dim)).astype(np.float32)
    wmf_songs[song_roles == "cold"] = 0
    content = rng.random((n_songs, dim), np.float32)
    for name, songs in (("wmf", wmf_songs), ("cnn", content), ("content_profile", content)):
        users = rng.standard_normal((n_users, dim)).astype(np.float32)
        recommender._models[name] = ModelVectors(name, "", ["all"], users, songs)
    # wmf as the stage writes it: its popularity column last (listeners of warm songs only)
    listeners = np.where(song_roles == "warm", rng.integers(1, 50, n_songs), 0)
    wmf = recommender._models["wmf"]
    users, songs = with_popularity(wmf.user_vectors, wmf.song_vectors, listeners, 0.3)
    recommender._models["wmf"] = ModelVectors("wmf", "", ["all"], users, songs)
    recommender.wmf_config = WMFConfig(factors=dim, popularity_weight=0.3)
    recommender._predictors["cnn"] = object()  # never reached: the files tried are not audio
    return recommender


def cosine_neighbours_of_the_candidate_rows(
    vectors: np.ndarray, query: np.ndarray, candidates: np.ndarray, n: int, skip: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The reference ranking by cosine: the candidates' rows copied out and normalised, the
    straightforward way, which the served path (no copies) must match."""
    rows = vectors[candidates].astype(np.float32)
    norms = np.linalg.norm(rows, axis=1) * max(float(np.linalg.norm(query)), 1e-12)
    cosine = (rows @ query.astype(np.float32)) / np.maximum(norms, 1e-12)
    excluded = np.flatnonzero(candidates == skip) if skip is not None else None
    best = top_n(cosine, n, excluded)
    return candidates[best], cosine[best]


def test_the_precomputed_cosine_path_ranks_as_copying_the_candidates_did(tmp_path):
    recommender = synthetic_recommender(tmp_path)
    roles = recommender.songs["role"].to_numpy()
    for v in range(0, len(roles), 7):
        song = recommender.songs["song_id"].iat[v]
        if roles[v] == "warm":
            name, candidates = "wmf", recommender.warm_songs
        else:
            name, candidates = "cnn", np.arange(len(roles))
        vectors = recommender.model(name).song_vectors[:, :16]  # wmf: factors, not popularity
        for n in (1, 20):
            expected, cosines = cosine_neighbours_of_the_candidate_rows(
                vectors, vectors[v], candidates, n, v
            )
            got = recommender.similar(song, n).items
            assert [recommender.song(s) for s in got["song_id"]] == expected.tolist(), song
            np.testing.assert_allclose(got["cosine"], np.round(cosines, 6), atol=2e-6)
    # More than there are candidates: every candidate but the song, in the same order.
    warm = recommender.songs["song_id"].iat[recommender.warm_songs[0]]
    everything = recommender.similar(warm, 10**6).items["song_id"].map(recommender.song)
    expected, _ = cosine_neighbours_of_the_candidate_rows(
        recommender.model("wmf").song_vectors[:, :16],
        recommender.model("wmf").song_vectors[recommender.warm_songs[0], :16],
        recommender.warm_songs,
        10**6,
        recommender.warm_songs[0],
    )
    assert everything.tolist() == expected.tolist()
    # A new song: its listeners among the warm users and its songs among all, as before.
    model = recommender.model("cnn")
    vector = np.random.default_rng(1).random(16, np.float32)
    recommender.predict_audio = lambda audio, name=None: (vector, 0.0)
    result = recommender.new_song(tmp_path / "new.wav", 15, 12)
    warm_users = recommender.warm_users
    scores = model.user_vectors[warm_users] @ vector
    listeners = warm_users[top_n(scores, 15)]
    user_ids = recommender.users["user_id"].to_numpy()
    assert result.items["user_id"].tolist() == user_ids[listeners].tolist()
    songs, _ = cosine_neighbours_of_the_candidate_rows(
        model.song_vectors, vector, np.arange(len(roles)), 12, None
    )
    similar = result.extra["similar_songs"]["song_id"].map(recommender.song)
    assert similar.tolist() == songs.tolist()


def test_similar_and_new_song_allocate_no_copy_of_the_song_matrix(tmp_path):
    import tracemalloc

    recommender = synthetic_recommender(tmp_path, n_songs=100_000, n_users=2000, dim=32)
    matrix_bytes = recommender.model("wmf").song_vectors.nbytes
    assert matrix_bytes > 10 * 2**20
    vector = np.ones(32, np.float32)
    recommender.predict_audio = lambda audio, name=None: (vector, 0.0)
    warm = recommender.songs["song_id"].iat[recommender.warm_songs[3]]
    cold = recommender.songs.loc[recommender.songs["role"] == "cold", "song_id"].iat[0]
    calls = {
        "similar, warm song": lambda: recommender.similar(warm, 10),
        "similar, cold song": lambda: recommender.similar(cold, 10),
        "new_song": lambda: recommender.new_song(tmp_path / "new.wav", 10, 10),
    }
    for what, call in calls.items():
        call()  # the first call computes what is kept (norms, masks), as warm_up does
        tracemalloc.start()
        try:
            call()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # A few arrays of one scalar a song, never the matrix's n_songs x 32.
        assert peak < matrix_bytes / 4, (what, peak, matrix_bytes)
