"""Running a function over many items on this machine's cores or on a Dask cluster.

One mechanism for the stages whose work splits into independent items (``features``): the
caller gets each result as it completes and does the writing itself, so workers need to read
the data folder (a shared file system on a cluster) but never write anywhere.

- ``backend="local"``: joblib worker processes (loky), ``n_jobs`` of them.
- ``backend="dask"``: a ``dask.distributed`` cluster. ``scheduler`` is its address (as
  ``dask scheduler`` prints it); empty starts a ``LocalCluster`` of ``n_jobs`` single-threaded
  worker processes on loopback, to try the backend on one machine.

A Dask client unpickles what the workers send, and a scheduler runs what clients send: whoever
reaches the scheduler, or answers in its place, runs code on every machine of the cluster. So a
cluster beyond this machine is reached over TLS with certificates on both sides
(``tls://host:8786``; the client's files named by ``MUSICREC_DASK_TLS_CA``,
``MUSICREC_DASK_TLS_CERT``, ``MUSICREC_DASK_TLS_KEY``: :func:`scheduler_connection`), where the
certificates, not the address, say who is at the other end.

Plain ``tcp://`` authenticates nobody, so it is accepted on loopback only (127/8, ::1), where no
other machine can answer. ``MUSICREC_DASK_ALLOW_PLAIN_TCP=1`` extends it to the networks a site
assigns itself, RFC 1918 (10/8, 172.16/12, 192.168/16) and IPv6 unique local addresses
(fc00::/7), for a cluster on a network you trust. It is an environment variable beside the TLS
ones, set where the client runs, rather than a machine setting, which ``params.yaml``
(committed, changed by pull requests) could also give. Even then unspecified (0.0.0.0, ::),
link-local (169.254/16, fe80::/10, reachable by whoever shares the link), multicast, reserved
and benchmarking (198.18/15) addresses and anything public are refused: ``ipaddress``'s
``is_private`` counts several of these as private, so the rule lists the networks it allows
instead. A host name is resolved once, every address it resolves to must pass, and the client
connects to that checked address (``tcp://IP:PORT``), never to the name: a second lookup could
answer differently (DNS rebinding) and send the client to a machine the check never saw.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from joblib import Parallel, delayed

from musicrec.errors import MusicrecError

if TYPE_CHECKING:
    from distributed.security import Security

BACKENDS = ("local", "dask")
CONNECT_TIMEOUT = "20s"


TLS_ENV = ("MUSICREC_DASK_TLS_CA", "MUSICREC_DASK_TLS_CERT", "MUSICREC_DASK_TLS_KEY")
PLAIN_TCP_ENV = "MUSICREC_DASK_ALLOW_PLAIN_TCP"
DEFAULT_PORT = 8786  # `dask scheduler`'s
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# Listed rather than ``is_private``, which also holds for 0.0.0.0, 169.254/16 and 198.18/15.
SITE_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def plain_tcp_allowed() -> bool:
    """Whether :data:`PLAIN_TCP_ENV` opts in to plain ``tcp://`` on RFC 1918 and ULA addresses
    (``1``, ``true`` or ``yes``)."""
    return os.environ.get(PLAIN_TCP_ENV, "").strip().lower() in ("1", "true", "yes")


def _normalised(address: IPAddress) -> IPAddress:
    """``address``, or the IPv4 address an IPv4-mapped IPv6 one (``::ffff:a.b.c.d``) stands for,
    so that a mapped address meets the IPv4 rules."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _plain_tcp_refusal(address: IPAddress, allow_site: bool) -> str | None:
    """Why plain ``tcp://`` to ``address`` is refused, or None when it is accepted."""
    if any(address in net for net in LOOPBACK):
        return None
    if any(address in net for net in SITE_NETWORKS):
        if allow_site:
            return None
        return (
            f"{address} is a private network address, where plain tcp:// needs "
            f"{PLAIN_TCP_ENV}=1 (set it only on a network you trust)"
        )
    return f"{address} is not a loopback or private network (RFC 1918, fc00::/7) address"


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` stands for, from one lookup (no lookup for an IP literal)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise MusicrecError(
            f"cannot resolve the Dask scheduler's host {host!r} ({exc}); check the name in "
            "features.scheduler"
        ) from exc
    addresses: list[IPAddress] = []
    for info in infos:
        # A scope (%eth0) belongs to link-local IPv6 addresses only, which are refused anyway.
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _plain_tcp_address(scheduler: str, host: str, port: int) -> str:
    """``tcp://IP:PORT`` for the one lookup of ``host``, when every address it gives passes."""
    if not host:
        raise MusicrecError(f"features.scheduler {scheduler!r}: no host; use tcp://HOST:PORT")
    addresses = [_normalised(a) for a in _resolve(host, port)]
    if not addresses:
        raise MusicrecError(f"features.scheduler {scheduler!r}: {host!r} resolves to nothing")
    allow_site = plain_tcp_allowed()
    for address in addresses:
        why = _plain_tcp_refusal(address, allow_site)
        if why is not None:
            raise MusicrecError(
                f"features.scheduler {scheduler!r}: {why}. Plain tcp:// is accepted on "
                f"loopback, and with {PLAIN_TCP_ENV}=1 on RFC 1918 and fc00::/7 addresses "
                "(a client unpickles what the cluster sends it); elsewhere use tls://, with "
                f"the client's CA, certificate and key in {', '.join(TLS_ENV)} "
                '(README "When one machine is not enough")'
            )
    # IPv4 first, as a scheduler listens there by default; `localhost` often answers ::1 first.
    chosen = next((a for a in addresses if a.version == 4), addresses[0])
    shown = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    return f"tcp://{shown}:{port}"


def scheduler_connection(scheduler: str) -> tuple[str, Security | None]:
    """The address to hand ``distributed.Client`` for ``scheduler``, and the
    ``distributed.security.Security`` to reach it with.

    Parameters
    ----------
    scheduler : str
        ``tcp://HOST[:PORT]`` or ``tls://HOST[:PORT]``, as ``dask scheduler`` prints it.

    Returns
    -------
    address : str
        For ``tcp://``, ``tcp://IP:PORT`` with the address the host resolved to in the one
        lookup that was checked; a ``tls://`` address unchanged (its certificate, checked
        against the CA, says who answers).
    security : distributed.security.Security or None
        Mutual TLS for ``tls://`` (the files named by :data:`TLS_ENV`); None for ``tcp://``.

    Raises
    ------
    MusicrecError
        For plain ``tcp://`` to an address the module docstring's rule refuses, a host that
        does not resolve, a ``tls://`` address without the three files, or another scheme;
        each says what to do.
    """
    parts = urlsplit(scheduler)
    if parts.scheme == "tcp":
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise MusicrecError(
                f"features.scheduler {scheduler!r}: the port is not a number from 1 to 65535"
            ) from exc
        return _plain_tcp_address(scheduler, parts.hostname or "", port), None
    if parts.scheme != "tls":
        raise MusicrecError(
            f"features.scheduler {scheduler!r}: use tls://HOST:PORT (or tcp:// on loopback, "
            f"or on a private network with {PLAIN_TCP_ENV}=1)"
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
    security = Security(
        tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True
    )
    return scheduler, security


@contextmanager
def dask_client(scheduler: str, n_workers: int) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler`` (at the address and with the security of
    :func:`scheduler_connection`), or on a LocalCluster on loopback when it is empty."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise MusicrecError("the dask backend needs dask.distributed: pip install -e .") from exc
    if scheduler:
        address, security = scheduler_connection(scheduler)
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT, security=security)
        except OSError as exc:
            raise MusicrecError(
                f"cannot reach the Dask scheduler at {scheduler!r} ({address}: {exc}); start "
                "one with `dask scheduler` and workers with `dask worker ADDRESS`, or leave "
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
