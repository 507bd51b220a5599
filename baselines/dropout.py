"""MC dropout (Gal & Ghahramani): Table 1's "mixture of zero and delta peaks".

A Bernoulli mask multiplies the *input* of every weight layer except the first
(``index`` 0: the toy task's one-dimensional input must not be dropped, paper footnote
9; on images the pixels are kept too). Masks are drawn on every forward pass, in
training and in evaluation alike (no ``nn.Dropout`` mode switch), one mask per example
and per input element: a forward pass of the model is one sample of the posterior, and
``sample_outputs`` repeats the batch so each row gets its own mask. For convolutions
the mask drops feature-map elements, as Gal & Ghahramani's Bayesian LeNet does.

Parametrisation and prior. The paper writes the dropout posterior as
``W = diag(z) M`` with ``z ~ Bernoulli(pi)``, ``pi = 1 - p`` the keep probability, and
derives (Section 2.3) that with the N(0, I) prior the KL term reduces to
``E_q(z)[0.5 * ||diag(z) M||^2] = pi / 2 * ||M||^2``. We use that parametrisation
literally: masked inputs are *not* rescaled by ``1 / pi`` (no "inverted dropout"), and
``kl()`` of a layer that follows a mask is ``(1 - p) / 2 * ||M||^2``; the first layer,
which follows no mask, has the plain ``0.5 * ||M||^2`` of :mod:`uqbench.baselines.l2`. Biases
carry no prior. The shared loss divides the sum by N.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

import uqbench
from uqbench.architectures import LayerFactory
from uqbench.errors import ConfigError
from uqbench.layers import PriorConv2d, PriorLinear, he_init_, uniform_like
from uqbench.posterior import Posterior


class MCDropout(nn.Module):
    """A weight layer whose input is multiplied by a fresh Bernoulli(1 - p) mask, always."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, p: float) -> None:
        super().__init__()
        self.layer = he_init_(layer)
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p > 0:
            x = x * (uniform_like(x) >= self.p).to(x.dtype)
        return self.layer(x)

    def kl(self) -> Tensor:
        """``E_z[0.5 * ||diag(z) M||^2] = (1 - p) / 2 * ||M||^2`` (Section 2.3)."""
        return 0.5 * (1.0 - self.p) * self.layer.weight.pow(2).sum()

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropoutLayers:
    """Layer factory: dropout on the input of every weight layer but the first."""

    def __init__(self, p: float) -> None:
        self.p = p

    def linear(self, in_features: int, out_features: int, *, index: int, last: bool) -> nn.Module:
        if index == 0:
            return PriorLinear(in_features, out_features)
        return MCDropout(nn.Linear(in_features, out_features), self.p)

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, *, index: int
    ) -> nn.Module:
        if index == 0:
            return PriorConv2d(in_channels, out_channels, kernel_size)
        return MCDropout(nn.Conv2d(in_channels, out_channels, kernel_size), self.p)


def check_rate(p: Any, key: str = "p") -> float:
    """A dropout rate in ``[0, 1)``, or :class:`ConfigError` naming the bad value."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ConfigError(f"dropout: {key} must be a number in [0, 1), got {p!r}") from None
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"dropout: {key} must be in [0, 1), got {p}")
    return p


@uqbench.register_posterior("dropout")
class Dropout(Posterior):
    """MC dropout with rate ``p`` (paper: 0.5), stochastic at prediction time."""

    display_name = "Dropout"
    defaults: dict[str, Any] = {"p": 0.5}
    vectorize_seeds = True  # tests/test_vectorize.py

    def layer_factory(self) -> LayerFactory:
        return DropoutLayers(check_rate(self.config["p"]))
