"""``musicrec serve``: the four recommend operations over HTTP, JSON in and out.

========================================  ==================================================
``GET  /recommend/user/{user_id}?n&model``  top songs for a known listener
``POST /recommend/seed-songs``              ``{"songs": [ids], "n": 10}``: a new listener
``POST /new-song?n``                        multipart upload ``file``: listeners, similar songs
``GET  /similar/{song_id}?n``               songs most like a catalogue song
``GET  /health``                            the models in use
========================================  ==================================================

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
import tempfile
import threading
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from musicrec.errors import MusicrecError
from musicrec.recommend import MissingArtifactError, Recommender, UnknownIdError

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


def create_app(
    recommender: Recommender, max_upload_bytes: int = 20 * 2**20, max_decodes: int = 2
) -> FastAPI:
    """The HTTP API over one :class:`Recommender` (its artifacts loaded by the caller);
    ``max_decodes`` uploads are decoded at once at most."""
    decoding = threading.BoundedSemaphore(max_decodes)
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
    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "songs": len(recommender.songs),
            "users": len(recommender.users),
            "default_model": recommender.best_model("all"),
            "audio_model": recommender.audio_model,
        }

    @app.get("/recommend/user/{user_id}")
    def recommend_user(
        user_id: str, n: int = Query(10, ge=1, le=MAX_N), model: str | None = None
    ) -> dict:
        return recommender.for_user(user_id, n, model).to_dict()

    @app.post("/recommend/seed-songs")
    def recommend_seed_songs(request: SeedSongs) -> dict:
        return recommender.for_seed_songs(request.songs, request.n).to_dict()

    @app.post("/new-song")
    def new_song(file: UploadFile, n: int = Query(10, ge=1, le=MAX_N)) -> dict:
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
                return recommender.new_song(Path(tmp.name), n, n, name=file.filename).to_dict()
        finally:
            decoding.release()

    @app.get("/similar/{song_id}")
    def similar(song_id: str, n: int = Query(10, ge=1, le=MAX_N)) -> dict:
        return recommender.similar(song_id, n).to_dict()

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
    args = parser.parse_args(argv)
    import uvicorn

    recommender = Recommender(args.project)
    recommender.warm_up()
    app = create_app(recommender, int(args.max_upload_mb * 2**20), args.max_decodes)
    print(f"musicrec serve: http://{args.host}:{args.port} (schema: /openapi.json)")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        limit_concurrency=args.max_connections,
        timeout_keep_alive=5,
    )
    return 0
