"""MNFG: multiplicative normalising flows (Louizos & Welling 2017), registered as "mnf".

q(W) = integral of q(W|z) q(z) dz with q(W|z) = prod N(z_i mu_ij, sigma_ij^2), z from a
masked-RealNVP flow, and the KL bounded with the auxiliary r(z|W) (eqs. 13-16). The
layers live in :mod:`uqbench.layers`; with ``use_z=False`` this family is exactly FFG.

Paper-vs-code switches and their defaults (see :class:`uqbench.layers.MNFConfig`):
``r_tanh_conv=True`` (paper), ``r_std="sigmoid"`` (paper), ``log_q0="entropy"``
(code; same expectation as the paper's sample, lower variance), ``q0_mean_init=1.0``
(z starts near 1; the code starts at 0), ``bias="gaussian"`` (code: a Gaussian
posterior on the biases; the paper is silent), log-variances
from N(-9, 0.001) and He-initialised means (paper).

One-dimensional z (the toy's input layer, one input unit): ``flow_1d="planar"`` (the
authors' code). A masked RealNVP step on one dimension is, with probability 1/2, the
identity and otherwise an affine map whose parameters do not depend on z (its conditioner
sees only zeros), so it cannot shape a 1-D q(z); the code uses planar flows there, and so
do we. ``flow_1d="realnvp"`` (the paper's Section 2 read literally) is kept for results
made before the switch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import uqbench
from uqbench.layers import (
    GaussianLayers,
    MNFConfig,
    gaussian_layer_config,
    q_diagnostics,
)
from uqbench.posterior import Posterior

_MNF_KEYS = (
    "flow_q",
    "flow_r",
    "hidden_q",
    "hidden_r",
    "q0_mean_init",
    "q0_mean_init_std",
    "q0_logvar_init",
    "gate_bias_init",
    "r_tanh_conv",
    "r_std",
    "log_q0",
    "flow_1d",
)


@uqbench.register_posterior("mnf")
class MNFPosterior(Posterior):
    """Multiplicative normalising flows with a Gaussian N(0, 1) prior (the paper's MNFG)."""

    display_name: ClassVar[str] = "MNFG"
    vectorize_seeds: ClassVar[bool] = True  # tests/test_vectorize.py
    defaults: ClassVar[dict[str, Any]] = {
        "use_z": True,
        "flow_q": 2,
        "flow_r": 2,
        "hidden_q": 50,
        "hidden_r": 100,
        "max_std": None,  # forward std clamp; None/"off": none (tasks set theirs)
        "q0_mean_init": 1.0,
        "q0_mean_init_std": 0.01,
        "q0_logvar_init": math.log(0.1),
        "gate_bias_init": 2.0,
        "r_tanh_conv": True,
        "r_std": "sigmoid",
        "log_q0": "entropy",
        "flow_1d": "planar",
        "bias": "gaussian",
        "logvar_init": -9.0,
        "logvar_init_std": math.sqrt(0.001),
    }
    #: Model files saved before the planar flows (train version 1) used masked RealNVP.
    legacy_defaults: ClassVar[dict[str, Any]] = {"flow_1d": "realnvp"}

    def layer_factory(self) -> GaussianLayers:
        cfg = gaussian_layer_config(self.config)
        if not self.config["use_z"]:
            return GaussianLayers(cfg, None)
        mnf = MNFConfig(**{k: self.config[k] for k in _MNF_KEYS})
        return GaussianLayers(cfg, mnf)

    def diagnostics(self) -> dict[str, Any]:
        """Per-layer terms of q (:func:`uqbench.layers.q_diagnostics`): spread of z, log q(z),
        log r(z|W) and the KL split, to compare MNF with FFG."""
        return q_diagnostics(self.net)
