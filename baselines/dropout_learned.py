"""Dropout with a learned keep probability, trained with REINFORCE (paper Section 4.3).

Each weight layer but the first has a Bernoulli mask ``z`` on its input with keep
probability ``pi = sigmoid(logit)``, one ``logit`` per layer, learned together with the
weights ``M`` (dense layers: one Bernoulli unit per input unit; convolutions: one per
input *channel*, so that ``W = diag(z) M`` is a distribution over the filters as the
bound below assumes).

The objective (per layer, dropping constants; derived from Section 2.3)::

    E_q(z)[log p(D | z, M)] - pi / 2 * ||M||^2 + K * H(pi)

with ``K`` Bernoulli units per layer and ``H(pi) = -pi log pi - (1 - pi) log(1 - pi)``.
Derivation: take eq. 7 with a N(0, I) prior, ``q(z) = Bern(pi)`` and
``q(W | z) = N(diag(z) M, sigma^2)`` with ``sigma -> 0`` (its entropy does not depend on
``pi`` or ``M`` and is dropped). ``E[log p(W)]`` gives ``-pi / 2 * ||M||^2``. The
entropy terms are ``E[log r(z | W) - log q(z)]``. The paper's choice
``r(z | W) = q(z)`` cancels them, which leaves no entropy term: that bound is loose by
``I(z; W)``, which here is the whole ``H(q(z)) = K * H(pi)``, because ``z`` can be read
off ``W`` as ``sigma -> 0`` (a zero row of W means a dropped unit). The best auxiliary
``r(z | W) = q(z | W)`` is a point mass, so ``log r = 0`` and ``-E[log q(z)] = K * H(pi)``
remains. That is Gal & Ghahramani's KL, ``pi / 2 * ||M||^2 - K * H(pi)``. It is the
default (``entropy=True``) because without it nothing but the likelihood pulls ``pi``
away from 0, and because the paper calls its Section 2.3 bound "equivalent to the one
described at (Gal & Ghahramani, 2015b)" (Section 4.3), whose KL has this term.
``entropy=False`` gives the bound with the paper's literal ``r = q(z)``.
Being defined up to the dropped constants, ``kl()`` is negative when the entropy term
outweighs the weight penalty; only its gradient matters.

Gradients. ``M`` gets the usual pathwise gradient through the masked forward pass. The
prior and entropy terms are differentiated exactly in ``logit``. The likelihood term's
gradient in ``logit`` is the score-function (REINFORCE) estimator with a global
baseline ``b`` (Mnih & Gregor 2014: a running average of the learning signal)::

    mean_n (log p(y_n | x_n, z_n, M) - b) * d log q(z_n) / d logit,

where ``z_n`` is example ``n``'s mask (one mask per example, so only example ``n``'s
log-likelihood is its signal). ``loss()`` returns a surrogate whose gradient is this
estimator and whose *value* is the plain objective ``mean NLL + KL / N``. ``b`` is
updated after use, so it never depends on the current masks (the first step sets ``b``
from its own batch, which biases that single step only).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from uqbench.baselines.dropout import check_rate

import uqbench
from uqbench.architectures import CLASSIFICATION, LayerFactory
from uqbench.errors import ConfigError
from uqbench.layers import PriorConv2d, PriorLinear, he_init_, uniform
from uqbench.posterior import Posterior


def bernoulli_entropy(logit: Tensor) -> Tensor:
    """Entropy in nats of ``Bernoulli(sigmoid(logit))``, stable for large ``|logit|``."""
    pi = torch.sigmoid(logit)
    return pi * F.softplus(-logit) + (1.0 - pi) * F.softplus(logit)


def score_function_surrogate(signal: Tensor, baseline: Tensor | float, log_q: Tensor) -> Tensor:
    """A zero-valued term whose gradient is the REINFORCE estimate of ``d E[signal]``.

    ``signal`` and ``log_q`` are per-sample ``[n]``; the gradient flows only through
    ``log_q`` (the log-probability of each sample's draw) and equals
    ``mean_n (signal_n - baseline) * d log_q_n``. Add it to an objective being
    maximised, or subtract it from a loss.
    """
    advantage = (signal - baseline).detach()
    return (advantage * (log_q - log_q.detach())).mean()


class LearnedDropout(nn.Module):
    """A weight layer with a Bernoulli input mask whose keep probability is learned."""

    def __init__(
        self, layer: nn.Linear | nn.Conv2d, p: float, index: int, entropy: bool = True
    ) -> None:
        super().__init__()
        self.layer = he_init_(layer)
        keep = 1.0 - p
        self.logit = nn.Parameter(torch.tensor(math.log(keep) - math.log1p(-keep)))
        self.index = index
        self.entropy = entropy
        self.conv = isinstance(layer, nn.Conv2d)
        # Bernoulli units K: input units (dense) or input channels (conv).
        self.n_units = layer.in_channels if self.conv else layer.in_features
        #: When True, ``forward`` keeps the per-example ``log q(mask)`` in ``log_q``.
        self.record = False
        self.log_q: Tensor | None = None

    def keep_prob(self) -> Tensor:
        """The keep probability ``pi = sigmoid(logit)``."""
        return torch.sigmoid(self.logit)

    def sample_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A mask for input ``x`` (broadcastable to it) and per-example ``log q(mask)``.

        The mask has no gradient; ``log q`` ``[batch]`` is differentiable in ``logit``.
        """
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        pi = torch.sigmoid(self.logit.detach())
        mask = (uniform(shape, x) < pi).to(x.dtype)
        log_q = mask * F.logsigmoid(self.logit) + (1.0 - mask) * F.logsigmoid(-self.logit)
        return mask, log_q.flatten(1).sum(1)

    def forward(self, x: Tensor) -> Tensor:
        mask, log_q = self.sample_mask(x)
        if self.record:
            self.log_q = log_q
        return self.layer(x * mask)

    def kl(self) -> Tensor:
        """``pi / 2 * ||M||^2`` minus ``K * H(pi)`` when the entropy term is on."""
        kl = 0.5 * self.keep_prob() * self.layer.weight.pow(2).sum()
        if self.entropy:
            kl = kl - self.n_units * bernoulli_entropy(self.logit)
        return kl

    def extra_repr(self) -> str:
        return f"index={self.index}, units={self.n_units}, entropy={self.entropy}"


class LearnedDropoutLayers:
    """Layer factory: learned-rate dropout on the input of every weight layer but the first."""

    def __init__(self, p: float, entropy: bool) -> None:
        self.p = p
        self.entropy = entropy

    def linear(self, in_features: int, out_features: int, *, index: int, last: bool) -> nn.Module:
        if index == 0:
            return PriorLinear(in_features, out_features)
        layer = nn.Linear(in_features, out_features)
        return LearnedDropout(layer, self.p, index, self.entropy)

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, *, index: int
    ) -> nn.Module:
        if index == 0:
            return PriorConv2d(in_channels, out_channels, kernel_size)
        layer = nn.Conv2d(in_channels, out_channels, kernel_size)
        return LearnedDropout(layer, self.p, index, self.entropy)


@uqbench.register_posterior("dropout-learned")
class DropoutLearned(Posterior):
    """MC dropout whose per-layer keep probabilities are learned by REINFORCE.

    Config: ``p`` the initial dropout rate of every layer, ``entropy`` whether the
    objective keeps the Bernoulli entropy (see the module docstring), ``baseline_decay``
    the decay of the running-average baseline.
    """

    display_name = "Dropout (learned p)"
    vectorize_seeds = True  # tests/test_vectorize.py
    defaults: dict[str, Any] = {"p": 0.5, "entropy": True, "baseline_decay": 0.9}

    def __init__(self, spec: uqbench.ModelSpec, **config: Any) -> None:
        super().__init__(spec, **config)
        decay = float(self.config["baseline_decay"])
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"dropout-learned: baseline_decay must be in [0, 1), got {decay}")
        self.register_buffer("baseline", torch.zeros(()))
        self.register_buffer("baseline_ready", torch.zeros((), dtype=torch.bool))

    def layer_factory(self) -> LayerFactory:
        return LearnedDropoutLayers(check_rate(self.config["p"]), bool(self.config["entropy"]))

    def dropout_layers(self) -> list[LearnedDropout]:
        """The layers with a learned mask, input side first."""
        return [m for m in self.net.modules() if isinstance(m, LearnedDropout)]

    def per_example_nll(self, out: Tensor, y: Tensor) -> Tensor:
        """``[batch]`` negative log-likelihoods whose mean is :meth:`Posterior.nll`."""
        if self.spec.kind == CLASSIFICATION:
            return F.cross_entropy(out, y, reduction="none")
        sigma = float(self.spec.noise_std or 1.0)
        resid = (y.reshape(out.shape) - out) / sigma
        per = 0.5 * resid.pow(2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)
        return per.reshape(out.shape[0], -1).mean(1)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Surrogate loss: value ``mean NLL + KL / N``, REINFORCE gradient for the logits."""
        layers = self.dropout_layers()
        for layer in layers:
            layer.record = True
        try:
            out = self(x)
            log_q = sum((layer.log_q for layer in layers), torch.zeros((), device=x.device))
        finally:
            for layer in layers:
                layer.record = False
                layer.log_q = None
        nll_each = self.per_example_nll(out, y)
        nll = nll_each.mean()
        kl = self.kl()
        signal = -nll_each.detach()
        baseline = torch.where(self.baseline_ready, self.baseline, signal.mean())
        surrogate = score_function_surrogate(signal, baseline, log_q)
        loss = nll + kl / self.spec.n_data - surrogate
        with torch.no_grad():
            decay = float(self.config["baseline_decay"])
            self.baseline.copy_(decay * baseline + (1.0 - decay) * signal.mean())
            self.baseline_ready.fill_(True)
        stats = {"nll": nll.detach(), "kl": kl.detach(), "baseline": baseline.detach()}
        for layer in layers:
            stats[f"keep_prob/layer{layer.index}"] = layer.keep_prob().detach()
        return loss, stats

    def diagnostics(self) -> dict[str, Any]:
        """The learned keep probabilities, ``{"keep_prob": {"layer<index>": pi}}``."""
        return {
            "keep_prob": {
                f"layer{layer.index}": float(layer.keep_prob().detach())
                for layer in self.dropout_layers()
            }
        }
