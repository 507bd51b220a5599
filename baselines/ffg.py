"""FFG: fully factorised Gaussian posterior, N(0, 1) prior (Blundell et al. 2015), as "ffg".

The same layers as MNF with ``z = 1`` (:mod:`uqbench.layers`): local reparametrisation,
closed-form KL ``0.5 sum(sigma^2 + mu^2 - 1 - log sigma^2)``, weight std clamped to
``max_std`` in the forward pass only. Biases have a Gaussian posterior and prior too.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import uqbench
from uqbench.layers import GaussianLayers, gaussian_layer_config, q_diagnostics
from uqbench.posterior import Posterior


@uqbench.register_posterior("ffg")
class FFGPosterior(Posterior):
    """Mean-field Gaussian variational posterior over all weights and biases."""

    display_name: ClassVar[str] = "FFG"
    vectorize_seeds: ClassVar[bool] = True  # tests/test_vectorize.py
    defaults: ClassVar[dict[str, Any]] = {
        "max_std": None,  # forward std clamp; None/"off": none (tasks set theirs)
        "bias": "gaussian",
        "logvar_init": -9.0,
        "logvar_init_std": math.sqrt(0.001),
    }

    def layer_factory(self) -> GaussianLayers:
        return GaussianLayers(gaussian_layer_config(self.config), None)

    def diagnostics(self) -> dict[str, Any]:
        """Per-layer terms of q (:func:`uqbench.layers.q_diagnostics`): spread of z, log q(z),
        log r(z|W) and the KL split, to compare MNF with FFG."""
        return q_diagnostics(self.net)
