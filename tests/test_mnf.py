"""MNF layers and the three Gaussian families (mnf, ffg, fflu) as posteriors.

The MNF KL estimate is checked against an independent Monte-Carlo estimate of
E[log q(W|z) + log q(z) - log p(W) - log r(z|W)] that samples W explicitly and scores
every density with torch.distributions; MNF with use_z off must be FFG exactly; every
family must train a tiny MLP on a separable problem.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import blob_spec
from torch.distributions import Normal

import uqbench
from uqbench import ConfigError, ModelSpec
from uqbench.layers import BayesConv2d, BayesLinear, GaussianLayerConfig, MNFConfig

FFG = GaussianLayerConfig()


# -- the MNF KL bound against an explicit estimator ---------------------------------------------
def _explicit_kl_samples(layer: BayesLinear | BayesConv2d, n: int, tanh: bool) -> torch.Tensor:
    """n independent one-sample estimates of the MNF KL, W sampled explicitly.

    Only the flows (whose log-dets are tested against Jacobians elsewhere) are taken
    from the layer as black boxes; every density is a torch.distributions Normal.
    """
    noise, cfg = layer.mnf, layer.mnf.cfg
    conv = isinstance(layer, BayesConv2d)
    q0 = Normal(noise.q0_mean, torch.exp(0.5 * noise.q0_logvar))
    z0 = q0.sample((n,))
    z, logdet_q = noise.flow_q(z0)
    log_qz = q0.log_prob(z0).sum(-1) - logdet_q  # eq. 16 with the sampled log q(z0)

    mu, sd = layer.weight_mean, torch.exp(0.5 * layer.weight_logvar)
    zw = z[:, :, None, None, None] if conv else z[:, None, :]  # conv: filters; dense: inputs
    q_w = Normal(mu * zw, sd)
    w = q_w.sample()
    b_mean = layer.bias_mean * z if conv else layer.bias_mean.expand(n, -1)
    q_b = Normal(b_mean, torch.exp(0.5 * layer.bias_logvar))
    b = q_b.sample()
    std_normal = Normal(0.0, 1.0)
    dims_w = tuple(range(1, w.dim()))
    log_q_w = q_w.log_prob(w).sum(dims_w) + q_b.log_prob(b).sum(-1)
    log_p_w = std_normal.log_prob(w).sum(dims_w) + std_normal.log_prob(b).sum(-1)

    if conv:  # mat(W) c: weighted sum over the filters, one value per (in, kh, kw) row
        a = torch.einsum("sfckl,f->sckl", w, noise.c).reshape(n, -1)
    else:  # c^T W with W as [in, out]: sum over the inputs, one value per output
        a = torch.einsum("soi,i->so", w, noise.c)
    if tanh:
        a = torch.tanh(a)
    abar = a.mean(-1, keepdim=True)
    r_mean, pre = noise.b1 * abar, noise.b2 * abar
    r_std = torch.sigmoid(pre) if cfg.r_std == "sigmoid" else torch.exp(-0.5 * pre)
    z_b, logdet_r = noise.flow_r(z)
    log_r = Normal(r_mean, r_std).log_prob(z_b).sum(-1) + logdet_r  # eq. 15
    return log_q_w + log_qz - log_p_w - log_r


CASES = [
    ("dense", MNFConfig(hidden_q=6, hidden_r=8)),
    ("conv", MNFConfig(hidden_q=6, hidden_r=8, r_std="exp-precision", log_q0="sample")),
    ("conv", MNFConfig(hidden_q=6, hidden_r=8, r_tanh_conv=False, log_q0="sample")),
]


@pytest.mark.parametrize(("kind", "cfg"), CASES)
def test_mnf_kl_is_an_unbiased_estimate_of_the_bound(kind: str, cfg: MNFConfig) -> None:
    torch.manual_seed(11)
    if kind == "dense":
        layer = BayesLinear(4, 3, FFG, cfg).double()
    else:
        layer = BayesConv2d(2, 3, 2, FFG, cfg, r_tanh=cfg.r_tanh_conv).double()
    with torch.no_grad():  # parameters where every term of the bound matters
        layer.weight_logvar.normal_(-2.0, 0.5)
        layer.bias_logvar.normal_(-2.0, 0.5)
        layer.bias_mean.normal_(0.0, 2.5)
        layer.mnf.c.normal_(0.0, 1.0)
        layer.mnf.b1.normal_(0.0, 1.0)
        layer.mnf.b2.normal_(0.0, 0.7)
        layer.mnf.q0_mean.normal_(0.0, 1.0)  # z far from 1, so z enters every term
        layer.mnf.q0_logvar.fill_(math.log(0.1))
        for flow in (layer.mnf.flow_q, layer.mnf.flow_r):
            for step in flow.steps:  # gates near 1/2: log-dets of about -0.7 per coordinate
                step.gk.weight.add_(0.5 * torch.randn_like(step.gk.weight))
                step.gk.bias.normal_(0.0, 0.5)
        n_explicit, n_layer = 40000, 1500
        explicit = _explicit_kl_samples(layer, n_explicit, tanh=kind == "dense" or cfg.r_tanh_conv)
        ours = torch.stack([layer.kl() for _ in range(n_layer)])
    se = math.sqrt(explicit.var() / n_explicit + ours.var() / n_layer)
    assert se < 0.2  # small next to each term of the bound (about 1 or more)
    assert abs(explicit.mean() - ours.mean()) < 4.5 * se, (explicit.mean(), ours.mean(), se)


def test_mnf_kl_is_finite_and_its_gradient_reaches_every_parameter() -> None:
    torch.manual_seed(12)
    for arch, shape in [("mlp", (2,)), ("lenet5", (1, 16, 16))]:
        kw = {"hidden": 8} if arch == "mlp" else {"channels": (3, 4), "hidden": 6}
        spec = ModelSpec(arch, shape, 3, "classification", 100, arch_kwargs=kw)
        model = uqbench.get_posterior("mnf")(spec, max_std=0.5)
        x, y = torch.rand(16, *shape), torch.randint(0, 3, (16,))
        # a few passes: one pass can miss a flow weight when its random mask is all zero
        for _ in range(8):
            loss, parts = model.loss(x, y)
            assert torch.isfinite(parts["kl"]) and torch.isfinite(loss)
            loss.backward()
        names = [n for n, _ in model.named_parameters()]
        for key in ("mnf.c", "mnf.b1", "mnf.b2", "q0_mean", "q0_logvar", "flow_q", "flow_r"):
            assert any(key in n for n in names), key
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_mnf_samples_one_z_per_example() -> None:
    torch.manual_seed(13)
    cfg = GaussianLayerConfig(logvar_init=-40.0, logvar_init_std=0.0, bias="none")
    x = torch.randn(1, 5).repeat(6, 1)
    mnf_out = BayesLinear(5, 3, cfg, MNFConfig())(x)
    ffg_out = BayesLinear(5, 3, cfg)(x)
    # weight noise is negligible: FFG rows agree, MNF rows differ by their z
    assert torch.allclose(ffg_out, ffg_out[:1].expand_as(ffg_out), atol=1e-6)
    assert (mnf_out - mnf_out[:1]).abs()[1:].amax(-1).min() > 1e-3


# -- MNF without z is FFG -------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_mnf_with_use_z_off_is_exactly_ffg(arch: str) -> None:
    shape = (3,) if arch == "mlp" else (1, 16, 16)
    kw = {"hidden": 7} if arch == "mlp" else {"channels": (3, 4), "hidden": 6}
    spec = ModelSpec(arch, shape, 4, "classification", 50, arch_kwargs=kw)
    torch.manual_seed(14)
    ffg = uqbench.get_posterior("ffg")(spec, max_std=0.4).double()
    with torch.no_grad():
        for name, p in ffg.named_parameters():
            if "logvar" in name:  # some stds above the clamp, some below
                p.uniform_(-4.0, 0.0)
    mnf = uqbench.get_posterior("mnf")(spec, use_z=False, max_std=0.4).double()
    mnf.load_state_dict(ffg.state_dict())  # same parameters, same names
    x = torch.rand(5, *shape, dtype=torch.float64)
    torch.manual_seed(15)
    out_ffg, kl_ffg = ffg(x), ffg.kl()
    torch.manual_seed(15)
    out_mnf, kl_mnf = mnf(x), mnf.kl()
    assert torch.equal(out_ffg, out_mnf)
    assert torch.equal(kl_ffg, kl_mnf)
    first_ffg, first_mnf = ffg.net[0], mnf.net[0]
    for a, b in zip(first_ffg.moments(x), first_mnf.moments(x), strict=True):
        assert torch.equal(a, b)


def test_mnf_layer_with_z_fixed_at_one_has_the_ffg_moments_and_weight_kl() -> None:
    torch.manual_seed(16)
    ffg = BayesLinear(4, 3, FFG).double()
    mnf = BayesLinear(4, 3, FFG, MNFConfig(flow_q=0, flow_r=0)).double()
    mnf.load_state_dict({**mnf.state_dict(), **ffg.state_dict()})
    x = torch.randn(6, 4, dtype=torch.float64)
    for a, b in zip(
        ffg.moments(x), mnf.moments(x, torch.ones(4, dtype=torch.float64)), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-14)


# -- families -------------------------------------------------------------------------------------
def test_families_are_registered_with_the_paper_names() -> None:
    names = {n: uqbench.get_posterior(n).display_name for n in ("mnf", "ffg", "fflu")}
    assert names == {"mnf": "MNFG", "ffg": "FFG", "fflu": "FFLU"}


def test_bad_family_settings_raise_config_errors() -> None:
    spec = blob_spec()
    with pytest.raises(ConfigError, match="r_std"):
        uqbench.get_posterior("mnf")(spec, r_std="softplus")
    with pytest.raises(ConfigError, match="bias"):
        uqbench.get_posterior("ffg")(spec, bias="maybe")
    with pytest.raises(ConfigError, match="max_std"):
        uqbench.get_posterior("ffg")(spec, max_std=-1.0)
    with pytest.raises(ConfigError):
        uqbench.get_posterior("fflu")(spec, bias="gaussian")


def test_max_std_is_the_family_config_set_per_task_by_the_suite() -> None:
    spec = ModelSpec("mlp", (2,), 2, "classification", 10)
    ffg = uqbench.get_posterior
    assert ffg("ffg")(spec).net[0].cfg.max_std is None  # no task: no clamp
    assert ffg("ffg")(spec, max_std=0.2).net[0].cfg.max_std == 0.2
    assert ffg("ffg")(spec, max_std="off").net[0].cfg.max_std is None
    assert ffg("fflu")(spec).net[0].cfg.max_std is None  # the clamp is for Gaussian priors
    # The task's paper setting reaches the family through the resolved suite.
    from uqbench.suites import Suite

    suite = Suite("s", Path("s.toml"), "", ["ffg", "mnf", "ensemble"], ["mnist"], [0])
    posterior = {r.method: r.posterior for r in suite.runs()}
    assert posterior["ffg"] == posterior["mnf"] == {"max_std": 0.5}
    assert posterior["ensemble"] == {"members": 10, "adv_eps": 0.25}
    suite.method_tables = {"ffg": {"max_std": 0.3}}
    assert {r.method: r.posterior for r in suite.runs()}["ffg"] == {"max_std": 0.3}


def test_fflu_diagnostics_report_per_layer_sparsity() -> None:
    model = uqbench.get_posterior("fflu")(blob_spec())
    with torch.no_grad():
        model.net[0].weight_logvar.fill_(20.0)  # every weight of layer 0 is pruned
        model.net[2].weight_logvar.fill_(-20.0)  # none of layer 2
    diag = model.diagnostics()
    assert diag["sparsity"] == {"layer0": 1.0, "layer1": 0.0}
    assert diag["sparsity_overall"] == pytest.approx(32 / (32 + 32))


def test_save_and_load_round_trip(tmp_path) -> None:
    torch.manual_seed(17)
    model = uqbench.get_posterior("mnf")(blob_spec(), r_std="exp-precision")
    model.save(tmp_path / "m.pt")
    back = uqbench.load_posterior(tmp_path / "m.pt")
    assert back.config["r_std"] == "exp-precision"
    for (n1, p1), (n2, p2) in zip(
        model.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2)


def _blobs(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 2, (n,), generator=gen)
    x = 0.7 * torch.randn(n, 2, generator=gen) + (4.0 * y[:, None] - 2.0)
    return x, y


@pytest.mark.parametrize("name", ["mnf", "ffg", "fflu"])
def test_family_learns_a_separable_problem(name: str) -> None:
    torch.manual_seed(18)
    gen = torch.Generator().manual_seed(18)
    x, y = _blobs(200, gen)
    model = uqbench.get_posterior(name)(blob_spec())
    opt = model.configure_optimizer(2e-2)
    for _ in range(100):
        opt.zero_grad()
        loss, _ = model.loss(x, y)
        loss.backward()
        opt.step()
    xt, yt = _blobs(500, gen)
    with torch.no_grad():
        probs = model.sample_outputs(xt, 20).softmax(-1).mean(0)
    assert (probs.argmax(-1) == yt).float().mean() > 0.97
