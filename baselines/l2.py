"""L2: the MAP estimate under the N(0, I) weight prior (Table 1: "delta peak").

Training minimises ``mean NLL + kl / N`` where ``kl()`` is the negative log of the
N(0, 1) prior of the weights up to its constant, ``0.5 * sum(w ** 2)``. Divided by the
training-set size N by the shared loss, this is weight decay equal to the prior
(paper-notes: "MAP: weight decay equal to the N(0,1) prior scaled by 1/N").

The prior covers the weight matrices and filters (the ``W`` of the paper); biases carry
no prior and are not decayed. The same penalty is reused by Dropout (scaled by the keep
probability where a dropout mask precedes the layer) and by Deep Ensembles.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

import uqbench
from uqbench.architectures import LayerFactory
from uqbench.posterior import Posterior


def he_init_(layer: nn.Linear | nn.Conv2d) -> nn.Linear | nn.Conv2d:
    """He-normal weights and zero biases, as in :class:`uqbench.PlainLayers`."""
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class PriorLinear(nn.Linear):
    """``nn.Linear`` whose ``kl()`` is ``prior_scale * 0.5 * ||W||^2`` (N(0,1) prior)."""

    def __init__(self, in_features: int, out_features: int, prior_scale: float = 1.0) -> None:
        super().__init__(in_features, out_features)
        self.prior_scale = float(prior_scale)
        he_init_(self)

    def kl(self) -> Tensor:
        """Negative log N(0, 1) prior of the weight, up to a constant (biases excluded)."""
        return 0.5 * self.prior_scale * self.weight.pow(2).sum()


class PriorConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose ``kl()`` is ``prior_scale * 0.5 * ||W||^2`` (N(0,1) prior)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, prior_scale: float = 1.0
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        self.prior_scale = float(prior_scale)
        he_init_(self)

    def kl(self) -> Tensor:
        """Negative log N(0, 1) prior of the filters, up to a constant (biases excluded)."""
        return 0.5 * self.prior_scale * self.weight.pow(2).sum()


class L2Layers:
    """Deterministic He-initialised layers carrying the N(0, 1) weight prior."""

    def linear(self, in_features: int, out_features: int, *, index: int, last: bool) -> nn.Module:
        return PriorLinear(in_features, out_features)

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, *, index: int
    ) -> nn.Module:
        return PriorConv2d(in_channels, out_channels, kernel_size)


@uqbench.register_posterior("l2")
class L2(Posterior):
    """Point estimate (MAP) with weight decay equal to the N(0, 1) prior, scaled by 1/N."""

    display_name = "L2"
    defaults: dict[str, Any] = {}
    deterministic = True

    def layer_factory(self) -> LayerFactory:
        return L2Layers()
