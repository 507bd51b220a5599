"""MNF's per-layer diagnostics of q(z): the KL split adds up, and FFG has no z."""

from __future__ import annotations

import pytest
import torch
from helpers import toy_mlp


def test_kl_parts_add_up_to_the_kl_with_the_same_draws():
    model = toy_mlp("mnf")
    layer = next(m for m in model.net.modules() if hasattr(m, "kl_parts"))
    torch.manual_seed(3)
    parts = layer.kl_parts()
    torch.manual_seed(3)
    kl = layer.kl()
    total = parts["kl_w"] + parts["log_q"] - parts["log_r"]
    assert float(total.detach()) == float(kl.detach())


def test_diagnostics_of_mnf_and_ffg():
    d_mnf = toy_mlp("mnf").diagnostics()["q_layers"]
    d_ffg = toy_mlp("ffg").diagnostics()["q_layers"]
    assert d_mnf.keys() == d_ffg.keys() and len(d_mnf) == 2
    for layer in d_mnf.values():
        assert {"z_mean", "z_spread", "log_q", "log_r", "kl_w", "kl"} <= set(layer)
        assert layer["kl"] == pytest.approx(layer["kl_w"] + layer["log_q"] - layer["log_r"])
        assert layer["z_spread"] > 0
    for layer in d_ffg.values():
        assert "z_mean" not in layer and layer["kl"] == layer["kl_w"]
        # FFG at init: KL = 0.5 sum(sigma^2 + mu^2 - 1 - log sigma^2), sigma^2 ~ e^-9
        assert layer["weight_std"] == pytest.approx(torch.exp(torch.tensor(-4.5)).item(), rel=0.01)
