"""L2: the MAP estimate under the N(0, I) weight prior (Table 1: "delta peak").

Training minimises ``mean NLL + kl / N`` where ``kl()`` is the negative log of the
N(0, 1) prior of the weights up to its constant, ``0.5 * sum(w ** 2)``. Divided by the
training-set size N by the shared loss, this is weight decay equal to the prior
(paper-notes: "MAP: weight decay equal to the N(0,1) prior scaled by 1/N").

The prior covers the weight matrices and filters (the ``W`` of the paper); biases carry
no prior and are not decayed. The same penalty is reused by Dropout (scaled by the keep
probability where a dropout mask precedes the layer) and by Deep Ensembles; its layers
(:class:`uqbench.layers.PriorLinear`, :class:`uqbench.layers.PriorConv2d`) live in the library.
"""

from __future__ import annotations

from typing import Any

from torch import nn

import uqbench
from uqbench.architectures import LayerFactory
from uqbench.layers import PriorConv2d, PriorLinear
from uqbench.posterior import Posterior


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
    vectorize_seeds = True  # tests/test_vectorize.py

    def layer_factory(self) -> LayerFactory:
        return L2Layers()
