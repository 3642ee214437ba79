"""``musicrec serve`` over real HTTP on loopback: the four operations, bad requests, limits and
concurrency, against the artifacts of a trained tiny world; what the server refuses (foreign
hosts and origins, reloads without the token, uploads past the limits), against artifacts made
in memory."""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn
from fastapi.testclient import TestClient
from test_recommend import synthetic_recommender

from musicrec.errors import MusicrecError
from musicrec.recommend import Recommender
from musicrec.serve import Served, create_app

MAX_UPLOAD = 512 * 1024
TOKEN = "a-reload-token-for-the-tests"
FOREIGN = {"Host": "attacker.example"}


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """uvicorn serving ``app`` in a thread, on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=64))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(trained_project):
    """A uvicorn server on loopback over the trained artifacts; yields (base URL, recommender)."""
    recommender = Recommender(trained_project)
    recommender.warm_up()
    with serving(create_app(recommender, max_upload_bytes=MAX_UPLOAD)) as url:
        yield url, recommender


@pytest.fixture
def synthetic(tmp_path) -> Recommender:
    """A recommender over artifacts made in memory (no pipeline run): fast tests."""
    return synthetic_recommender(tmp_path, n_songs=300, n_users=60, dim=8)


def loopback_client(app, host: str = "127.0.0.1", **kwargs) -> TestClient:
    """A TestClient whose requests carry a loopback Host (not TestClient's "testserver")."""
    return TestClient(app, base_url=f"http://{host}", client=("127.0.0.1", 50000), **kwargs)


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
            for _ in range(600):
                response = httpx.post(f"{url}/new-song", files={"file": ("a.flac", audio)})
                if response.status_code != 503:
                    break
                # Past --max-decodes at once: refused at once, to be sent again (sooner than
                # Retry-After asks, the tiny world's decodes being short).
                assert response.headers["retry-after"] == "5"
                time.sleep(0.05)
            return None, response.json()
        user = users[i % len(users)]
        if i % 8 == 5:  # and DNS rebinding: a page whose name now points here
            response = httpx.get(f"{url}/recommend/user/{user}", headers=FOREIGN)
            return "foreign", (response.status_code, response.text)
        return user, httpx.get(f"{url}/recommend/user/{user}", params={"n": 5}).json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(48)))
    assert sum(user == "foreign" for user, _ in answers) == 6
    for user, answer in answers:
        if user is None:
            assert answer["similar_songs"][0]["song_id"] == song
        elif user == "foreign":
            assert answer[0] == 400 and "items" not in answer[1] and "song_id" not in answer[1]
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


def test_settings_that_cannot_work_are_refused_saying_how_to_fix_them(synthetic):
    cases = [
        ({"max_decodes": 0}, "--max-decodes must be at least 1"),
        ({"reload_token": "short"}, "16 characters at least"),
        ({"allowed_hosts": ["localhost:8000"]}, "without a port"),
        ({"allowed_hosts": ["exa*mple.com"]}, "'*.example.com'"),
        ({"allowed_hosts": [" "]}, "give a name"),
        ({"upload_timeout": 0}, "--upload-timeout must be above 0"),
    ]
    for settings, message in cases:
        with pytest.raises(MusicrecError, match=re.escape(message)):
            create_app(synthetic, **settings)


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
        app = create_app(recommender, reload_token=TOKEN)
        client = loopback_client(app, headers={"Authorization": f"Bearer {TOKEN}"})
        first = client.get("/health").json()
        assert first["version"]["models"] and first["version"]["model_outputs"] == 1
        lock.write_text(lock.read_text().replace("a.dir", "b.dir"))  # what a retrain leaves
        assert client.get("/health").json()["version"] == first["version"]  # not yet reloaded
        reloaded = client.post("/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["version"]["models"] != first["version"]["models"]
        assert app.state.served.current[0] is not recommender
        # The new recommender's cosine matrices were made as it loaded, not by a request.
        assert {"wmf", recommender.audio_model} <= set(app.state.served.current[0]._cosine)
        user = recommender.users["user_id"].iat[1]
        assert client.get(f"/recommend/user/{user}").json() == recommender.for_user(user).to_dict()
        # From elsewhere: refused; while another reload runs: 409.
        remote = TestClient(app, base_url="http://127.0.0.1", client=("203.0.113.7", 50000))
        assert remote.post("/reload", headers=client.headers).status_code == 403
        with app.state.served._reloading:
            assert client.post("/reload").status_code == 409
    finally:
        lock.unlink()
    schema = client.get("/openapi.json").json()
    ranked = schema["paths"]["/recommend/user/{user_id}"]["get"]["responses"]["200"]
    assert ranked["content"]["application/json"]["schema"]["$ref"].endswith("/Ranked")
    assert {"Ranked", "Row", "Health", "ModelVersion"} <= set(schema["components"]["schemas"])


# -- hosts, origins and reload (item: any Host, any Origin) ---------------------------------
def test_only_the_allowed_host_names_are_answered(synthetic):
    user = synthetic.users["user_id"].iat[0]
    app = create_app(synthetic)
    for host in ("127.0.0.1", "localhost", "[::1]", "127.0.0.1:8000", "LocalHost:80"):
        response = TestClient(app).get(f"/recommend/user/{user}", headers={"Host": host})
        assert response.status_code == 200 and response.json()["items"], host
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.nip.io", "[::2]"):
        response = TestClient(app).get(f"/recommend/user/{user}", headers={"Host": host})
        # no recommendation reaches a page served from another name (DNS rebinding)
        assert response.status_code == 400 and "song_id" not in response.text, host
    named = create_app(synthetic, allowed_hosts=["musicrec.lan", "*.musicrec.lan", "::1"])
    for host, status in [("musicrec.lan", 200), ("box.musicrec.lan", 200), ("[::1]", 200),
                         ("localhost", 400), ("evilmusicrec.lan", 400)]:  # fmt: skip
        response = TestClient(named).get("/health", headers={"Host": host})
        assert response.status_code == status, host


def test_a_page_of_another_site_cannot_post_even_without_preflight(synthetic):
    seeds = synthetic.songs["song_id"].to_numpy()[synthetic.warm_songs[:2]].tolist()
    served = Served(synthetic)
    reloads = []
    served.reload = lambda: reloads.append(True) or True  # loading real artifacts is not tested
    client = loopback_client(
        create_app(synthetic, served=served, reload_token=TOKEN), host="127.0.0.1:8000"
    )
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    # What a form or a fetch with a text/plain body sends: no preflight asks the server first.
    foreign = {"Origin": "http://attacker.example", "Content-Type": "text/plain"}
    # Another site, another page on this machine (another port, or another name for it).
    for origin in (
        "http://attacker.example",
        "https://localhost.attacker.example",
        "null",
        "http://127.0.0.1:3000",
        "http://localhost:8000",
    ):
        headers = {**foreign, **bearer, "Origin": origin}
        response = client.post("/reload", content=b"x", headers=headers)
        assert response.status_code == 403 and "cross-site" in response.text, origin
        response = client.post("/recommend/seed-songs", json={"songs": seeds}, headers=headers)
        assert response.status_code == 403, origin
    assert not reloads
    # The server's own pages, and programs that send no Origin, are answered.
    for headers in ({"Origin": "http://127.0.0.1:8000"}, {}):
        response = client.post("/recommend/seed-songs", json={"songs": seeds}, headers=headers)
        assert response.status_code == 200, headers
        assert client.post("/reload", headers={**headers, **bearer}).status_code == 200
    assert len(reloads) == 2
    # A GET changes nothing: its Origin is not checked.
    assert client.get("/health", headers={"Origin": "http://attacker.example"}).status_code == 200


def test_reload_over_http_needs_the_token_and_is_off_without_one(synthetic):
    served = Served(synthetic)
    reloads = []
    served.reload = lambda: reloads.append(True) or True
    off = loopback_client(create_app(synthetic, served=served))
    response = off.post("/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403
    assert "MUSICREC_RELOAD_TOKEN" in response.text and "SIGHUP" in response.text
    client = loopback_client(create_app(synthetic, served=served, reload_token=TOKEN))
    for authorization in (None, "Bearer", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN):
        headers = {"Authorization": authorization} if authorization else {}
        response = client.post("/reload", headers=headers)
        assert response.status_code == 401, authorization
        assert response.headers["www-authenticate"] == "Bearer"
    assert not reloads
    ok = client.post("/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["status"] == "ok" and reloads == [True]


# -- uploads: names and errors --------------------------------------------------------------
def test_an_upload_keeps_only_a_plain_short_extension():
    from musicrec.serve import upload_suffix

    assert upload_suffix("song.mp3") == ".mp3" and upload_suffix("a.b.FLAC") == ".FLAC"
    for name in (
        "song",
        "a.w\x00v",
        "song.mp\x003",
        "a.mp3/..",
        "x.verylongext",
        "x.m p3",
        "x.",
        ".wav",
    ):
        assert upload_suffix(name) == "", name


def multipart(filename: bytes, content: bytes) -> tuple[bytes, dict]:
    """A multipart body of one file field, its filename bytes as given (httpx would escape
    a NUL byte)."""
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--x--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=x"}


def test_unusable_uploads_get_422_naming_the_file_and_no_server_path(synthetic):
    client = loopback_client(create_app(synthetic))
    tmp = tempfile.gettempdir()
    for filename in (b"notes.mp3", b"a.w\x00v", b"song\x00.mp3", b"x" * 300 + b".wav", b""):
        body, headers = multipart(filename, b"not audio at all")
        response = client.post("/new-song", content=body, headers=headers)
        assert response.status_code == 422, (filename, response.text)
        detail = response.json()["detail"]
        assert "cannot be read as audio" in detail, detail
        assert tmp not in detail and str(synthetic.project) not in detail, detail
    response = client.post("/new-song", files={"file": ("notes.mp3", b"not audio")})
    assert response.json()["detail"].startswith("notes.mp3: cannot be read as audio")
    # No file at all: a 422 that says which field is missing.
    for kwargs in ({}, {"data": {"file": "just text"}}):
        response = client.post("/new-song", **kwargs)
        assert response.status_code == 422 and "'file'" in response.text, response.text


# -- heavy requests under load (the loopback load test, continued) --------------------------
def test_a_stalled_upload_leaves_health_fast_and_excess_uploads_get_503_at_once(synthetic):
    """With one decoding slot held by a slow decode and 45 uploads arriving at once, every
    excess upload is answered 503 with Retry-After at once, /health stays under a second, a
    foreign Host gets 400, and the slow upload is answered when it is done."""
    decoding, done = threading.Event(), threading.Event()
    song = synthetic.songs["song_id"].iat[0]

    def slow_new_song(audio, n_users=10, n_songs=10, name=None):
        decoding.set()
        done.wait(30)
        return synthetic.similar(song, n_songs)

    synthetic.new_song = slow_new_song
    upload = {"file": ("a.wav", wav_bytes(np.zeros(1000, np.float32), 22050))}

    def timed(method, *args, **kwargs) -> tuple[float, httpx.Response]:
        start = time.perf_counter()
        response = method(*args, timeout=30, **kwargs)
        return time.perf_counter() - start, response

    with serving(create_app(synthetic, max_decodes=1)) as url, ThreadPoolExecutor(50) as pool:
        slow = pool.submit(httpx.post, f"{url}/new-song", files=upload, timeout=30)
        assert decoding.wait(10)
        excess = [
            pool.submit(timed, httpx.post, f"{url}/new-song", files=upload) for _ in range(45)
        ]
        health = []
        while not all(future.done() for future in excess):
            health.append(timed(httpx.get, f"{url}/health"))
        health.append(timed(httpx.get, f"{url}/health"))
        user = synthetic.users["user_id"].iat[0]
        foreign = httpx.get(f"{url}/recommend/user/{user}", headers=FOREIGN)
        similar_while_busy = timed(httpx.get, f"{url}/similar/{song}")
        done.set()
        answered = slow.result()
        after = httpx.get(f"{url}/similar/{song}")
    refused = [future.result() for future in excess]
    assert {response.status_code for _, response in refused} == {503}
    assert {response.headers["retry-after"] for _, response in refused} == {"5"}
    assert max(seconds for seconds, _ in refused) < 2.0, sorted(s for s, _ in refused)[-5:]
    assert all(r.status_code == 200 for _, r in health)
    assert max(seconds for seconds, _ in health) < 1.0, max(seconds for seconds, _ in health)
    assert foreign.status_code == 400 and "song_id" not in foreign.text
    # /similar has slots of its own: uploads holding theirs do not lock the queries out.
    assert similar_while_busy[1].status_code == 200 and similar_while_busy[0] < 1.0
    assert answered.status_code == 200 and answered.json()["items"]
    assert after.status_code == 200


def test_a_body_that_trickles_gets_408_and_gives_its_slot_back(synthetic):
    synthetic.new_song = lambda audio, n_users=10, n_songs=10, name=None: synthetic.similar(
        synthetic.songs["song_id"].iat[0], n_songs
    )
    body, headers = multipart(b"a.wav", wav_bytes(np.zeros(1000, np.float32), 22050))
    app = create_app(synthetic, max_decodes=1, upload_timeout=0.5)
    with serving(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            # The headers and a first part of the body, then nothing more.
            slow.sendall(
                b"POST /new-song HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:40]
            )
            start = time.perf_counter()
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += slow.recv(4096)
            waited = time.perf_counter() - start
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"connection: close" in answer.lower()
            assert 0.4 < waited < 5
        # The slot is free again: a whole upload is decoded.
        response = httpx.post(url + "/new-song", content=body, headers=headers)
        assert response.status_code == 200, response.text
