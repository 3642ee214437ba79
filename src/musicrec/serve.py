"""``musicrec serve``: the four recommend operations over HTTP, JSON in and out.

========================================  ==================================================
``GET  /recommend/user/{user_id}?n&model``  top songs for a known listener
``POST /recommend/seed-songs``              ``{"songs": [ids], "n": 10}``: a new listener
``POST /new-song?n``                        multipart upload ``file``: listeners, similar songs
``GET  /similar/{song_id}?n``               songs most like a catalogue song
``GET  /health``                            the models in use and their version
``POST /reload``                            load the artifacts again (after a ``dvc repro``)
========================================  ==================================================

Every answer has a typed schema (``/openapi.json``). The version in ``/health`` is the
``dvc.lock`` hash of the models (what ``dvc repro`` last wrote under ``data/models/``) and the
project's git revision, read when the artifacts were loaded. ``POST /reload`` (from loopback
only, unless ``--allow-remote-reload``) or ``SIGHUP`` loads the artifacts again into a new
recommender and then swaps it in: a request uses the recommender it started with, so none is
dropped or answered from half-loaded artifacts; one reload runs at a time (another gets 409).

The schema is at ``/openapi.json`` (the interactive ``/docs`` page loads its script from a CDN,
so it needs a network). The artifacts are loaded once, before the first request. A request body
larger than ``--max-upload-mb`` is refused with 413 before it is read whole; an unknown id gives
404, unusable audio 422 (a file whose header declares more than a rate of 192 kHz, 8 channels
or 32 million samples in its clips is refused before it is decoded), missing artifacts 503, each
with a ``detail`` that says what to do. At most ``--max-decodes`` uploads are decoded at once;
one more waits up to ``DECODE_WAIT_SECONDS`` and is then answered 503 (try again), so a burst
of uploads cannot take every core and the memory. uvicorn accepts at most
``--max-connections`` connections and closes idle ones after 5 s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from musicrec.errors import MusicrecError
from musicrec.recommend import MissingArtifactError, Recommender, UnknownIdError
from musicrec.tracking import git_revision, locked_outputs

MAX_N = 10_000
DECODE_WAIT_SECONDS = 10.0  # an upload waits this long for a decoding slot, then gets 503


class SeedSongs(BaseModel):
    """A new listener's songs."""

    songs: list[str] = Field(min_length=1, max_length=1000, description="song ids they like")
    n: int = Field(10, ge=1, le=MAX_N, description="how many songs to recommend")


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` (413), declared or streamed.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked
    body is counted as it arrives, and reading stops at the limit.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._detail()}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # Raised inside the app, where FastAPI turns it into the response.
                raise HTTPException(413, self._detail())
            return message

        return await self.app(scope, limited_receive, send)

    def _detail(self) -> str:
        return f"request body larger than {self.max_bytes:,} bytes (see --max-upload-mb)"


class Row(BaseModel):
    """One ranked row: a song (``song_id``, its role, title and artist where known) or a
    listener (``user_id``), with its ``score`` or ``cosine``."""

    model_config = ConfigDict(extra="allow")
    rank: int
    song_id: str | None = None
    user_id: str | None = None
    score: float | None = None
    cosine: float | None = None


class Ranked(BaseModel):
    """A ranked list and how it was made (:class:`musicrec.recommend.Recommendations`)."""

    kind: str = Field(description="recommendations, listeners or similar songs")
    query: dict[str, Any]
    model: str = Field(description="the model that ranked")
    method: str
    items: list[Row]
    similar_songs: list[Row] | None = Field(None, description="new-song: songs like it")
    notes: list[str] | None = None


class ModelVersion(BaseModel):
    models: str | None = Field(
        description="hash of dvc.lock's entries for data/models/ (None: no dvc.lock)"
    )
    git_revision: str | None = Field(description="the project's HEAD (None: not a git work tree)")
    model_outputs: int = Field(description="dvc.lock's outputs under data/models/")


class Health(BaseModel):
    status: str
    songs: int
    users: int
    default_model: str
    audio_model: str
    version: ModelVersion
    loaded_at: str = Field(description="when these artifacts were loaded (UTC, ISO 8601)")


def model_version(project: Path) -> dict:
    """What identifies the models a server answers with: a hash of the ``dvc.lock`` entries
    (path and md5) of every output under ``data/models/``, and the git revision."""
    outputs = {
        path: md5
        for path, md5 in locked_outputs(Path(project)).items()
        if path.startswith("data/models/")
    }
    listing = "\n".join(f"{path} {md5}" for path, md5 in sorted(outputs.items()))
    return {
        "models": hashlib.sha1(listing.encode()).hexdigest()[:12] if outputs else None,
        "git_revision": git_revision(project),
        "model_outputs": len(outputs),
    }


class Served:
    """The recommender in use and its version; :meth:`reload` swaps in a new one whole."""

    def __init__(self, recommender: Recommender):
        self._reloading = threading.Lock()
        self._set(recommender)

    def _set(self, recommender: Recommender) -> None:
        # One assignment of a tuple: a request reads the recommender and its version together.
        self.current = (
            recommender,
            model_version(recommender.project),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    def reload(self) -> bool:
        """Load the artifacts into a new recommender, then swap it in. False, and nothing
        done, when a reload is running already."""
        if not self._reloading.acquire(blocking=False):
            return False
        try:
            self._set(_loaded(Recommender(self.current[0].project)))
        finally:
            self._reloading.release()
        return True


def _loaded(recommender: Recommender) -> Recommender:
    recommender.warm_up()
    return recommender


LOOPBACK = {"127.0.0.1", "::1", "localhost"}
RANKED = {"response_model": Ranked, "response_model_exclude_none": True}


def create_app(
    recommender: Recommender,
    max_upload_bytes: int = 20 * 2**20,
    max_decodes: int = 2,
    allow_remote_reload: bool = False,
    served: Served | None = None,
) -> FastAPI:
    """The HTTP API over a :class:`Recommender` (its artifacts loaded by the caller), which
    ``POST /reload`` replaces; ``max_decodes`` uploads are decoded at once at most."""
    decoding = threading.BoundedSemaphore(max_decodes)
    served = served or Served(recommender)
    app = FastAPI(
        title="musicrec",
        version="0.1.0",
        summary="Content-based music recommendation from the last `dvc repro`",
    )
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)

    @app.exception_handler(MusicrecError)
    async def musicrec_error(request: Request, exc: MusicrecError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownIdError) else 422
        status = 503 if isinstance(exc, MissingArtifactError) else status
        return JSONResponse({"detail": str(exc)}, status_code=status)

    # Plain `def` endpoints: FastAPI runs them in its thread pool, so requests run concurrently
    # (numpy and torch release the GIL in their heavy parts).
    def answer(result) -> dict:
        # The recommender's own dict (as the CLI's --json prints it), checked against Ranked;
        # fields a kind of answer lacks are left out, not sent as null (RANKED).
        return result.to_dict()

    @app.get("/health", response_model=Health)
    def health() -> dict:
        recommender, version, loaded_at = served.current
        return {
            "status": "ok",
            "songs": len(recommender.songs),
            "users": len(recommender.users),
            "default_model": recommender.best_model("all"),
            "audio_model": recommender.audio_model,
            "version": version,
            "loaded_at": loaded_at,
        }

    @app.post("/reload", response_model=Health)
    def reload(request: Request) -> dict:
        client = request.client.host if request.client else ""
        if not allow_remote_reload and client not in LOOPBACK:
            raise HTTPException(403, "reload is allowed from loopback only (--allow-remote-reload)")
        if not served.reload():
            raise HTTPException(409, "a reload is running already; try again when it is done")
        return health()

    @app.get("/recommend/user/{user_id}", **RANKED)
    def recommend_user(
        user_id: str, n: int = Query(10, ge=1, le=MAX_N), model: str | None = None
    ) -> dict:
        return answer(served.current[0].for_user(user_id, n, model))

    @app.post("/recommend/seed-songs", **RANKED)
    def recommend_seed_songs(request: SeedSongs) -> dict:
        return answer(served.current[0].for_seed_songs(request.songs, request.n))

    @app.post("/new-song", **RANKED)
    def new_song(file: UploadFile, n: int = Query(10, ge=1, le=MAX_N)) -> dict:
        recommender = served.current[0]
        if not decoding.acquire(timeout=DECODE_WAIT_SECONDS):
            raise HTTPException(
                503,
                f"{max_decodes} uploads are being decoded already; try again shortly",
                headers={"Retry-After": "5"},
            )
        try:
            suffix = Path(file.filename or "upload").suffix[:8]
            # soundfile reads from a path (it tells formats by content, the suffix a hint).
            with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
                for chunk in iter(lambda: file.file.read(1 << 20), b""):
                    tmp.write(chunk)
                tmp.flush()
                return answer(recommender.new_song(Path(tmp.name), n, n, name=file.filename))
        finally:
            decoding.release()

    @app.get("/similar/{song_id}", **RANKED)
    def similar(song_id: str, n: int = Query(10, ge=1, le=MAX_N)) -> dict:
        return answer(served.current[0].similar(song_id, n))

    app.state.served = served
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="musicrec serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest request body (default: 20)"
    )
    parser.add_argument(
        "--max-decodes", type=int, default=2, help="uploads decoded at once (default: 2)"
    )
    parser.add_argument(
        "--max-connections", type=int, default=64, help="open connections (default: 64)"
    )
    parser.add_argument(
        "--project", type=Path, default=Path("."), help="the folder `dvc repro` ran in"
    )
    parser.add_argument(
        "--allow-remote-reload",
        action="store_true",
        help="accept POST /reload from other hosts too (default: loopback only)",
    )
    args = parser.parse_args(argv)
    import uvicorn

    recommender = _loaded(Recommender(args.project))
    served = Served(recommender)
    app = create_app(
        recommender,
        int(args.max_upload_mb * 2**20),
        args.max_decodes,
        args.allow_remote_reload,
        served,
    )
    # SIGHUP reloads too (in a thread: a handler must return at once).
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=served.reload).start())
    print(
        f"musicrec serve: http://{args.host}:{args.port} (schema: /openapi.json; "
        f"models {served.current[1]['models']}, pid {os.getpid()}: kill -HUP to reload)"
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        limit_concurrency=args.max_connections,
        timeout_keep_alive=5,
    )
    return 0
