"""Restricted Boltzmann machines and a deep belief network, as Wang and Wang (2014) stack them.

An RBM has visible units ``v`` [shape=(n_visible,)], binary hidden units ``h``
[shape=(n_hidden,)], weights ``W`` [shape=(n_visible, n_hidden)] and biases ``b`` (visible) and
``c`` (hidden). Its free energy, whose gradient contrastive divergence follows, is

- Bernoulli visible units: ``F(v) = -b'v - sum_j softplus(c_j + v'W_j)``;
- Gaussian visible units of unit variance (the first layer, on standardised real-valued
  features): ``F(v) = ||v - b||^2 / 2 - sum_j softplus(c_j + v'W_j)``.

Training is CD-k (Hinton 2002; the recipe of Hinton's "practical guide", 2010): hidden states
are sampled as binary from ``p(h | v)``, reconstructions of the visible units use their mean
(probabilities for Bernoulli units, ``b + W h`` for Gaussian ones), and the statistics of the
last step use hidden probabilities, which lowers the variance of the update at no cost in bias
that matters. A deep belief network is trained greedily, layer by layer: the first RBM on the
features, each next one on the hidden probabilities of the one below (Hinton, Osindero and Teh
2006). Its weights then initialise a feed-forward network that is fine-tuned by
back-propagation (:meth:`DBN.to_network`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from musicrec.errors import MusicrecError


class RBM(nn.Module):
    """One RBM. ``gaussian_visible`` selects unit-variance Gaussian visible units."""

    def __init__(self, n_visible: int, n_hidden: int, gaussian_visible: bool = False):
        super().__init__()
        if n_visible < 1 or n_hidden < 1:
            raise MusicrecError("rbm: n_visible and n_hidden must be >= 1")
        self.gaussian_visible = gaussian_visible
        self.weight = nn.Parameter(torch.empty(n_visible, n_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))
        nn.init.normal_(self.weight, std=0.01)  # small random weights, as the guide advises

    def hidden_probabilities(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h_j = 1 | v) = sigmoid(c_j + v'W_j)`` [shape=(batch, n_hidden)]."""
        return torch.sigmoid(v @ self.weight + self.hidden_bias)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """``E[v | h]`` [shape=(batch, n_visible)]: ``b + Wh`` or ``sigmoid(b + Wh)``."""
        activation = h @ self.weight.T + self.visible_bias
        return activation if self.gaussian_visible else torch.sigmoid(activation)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v)`` [shape=(batch,)] (formulas in the module docstring)."""
        hidden_term = nn.functional.softplus(v @ self.weight + self.hidden_bias).sum(dim=1)
        if self.gaussian_visible:
            return 0.5 * (v - self.visible_bias).pow(2).sum(dim=1) - hidden_term
        return -(v @ self.visible_bias) - hidden_term

    @torch.no_grad()
    def contrastive_divergence(
        self, v0: torch.Tensor, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CD-k estimates of the log-likelihood gradient, averaged over the batch.

        Parameters
        ----------
        v0 : torch.Tensor [shape=(batch, n_visible)]
            Data.
        k : int
            Gibbs steps.
        generator : torch.Generator, optional
            Source of the hidden samples (seeded runs are reproducible).

        Returns
        -------
        d_weight [shape=(n_visible, n_hidden)], d_visible_bias [(n_visible,)],
        d_hidden_bias [(n_hidden,)] : torch.Tensor
            ``<v h'>_data - <v h'>_model`` and the matching bias terms: add them (times a
            learning rate) to the parameters to climb the likelihood.
        """
        h0 = self.hidden_probabilities(v0)
        hk, vk = h0, v0
        for _ in range(k):
            sample = torch.bernoulli(hk, generator=generator)
            vk = self.visible_mean(sample)
            hk = self.hidden_probabilities(vk)
        n = v0.shape[0]
        d_weight = (v0.T @ h0 - vk.T @ hk) / n
        return d_weight, (v0 - vk).mean(dim=0), (h0 - hk).mean(dim=0)


@dataclass(frozen=True)
class PretrainConfig:
    """Greedy layer-wise pre-training (``dbn`` params)."""

    epochs: int = 10
    batch_size: int = 64
    cd_steps: int = 1
    learning_rate: float = 0.01  # Bernoulli layers
    gaussian_learning_rate: float = 0.001  # the Gaussian first layer wants smaller steps
    momentum: float = 0.5
    weight_decay: float = 0.0002
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.cd_steps < 1:
            raise MusicrecError("dbn: need epochs >= 0, batch_size >= 1 and cd_steps >= 1")
        if self.learning_rate <= 0 or self.gaussian_learning_rate <= 0:
            raise MusicrecError("dbn: learning rates must be > 0")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise MusicrecError("dbn: need 0 <= momentum < 1 and weight_decay >= 0")


def train_rbm(rbm: RBM, data: torch.Tensor, cfg: PretrainConfig, desc: str = "rbm") -> list[float]:
    """Train ``rbm`` on ``data`` [shape=(n, n_visible)] by CD-k with momentum and weight decay.

    Returns the mean squared reconstruction error per epoch (a progress signal, not what CD
    minimises).
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    rate = cfg.gaussian_learning_rate if rbm.gaussian_visible else cfg.learning_rate
    velocity = [torch.zeros_like(p) for p in (rbm.weight, rbm.visible_bias, rbm.hidden_bias)]
    errors = []
    for _ in tqdm(range(cfg.epochs), desc=desc, unit="epoch", leave=False):
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for start in range(0, len(data), cfg.batch_size):
            batch = data[order[start : start + cfg.batch_size]]
            grads = rbm.contrastive_divergence(batch, cfg.cd_steps, generator)
            with torch.no_grad():
                grads = (grads[0] - cfg.weight_decay * rbm.weight, grads[1], grads[2])
                for param, step, grad in zip(
                    (rbm.weight, rbm.visible_bias, rbm.hidden_bias), velocity, grads, strict=True
                ):
                    step.mul_(cfg.momentum).add_(rate * grad)
                    param.add_(step)
                recon = rbm.visible_mean(rbm.hidden_probabilities(batch))
                total += float((recon - batch).pow(2).sum())
        errors.append(total / data.numel())
    return errors


class DBN(nn.Module):
    """A stack of RBMs: Gaussian-Bernoulli at the bottom, Bernoulli-Bernoulli above.

    Parameters
    ----------
    layer_sizes : list of int
        ``[n_features, hidden_1, ..., hidden_L]``.
    """

    def __init__(self, layer_sizes: list[int]):
        super().__init__()
        if len(layer_sizes) < 2:
            raise MusicrecError("dbn: layer_sizes needs the input size and at least one layer")
        self.rbms = nn.ModuleList(
            RBM(n_in, n_out, gaussian_visible=(i == 0))
            for i, (n_in, n_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:], strict=True))
        )

    def pretrain(self, features: torch.Tensor, cfg: PretrainConfig) -> list[list[float]]:
        """Greedy layer-wise CD training from a seeded start; returns each layer's
        reconstruction errors."""
        generator = torch.Generator().manual_seed(cfg.seed)
        history, data = [], features
        for i, rbm in enumerate(self.rbms):
            with torch.no_grad():
                nn.init.normal_(rbm.weight, std=0.01, generator=generator)
                rbm.visible_bias.zero_()
                rbm.hidden_bias.zero_()
            layer_cfg = PretrainConfig(**{**cfg.__dict__, "seed": cfg.seed + i})
            history.append(train_rbm(rbm, data, layer_cfg, desc=f"dbn layer {i + 1}"))
            with torch.no_grad():
                data = rbm.hidden_probabilities(data)
        return history

    @torch.no_grad()
    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """Top-layer hidden probabilities [shape=(n, hidden_L)] (a deterministic up-pass)."""
        data = features
        for rbm in self.rbms:
            data = rbm.hidden_probabilities(data)
        return data

    def to_network(self) -> nn.Sequential:
        """A feed-forward sigmoid network initialised with the RBMs' recognition weights."""
        layers: list[nn.Module] = []
        for rbm in self.rbms:
            linear = nn.Linear(*rbm.weight.shape)
            with torch.no_grad():
                linear.weight.copy_(rbm.weight.T)
                linear.bias.copy_(rbm.hidden_bias)
            layers += [linear, nn.Sigmoid()]
        return nn.Sequential(*layers)
