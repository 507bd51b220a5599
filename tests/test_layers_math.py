"""Math of the shared Bayesian layers, checked against independent computations.

Flows: log-dets against autograd Jacobians, the closed-form inverse of a step. Local
reparametrisation: output moments against explicit Monte-Carlo weight samples and the
analytic moments. KLs: torch.distributions, numerical integration (scipy), and the
exact mean-field optimum of a Bayesian linear regression.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.autograd.functional import jacobian
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

from uqbench.layers import (
    BayesConv2d,
    BayesLinear,
    GaussianLayerConfig,
    MaskedRealNVP,
    MaskedRealNVPStep,
    MNFConfig,
    MNFNoise,
    PlanarFlow,
)

K1 = 0.63576
FFG = GaussianLayerConfig()
FFLU = GaussianLayerConfig(prior="log-uniform", bias="none")


def _randomise_(layer: torch.nn.Module, gen: torch.Generator, lo: float = 0.05, hi: float = 0.5):
    """Give a layer visible variances (uniform in [lo, hi]) and non-zero bias means."""
    with torch.no_grad():
        u = torch.rand(layer.weight_logvar.shape, generator=gen, dtype=torch.float64)
        layer.weight_logvar.copy_(torch.log(lo + (hi - lo) * u))
        if layer.bias_logvar is not None:
            u = torch.rand(layer.bias_logvar.shape, generator=gen, dtype=torch.float64)
            layer.bias_logvar.copy_(torch.log(lo + (hi - lo) * u))
        if layer.bias_mean is not None:
            layer.bias_mean.copy_(torch.randn(layer.bias_mean.shape, generator=gen))


# -- flows --------------------------------------------------------------------------------------
def _step(dim: int = 5, hidden: int = 7, seed: int = 0) -> MaskedRealNVPStep:
    torch.manual_seed(seed)
    step = MaskedRealNVPStep(dim, hidden).double()
    with torch.no_grad():  # make the step far from the identity
        step.gk.weight.mul_(3.0)
        step.gk.bias[dim:].normal_(0.0, 1.5)
    return step


@pytest.mark.parametrize("mask", [[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 1, 0]])
def test_flow_step_logdet_equals_log_abs_det_jacobian(mask: list[int]) -> None:
    step = _step()
    m = torch.tensor(mask, dtype=torch.float64)
    for seed in range(3):
        z = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        jac = jacobian(lambda v: step(v, m)[0], z)
        _, logabsdet = torch.linalg.slogdet(jac)
        _, logdet = step(z, m)
        assert torch.allclose(logdet, logabsdet, atol=1e-10)


def test_flow_stack_logdet_equals_log_abs_det_jacobian() -> None:
    torch.manual_seed(1)
    flow = MaskedRealNVP(6, n_steps=3, hidden=8).double()
    gen = torch.Generator().manual_seed(2)
    masks = [
        torch.bernoulli(torch.full((6,), 0.5, dtype=torch.float64), generator=gen) for _ in "abc"
    ]
    z = torch.randn(6, dtype=torch.float64, generator=gen)
    jac = jacobian(lambda v: flow(v, masks)[0], z)
    assert torch.allclose(flow(z, masks)[1], torch.linalg.slogdet(jac)[1], atol=1e-10)


@pytest.mark.parametrize("shape", [(1, 20), (100, 50), (7, 3)])
def test_drawn_masks_are_a_fresh_bernoulli_half_per_step(shape: tuple[int, ...]) -> None:
    """The stack draws all its masks at once; on CPU they are the very numbers of one
    ``rand_like(z) < 0.5`` per step (the generator fills tensors element by element), so
    the output and log-det equal those of the masks drawn step by step, bit for bit."""
    torch.manual_seed(5)
    flow = MaskedRealNVP(shape[-1], n_steps=3, hidden=8)
    z = torch.randn(shape)
    torch.manual_seed(6)
    out, logdet = flow(z)
    after = torch.rand(4)  # the generator is where one draw per step leaves it, too
    torch.manual_seed(6)
    masks = [(torch.rand_like(z) < 0.5).to(z.dtype) for _ in range(3)]
    assert torch.equal(torch.rand(4), after)
    ref_z, ref_logdet = z, torch.zeros(shape[:-1])
    for step, m in zip(flow.steps, masks, strict=True):
        ref_z, ld = step(ref_z, m)
        ref_logdet = ref_logdet + ld
    assert torch.equal(out, ref_z) and torch.equal(logdet, ref_logdet)
    assert 0.3 < float(torch.stack(masks).mean()) < 0.7 or z.numel() < 50


def test_drawn_masks_under_vmap_differ_per_model_without_a_slow_fallback() -> None:
    """Stacked models (torch.func.vmap, randomness="different") draw their own masks, and
    drawing them needs no per-model fallback loop (which warns)."""
    torch.manual_seed(7)
    flow = MaskedRealNVP(6, n_steps=2, hidden=8)
    z = torch.randn(3, 4, 6)  # 3 models, 4 rows each, the same z for all

    def run(zi: torch.Tensor) -> torch.Tensor:
        return flow(zi)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = torch.func.vmap(run, randomness="different")(z.expand(3, 4, 6))
    assert out.shape == (3, 4, 6) and not torch.equal(out[0], out[1])


@pytest.mark.parametrize("dim", [1, 3])
def test_planar_flow_logdet_equals_log_abs_det_jacobian(dim: int) -> None:
    torch.manual_seed(3)
    flow = PlanarFlow(dim, n_steps=3).double()
    with torch.no_grad():  # far from the identity, with some w . u < -1 (made invertible)
        flow.u.mul_(3.0)
        flow.b.normal_(0.0, 1.0)
    gen = torch.Generator().manual_seed(4)
    for _ in range(4):
        z = 2.0 * torch.randn(dim, dtype=torch.float64, generator=gen)
        jac = jacobian(lambda v: flow(v)[0], z)
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert torch.allclose(flow(z)[1], logabsdet, atol=1e-10)


def test_planar_flow_is_increasing_in_one_dimension_whatever_its_parameters() -> None:
    """u_hat keeps w . u_hat >= -1, so z -> z' is monotone (invertible) for any u, w, b."""
    gen = torch.Generator().manual_seed(5)
    grid = torch.linspace(-6, 6, 2001, dtype=torch.float64).unsqueeze(-1)
    for _ in range(20):
        flow = PlanarFlow(1, n_steps=2).double()
        with torch.no_grad():
            flow.w.copy_(3 * torch.randn(2, 1, generator=gen))
            flow.u.copy_(-5 * torch.rand(2, 1, generator=gen) * flow.w.sign())  # w.u << -1
            flow.b.copy_(torch.randn(2, generator=gen))
        out = flow(grid)[0][:, 0]
        assert bool((out[1:] - out[:-1] > -1e-12).all())


def test_mnf_uses_a_planar_flow_for_a_1d_z_and_realnvp_otherwise() -> None:
    """A masked RealNVP step on one dimension cannot change q(z)'s shape: the code's planar flow."""
    assert isinstance(MNFNoise(1, MNFConfig()).flow_q, PlanarFlow)
    assert isinstance(MNFNoise(1, MNFConfig()).flow_r, PlanarFlow)
    assert isinstance(MNFNoise(1, MNFConfig(flow_1d="realnvp")).flow_q, MaskedRealNVP)
    assert isinstance(MNFNoise(4, MNFConfig()).flow_q, MaskedRealNVP)
    torch.manual_seed(6)
    noise = MNFNoise(1, MNFConfig()).double()
    with torch.no_grad():
        noise.flow_q.u.mul_(4.0)
        noise.flow_q.b.fill_(0.3)
    with torch.no_grad():
        z = noise.sample((20000,))[:, 0]
    skew = float(((z - z.mean()) ** 3).mean() / z.std() ** 3)
    assert abs(skew) > 0.1  # a Gaussian q(z0) reshaped: the RealNVP 1-D step could not


def test_flow_step_matches_eq6_and_inverts_in_closed_form() -> None:
    step = _step()
    dim = 5
    m = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    z = torch.randn(4, dim, dtype=torch.float64)
    z_new, _ = step(z, m)
    wg, wk = step.gk.weight[:dim], step.gk.weight[dim:]
    bg, bk = step.gk.bias[:dim], step.gk.bias[dim:]

    def mu_sigma(masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(masked @ step.f.weight.T + step.f.bias)
        return h @ wg.T + bg, 1.0 / (1.0 + torch.exp(-(h @ wk.T + bk)))

    # eq. 6 written out
    mu, sig = mu_sigma(m * z)
    expected = m * z + (1 - m) * (z * sig + (1 - sig) * mu)
    assert torch.allclose(z_new, expected, atol=1e-12)
    # closed-form inverse: m*z is unchanged, so h (hence mu, sigma) is known from z'
    mu, sig = mu_sigma(m * z_new)
    z_back = m * z_new + (1 - m) * (z_new - (1 - m) * (1 - sig) * mu) / sig
    assert torch.allclose(z_back, z, atol=1e-10)


def test_flow_mask_is_resampled_every_call() -> None:
    step = _step(dim=40)
    z = torch.randn(1, 40, dtype=torch.float64)
    outs = [step(z)[0] for _ in range(3)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


# -- local reparametrisation ----------------------------------------------------------------------
def _check_moments(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """Sample mean/variance over dim 0 agree with (mean, var) within 5 standard errors."""
    n = samples.shape[0]
    assert ((samples.mean(0) - mean).abs() <= 5 * torch.sqrt(var / n) + 1e-12).all()
    assert ((samples.var(0) - var).abs() <= 5 * var * math.sqrt(2.0 / n) + 1e-12).all()


@pytest.mark.parametrize("use_z", [False, True])
def test_dense_local_reparametrisation_matches_explicit_weight_samples(use_z: bool) -> None:
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    mnf = MNFConfig(hidden_q=4, hidden_r=4) if use_z else None
    layer = BayesLinear(4, 3, FFG, mnf).double()
    _randomise_(layer, gen)
    x = torch.randn(2, 4, dtype=torch.float64, generator=gen)
    z = 1.0 + 0.5 * torch.randn(4, dtype=torch.float64, generator=gen)
    zz = z if use_z else torch.ones(4, dtype=torch.float64)
    n = 20000
    with torch.no_grad():
        out = layer(x.repeat(n, 1), z if use_z else None).reshape(n, 2, 3)
        mu, sd = layer.weight_mean, layer.weight_logvar.exp().sqrt()
        w = mu * zz + sd * torch.randn(n, 3, 4, dtype=torch.float64, generator=gen)  # [n, out, in]
        b = layer.bias_mean + layer.bias_logvar.exp().sqrt() * torch.randn(
            n, 3, dtype=torch.float64, generator=gen
        )
        explicit = torch.einsum("bi,soi->sbo", x, w) + b[:, None, :]
        mean = x @ (mu * zz).T + layer.bias_mean
        var = (x * x) @ (sd * sd).T + layer.bias_logvar.exp()
    _check_moments(explicit, mean, var)  # the analytic moments are right
    _check_moments(out, mean, var)  # the layer samples them


@pytest.mark.parametrize("use_z", [False, True])
def test_conv_local_reparametrisation_matches_explicit_weight_samples(use_z: bool) -> None:
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(4)
    mnf = MNFConfig(hidden_q=4, hidden_r=4) if use_z else None
    layer = BayesConv2d(2, 3, 3, FFG, mnf).double()
    _randomise_(layer, gen)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, generator=gen)
    z = 1.0 + 0.5 * torch.randn(3, dtype=torch.float64, generator=gen)
    zz = z if use_z else torch.ones(3, dtype=torch.float64)
    n = 8000
    with torch.no_grad():
        out = layer(x.repeat(n, 1, 1, 1), z if use_z else None).reshape(n, 2, 3, 3, 3)
        mu, sd = layer.weight_mean, layer.weight_logvar.exp().sqrt()
        w = mu * zz[:, None, None, None] + sd * torch.randn(
            n, 3, 2, 3, 3, dtype=torch.float64, generator=gen
        )
        b = zz * layer.bias_mean + layer.bias_logvar.exp().sqrt() * torch.randn(
            n, 3, dtype=torch.float64, generator=gen
        )
        # one conv per weight sample, batched as a grouped convolution
        conv = F.conv2d(x.repeat(1, n, 1, 1), w.reshape(n * 3, 2, 3, 3), b.reshape(-1), groups=n)
        explicit = conv.reshape(2, n, 3, 3, 3).transpose(0, 1)
        mean = F.conv2d(x, mu * zz[:, None, None, None], zz * layer.bias_mean)
        var = F.conv2d(x * x, sd * sd, layer.bias_logvar.exp())
    _check_moments(explicit, mean, var)
    _check_moments(out, mean, var)


def test_max_std_clamps_the_forward_variance_but_not_the_kl() -> None:
    torch.manual_seed(5)
    layer = BayesLinear(3, 2, GaussianLayerConfig(max_std=0.3)).double()
    with torch.no_grad():
        layer.weight_logvar.copy_(torch.log(torch.tensor([[0.01, 1.0, 4.0], [0.2, 0.05, 9.0]])))
        layer.bias_logvar.copy_(torch.log(torch.tensor([0.5, 0.01])))
    x = torch.randn(4, 3, dtype=torch.float64)
    _, var = layer.moments(x)
    w_var = layer.weight_logvar.exp().clamp(max=0.09)
    b_var = layer.bias_logvar.exp().clamp(max=0.09)
    assert torch.allclose(var, (x * x) @ w_var.T + b_var, atol=1e-12)
    unclamped = GaussianLayerConfig(max_std=None)
    free = BayesLinear(3, 2, unclamped).double()
    free.load_state_dict(layer.state_dict())
    assert torch.allclose(layer.kl(), free.kl())
    assert not torch.allclose(layer.moments(x)[1], free.moments(x)[1])


# -- KL ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_gaussian_kl_matches_torch_distributions(kind: str) -> None:
    torch.manual_seed(6)
    layer = (BayesLinear(5, 4, FFG) if kind == "dense" else BayesConv2d(2, 3, 3, FFG)).double()
    with torch.no_grad():
        for p in (layer.weight_mean, layer.weight_logvar, layer.bias_mean, layer.bias_logvar):
            p.normal_(0.0, 1.5)
    ref = 0.0
    for mean, logvar in [
        (layer.weight_mean, layer.weight_logvar),
        (layer.bias_mean, layer.bias_logvar),
    ]:
        q = Normal(mean, torch.exp(0.5 * logvar))
        ref = ref + kl_divergence(q, Normal(torch.zeros_like(mean), torch.ones_like(mean))).sum()
    assert torch.allclose(layer.kl(), ref, atol=1e-10)


def _neg_kl_loguniform_reference(log_alpha: float) -> float:
    """-KL(N(theta, alpha theta^2) || log-uniform) + const, by quadrature, C = -k1."""
    sd = math.sqrt(math.exp(log_alpha))

    def f(x: float) -> float:
        return stats.norm.pdf(x, 1.0, sd) * math.log(abs(x)) if x != 0 else 0.0

    e_log = integrate.quad(f, -np.inf, 0, limit=200)[0] + integrate.quad(f, 0, np.inf, limit=200)[0]
    return 0.5 * log_alpha - e_log - K1


@pytest.mark.parametrize("log_alpha", [-4.0, -2.0, 0.0, 2.0, 4.0])
@pytest.mark.parametrize("theta", [1.0, -0.3])
def test_fflu_kl_matches_numerical_integration(log_alpha: float, theta: float) -> None:
    layer = BayesLinear(1, 1, FFLU).double()
    with torch.no_grad():
        layer.weight_mean.fill_(theta)
        # additive parametrisation: sigma^2 = alpha theta^2
        layer.weight_logvar.fill_(log_alpha + math.log(theta**2))
    assert abs(-layer.kl().item() - _neg_kl_loguniform_reference(log_alpha)) < 0.01


def test_fflu_kl_is_finite_with_zero_means_and_its_gradient_too() -> None:
    layer = BayesLinear(3, 2, FFLU)
    with torch.no_grad():
        layer.weight_mean[0].zero_()
    kl = layer.kl()
    kl.backward()
    assert torch.isfinite(kl) and kl.item() >= 0
    assert torch.isfinite(layer.weight_mean.grad).all()
    assert torch.isfinite(layer.weight_logvar.grad).all()


def test_fflu_sparsity_counts_log_alpha_at_least_five() -> None:
    layer = BayesLinear(4, 1, FFLU).double()
    with torch.no_grad():
        layer.weight_mean.copy_(torch.tensor([[1.0, 1.0, 0.1, 2.0]]))
        layer.weight_logvar.copy_(torch.tensor([[6.0, 4.9, 0.9, math.log(4.0)]]))
    # log sigma^2 - log mu^2 = 6, 4.9, 0.9 + ln 100 = 5.505, 0: two of four are >= 5
    assert layer.sparsity(5.0) == pytest.approx(0.5)


# -- the mean-field optimum of Bayesian linear regression -----------------------------------------
def test_ffg_reaches_the_exact_mean_field_posterior_of_linear_regression() -> None:
    torch.manual_seed(7)
    n, d, noise = 50, 3, 0.5
    x = torch.randn(n, d, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64) + noise * torch.randn(
        n, dtype=torch.float64
    )
    layer = BayesLinear(d, 1, GaussianLayerConfig(bias="none")).double()
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        m, v = layer.moments(x)
        # negative ELBO with the expected NLL in closed form: E[(y - f)^2] = (y - m)^2 + v
        nll = (((y - m[:, 0]) ** 2 + v[:, 0]) / (2 * noise**2)).sum()
        (nll + layer.kl()).backward()
        opt.step()
    # exact posterior N(A^-1 X^T y / s^2, A^-1), A = X^T X / s^2 + I; the mean-field
    # optimum has the exact mean and variances 1 / diag(A)
    a = x.T @ x / noise**2 + torch.eye(d, dtype=torch.float64)
    post_mean = torch.linalg.solve(a, x.T @ y / noise**2)
    mf_var = 1.0 / torch.diagonal(a)
    assert torch.allclose(layer.weight_mean[0].detach(), post_mean, rtol=1e-3, atol=1e-6)
    assert torch.allclose(layer.weight_logvar[0].detach().exp(), mf_var, rtol=1e-3)
