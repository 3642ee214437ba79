"""Machine settings: how many processes, which cluster, how many loader workers.

They say how a stage computes, never what: the features, models and metrics are the same, bit
for bit, whatever they are (each is tested so). So they are not in ``params.yaml``, which DVC
tracks, where changing one would rerun the stage and everything after it. They come from, the
later winning:

1. the defaults below (:data:`MACHINE_DEFAULTS`);
2. ``params.yaml`` itself, where an older file still holds one (DVC then tracks it);
3. ``machine.yaml`` beside ``params.yaml`` (ignored by git; ``machine.example.yaml`` shows
   every key), with the same sections as ``params.yaml``;
4. an environment variable ``MUSICREC_<SECTION>_<KEY>``, e.g. ``MUSICREC_FEATURES_N_JOBS=8``
   or ``MUSICREC_CNN_TRAINING_PROCESSES=2`` (read as YAML: ``8``, ``dask``, ``""``).

:func:`musicrec.io.load_params` applies them, so every stage reads them where it always has
(``features.n_jobs``, ``cnn_training.processes``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from musicrec.errors import MusicrecError

MACHINE_FILE = "machine.yaml"
# (section, key) -> default. Only these are machine settings; anything else in machine.yaml is
# an error (a result-changing param belongs in params.yaml, where DVC sees it).
MACHINE_DEFAULTS: dict[tuple[str, str], Any] = {
    ("synthesize", "n_jobs"): 2,  # worker processes rendering audio
    ("validate", "n_jobs"): 2,  # threads probing audio files
    ("features", "n_jobs"): 2,  # worker processes (local), or workers of a local Dask cluster
    ("features", "backend"): "local",  # local | dask (README "When one machine is not enough")
    ("features", "scheduler"): "",  # dask: tcp://host:8786; "" starts a local cluster
    ("wmf", "n_jobs"): 0,  # implicit's ALS threads; 0: all cores
    ("cnn_training", "loader_workers"): 4,  # batch-making processes beside a GPU (none on CPU)
    ("cnn_training", "processes"): 1,  # > 1: DistributedDataParallel under torchrun
    ("dbn_training", "loader_workers"): 0,  # batches are slices of in-memory arrays
    ("dbn_training", "processes"): 1,
}


def env_name(section: str, key: str) -> str:
    """The environment variable of a machine setting: ``MUSICREC_<SECTION>_<KEY>``."""
    return f"MUSICREC_{section}_{key}".upper()


def machine_settings(machine_file: Path | None) -> dict[tuple[str, str], Any]:
    """The settings given by ``machine_file`` (when it exists) and the environment.

    Raises
    ------
    MusicrecError
        If the file is not a mapping of sections, or names a key that is no machine setting.
    """
    found: dict[tuple[str, str], Any] = {}
    if machine_file is not None and Path(machine_file).exists():
        loaded = yaml.safe_load(Path(machine_file).read_text()) or {}
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise MusicrecError(f"{machine_file}: expected sections of keys, as in params.yaml")
        for section, keys in loaded.items():
            for key, value in keys.items():
                if (section, key) not in MACHINE_DEFAULTS:
                    known = ", ".join(f"{s}.{k}" for s, k in MACHINE_DEFAULTS)
                    raise MusicrecError(
                        f"{machine_file}: {section}.{key} is not a machine setting (they are "
                        f"{known}); a param that changes results belongs in params.yaml"
                    )
                found[section, key] = value
    for section, key in MACHINE_DEFAULTS:
        raw = os.environ.get(env_name(section, key))
        if raw is not None:
            found[section, key] = yaml.safe_load(raw) if raw != "" else ""
    return found


def apply_machine_settings(params: dict, machine_file: Path | None) -> dict:
    """``params`` with every machine setting filled in (in place, and returned): the
    defaults where neither params.yaml nor the machine gives one, the machine's over both."""
    given = machine_settings(machine_file)
    for (section, key), default in MACHINE_DEFAULTS.items():
        if (section, key) in given:
            params.setdefault(section, {})[key] = given[section, key]
        elif section in params and isinstance(params[section], dict):
            params[section].setdefault(key, default)
    return params
