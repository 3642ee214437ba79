"""RBMs and the DBN: free energy and one CD-1 update against hand computations, and learning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from musicrec.errors import MusicrecError
from musicrec.models.rbm import DBN, RBM, PretrainConfig, train_rbm

# A 2 x 3 example: 2 visible units, 3 hidden units.
W = [[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]]
B_VISIBLE = [0.5, -0.5]
C_HIDDEN = [0.0, 1.0, -1.0]


def example_rbm(gaussian: bool = False) -> RBM:
    rbm = RBM(2, 3, gaussian_visible=gaussian)
    with torch.no_grad():
        rbm.weight.copy_(torch.tensor(W))
        rbm.visible_bias.copy_(torch.tensor(B_VISIBLE))
        rbm.hidden_bias.copy_(torch.tensor(C_HIDDEN))
    return rbm


def softplus(x: float) -> float:
    return float(np.log1p(np.exp(x)))


def test_free_energy_known_answers():
    v = torch.tensor([[1.0, 0.0]])
    # c + v'W = [1, 0, -0.5]
    hidden_term = softplus(1.0) + softplus(0.0) + softplus(-0.5)  # 2.480486
    # Bernoulli: -b'v - sum softplus = -0.5 - 2.480486
    assert example_rbm().free_energy(v).item() == pytest.approx(-2.980486, abs=1e-5)
    assert -0.5 - hidden_term == pytest.approx(-2.980486, abs=1e-5)
    # Gaussian: ||v - b||^2 / 2 - sum softplus = (0.25 + 0.25) / 2 - 2.480486
    assert example_rbm(gaussian=True).free_energy(v).item() == pytest.approx(-2.230486, abs=1e-5)


def test_free_energy_marginalises_the_hidden_units_exactly():
    rbm = example_rbm()
    w, b, c = np.array(W), np.array(B_VISIBLE), np.array(C_HIDDEN)
    for v in itertools.product([0.0, 1.0], repeat=2):
        v = np.array(v)
        # F(v) = -log sum_h exp(-E(v, h)), E(v, h) = -b'v - c'h - v'Wh, over all 8 hidden states
        energies = [
            -(b @ v) - (c @ np.array(h)) - v @ w @ np.array(h)
            for h in itertools.product([0.0, 1.0], repeat=3)
        ]
        brute_force = -np.log(np.sum(np.exp(-np.array(energies))))
        free_energy = rbm.free_energy(torch.tensor(v[None, :], dtype=torch.float32)).item()
        assert free_energy == pytest.approx(brute_force, abs=1e-5)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("gaussian", [False, True])
def test_one_cd1_update_on_the_2x3_example(gaussian):
    rbm = example_rbm(gaussian)
    v0 = torch.tensor([[1.0, 0.0]])
    d_w, d_b, d_c = rbm.contrastive_divergence(v0, k=1, generator=torch.Generator().manual_seed(5))

    w, b, c = np.array(W), np.array(B_VISIBLE), np.array(C_HIDDEN)
    h0 = sigmoid(c + np.array([1.0, 0.0]) @ w)  # [0.731059, 0.5, 0.377541]
    np.testing.assert_allclose(h0, [0.731059, 0.5, 0.377541], atol=1e-6)
    # The one hidden sample CD-1 draws, from the same seeded generator.
    h_sample = torch.bernoulli(
        torch.tensor(h0[None, :], dtype=torch.float32), generator=torch.Generator().manual_seed(5)
    ).numpy()[0]
    activation = b + w @ h_sample
    v1 = activation if gaussian else sigmoid(activation)
    h1 = sigmoid(c + v1 @ w)
    np.testing.assert_allclose(d_w.numpy(), np.outer([1.0, 0.0], h0) - np.outer(v1, h1), atol=1e-6)
    np.testing.assert_allclose(d_b.numpy(), np.array([1.0, 0.0]) - v1, atol=1e-6)
    np.testing.assert_allclose(d_c.numpy(), h0 - h1, atol=1e-6)


def two_prototypes(n: int = 200) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(0)
    kind = rng.integers(0, 2, n)
    prototypes = rng.normal(0, 2, (2, 10))
    data = prototypes[kind] + rng.normal(0, 0.5, (n, 10))
    # Zero mean, unit variance per column: the scale the Gaussian first layer assumes.
    standardised = (data - data.mean(axis=0)) / (data.std(axis=0) + 1e-6)
    return torch.from_numpy(standardised.astype(np.float32)), kind


def test_cd_training_lowers_the_reconstruction_error_and_the_free_energy_of_the_data():
    data, _ = two_prototypes()
    torch.manual_seed(0)
    rbm = RBM(10, 8, gaussian_visible=True)
    before = rbm.free_energy(data).mean().item()
    cfg = PretrainConfig(epochs=20, batch_size=10, gaussian_learning_rate=0.01)
    errors = train_rbm(rbm, data, cfg)
    assert errors[-1] < 0.6 * errors[0]
    noise = torch.randn_like(data)
    with torch.no_grad():
        assert rbm.free_energy(data).mean() < before
        assert rbm.free_energy(data).mean() < rbm.free_energy(noise).mean()  # data is likelier


def test_pretrained_dbn_separates_the_prototypes_and_its_network_matches_the_up_pass():
    data, kind = two_prototypes()
    dbn = DBN([10, 16, 4])
    cfg = PretrainConfig(epochs=20, batch_size=10, gaussian_learning_rate=0.01, learning_rate=0.05)
    history = dbn.pretrain(data, cfg)
    assert len(history) == 2 and all(len(h) == 20 for h in history)
    assert history[1][-1] < history[1][0]  # the upper layer learns too
    top = dbn.transform(data).numpy()
    assert top.shape == (200, 4) and ((top >= 0) & (top <= 1)).all()
    gap = np.abs(top[kind == 0].mean(0) - top[kind == 1].mean(0)).max()
    assert gap > 0.5  # some top unit tells the two kinds apart
    with torch.no_grad():
        torch.testing.assert_close(dbn.to_network()(data), dbn.transform(data))


def test_pretraining_is_seeded():
    data, _ = two_prototypes(50)
    cfg = PretrainConfig(epochs=3, seed=4)
    first, again = DBN([10, 6, 3]), DBN([10, 6, 3])
    first.pretrain(data, cfg)
    again.pretrain(data, cfg)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RBM(0, 3),
        lambda: DBN([10]),
        lambda: PretrainConfig(cd_steps=0),
        lambda: PretrainConfig(learning_rate=0.0),
        lambda: PretrainConfig(momentum=1.0),
    ],
)
def test_bad_params_raise_one_clear_error(make):
    with pytest.raises(MusicrecError):
        make()
