"""Running a function over many items on this machine's cores or on a Dask cluster.

One mechanism for the stages whose work splits into independent items (``features``): the
caller gets each result as it completes and does the writing itself, so workers need to read
the data folder (a shared file system on a cluster) but never write anywhere.

- ``backend="local"``: joblib worker processes (loky), ``n_jobs`` of them.
- ``backend="dask"``: a ``dask.distributed`` cluster. ``scheduler`` is its address
  (``tcp://host:8786``, as ``dask scheduler`` prints it); empty starts a ``LocalCluster`` of
  ``n_jobs`` single-threaded worker processes on loopback, to try the backend on one machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from joblib import Parallel, delayed

from musicrec.errors import MusicrecError

BACKENDS = ("local", "dask")
CONNECT_TIMEOUT = "20s"


@contextmanager
def dask_client(scheduler: str, n_workers: int) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler``, or on a LocalCluster when it is empty."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise MusicrecError("the dask backend needs dask.distributed: pip install -e .") from exc
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
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
