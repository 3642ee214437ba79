"""Machine settings: read from machine.yaml and the environment, never tracked as params."""

import pytest
import yaml

from musicrec.errors import MusicrecError
from musicrec.io import load_params
from musicrec.machine import MACHINE_DEFAULTS, env_name


def _project(tmp_path, params: dict, machine: dict | None = None):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    if machine is not None:
        (tmp_path / "machine.yaml").write_text(yaml.safe_dump(machine))
    return tmp_path / "params.yaml"


def test_defaults_then_params_then_machine_file_then_environment(tmp_path, monkeypatch):
    for section, key in MACHINE_DEFAULTS:
        monkeypatch.delenv(env_name(section, key), raising=False)
    params = {"features": {"n_mels": 64}, "wmf": {"factors": 8, "n_jobs": 3}, "split": {}}
    path = _project(tmp_path, params)
    loaded = load_params(path)
    assert loaded["features"] == {
        "n_mels": 64,
        "n_jobs": 2,
        "backend": "local",
        "scheduler": "",
    }
    assert loaded["wmf"]["n_jobs"] == 3  # an older params.yaml's value still counts
    assert "cnn_training" not in loaded and loaded["split"] == {}
    _project(tmp_path, params, {"features": {"n_jobs": 6, "backend": "dask"}})
    assert load_params(path)["features"]["n_jobs"] == 6
    monkeypatch.setenv("MUSICREC_FEATURES_N_JOBS", "8")
    monkeypatch.setenv("MUSICREC_FEATURES_SCHEDULER", "tcp://10.0.0.1:8786")
    monkeypatch.setenv("MUSICREC_CNN_TRAINING_PROCESSES", "2")
    loaded = load_params(path)
    assert loaded["features"]["n_jobs"] == 8 and loaded["features"]["backend"] == "dask"
    assert loaded["features"]["scheduler"] == "tcp://10.0.0.1:8786"
    assert loaded["cnn_training"] == {"processes": 2}
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == params  # never written


def test_a_result_changing_key_in_machine_yaml_is_refused(tmp_path):
    path = _project(tmp_path, {"wmf": {}}, {"wmf": {"factors": 64}})
    with pytest.raises(MusicrecError, match=r"wmf\.factors is not a machine setting"):
        load_params(path)
    (tmp_path / "machine.yaml").write_text("just text\n")
    with pytest.raises(MusicrecError, match="expected sections of keys"):
        load_params(path)


def test_the_projects_params_hold_no_machine_setting():
    """What DVC tracks (params.yaml) holds none of them: changing one reruns nothing."""
    from conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    held = [f"{s}.{k}" for s, k in MACHINE_DEFAULTS if k in params.get(s, {})]
    assert held == []
    example = yaml.safe_load((REPO / "machine.example.yaml").read_text())
    assert {(s, k): v for s, keys in example.items() for k, v in keys.items()} == MACHINE_DEFAULTS
