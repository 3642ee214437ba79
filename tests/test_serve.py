"""``musicrec serve`` over real HTTP on loopback: the four operations, bad requests, limits and
concurrency, against the artifacts of a trained tiny world."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn
from fastapi.testclient import TestClient

from musicrec.recommend import Recommender
from musicrec.serve import create_app

MAX_UPLOAD = 512 * 1024


@pytest.fixture(scope="module")
def server(trained_project):
    """A uvicorn server in a thread, on a free loopback port; yields (base URL, recommender)."""
    recommender = Recommender(trained_project)
    recommender.warm_up()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(recommender, max_upload_bytes=MAX_UPLOAD)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=64))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", recommender
    server.should_exit = True
    thread.join(timeout=10)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_the_four_operations_answer_as_the_recommender_does(server, tiny_world):
    url, recommender = server
    user = recommender.users["user_id"].iat[1]
    got = httpx.get(f"{url}/recommend/user/{user}", params={"n": 7}).json()
    assert got == recommender.for_user(user, 7).to_dict()
    seeds = recommender.songs["song_id"].to_numpy()[recommender.warm_songs[:3]].tolist()
    got = httpx.post(f"{url}/recommend/seed-songs", json={"songs": seeds, "n": 5}).json()
    assert got == recommender.for_seed_songs(seeds, 5).to_dict()
    song = recommender.songs["song_id"].iat[0]
    got = httpx.get(f"{url}/similar/{song}", params={"n": 3}).json()
    assert got == recommender.similar(song, 3).to_dict()
    audio = next((tiny_world / "audio").glob(f"{song}.*"))
    response = httpx.post(
        f"{url}/new-song", params={"n": 4}, files={"file": (audio.name, audio.read_bytes())}
    )
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["query"] == {"audio": audio.name} and len(got["items"]) == 4
    assert got["similar_songs"][0]["song_id"] == song  # its own catalogue entry is nearest
    health = httpx.get(f"{url}/health").json()
    assert health["default_model"] == got_default_model(recommender)


def got_default_model(recommender: Recommender) -> str:
    return recommender.best_model("all")


def test_the_openapi_schema_lists_every_operation(server):
    url, _ = server
    schema = httpx.get(f"{url}/openapi.json").json()
    assert {
        "/recommend/user/{user_id}",
        "/recommend/seed-songs",
        "/new-song",
        "/similar/{song_id}",
        "/health",
    } <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/new-song"]["post"]["requestBody"]["content"]


def test_bad_requests_get_a_status_and_a_detail(server):
    url, _ = server
    cases = [
        (httpx.get(f"{url}/recommend/user/NOBODY"), 404, "unknown user id"),
        (httpx.get(f"{url}/similar/NOSONG"), 404, "unknown song id"),
        (httpx.get(f"{url}/recommend/user/U000001", params={"n": 0}), 422, "greater than"),
        (httpx.get(f"{url}/recommend/user/U000001", params={"n": "ten"}), 422, "integer"),
        (httpx.get(f"{url}/recommend/user/U000001", params={"model": "x"}), 404, "no model"),
        (
            httpx.post(
                f"{url}/recommend/seed-songs",
                content=b'{"songs": [',
                headers={"content-type": "application/json"},
            ),
            422,
            "JSON",
        ),
        (httpx.post(f"{url}/recommend/seed-songs", json={"songs": []}), 422, "at least 1"),
        (httpx.post(f"{url}/new-song"), 422, "file"),
        (
            httpx.post(f"{url}/new-song", files={"file": ("notes.mp3", b"not audio at all")}),
            422,
            "notes.mp3: cannot be read as audio",
        ),
    ]
    for response, status, detail in cases:
        assert response.status_code == status, response.text
        assert detail in response.text, response.text


def test_oversized_uploads_are_refused_declared_or_streamed(server):
    url, _ = server
    big = wav_bytes(np.zeros(MAX_UPLOAD // 4 + 1000, np.float32), 22050)
    declared = httpx.post(f"{url}/new-song", files={"file": ("big.wav", big)})
    assert declared.status_code == 413 and "larger than" in declared.json()["detail"]

    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
    body = head + big + b"\r\n--x--\r\n"

    def chunks():  # no Content-Length: the server counts as the body arrives
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    streamed = httpx.post(
        f"{url}/new-song",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert streamed.status_code == 413, streamed.text
    assert "chunked" in streamed.request.headers.get("transfer-encoding", "")
    # The server is still there afterwards.
    assert httpx.get(f"{url}/health").status_code == 200


def test_concurrent_requests_each_get_their_own_answer(server, tiny_world):
    url, recommender = server
    users = recommender.users.query("role == 'warm'")["user_id"].tolist()[:24]
    expected = {u: recommender.for_user(u, 5).to_dict() for u in users}
    song = recommender.songs["song_id"].iat[2]
    audio = next((tiny_world / "audio").glob(f"{song}.*")).read_bytes()

    def ask(i: int):
        if i % 4 == 3:  # uploads mixed with queries
            return None, httpx.post(f"{url}/new-song", files={"file": ("a.flac", audio)}).json()
        user = users[i % len(users)]
        return user, httpx.get(f"{url}/recommend/user/{user}", params={"n": 5}).json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(48)))
    for user, answer in answers:
        if user is None:
            assert answer["similar_songs"][0]["song_id"] == song
        else:
            assert answer == expected[user]


def test_musicrec_serve_starts_and_answers(trained_project):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    process = subprocess.Popen(
        ["musicrec", "serve", "--port", str(port)],
        cwd=trained_project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(300):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.ConnectError:
                assert process.poll() is None, process.stdout.read()
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_model_name_is_never_a_path_and_each_model_is_loaded_once(server, trained_project):
    url, recommender = server
    user = recommender.users["user_id"].iat[1]
    ok = httpx.get(f"{url}/recommend/user/{user}", params={"model": "wmf"})
    assert ok.status_code == 200
    loaded = dict(recommender._models)
    for name in ("wmf/.", "./wmf", "../models/wmf", str(trained_project / "data/models/wmf"), "/"):
        response = httpx.get(f"{url}/recommend/user/{user}", params={"model": name})
        # unknown, as any name that was not trained and scored: 404, never a 503 that tells
        # a folder exists, and no second copy of a model in memory
        assert response.status_code == 404 and "no model" in response.text, (name, response.text)
    assert recommender._models.keys() == loaded.keys()


def test_hostile_audio_headers_are_refused_before_decoding_and_the_server_stays_up(server):
    url, _ = server
    files = {}
    many = io.BytesIO()
    sf.write(many, np.zeros((4, 255), np.float32), 22050, format="WAV", subtype="PCM_16")
    files["255 channels"] = (many.getvalue(), "declares 255 channels (at most 8 read)")
    fast = io.BytesIO()
    sf.write(fast, np.zeros(4, np.float32), 655350, format="WAV", subtype="PCM_16")
    files["655 kHz"] = (fast.getvalue(), "declares 655350 Hz (at most 192,000 Hz read)")
    for label, (content, reason) in files.items():
        assert len(content) < 4096, label  # small files that would decode to hundreds of MB
        response = httpx.post(f"{url}/new-song", files={"file": (f"{label}.wav", content)})
        assert response.status_code == 422 and reason in response.text, response.text
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_uploads_past_the_decoding_limit_wait_then_get_503(trained_project, monkeypatch):
    from fastapi.testclient import TestClient

    import musicrec.serve as serve

    monkeypatch.setattr(serve, "DECODE_WAIT_SECONDS", 0.05)
    recommender = Recommender(trained_project)
    busy = TestClient(create_app(recommender, max_decodes=0))  # every slot taken
    response = busy.post("/new-song", files={"file": ("a.wav", wav_bytes(np.zeros(100), 22050))})
    assert response.status_code == 503 and "try again" in response.text
    assert response.headers["retry-after"] == "5"


def test_health_names_the_model_version_and_reload_swaps_in_new_artifacts(trained_project):
    """/health carries the dvc.lock hash of the models; POST /reload (loopback only, one at a
    time) loads them again and swaps them in; the schema types every answer."""
    lock = trained_project / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  wmf:\n    outs:\n    - path: data/models/wmf\n      md5: a.dir\n"
    )
    try:
        recommender = Recommender(trained_project)
        recommender.warm_up()
        app = create_app(recommender)
        client = TestClient(app, client=("127.0.0.1", 50000))
        first = client.get("/health").json()
        assert first["version"]["models"] and first["version"]["model_outputs"] == 1
        lock.write_text(lock.read_text().replace("a.dir", "b.dir"))  # what a retrain leaves
        assert client.get("/health").json()["version"] == first["version"]  # not yet reloaded
        reloaded = client.post("/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["version"]["models"] != first["version"]["models"]
        assert app.state.served.current[0] is not recommender
        user = recommender.users["user_id"].iat[1]
        assert client.get(f"/recommend/user/{user}").json() == recommender.for_user(user).to_dict()
        # From elsewhere: refused; while another reload runs: 409.
        remote = TestClient(app, client=("203.0.113.7", 50000))
        assert remote.post("/reload").status_code == 403
        with app.state.served._reloading:
            assert client.post("/reload").status_code == 409
    finally:
        lock.unlink()
    schema = client.get("/openapi.json").json()
    ranked = schema["paths"]["/recommend/user/{user_id}"]["get"]["responses"]["200"]
    assert ranked["content"]["application/json"]["schema"]["$ref"].endswith("/Ranked")
    assert {"Ranked", "Row", "Health", "ModelVersion"} <= set(schema["components"]["schemas"])
