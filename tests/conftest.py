"""Shared fixtures: an offline environment, a tiny synthetic world, a DVC project factory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from musicrec.tiny import TINY_MACHINE, TINY_WORLD, tiny_params  # noqa: F401 - the tests import them from here

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# No network, ever, from anything the tests start.
os.environ.update(
    WANDB_MODE="offline",
    WANDB_ERROR_REPORTING="false",
    DO_NOT_TRACK="1",
    GX_ANALYTICS_ENABLED="false",
    DVC_NO_ANALYTICS="1",
)
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
os.environ.setdefault("MPLCONFIGDIR", str(REPO / ".cache" / "matplotlib"))


# Fixtures that run the pipeline's stages, DVC or a browser: a test that uses one is ``slow``,
# and `make test-fast` leaves it out.
SLOW_FIXTURES = frozenset({"dvc_project", "trained_project", "browser_page"})


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that uses a slow fixture; skip tests marked ``gpu``, saying
    why, where torch sees no CUDA device."""
    import torch

    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="gpu: no CUDA device here (torch "
        f"{torch.__version__}); run on a GPU machine: benchmarks/gpu_check.py --pytest"
    )
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A synthetic data folder (60 songs of 3 s, 200 users), made once per test session."""
    from musicrec.synthesize import WorldConfig, synthesize_world

    root = tmp_path_factory.mktemp("world") / "synthetic"
    synthesize_world(WorldConfig(**TINY_WORLD), root, n_jobs=1)
    return root


def run(
    cmd: list[str], cwd: Path, check: bool = True, env_extra: dict | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env_extra or {}))
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def dvc_project(tmp_path):
    """Make a fresh git + DVC copy of the project (dvc.yaml, src/) with the given params."""

    def make(params: dict) -> Path:
        project = tmp_path / "project"
        project.mkdir()
        shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
        shutil.copytree(
            REPO / "src",
            project / "src",
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
        )
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        # One process a stage: a tiny world gains nothing from more (musicrec.machine).
        (project / "machine.yaml").write_text(yaml.safe_dump(TINY_MACHINE, sort_keys=False))
        (project / ".gitignore").write_text(".cache/\nwandb/\nmachine.yaml\n")
        run(["git", "init", "-q"], project)
        run(["git", "config", "user.email", "test@musicrec.local"], project)
        run(["git", "config", "user.name", "musicrec tests"], project)
        run(["dvc", "init", "-q"], project)
        run(["dvc", "config", "core.analytics", "false"], project)
        run(["dvc", "config", "core.check_update", "false"], project)
        run(["git", "add", "-A"], project)
        run(["git", "commit", "-qm", "init"], project)
        return project

    return make


CHROMIUM_FLAGS = [
    # As root in a container, and with no network: no sandbox, and none of the background
    # connections Chromium makes (they are refused here, many at a time).
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page():
    """Open a local HTML file in headless Chromium (Debian's, via Playwright).

    Yields ``open(path) -> (page, requests)``: the Playwright page after load, and the URLs of
    every request the page made. The browser starts at the first call, and that call skips the
    test, saying why, where Chromium or Playwright is missing (``scripts/test_setup.sh``, run by
    ``make test``, installs Chromium where it can), so checks made before it still count.
    """
    started: dict = {}

    def open_page(path: Path):
        if "browser" not in started:
            chromium = shutil.which("chromium")
            if chromium is None:
                pytest.skip("no Debian chromium here (make test installs it where apt-get can)")
            sync_api = pytest.importorskip("playwright.sync_api", reason="a dev dependency")
            started["playwright"] = sync_api.sync_playwright().start()
            started["browser"] = started["playwright"].chromium.launch(
                executable_path=chromium, args=CHROMIUM_FLAGS
            )
        page = started["browser"].new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        return page, requests

    yield open_page
    if "browser" in started:
        started["browser"].close()
        started["playwright"].stop()


def as_nobody(function) -> str:
    """Run ``function()`` in a forked child as user ``nobody`` (when root); return its result.

    Root reads and writes whatever the permissions say, so permission checks need another
    user. The child returns ``str(result)``, or ``"raised <exception repr>"``.
    """
    if os.geteuid() != 0:
        try:
            return str(function())
        except BaseException as exc:  # noqa: BLE001 - reported as text, like the child's
            return f"raised {exc!r}"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        try:
            os.setuid(65534)
            message = str(function())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"raised {exc!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message


TRAINED_STAGES = (
    "validate",
    "features",
    "split",
    "baselines",
    "tune",
    "wmf",
    "cnn",
    "hybrid",
    "evaluate",
)


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, tiny_world) -> Path:
    """A project folder holding what `dvc repro` leaves on the tiny world, made once.

    The stages run as `musicrec <stage>` in DAG order, without DVC and without the bow, dbn and
    report stages, which recommending does not need.
    """
    project = tmp_path_factory.mktemp("trained")
    params = tiny_params()
    params["data"]["root"] = str(tiny_world)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    for stage in TRAINED_STAGES:
        run(["musicrec", stage], project)
    return project


def offline_records(run_dir) -> list:
    """The records of an offline run's log (``run-*.wandb``): W&B's header, then records in
    LevelDB's log format (32 KiB blocks; each chunk a CRC, a length, a type: full, first,
    middle, last)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:  # a block's tail too short for a header is padding
            position += room
            continue
        length, kind = struct.unpack_from("<HB", data, position + 4)
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def run_job_type(run_dir) -> str:
    """The stage an offline W&B run was opened for (its ``job_type``)."""
    return next(
        r.run.job_type for r in offline_records(run_dir) if r.WhichOneof("record_type") == "run"
    )


def artifact_records(run_dir) -> dict[str, tuple[str, bool, list[str]]]:
    """Artifact name -> (digest, used, references) for every artifact an offline run logged or
    used."""
    return {
        r.artifact.name: (
            r.artifact.digest,
            r.artifact.use_after_commit,
            [entry.ref for entry in r.artifact.manifest.contents],
        )
        for r in offline_records(run_dir)
        if r.WhichOneof("record_type") == "artifact"
    }


def within_or_let_go(seconds: float, fifo: Path, work: Callable[[], Any]) -> Any:
    """``work()``'s result, run in a thread; fails if it takes over ``seconds``. A call blocked
    on opening ``fifo`` is then let go (writers open it), so a regression fails, not hangs."""
    done: dict = {}

    def target():
        try:
            done["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            done["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        # Each open for writing lets one open for reading that waits on the FIFO return: let
        # them all go, so that the call ends and later tests are not stuck behind it.
        for _ in range(100):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # no reader at this moment
            thread.join(0.1)
            if not thread.is_alive():
                break
        pytest.fail(f"still running after {seconds} s: blocked on the FIFO {fifo}")
    if "error" in done:
        raise done["error"]
    return done["value"]
