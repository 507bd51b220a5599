"""FFLU: sparse variational dropout (Molchanov et al. 2017), registered as "fflu".

Fully factorised Gaussian posterior N(theta, sigma^2) in the additive parametrisation
(theta and log sigma^2 are the parameters), log-uniform prior, and the approximate KL
``k1 sigmoid(-(k2 + k3 log alpha)) + 0.5 log1p(1 / alpha)`` with
``log alpha = log sigma^2 - log theta^2`` clipped to ``[-8, 8]``. Trained with the same
local reparametrisation as FFG; no std clamp (that is for the Gaussian-prior models);
biases are deterministic (no prior), as in sparse VD.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import uqbench
from uqbench.layers import GaussianLayers, bayesian_layers, gaussian_layer_config
from uqbench.posterior import Posterior


@uqbench.register_posterior("fflu")
class FFLUPosterior(Posterior):
    """Mean-field Gaussian posterior with the log-uniform prior (sparse VD)."""

    display_name: ClassVar[str] = "FFLU"
    vectorize_seeds: ClassVar[bool] = True  # tests/test_vectorize.py
    defaults: ClassVar[dict[str, Any]] = {
        "bias": "deterministic",
        "logvar_init": -9.0,
        "logvar_init_std": math.sqrt(0.001),
        "log_alpha_clip": 8.0,
        "sparsity_threshold": 5.0,  # paper footnote 6: log sigma^2 - log mu^2 >= 5
    }

    def layer_factory(self) -> GaussianLayers:
        return GaussianLayers(gaussian_layer_config(self.config, prior="log-uniform"))

    def diagnostics(self) -> dict[str, Any]:
        """Per-layer share of weights with log alpha >= threshold, plus the overall share."""
        thr = float(self.config["sparsity_threshold"])
        layers = bayesian_layers(self.net)
        per_layer = {f"layer{m.index}": m.sparsity(thr) for m in layers}
        n = [m.weight_mean.numel() for m in layers]
        overall = sum(s * k for s, k in zip(per_layer.values(), n, strict=True)) / max(sum(n), 1)
        return {"sparsity": per_layer, "sparsity_overall": overall}
