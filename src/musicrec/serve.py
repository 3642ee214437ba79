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
project's git revision, read when the artifacts were loaded. ``SIGHUP``, or ``POST /reload``
with ``Authorization: Bearer <token>`` (the token from ``$MUSICREC_RELOAD_TOKEN`` or
``--reload-token``; without one, HTTP reload is off and answers 403; from loopback only, unless
``--allow-remote-reload``), loads the artifacts again into a new recommender and then swaps it
in: a request uses the recommender it started with, so none is dropped or answered from
half-loaded artifacts; one reload runs at a time (another gets 409).

The schema is at ``/openapi.json`` (the interactive ``/docs`` page loads its script from a CDN,
so it needs a network). The artifacts are loaded once, before the first request. A request body
larger than ``--max-upload-mb`` is refused with 413 before it is read whole; an unknown id gives
404, unusable audio 422 (a file whose header declares more than a rate of 192 kHz, 8 channels
or 32 million samples in its clips is refused before it is decoded), missing artifacts 503, each
with a ``detail`` that says what to do and no path of the server's files.

What the server refuses, and why:

- a ``Host`` header that is not one of ``--allowed-hosts`` (loopback names by default): 400, so
  a web page whose DNS name was rebound to this machine cannot read the answers;
- a POST whose ``Origin`` header is present and not of an allowed host: 403, so another site's
  page cannot make a visitor's browser upload or reload (curl and scripts send no Origin);
- heavy requests past ``--max-decodes`` at once, uploads and ``/similar`` each (their own
  slots, so slow uploads cannot lock out the queries): an upload finds a free slot or gets 503
  with ``Retry-After`` at once, ``/similar`` waits up to ``QUERY_WAIT_SECONDS`` for one; the
  slot is taken on the event loop, before any worker
  thread is held, and the work runs on threads of its own, so waiting uploads never stall the
  other endpoints;
- an upload whose body has not arrived ``--upload-timeout`` seconds after its slot was taken:
  408, so a client that trickles its body cannot keep a slot.

uvicorn accepts at most ``--max-connections`` connections and closes idle ones after 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from musicrec.errors import MusicrecError
from musicrec.recommend import MissingArtifactError, Recommendations, Recommender, UnknownIdError
from musicrec.tracking import git_revision, locked_outputs

MAX_N = 10_000
UPLOAD_TIMEOUT_SECONDS = 30.0  # an upload's whole body must arrive within this (--upload-timeout)
QUERY_WAIT_SECONDS = 1.0  # /similar waits this long for a heavy slot (no thread held), then 503
RETRY_AFTER_SECONDS = 5
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # --allowed-hosts' default
RELOAD_TOKEN_ENV = "MUSICREC_RELOAD_TOKEN"
MIN_TOKEN_LENGTH = 16
# An upload's name lends the temporary file its extension (a hint to the decoder) only when it
# is a plain short one: anything else (a NUL byte, a slash, a long tail) is dropped.
UPLOAD_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")
T = TypeVar("T")


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


def allowed_host_patterns(hosts: Sequence[str]) -> list[str]:
    """The ``Host`` names a server answers, as :class:`TrustedHostMiddleware` matches them.

    Names are lower-cased and an IPv6 address is bracketed (``::1`` -> ``[::1]``, as a Host
    header carries it). ``*.example.com`` allows the subdomains of example.com, ``*`` any host.

    Raises
    ------
    MusicrecError
        No name at all, a name with a port, or a misplaced wildcard.
    """
    patterns = []
    for given in hosts:
        host = given.strip().lower()
        with contextlib.suppress(ValueError):
            host = f"[{ipaddress.IPv6Address(host.strip('[]'))}]"
        wildcard = host.startswith("*") and host != "*"
        if not host or "*" in host[1:] or (wildcard and not host.startswith("*.")):
            raise MusicrecError(
                f"allowed host {given!r}: give a name (localhost), an address (127.0.0.1, ::1), "
                "'*.example.com' for the subdomains of example.com, or '*' for any host"
            )
        if ":" in host and not host.startswith("["):
            raise MusicrecError(f"allowed host {given!r}: give it without a port")
        patterns.append(host)
    if not patterns:
        raise MusicrecError(
            f"--allowed-hosts names no host (the default is {','.join(LOOPBACK_HOSTS)})"
        )
    return patterns


def checked_reload_token(token: str | None) -> str | None:
    """``token``, or None where it is empty; a token too short to resist guessing raises
    :class:`MusicrecError`."""
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise MusicrecError(
            f"the reload token must have {MIN_TOKEN_LENGTH} characters at least; make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )
    return token or None


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` (lower case, an IPv6 address bracketed) matches one of ``patterns``,
    as :class:`TrustedHostMiddleware` matches a Host header."""
    return any(
        host == pattern or (pattern.startswith("*") and host.endswith(pattern[1:]))
        for pattern in patterns
    )


def _url_host(url: str) -> tuple[str, str | None]:
    """The scheme and host of ``url``, the host lower case, an IPv6 address bracketed."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # a malformed IPv6 address
        return "", None
    return parts.scheme, f"[{host}]" if host and ":" in host else host


class OriginCheck:
    """ASGI middleware: refuse (403) a state-changing request that another site's page sent.

    A browser sends the page's ``Origin`` with every POST it makes, including those it sends
    without asking the server first (a form, or a fetch with a ``text/plain`` body); programs
    such as curl send none. A POST, PUT, PATCH or DELETE that carries an Origin is let through
    only when the Origin is the server's own: ``http`` or ``https`` with the request's ``Host``
    (host and port) and that host allowed. ``null`` (a sandboxed or local page) is refused.
    """

    SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app, allowed_hosts: Sequence[str]):
        self.app, self.allowed_hosts = app, list(allowed_hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in self.SAFE_METHODS:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or self.allowed(origin, headers.get("host", "")):
            return await self.app(scope, receive, send)
        detail = (
            f"cross-site request refused: Origin {origin[:200]!r} is not a page of this server "
            "(allowed hosts: --allowed-hosts); send it from a program without an Origin header"
        )
        return await JSONResponse({"detail": detail}, status_code=403)(scope, receive, send)

    def allowed(self, origin: str, host_header: str) -> bool:
        """Whether ``origin`` is this server's own: http(s), its host and port those of the
        request's ``Host`` (another port of the same machine is another site, as a browser
        counts it), and that host allowed."""
        scheme, host = _url_host(origin)
        if scheme not in ("http", "https") or not host:
            return False
        try:
            same_origin = urlsplit(origin).netloc.lower() == host_header.lower()
        except ValueError:
            return False
        return same_origin and ("*" in self.allowed_hosts or host_allowed(host, self.allowed_hosts))


class HeavyWork:
    """At most ``slots`` heavy requests at once (decoding an upload, ranking all songs).

    A request takes a slot on the event loop, before it holds any worker thread, and one that
    finds none free is answered 503 with ``Retry-After`` (at once, or after waiting up to
    ``wait`` seconds, still without a thread). Its work then runs on threads of this
    limiter's own (:meth:`run`), never on those the other endpoints run on, so however many
    uploads arrive, ``/health`` and the other queries still find a thread.

    Parameters
    ----------
    slots : int
        At least 1.
    """

    def __init__(self, slots: int):
        self.slots = slots
        self._slots = anyio.CapacityLimiter(slots)
        # Admitted requests only, so never waited on: the threads' own pool, apart from the
        # default one that plain ``def`` endpoints share.
        self._threads = anyio.CapacityLimiter(slots)

    @contextlib.asynccontextmanager
    async def slot(self, wait: float = 0.0) -> AsyncIterator[None]:
        """Hold a slot for the ``async with`` block; 503 where none is free within ``wait``."""
        borrower = object()  # the slot is the request's, whichever task or thread works for it
        try:
            if wait > 0:
                with anyio.fail_after(wait):
                    await self._slots.acquire_on_behalf_of(borrower)
            else:
                self._slots.acquire_on_behalf_of_nowait(borrower)
        except (anyio.WouldBlock, TimeoutError):
            raise HTTPException(
                503,
                f"busy: {self.slots} heavy requests (uploads being decoded, /similar) are "
                f"running, the most at once (--max-decodes); try again in a few seconds",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        try:
            yield
        finally:
            self._slots.release_on_behalf_of(borrower)

    async def run(self, func: Callable[[], T]) -> T:
        """``func()`` on one of this limiter's threads."""
        return await anyio.to_thread.run_sync(func, limiter=self._threads)


async def read_form(request: Request, timeout: float) -> FormData:
    """The request's multipart form (one file at most), read within ``timeout`` seconds.

    Raises
    ------
    HTTPException
        408 (closing the connection) when the body has not arrived in time; 400 when the client
        went away before it did.
    """
    try:
        with anyio.fail_after(timeout):
            return await request.form(max_files=1, max_fields=8)
    except TimeoutError:
        raise HTTPException(
            408,
            f"the request body did not arrive within {timeout:g} s (--upload-timeout); "
            "send it again, whole",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise HTTPException(400, "the client went away before the body arrived") from None


def upload_suffix(filename: str) -> str:
    """The extension of an upload's name, when it is a plain one (``.mp3``), else ``""``."""
    suffix = os.path.splitext(filename)[1]
    return suffix if UPLOAD_SUFFIX.fullmatch(suffix) else ""


def decode_upload(recommender: Recommender, upload: UploadFile, n: int) -> Recommendations:
    """``Recommender.new_song`` on an uploaded file (blocking: run it in a worker thread)."""
    name = upload.filename or "upload"
    # soundfile reads from a path (it tells formats by content, the suffix a hint).
    with tempfile.NamedTemporaryFile(suffix=upload_suffix(name)) as tmp:
        shutil.copyfileobj(upload.file, tmp, 1 << 20)
        tmp.flush()
        return recommender.new_song(Path(tmp.name), n, n, name=name)


def without_paths(message: str, project: Path) -> str:
    """``message`` with the server's project and temporary folders left out of its paths."""
    for folder in {str(project.resolve()), str(project), tempfile.gettempdir()}:
        if folder not in ("", "."):
            message = message.replace(folder.rstrip(os.sep) + os.sep, "")
    return message


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
# /new-song reads its form itself (after taking a slot), so FastAPI is told what the body is.
UPLOAD = {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": "the audio: wav, flac, ogg/vorbis, ogg/opus or mp3",
                            }
                        },
                    }
                }
            },
        }
    },
    "responses": {
        408: {"description": "the body did not arrive within --upload-timeout"},
        413: {"description": "the body is larger than --max-upload-mb"},
        422: {"description": "no file, or a file that is not usable audio"},
        503: {"description": "--max-decodes uploads are being decoded; see Retry-After"},
    },
}


def create_app(
    recommender: Recommender,
    max_upload_bytes: int = 20 * 2**20,
    max_decodes: int = 2,
    allow_remote_reload: bool = False,
    served: Served | None = None,
    *,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    reload_token: str | None = None,
    upload_timeout: float = UPLOAD_TIMEOUT_SECONDS,
) -> FastAPI:
    """The HTTP API over a :class:`Recommender` (its artifacts loaded by the caller).

    Parameters
    ----------
    recommender : Recommender
        What ``served`` starts with; ``POST /reload`` and SIGHUP replace it.
    max_upload_bytes : int
        The largest request body (413 past it).
    max_decodes : int
        Heavy requests at once (uploads being decoded, ``/similar``): at least 1.
    allow_remote_reload : bool
        Accept ``POST /reload`` from other hosts than loopback (with the token still).
    served : Served, optional
        The holder of the recommender in use, where the caller keeps one (SIGHUP's).
    allowed_hosts : sequence of str
        The ``Host`` names answered (:func:`allowed_host_patterns`); others get 400.
    reload_token : str, optional
        The bearer token ``POST /reload`` must send (16 characters at least); None turns
        HTTP reload off (403).
    upload_timeout : float
        Seconds an upload's whole body may take to arrive once it has a slot (408 past it).

    Raises
    ------
    MusicrecError
        A setting that cannot work, saying which and how to fix it.
    """
    if max_decodes < 1:
        raise MusicrecError(f"--max-decodes must be at least 1 (got {max_decodes})")
    if not upload_timeout > 0:
        raise MusicrecError(f"--upload-timeout must be above 0 seconds (got {upload_timeout})")
    reload_token = checked_reload_token(reload_token)
    hosts = allowed_host_patterns(allowed_hosts)
    uploads = HeavyWork(max_decodes)
    # Apart from the uploads' slots, which a slow body can hold up to --upload-timeout: a few
    # slow uploaders must not lock out the queries.
    queries = HeavyWork(max_decodes)
    served = served or Served(recommender)
    app = FastAPI(
        title="musicrec",
        version="0.1.0",
        summary="Content-based music recommendation from the last `dvc repro`",
    )
    # The last added runs first: a foreign Host is refused before anything else looks at the
    # request, then a foreign Origin, then an oversized body.
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    app.add_middleware(OriginCheck, allowed_hosts=hosts)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)

    @app.exception_handler(MusicrecError)
    async def musicrec_error(request: Request, exc: MusicrecError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownIdError) else 422
        status = 503 if isinstance(exc, MissingArtifactError) else status
        detail = without_paths(str(exc), served.current[0].project)
        return JSONResponse({"detail": detail}, status_code=status)

    # Plain `def` endpoints: FastAPI runs them in its thread pool, so requests run concurrently
    # (numpy and torch release the GIL in their heavy parts). The heavy ones are `async def`
    # and run their work on HeavyWork's threads, after taking a slot.
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
        if reload_token is None:
            raise HTTPException(
                403,
                f"reload over HTTP is off: start the server with {RELOAD_TOKEN_ENV} set (or "
                "--reload-token) and send it as 'Authorization: Bearer <token>', or send "
                "SIGHUP to the server's process (kill -HUP <pid>, printed at start)",
            )
        client = request.client.host if request.client else ""
        if not allow_remote_reload and client not in LOOPBACK:
            raise HTTPException(403, "reload is allowed from loopback only (--allow-remote-reload)")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), reload_token.encode()
        ):
            raise HTTPException(
                401,
                "POST /reload needs 'Authorization: Bearer <token>' with the server's reload "
                f"token (${RELOAD_TOKEN_ENV} or --reload-token where it started)",
                headers={"WWW-Authenticate": "Bearer"},
            )
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

    @app.post("/new-song", **RANKED, **UPLOAD)
    async def new_song(request: Request, n: int = Query(10, ge=1, le=MAX_N)) -> dict:
        recommender = served.current[0]
        # The slot first: a refused upload is answered before its body is read.
        async with uploads.slot():
            form = await read_form(request, upload_timeout)
            try:
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    raise RequestValidationError(
                        [
                            {
                                "type": "missing" if upload is None else "value_error",
                                "loc": ("body", "file"),
                                "msg": "an audio file is required: a multipart form field "
                                "'file' with a filename (curl -F file=@song.mp3)",
                                "input": None,
                            }
                        ]
                    )
                return await uploads.run(lambda: answer(decode_upload(recommender, upload, n)))
            finally:
                await form.close()

    @app.get("/similar/{song_id}", **RANKED)
    async def similar(song_id: str, n: int = Query(10, ge=1, le=MAX_N)) -> dict:
        recommender = served.current[0]
        async with queries.slot(wait=QUERY_WAIT_SECONDS):
            return await queries.run(lambda: answer(recommender.similar(song_id, n)))

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
        "--max-decodes",
        type=int,
        default=2,
        help="heavy requests at once: uploads decoded, /similar (default: 2)",
    )
    parser.add_argument(
        "--upload-timeout",
        type=float,
        default=UPLOAD_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="an upload's whole body must arrive within this, else 408 "
        f"(default: {UPLOAD_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--max-connections", type=int, default=64, help="open connections (default: 64)"
    )
    parser.add_argument(
        "--allowed-hosts",
        default=",".join(LOOPBACK_HOSTS),
        metavar="HOST,HOST",
        help="Host header names answered, others get 400; '*.example.com' for subdomains "
        f"(default: {','.join(LOOPBACK_HOSTS)}). Name here what clients type in the URL "
        "when --host is not loopback",
    )
    parser.add_argument(
        "--reload-token",
        default=os.environ.get(RELOAD_TOKEN_ENV) or None,
        metavar="TOKEN",
        help=f"the bearer token POST /reload must send (default: ${RELOAD_TOKEN_ENV}, which "
        "unlike an argument no other user sees in `ps`); without one, HTTP reload is off "
        "(SIGHUP still reloads)",
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
    # The settings are checked before the artifacts load (which takes a while).
    allowed_hosts = allowed_host_patterns(args.allowed_hosts.split(","))
    reload_token = checked_reload_token(args.reload_token)
    if args.max_decodes < 1 or not args.upload_timeout > 0:
        parser.error("--max-decodes must be at least 1 and --upload-timeout above 0")
    import uvicorn

    recommender = _loaded(Recommender(args.project))
    served = Served(recommender)
    app = create_app(
        recommender,
        int(args.max_upload_mb * 2**20),
        args.max_decodes,
        args.allow_remote_reload,
        served,
        allowed_hosts=allowed_hosts,
        reload_token=reload_token,
        upload_timeout=args.upload_timeout,
    )
    # SIGHUP reloads too (in a thread: a handler must return at once).
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=served.reload).start())
    reload_how = "POST /reload with the token or" if reload_token else "HTTP reload off;"
    print(
        f"musicrec serve: http://{args.host}:{args.port} (schema: /openapi.json; "
        f"models {served.current[1]['models']}; Host: {','.join(allowed_hosts)}; "
        f"{reload_how} kill -HUP {os.getpid()} to reload)"
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
