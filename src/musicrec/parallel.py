"""Running a function over many items on this machine's cores or on a Dask cluster.

One mechanism for the stages whose work splits into independent items (``features``): the
caller gets each result as it completes and does the writing itself, so workers need to read
the data folder (a shared file system on a cluster) but never write anywhere.

- ``backend="local"``: joblib worker processes (loky), ``n_jobs`` of them.
- ``backend="dask"``: a ``dask.distributed`` cluster. ``scheduler`` is its address (as
  ``dask scheduler`` prints it); empty starts a ``LocalCluster`` of ``n_jobs`` single-threaded
  worker processes on loopback, to try the backend on one machine.

A Dask client unpickles what the workers send, and a scheduler runs what clients send: whoever
reaches the scheduler runs code on every machine of the cluster. So a cluster beyond this
machine is reached over TLS with certificates on both sides (``tls://host:8786``; the client's
files named by ``MUSICREC_DASK_TLS_CA``, ``MUSICREC_DASK_TLS_CERT``, ``MUSICREC_DASK_TLS_KEY``:
:func:`scheduler_security`); plain ``tcp://`` is accepted on loopback and private addresses
only (10/8, 172.16/12, 192.168/16, fc00::/7), where the network is yours.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from joblib import Parallel, delayed

from musicrec.errors import MusicrecError

BACKENDS = ("local", "dask")
CONNECT_TIMEOUT = "20s"


TLS_ENV = ("MUSICREC_DASK_TLS_CA", "MUSICREC_DASK_TLS_CERT", "MUSICREC_DASK_TLS_KEY")


def _is_private(host: str) -> bool:
    """Whether every address ``host`` resolves to is loopback or private."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    return bool(addresses) and all(a.is_loopback or a.is_private for a in addresses)


def scheduler_security(scheduler: str):
    """The ``distributed.security.Security`` to reach ``scheduler`` with: mutual TLS for a
    ``tls://`` address (the files named by :data:`TLS_ENV`), none for ``tcp://`` on a loopback
    or private address.

    Raises
    ------
    MusicrecError
        For plain ``tcp://`` to a public address, a ``tls://`` address without the three
        files, or another scheme; each says what to do.
    """
    parts = urlsplit(scheduler)
    if parts.scheme == "tcp":
        if not _is_private(parts.hostname or ""):
            raise MusicrecError(
                f"features.scheduler {scheduler!r}: plain tcp:// is accepted on loopback and "
                "private addresses only (a client unpickles what the cluster sends it); use "
                f"tls://, with the client's CA, certificate and key in {', '.join(TLS_ENV)} "
                '(README "When one machine is not enough")'
            )
        return None
    if parts.scheme != "tls":
        raise MusicrecError(
            f"features.scheduler {scheduler!r}: use tls://HOST:PORT (or tcp:// on a private "
            "network)"
        )
    files = {name: os.environ.get(name, "") for name in TLS_ENV}
    missing = [name for name, path in files.items() if not path or not Path(path).is_file()]
    if missing:
        raise MusicrecError(
            f"features.scheduler {scheduler!r} is TLS: set {', '.join(missing)} to the client's "
            "CA certificate, certificate and key files (PEM)"
        )
    from distributed.security import Security

    ca, cert, key = (files[name] for name in TLS_ENV)
    return Security(
        tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True
    )


@contextmanager
def dask_client(scheduler: str, n_workers: int) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler`` (secured by :func:`scheduler_security`), or
    on a LocalCluster on loopback when it is empty."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise MusicrecError("the dask backend needs dask.distributed: pip install -e .") from exc
    if scheduler:
        security = scheduler_security(scheduler)
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT, security=security)
        except OSError as exc:
            raise MusicrecError(
                f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); start one with "
                "`dask scheduler` and workers with `dask worker ADDRESS`, or leave "
                "features.scheduler empty for a local cluster"
            ) from exc
        with client:
            yield client
        return
    # No dashboard (it needs bokeh and a port); workers on loopback only.
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def map_unordered(
    function: Callable[[Any], Any],
    items: list[Any],
    n_jobs: int = 1,
    backend: str = "local",
    scheduler: str = "",
) -> Iterator[Any]:
    """Yield ``function(item)`` for every item, in the order they complete.

    Parameters
    ----------
    function : callable
        A module-level function (it is pickled to the workers).
    items : list
        Its arguments, one call each.
    n_jobs : int
        Local worker processes (``local``), or workers of the local cluster (``dask`` with no
        scheduler).
    backend : {"local", "dask"}
    scheduler : str
        The Dask scheduler's address (``dask`` only).
    """
    if backend not in BACKENDS:
        raise MusicrecError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if not items:
        return
    if backend == "local":
        yield from Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(function)(item) for item in items
        )
        return
    from distributed import as_completed

    with dask_client(scheduler, n_jobs) as client:
        # pure=False: every call runs (the items are paths, and a file may have changed).
        futures = client.map(function, items, pure=False)
        for future in as_completed(futures):
            yield future.result()
            future.release()  # the result lives only until the caller has written it
