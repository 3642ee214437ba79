"""A model folder is untrusted input (it can come from ``dvc get``): every size it declares is
checked, before anything of that size is allocated, against bounds, the split's sizes and the
shapes its own arrays and weights hold.

The folders here are written by the models' own ``save`` from hand-made parameters (no
training), then edited as a hostile copy would be.
"""

from __future__ import annotations

import io
import json
import re
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from musicrec.errors import MusicrecError
from musicrec.models.bow import MLP, BowConfig, BowModel
from musicrec.models.cnn import CNNConfig, CNNModel
from musicrec.models.content import load_predictor
from musicrec.models.dbn import DBNConfig, DBNModel, PreferenceModel, _network
from musicrec.models.ridge import RidgeConfig, RidgeModel
from musicrec.models.saved import check_bounded, npz_shapes
from musicrec.models.training import TrainConfig

N_USERS, N_SONGS, N_INPUTS, CF_DIM, N_MELS, DIM = 5, 7, 6, 3, 10, 4
CPU = TrainConfig(device="cpu")
HUGE = 10**12  # far past any machine's memory, in any of the units above


def saved_dbn(directory: Path, kind: str = "hybrid_dbn") -> Path:
    cfg = DBNConfig(layers=(8, DIM))
    model = DBNModel(kind, cfg, CPU)
    wmf = (np.zeros((N_USERS, CF_DIM)), np.zeros((N_SONGS, CF_DIM)))
    model.model = PreferenceModel(
        _network(N_INPUTS, cfg.layers), N_USERS, DIM, wmf if kind == "hybrid_dbn" else None
    )
    model.arrays = {
        "f_mean": np.zeros(N_INPUTS, np.float32),
        "f_std": np.ones(N_INPUTS, np.float32),
        "user_vectors": model._user_matrix(),
    }
    model.save(directory)
    return directory


def saved_cnn(directory: Path) -> Path:
    cfg = CNNConfig(window_frames=16, channels=(8, 8), kernel_size=3, pools=(2,), dense_units=16)
    model = CNNModel("mse", cfg, CPU)
    model.scales = {
        "mel_mean": np.zeros(N_MELS, np.float32),
        "mel_std": np.ones(N_MELS, np.float32),
        "y_mean": np.zeros(DIM, np.float32),
        "y_std": np.ones(DIM, np.float32),
    }
    model._build(N_MELS, DIM)
    model.save(directory)
    return directory


def saved_bow_mlp(directory: Path) -> Path:
    words, components, dims = 8, 4, 6
    model = BowModel(
        "mlp", BowConfig(vocabulary_size=words, pca_components=components, hidden_units=16), CPU
    )
    model.bow.frame_mean, model.bow.frame_std = np.zeros(dims), np.ones(dims)
    model.bow.centres = np.zeros((words, dims))
    model.bow.pca_mean, model.bow.pca_components = np.zeros(words), np.eye(components, words)
    model.arrays = {
        "input_scale": np.ones(components, np.float32),
        "y_mean": np.zeros(DIM, np.float32),
        "y_std": np.ones(DIM, np.float32),
    }
    model.mlp = MLP(components, 16, DIM, 0.1)
    model.save(directory)
    return directory


def edit_config(directory: Path, change: Callable[[dict], None]) -> None:
    path = directory / "config.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def refused_without_allocating(load: Callable[[], object], match: str) -> None:
    """``load()`` raises a MusicrecError matching ``match`` within a second or two, its peak of
    traced memory (Python's and numpy's) under 5 MiB."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(MusicrecError, match=match):
            load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20, f"{peak / 2**20:.1f} MiB traced before the refusal"
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("kind", ["hldbn", "hybrid_dbn"])
def test_a_saved_dbn_loads_with_its_split_sizes(kind, tmp_path):
    directory = saved_dbn(tmp_path / "dbn", kind)
    model = DBNModel.load(directory, n_users=N_USERS, n_songs=N_SONGS)
    assert model.model.beta.shape == (N_USERS, DIM) and model.model.beta.device.type == "cpu"
    assert model.model.hybrid == (kind == "hybrid_dbn")


def test_a_dbn_config_declaring_a_trillion_users_is_refused_before_anything_is_allocated(
    tmp_path,
):
    directory = saved_dbn(tmp_path / "dbn")
    edit_config(directory, lambda meta: meta.update(n_users=HUGE))
    config = re.escape(str(directory / "config.json"))
    refused_without_allocating(
        lambda: DBNModel.load(directory, n_users=N_USERS, n_songs=N_SONGS),
        rf"{config}: n_users is {HUGE}, expected {N_USERS} \(the split's users\)",
    )
    # Without the split's sizes: the bound on users, then the shapes its own arrays hold.
    refused_without_allocating(
        lambda: DBNModel.load(directory), rf"n_users is {HUGE}, expected an integer from 1 to"
    )
    edit_config(directory, lambda meta: meta.update(n_users=10**9))
    refused_without_allocating(
        lambda: DBNModel.load(directory),
        rf"arrays.npz: 'user_vectors' is shape \({N_USERS}, {DIM + CF_DIM}\), "
        rf"expected shape \({10**9}, {DIM + CF_DIM}\)",
    )


def test_a_dbn_config_declaring_a_huge_cf_dim_or_song_count_is_refused_before_allocating(
    tmp_path,
):
    directory = saved_dbn(tmp_path / "dbn")
    edit_config(directory, lambda meta: meta.update(cf_dim=HUGE))
    refused_without_allocating(
        lambda: DBNModel.load(directory), rf"config.json: cf_dim is {HUGE}, expected an integer"
    )
    edit_config(directory, lambda meta: meta.update(cf_dim=CF_DIM, n_songs=HUGE))
    refused_without_allocating(
        lambda: DBNModel.load(directory, n_users=N_USERS, n_songs=N_SONGS),
        rf"n_songs is {HUGE}, expected {N_SONGS} \(the split's songs\)",
    )
    # Without the split's sizes: the weights file's own y [shape=(n_songs, cf_dim)].
    edit_config(directory, lambda meta: meta.update(n_songs=10**9))
    refused_without_allocating(
        lambda: DBNModel.load(directory), rf"model.pt: 'y' is shape \({N_SONGS}, {CF_DIM}\)"
    )
    edit_config(directory, lambda meta: meta["dbn"].update(layers=[8, HUGE]))
    refused_without_allocating(
        lambda: DBNModel.load(directory), rf"dbn.layers\[1\] is {HUGE}, expected an integer"
    )


def test_a_dbn_weights_file_whose_shapes_differ_from_its_config_is_refused(tmp_path):
    directory = saved_dbn(tmp_path / "dbn")
    other = saved_dbn(tmp_path / "other", "hldbn")  # no gamma, no y
    (directory / "model.pt").write_bytes((other / "model.pt").read_bytes())
    with pytest.raises(MusicrecError, match=r"model.pt: 'gamma' is absent, expected shape"):
        DBNModel.load(directory)
    (directory / "model.pt").write_bytes(b"not a weights file")
    with pytest.raises(MusicrecError, match="model.pt: not a weights file torch reads safely"):
        DBNModel.load(directory)


def test_a_cnn_config_declaring_absurd_sizes_is_refused_before_anything_is_allocated(tmp_path):
    directory = saved_cnn(tmp_path / "cnn")
    assert CNNModel.load(directory).net.head[-1].out_features == DIM
    for field, value, message in [
        ("channels", [HUGE, 8], rf"cnn.channels\[0\] is {HUGE}, expected an integer"),
        ("channels", [8] * 10_000, r"cnn.channels is \[8, 8, .*expected a list of 1 to 16"),
        ("dense_units", HUGE, rf"cnn.dense_units is {HUGE}, expected an integer"),
        ("kernel_size", HUGE, rf"cnn.kernel_size is {HUGE}, expected an integer"),
    ]:
        saved = json.loads((directory / "config.json").read_text())
        edit_config(directory, lambda meta, f=field, v=value: meta["cnn"].update({f: v}))
        refused_without_allocating(lambda: CNNModel.load(directory), message)
        (directory / "config.json").write_text(json.dumps(saved))


def test_a_cnn_scales_file_declaring_a_trillion_mel_bands_is_refused_from_its_header(tmp_path):
    directory = saved_cnn(tmp_path / "cnn")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (HUGE,)}
    )
    with np.load(directory / "scales.npz") as scales:
        kept = {k: scales[k] for k in scales.files if k != "mel_mean"}
    np.savez(directory / "scales.npz", **kept)
    with zipfile.ZipFile(directory / "scales.npz", "a") as archive:
        archive.writestr("mel_mean.npy", header.getvalue())  # a header and no data
    refused_without_allocating(
        lambda: CNNModel.load(directory),
        rf"scales.npz: 'mel_mean' declares {4 * HUGE} bytes and holds 0",
    )


def test_a_cnn_weights_file_whose_shapes_differ_from_its_config_is_refused(tmp_path):
    directory = saved_cnn(tmp_path / "cnn")
    edit_config(directory, lambda meta: meta["cnn"].update(channels=[16, 8]))
    with pytest.raises(
        MusicrecError,
        match=r"cnn.pt: 'features.0.bias' is shape \(8,\), expected shape \(16,\)",
    ):
        CNNModel.load(directory)


def test_a_bow_config_declaring_absurd_sizes_is_refused_before_anything_is_allocated(tmp_path):
    directory = saved_bow_mlp(tmp_path / "bow")
    assert BowModel.load(directory).mlp.net[0].out_features == 16
    for field in ("hidden_units", "vocabulary_size", "pca_components"):
        saved = json.loads((directory / "config.json").read_text())
        edit_config(directory, lambda meta, f=field: meta["bow"].update({f: HUGE}))
        refused_without_allocating(
            lambda: BowModel.load(directory),
            rf"config.json: bow.{field} is {HUGE}, expected an integer from",
        )
        (directory / "config.json").write_text(json.dumps(saved))
    # A vocabulary the config declares but the arrays do not hold.
    edit_config(directory, lambda meta: meta["bow"].update(vocabulary_size=9))
    with pytest.raises(MusicrecError, match=r"arrays.npz: 'centres' is shape \(8, 6\)"):
        BowModel.load(directory)


def test_a_bow_weights_file_whose_shapes_differ_from_its_config_is_refused(tmp_path):
    directory = saved_bow_mlp(tmp_path / "bow")
    torch.save(MLP(4, 32, DIM, 0.1).state_dict(), directory / "mlp.pt")  # 32 hidden, not 16
    with pytest.raises(
        MusicrecError, match=r"mlp.pt: 'net.0.bias' is shape \(32,\), expected shape \(16,\)"
    ):
        BowModel.load(directory)


def test_a_ridge_arrays_file_declaring_a_trillion_weights_is_refused_from_its_header(tmp_path):
    model = RidgeModel(RidgeConfig())
    model.alpha = 1.0
    model.arrays = {
        "weights": np.zeros((N_INPUTS, DIM), np.float32),
        "y_scale": np.ones(DIM, np.float32),
        "y_mean": np.zeros(DIM, np.float32),
    }
    model.save(tmp_path / "ridge")
    assert RidgeModel.load(tmp_path / "ridge").alpha == 1.0
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (HUGE, DIM)}
    )
    np.savez(tmp_path / "ridge" / "arrays.npz", y_scale=model.arrays["y_scale"])
    with zipfile.ZipFile(tmp_path / "ridge" / "arrays.npz", "a") as archive:
        archive.writestr("weights.npy", header.getvalue())  # a header and no data
    refused_without_allocating(
        lambda: RidgeModel.load(tmp_path / "ridge"),
        rf"arrays.npz: 'weights' declares {4 * HUGE * DIM} bytes and holds 0",
    )


def test_load_predictor_hands_the_split_sizes_to_the_models_loader(tmp_path, monkeypatch):
    seen = {}

    def load(cls, directory, n_users=None, n_songs=None):
        seen.update(n_users=n_users, n_songs=n_songs)

    monkeypatch.setattr(DBNModel, "load", classmethod(load))
    load_predictor(saved_dbn(tmp_path / "hybrid_dbn" / "predictor"), n_users=5, n_songs=7)
    assert seen == {"n_users": 5, "n_songs": 7}


def test_an_arrays_file_that_is_compressed_or_not_numbers_is_refused_before_loading(tmp_path):
    directory = saved_cnn(tmp_path / "cnn")
    with np.load(directory / "scales.npz") as scales:
        kept = {k: scales[k] for k in scales.files}
    np.savez_compressed(directory / "scales.npz", **kept)  # a zip bomb's way in
    refused_without_allocating(
        lambda: CNNModel.load(directory), r"scales.npz: 'mel_mean' is compressed"
    )
    np.savez(directory / "scales.npz", **{**kept, "mel_mean": np.array(["a"] * N_MELS)})
    refused_without_allocating(
        lambda: CNNModel.load(directory), r"scales.npz: 'mel_mean' has dtype <U1"
    )


def test_a_bounded_arrays_file_of_a_model_with_small_arrays_is_refused_past_the_bounds(
    tmp_path,
):
    path = tmp_path / "arrays.npz"
    np.savez(path, weights=np.zeros((2, 3, 4), np.float32))
    with pytest.raises(MusicrecError, match=r"'weights' is shape \(2, 3, 4\), expected at most"):
        check_bounded(path, npz_shapes(path))
