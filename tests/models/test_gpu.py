"""The GPU path, one batch at a time: CUDA training with bf16 autocast, checkpoint and resume,
and the loader workers that make the CNN's batches beside a GPU.

Marked ``gpu``: skipped where there is no CUDA device (CI, this project's CPU machines), run by
``benchmarks/gpu_check.py --pytest`` on a GPU machine. The last test checks the loader workers
on the CPU too, so their batches are checked everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.test_content_models import CNN_CFG, DBN_CFG, make_tiny_content
from musicrec.models import distributed
from musicrec.models.cnn import CNNModel, _WindowBatches
from musicrec.models.dbn import DBNModel
from musicrec.models.training import TrainConfig, pick_device

CUDA_CFG = TrainConfig(
    epochs=2, batch_size=8, learning_rate=3e-3, patience=6, device="cuda", loader_workers=2
)


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_content():
    return make_tiny_content()


@pytest.fixture
def layer_outputs():
    """(module type, output dtype, output device type) of every forward while the test runs."""
    seen: list[tuple[str, torch.dtype, str]] = []

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            seen.append((type(module).__name__, output.dtype, output.device.type))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield seen
    handle.remove()


def _interrupted_then_resumed(make, tiny_content, tmp_path, monkeypatch, capsys):
    """Fit whole; fit again, killed in epoch 2 after epoch 1's checkpoint; fit a fresh model
    on that checkpoint folder. Returns (whole, resumed)."""
    features, data, _ = tiny_content
    whole = make().fit(features, data, tmp_path / "whole")
    shard = distributed.shard
    calls = {"n": 0}

    def dying_shard(batches):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's batches: killed after one checkpoint
            raise _Stop
        return shard(batches)

    with monkeypatch.context() as patch:
        patch.setattr(distributed, "shard", dying_shard)
        with pytest.raises(_Stop):
            make().fit(features, data, tmp_path / "cut")
    capsys.readouterr()
    resumed = make().fit(features, data, tmp_path / "cut")
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    return whole, resumed


@pytest.mark.gpu
def test_auto_picks_cuda():
    assert pick_device("auto").type == "cuda"


@pytest.mark.gpu
@pytest.mark.parametrize("objective", ["mse", "wpe"])
def test_cnn_trains_on_cuda_in_bf16_and_resumes_from_a_checkpoint(
    objective, tiny_content, tmp_path, monkeypatch, capsys, layer_outputs
):
    features, data, _ = tiny_content

    def make():
        return CNNModel(objective, CNN_CFG, CUDA_CFG)

    whole, resumed = _interrupted_then_resumed(make, tiny_content, tmp_path, monkeypatch, capsys)
    convolutions = {(dtype, device) for name, dtype, device in layer_outputs if name == "Conv1d"}
    assert convolutions == {(torch.bfloat16, "cuda")}  # autocast ran the convolutions in bf16
    assert all(p.is_cuda and p.dtype == torch.float32 for p in whole.net.parameters())
    predicted = whole.predict(features, data.songs)
    assert predicted.dtype == np.float32 and np.isfinite(predicted).all()
    # The resumed run ends where the whole one did (atomics in a few CUDA kernels may differ
    # in the last bits, so not bit for bit).
    np.testing.assert_allclose(
        resumed.predict(features, data.songs), predicted, rtol=0.05, atol=1e-3
    )
    whole.save(tmp_path / "saved")
    reloaded = CNNModel.load(tmp_path / "saved")  # saved from CUDA, loads on the CPU
    assert reloaded.device.type == "cpu"
    np.testing.assert_allclose(
        reloaded.predict(features, data.songs), predicted, rtol=0.05, atol=1e-3
    )


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["hldbn", "hybrid_dbn"])
def test_dbn_fine_tunes_on_cuda_in_float32_and_resumes_from_a_checkpoint(
    kind, tiny_content, tmp_path, monkeypatch, capsys, layer_outputs
):
    """The DBN's fine-tuning runs on CUDA in float32: its networks are small, so autocast
    would buy nothing (README "On a GPU"); pre-training runs on the CPU."""
    features, data, _ = tiny_content

    def make():
        return DBNModel(kind, DBN_CFG, CUDA_CFG)

    whole, resumed = _interrupted_then_resumed(make, tiny_content, tmp_path, monkeypatch, capsys)
    on_cuda = {dtype for name, dtype, device in layer_outputs if device == "cuda"}
    assert on_cuda == {torch.float32}
    predicted = whole.predict(features, data.songs)
    assert np.isfinite(predicted).all()
    np.testing.assert_allclose(
        resumed.predict(features, data.songs), predicted, rtol=0.05, atol=1e-3
    )


def _window_batches(workers: int, pin: bool) -> list:
    features, data, _ = make_tiny_content()
    clips = np.ascontiguousarray(features["logmel"][:8])
    rng = np.random.default_rng(0)
    plan = [
        (np.array([i, i + 1]), rng.integers(0, 48 - 16 + 1, 2), rng.choice(36, 4, replace=False))
        for i in range(0, 8, 2)
    ]
    dataset = _WindowBatches(clips, plan, 16, data.train_plays.tocsc(), CNN_CFG)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, pin_memory=pin
    )
    return list(loader)


@pytest.mark.gpu
def test_loader_workers_make_pinned_batches_equal_to_the_in_process_ones():
    in_process, workers = _window_batches(0, False), _window_batches(2, True)
    assert len(workers) == len(in_process) == 4
    for ours, theirs in zip(workers, in_process, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert a.is_pinned()
            torch.testing.assert_close(a, b)


def test_loader_workers_make_the_same_batches_on_the_cpu():
    in_process, workers = _window_batches(0, False), _window_batches(2, False)
    for ours, theirs in zip(workers, in_process, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b)
