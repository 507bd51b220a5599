"""Variational Bayesian dense and conv layers shared by the FFG, FFLU and MNF families.

One implementation covers the three families (Louizos & Welling 2017, Sections 2 and 4):

* the weights have a fully factorised Gaussian posterior ``N(z_i * mu_ij, sigma_ij^2)``
  parametrised by the means ``mu`` and the log-variances ``log sigma^2`` directly
  (the *additive* parametrisation; FFLU uses exactly the same parameters);
* ``z`` is either absent (``z = 1``: FFG, FFLU) or drawn from a multiplicative
  normalising flow :class:`MNFNoise` (MNF): over the *input* units of a dense layer
  (eq. 4), over the *output* filters of a convolution (eq. 5);
* the forward pass uses the local reparametrisation of Algorithms 1 and 2, so each
  example sees its own weight sample at the cost of one matmul / conv for the mean
  and one for the variance;
* ``kl()`` is the closed-form Gaussian KL to ``N(0, 1)`` (FFG), the approximation of
  Molchanov et al. (2017) to the KL to the log-uniform prior (FFLU), or the
  one-sample MNF bound of eqs. 13-16 (MNF).

Bias posterior (our choice, as the authors' code): with ``bias="gaussian"`` the bias
has its own Gaussian posterior (mean 0, log-variance -9 at init, std clamped like the
weights in the forward pass) and an ``N(0, 1)`` prior whose KL is included; in a conv
MNF layer ``z`` scales the bias mean of its filter too (the code's choice: ``z_f``
scales the whole output filter). ``bias="deterministic"`` is a plain point-estimate
bias without a KL term (the FFLU default, as in sparse VD), ``bias="none"`` drops it.

Also here, because the baselines share them with the library: :func:`gaussian_layer_config`
(a family config's layer settings), :func:`he_init_` and the point-estimate layers with an
N(0, 1) weight prior (:class:`PriorLinear`, :class:`PriorConv2d`) of L2, Dropout and Deep
Ensembles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from uqbench.errors import ConfigError

#: Added to the output variance before the square root, so that zero inputs
#: (zero variance) give finite gradients. Negligible next to any real variance.
VAR_EPS = 1e-16
#: Added to theta^2 inside log(theta^2) of the FFLU KL, so that theta = 0 is finite.
THETA2_EPS = 1e-16
#: Constants of the KL approximation of Molchanov et al. (2017).
MOLCHANOV_K1, MOLCHANOV_K2, MOLCHANOV_K3 = 0.63576, 1.87320, 1.48695

_LOG_2PI = math.log(2.0 * math.pi)

PRIORS = ("normal", "log-uniform")
BIAS_MODES = ("gaussian", "deterministic", "none")
R_STD_MODES = ("sigmoid", "exp-precision")
LOG_Q0_MODES = ("entropy", "sample")
FLOW_1D_MODES = ("planar", "realnvp")


# -- configuration --------------------------------------------------------------------------
@dataclass(frozen=True)
class GaussianLayerConfig:
    """Settings of the Gaussian weight posterior shared by FFG, FFLU and MNF.

    ``prior``: ``"normal"`` (N(0, 1), closed-form KL) or ``"log-uniform"`` (FFLU).
    ``max_std``: forward-pass clamp of the weight (and bias) std; ``None`` = no clamp.
    It never enters the KL. ``logvar_init`` / ``logvar_init_std``: log-variances are
    drawn from N(-9, 0.001) (the paper: variance 0.001, so std sqrt(0.001)).
    ``log_alpha_clip``: FFLU's log alpha is clipped to ``[-c, c]`` inside the KL.
    """

    prior: str = "normal"
    max_std: float | None = None
    bias: str = "gaussian"
    logvar_init: float = -9.0
    logvar_init_std: float = math.sqrt(0.001)
    log_alpha_clip: float = 8.0

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"bias must be one of {BIAS_MODES}, got {self.bias!r}")
        if self.prior == "log-uniform" and self.bias == "gaussian":
            raise ConfigError(
                "the log-uniform prior (FFLU) supports bias 'deterministic' or 'none'"
            )
        if self.max_std is not None and not self.max_std > 0:
            raise ConfigError(f"max_std must be positive or None, got {self.max_std!r}")
        if not self.log_alpha_clip > 0:
            raise ConfigError(f"log_alpha_clip must be positive, got {self.log_alpha_clip!r}")


@dataclass(frozen=True)
class MNFConfig:
    """Settings of MNF's mixing density q(z) and auxiliary r(z|W) (Section 2).

    Paper-vs-code switches (defaults in brackets):

    * ``r_tanh_conv`` [True, paper eq. 11-12]: tanh on ``mat(W) c`` in conv layers;
      False is the released code's linear map. Dense layers always use tanh.
    * ``r_std`` ["sigmoid", paper eq. 10]: r's std is ``sigmoid(mean(b2 outer a))``;
      ``"exp-precision"`` is the code's ``exp(mean(b2 outer a))`` used as a precision.
    * ``log_q0`` ["entropy", code]: log q(z0) in eq. 16 replaced by its expectation
      ``-H[q(z0)]`` (same expectation, lower variance); ``"sample"`` is the paper's
      one-sample ``log q(z0)``.
    * ``flow_1d`` ["planar", code]: the flows of a layer with a 1-D ``z`` (the toy task's
      input layer) are planar (:class:`PlanarFlow`), as in the authors' code; ``"realnvp"``
      keeps the masked RealNVP, which on one dimension is a fixed affine map.
    * ``q0_mean_init`` [1.0]: q(z0) means start at N(1, ``q0_mean_init_std``), so
      the network starts as FFG with mild multiplicative noise; the code uses 0
      (with flows) and a std of sqrt(4 / D_z).
    """

    flow_q: int = 2
    flow_r: int = 2
    hidden_q: int = 50
    hidden_r: int = 100
    q0_mean_init: float = 1.0
    q0_mean_init_std: float = 0.01
    q0_logvar_init: float = math.log(0.1)
    gate_bias_init: float = 2.0
    r_tanh_conv: bool = True
    r_std: str = "sigmoid"
    log_q0: str = "entropy"
    flow_1d: str = "planar"

    def __post_init__(self) -> None:
        for key in ("flow_q", "flow_r"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)!r}")
        for key in ("hidden_q", "hidden_r"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        if self.r_std not in R_STD_MODES:
            raise ConfigError(f"r_std must be one of {R_STD_MODES}, got {self.r_std!r}")
        if self.log_q0 not in LOG_Q0_MODES:
            raise ConfigError(f"log_q0 must be one of {LOG_Q0_MODES}, got {self.log_q0!r}")
        if self.flow_1d not in FLOW_1D_MODES:
            raise ConfigError(f"flow_1d must be one of {FLOW_1D_MODES}, got {self.flow_1d!r}")


def resolve_max_std(value: Any) -> float | None:
    """The forward clamp of a family config's ``max_std``: a number, or None/``"off"``: none."""
    if value is None or value == "off" or value is False:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"max_std must be a positive number or 'off', got {value!r}") from None
    if not out > 0:
        raise ConfigError(f"max_std must be positive, got {value!r}")
    return out


def gaussian_layer_config(config: dict[str, Any], prior: str = "normal") -> GaussianLayerConfig:
    """The :class:`GaussianLayerConfig` of a family config (keys it lacks keep defaults)."""
    kw: dict[str, Any] = {"prior": prior}
    if prior == "normal":
        kw["max_std"] = resolve_max_std(config.get("max_std"))
    for key in ("bias", "logvar_init", "logvar_init_std", "log_alpha_clip"):
        if key in config:
            kw[key] = config[key]
    try:
        return GaussianLayerConfig(**kw)
    except TypeError as exc:
        raise ConfigError(f"bad layer setting: {exc}") from None


# -- point-estimate layers with an N(0, 1) weight prior (L2, Dropout, Deep Ensembles) ----


def he_init_(layer: nn.Linear | nn.Conv2d) -> nn.Linear | nn.Conv2d:
    """He-normal weights and zero biases (every deterministic layer of uqbench starts so)."""
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


def in_functorch_transform(*tensors: Tensor) -> bool:
    """True when a tensor is wrapped by a torch.func transform (``vmap`` of stacked models).

    Inside one, memory-format queries other than the default raise, so the CPU
    channels-last fast paths below step aside (same values, default layout). Under
    ``torch.compile`` it is False without asking (the query would break the graph).
    """
    if getattr(torch.compiler, "is_compiling", lambda: False)():
        return False
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return wrapped is not None and any(wrapped(t) for t in tensors)


#: Where the layers' noise comes from while set (:func:`noise_source`); None: torch's global RNG.
_NOISE_SOURCE: Any = None


@contextmanager
def noise_source(source: Any) -> Iterator[None]:
    """Route every noise draw of the layers (:func:`standard_normal_like`,
    :func:`standard_normal`, :func:`uniform_like`, :func:`uniform`) to ``source`` inside
    the block.

    ``source`` has the four methods of those names (``normal_like(t)``,
    ``normal(shape, like)``, ``uniform_like(t)``, ``uniform(shape, like)``). Used to train
    several seeds as one (:mod:`uqbench.vectorize`), where each seed's noise comes from its
    own generator.
    """
    global _NOISE_SOURCE
    before, _NOISE_SOURCE = _NOISE_SOURCE, source
    try:
        yield
    finally:
        _NOISE_SOURCE = before


def standard_normal(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Independent N(0, 1) draws of ``shape`` on ``like``'s device and dtype."""
    if _NOISE_SOURCE is not None:
        return _NOISE_SOURCE.normal(tuple(shape), like)
    return torch.randn(shape, device=like.device, dtype=like.dtype)


def uniform(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Independent U[0, 1) draws of ``shape`` on ``like``'s device and dtype."""
    if _NOISE_SOURCE is not None:
        return _NOISE_SOURCE.uniform(tuple(shape), like)
    return torch.rand(shape, device=like.device, dtype=like.dtype)


def uniform_like(t: Tensor) -> Tensor:
    """Independent U[0, 1) draws with the shape of ``t`` (``torch.rand_like``)."""
    if _NOISE_SOURCE is not None:
        return _NOISE_SOURCE.uniform_like(t)
    return torch.rand_like(t)


def standard_normal_like(t: Tensor) -> Tensor:
    """Independent N(0, 1) draws with the shape and memory layout of ``t``.

    ``torch.randn_like`` of a channels-last tensor falls back to a slow strided
    sampler on CPU; drawing a contiguous NHWC block and permuting it is the same
    distribution at the speed of the vectorised one.
    """
    if _NOISE_SOURCE is not None:
        return _NOISE_SOURCE.normal_like(t)
    if (
        t.dim() == 4
        and not in_functorch_transform(t)
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        n, c, h, w = t.shape
        return torch.randn(n, h, w, c, dtype=t.dtype, device=t.device).permute(0, 3, 1, 2)
    return torch.randn_like(t)


# -- KL terms ---------------------------------------------------------------------------------
def gaussian_kl(mean: Tensor, logvar: Tensor, var: Tensor | None = None) -> Tensor:
    """Sum of KL(N(mean, exp(logvar)) || N(0, 1)) = 0.5 sum(var + mean^2 - 1 - logvar)."""
    if var is None:
        var = logvar.exp()
    return 0.5 * (var + mean * mean - 1.0 - logvar).sum()


def loguniform_kl(mean: Tensor, logvar: Tensor, clip: float = 8.0) -> Tensor:
    """Sum of the approximate KL(N(theta, sigma^2) || log-uniform) of Molchanov et al. 2017.

    ``-KL ~= k1 sigmoid(k2 + k3 log alpha) - 0.5 log1p(1 / alpha) - k1`` with
    ``log alpha = log sigma^2 - log theta^2`` clipped to ``[-clip, clip]``.
    """
    log_alpha = (logvar - torch.log(mean * mean + THETA2_EPS)).clamp(-clip, clip)
    kl = MOLCHANOV_K1 * torch.sigmoid(-(MOLCHANOV_K2 + MOLCHANOV_K3 * log_alpha))
    return (kl + 0.5 * F.softplus(-log_alpha)).sum()


# -- normalising flow of eq. 6 ----------------------------------------------------------------
def bernoulli_half(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Bernoulli(0.5) masks of ``shape`` as 0/1 floats of ``like``'s dtype and device.

    Comparing uniforms is ~2x faster than ``bernoulli_`` on CPU; the in-place comparison
    writes the 0/1 floats into the uniforms' own tensor (no dtype conversion), except
    under a torch.func transform (``vmap`` has no batching rule for ``lt_``): same values.
    """
    u = uniform(shape, like)  # through the noise hook, as every draw of the layers
    if in_functorch_transform(like):
        return (u < 0.5).to(like.dtype)
    return u.lt_(0.5)


def _code_init_(weight: Tensor) -> None:
    """Normal init with std sqrt(4 / (fan_in + fan_out)), as the authors' code."""
    fan_out, fan_in = weight.shape
    nn.init.normal_(weight, 0.0, math.sqrt(4.0 / (fan_in + fan_out)))


class MaskedRealNVPStep(nn.Module):
    """One masked RealNVP step in the IAF form of eq. 6.

    ``m ~ Bern(0.5)`` (fresh every call unless given); ``h = tanh(f(m*z))``;
    ``mu = g(h)``; ``sigma = sigmoid(k(h))``;
    ``z' = m*z + (1-m)*(z*sigma + (1-sigma)*mu)``; ``log|det| = sum((1-m) log sigma)``.
    ``g`` and ``k`` are stored as one linear map ``gk`` (rows ``[:dim]`` are ``g``,
    rows ``[dim:]`` are ``k``) so a step costs two matmuls.
    """

    def __init__(self, dim: int, hidden: int, gate_bias_init: float = 2.0) -> None:
        super().__init__()
        self.dim = dim
        self.f = nn.Linear(dim, hidden)
        self.gk = nn.Linear(hidden, 2 * dim)
        _code_init_(self.f.weight)
        nn.init.zeros_(self.f.bias)
        nn.init.normal_(self.gk.weight, 0.0, math.sqrt(4.0 / (hidden + dim)))
        with torch.no_grad():
            self.gk.bias[:dim].zero_()
            self.gk.bias[dim:].fill_(gate_bias_init)

    def forward(
        self,
        z: Tensor,
        mask: Tensor | None = None,
        with_logdet: bool = True,
        keep: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``(z', log|det dz'/dz|)`` for ``z`` of shape ``[..., dim]`` (logdet ``[...]``).

        ``keep``, when given, must be ``1 - mask`` (the caller computed it already).
        """
        if mask is None:
            mask = bernoulli_half((1, *z.shape), z)[0]
        h = torch.tanh(self.f(mask * z))
        mu, k = self.gk(h).split(self.dim, dim=-1)
        if keep is None:
            keep = 1.0 - mask
        # m*z + (1-m)*(z*s + (1-s)*mu) == z + (1-m)*(1-s)*(mu - z), with 1-s = sigmoid(-k).
        z_new = torch.addcmul(z, keep * torch.sigmoid(-k), mu - z)
        logdet = (keep * F.logsigmoid(k)).sum(-1) if with_logdet else None
        return z_new, logdet


class MaskedRealNVP(nn.Module):
    """A stack of :class:`MaskedRealNVPStep`; ``n_steps = 0`` is the identity."""

    def __init__(self, dim: int, n_steps: int, hidden: int, gate_bias_init: float = 2.0) -> None:
        super().__init__()
        self.steps = nn.ModuleList(
            MaskedRealNVPStep(dim, hidden, gate_bias_init) for _ in range(n_steps)
        )

    def forward(
        self, z: Tensor, masks: list[Tensor] | None = None, with_logdet: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """``(z_T, sum of log-dets)``; ``masks`` (one per step) fixes the masks.

        Drawn masks come from one uniform draw for all steps, and ``1 - mask`` from one
        subtraction: on CPU the same numbers as a draw per step (the generator fills a
        tensor element by element in order), with fewer operations.
        """
        n = len(self.steps)
        if n == 0:
            return z, z.new_zeros(z.shape[:-1]) if with_logdet else None
        if masks is None:
            masks = bernoulli_half((n, *z.shape), z)
            keeps = 1.0 - masks
        else:
            keeps = [1.0 - m for m in masks]
        logdet: Tensor | None = None
        for i, step in enumerate(self.steps):
            z, ld = step(z, masks[i], with_logdet, keeps[i])
            if with_logdet:
                logdet = ld if logdet is None else logdet + ld
        return z, logdet


class PlanarFlow(nn.Module):
    """A stack of planar steps (Rezende & Mohamed 2015), the authors' flow for a 1-D ``z``.

    A masked RealNVP step on one dimension is the identity (mask 1) or an affine map of a
    constant (mask 0: ``f`` sees only zeros), so it cannot shape a 1-D ``q(z)``; the
    authors' code uses this flow whenever a layer has one input. Each step:
    ``z' = z + u_hat * tanh(w . z + b)``, with ``u_hat = u + (m(w . u) - w . u) w / |w|^2``
    and ``m(x) = -1 + softplus(x)``, so that ``w . u_hat >= -1`` keeps the map invertible;
    ``log|det| = log|1 + u_hat . w (1 - tanh^2(w . z + b))|``. ``w`` and ``u`` start as
    N(0, 4 / (dim + 1)) like the code's other weights, ``b`` at 0.
    """

    def __init__(self, dim: int, n_steps: int) -> None:
        super().__init__()
        std = math.sqrt(4.0 / (dim + 1))
        self.w = nn.Parameter(torch.empty(n_steps, dim).normal_(0.0, std))
        self.u = nn.Parameter(torch.empty(n_steps, dim).normal_(0.0, std))
        self.b = nn.Parameter(torch.zeros(n_steps))

    def forward(
        self, z: Tensor, masks: list[Tensor] | None = None, with_logdet: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """``(z_T, sum of log-dets)`` for ``z`` of shape ``[..., dim]``; ``masks`` is ignored."""
        if len(self.w) == 0:
            return z, z.new_zeros(z.shape[:-1]) if with_logdet else None
        logdet: Tensor | None = None
        for w, u, b in zip(self.w, self.u, self.b, strict=True):
            wu = (w * u).sum()
            u_hat = u + (F.softplus(wu) - 1.0 - wu) * w / (w * w).sum().clamp_min(1e-12)
            h = torch.tanh(z @ w + b)  # [...]
            z = z + h.unsqueeze(-1) * u_hat
            if with_logdet:
                det = torch.abs(1.0 + (1.0 - h * h) * (w * u_hat).sum())
                ld = torch.log(det.clamp_min(1e-12))
                logdet = ld if logdet is None else logdet + ld
        return z, logdet


def mnf_flow(dim: int, n_steps: int, hidden: int, cfg: MNFConfig) -> nn.Module:
    """q(z)'s or r(z|W)'s flow: planar for a 1-D ``z`` (``cfg.flow_1d``), else masked RealNVP."""
    if dim == 1 and cfg.flow_1d == "planar":
        return PlanarFlow(dim, n_steps)
    return MaskedRealNVP(dim, n_steps, hidden, cfg.gate_bias_init)


# -- MNF's q(z) and r(z|W) --------------------------------------------------------------------
class MNFNoise(nn.Module):
    """MNF's multiplicative variables of one layer: q(z) = NF(q(z0)) and r(z_T|W).

    ``q(z0) = N(q0_mean, exp(q0_logvar))`` (fully factorised), ``z_Tf = NF_q(z0)``.
    The auxiliary ``r(z_Tf|W)`` (eqs. 8-12, 15) pushes ``z_Tf`` through r's own flow
    to ``z_Tb`` and scores it under ``N(b1 * abar, sigma~^2)``, ``abar`` being the mean
    over ``a = [tanh](c^T W)`` (computed by the owning layer).
    """

    def __init__(self, dim: int, cfg: MNFConfig) -> None:
        super().__init__()
        self.dim = dim
        self.cfg = cfg
        self.q0_mean = nn.Parameter(
            torch.empty(dim).normal_(cfg.q0_mean_init, cfg.q0_mean_init_std)
        )
        self.q0_logvar = nn.Parameter(torch.full((dim,), float(cfg.q0_logvar_init)))
        self.flow_q = mnf_flow(dim, cfg.flow_q, cfg.hidden_q, cfg)
        std = math.sqrt(4.0 / dim)
        self.c = nn.Parameter(torch.empty(dim).normal_(0.0, std))
        self.b1 = nn.Parameter(torch.empty(dim).normal_(0.0, std))
        self.b2 = nn.Parameter(torch.empty(dim).normal_(0.0, std))
        self.flow_r = mnf_flow(dim, cfg.flow_r, cfg.hidden_r, cfg)

    def sample(self, batch_shape: tuple[int, ...] | torch.Size) -> Tensor:
        """``z_Tf`` of shape ``[*batch_shape, dim]``: one independent draw per row."""
        eps = standard_normal((*batch_shape, self.dim), self.q0_mean)
        z0 = torch.addcmul(self.q0_mean, torch.exp(0.5 * self.q0_logvar), eps)
        return self.flow_q(z0, with_logdet=False)[0]

    def sample_with_log_q(self) -> tuple[Tensor, Tensor]:
        """One ``z_Tf`` (shape ``[dim]``) and its ``log q(z_Tf)`` (eq. 16)."""
        eps = standard_normal((1, self.dim), self.q0_mean)
        z0 = torch.addcmul(self.q0_mean, torch.exp(0.5 * self.q0_logvar), eps)
        z, logdet = self.flow_q(z0)
        if self.cfg.log_q0 == "entropy":
            log_q0 = -0.5 * (_LOG_2PI + 1.0 + self.q0_logvar).sum()
        else:
            log_q0 = -0.5 * (_LOG_2PI + self.q0_logvar + eps[0] * eps[0]).sum()
        # Views, not indexing: the backward of a view is free, that of z[0] a scatter.
        return z.view(self.dim), log_q0 - logdet.view(())

    def log_r(self, z: Tensor, a: Tensor) -> Tensor:
        """``log r(z_Tf | W)`` (eq. 15) given ``a = [tanh](c^T W)`` (any shape)."""
        abar = a.mean()
        zb, logdet = self.flow_r(z.unsqueeze(0))
        diff = zb.view(self.dim) - self.b1 * abar
        pre = self.b2 * abar
        if self.cfg.r_std == "sigmoid":  # std = sigmoid(pre)
            log_std = F.logsigmoid(pre)
            logp = -0.5 * _LOG_2PI - log_std - 0.5 * (diff * torch.exp(-log_std)).pow(2)
        else:  # precision = exp(pre)
            logp = -0.5 * _LOG_2PI + 0.5 * pre - 0.5 * torch.exp(pre) * diff * diff
        return logp.sum() + logdet.view(())


# -- the layers -------------------------------------------------------------------------------
class _BayesianLayer(nn.Module):
    """Gaussian weights with optional MNF ``z``; the dense/conv subclasses say how to apply."""

    #: Which weight axis ``z`` scales (dense: inputs = 1; conv: output filters = 0).
    z_axis: int = 1

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        n_out: int,
        fan_in: int,
        cfg: GaussianLayerConfig,
        mnf: MNFConfig | None,
        index: int = 0,
    ) -> None:
        super().__init__()
        if mnf is not None and cfg.prior != "normal":
            raise ConfigError("MNF layers need the normal prior")
        self.cfg = cfg
        self.index = index
        self.weight_mean = nn.Parameter(torch.empty(weight_shape).normal_(0, math.sqrt(2 / fan_in)))
        self.weight_logvar = nn.Parameter(
            torch.empty(weight_shape).normal_(cfg.logvar_init, cfg.logvar_init_std)
        )
        if cfg.bias == "none":
            self.register_parameter("bias_mean", None)
        else:
            self.bias_mean = nn.Parameter(torch.zeros(n_out))
        if cfg.bias == "gaussian":
            self.bias_logvar = nn.Parameter(
                torch.empty(n_out).normal_(cfg.logvar_init, cfg.logvar_init_std)
            )
        else:
            self.register_parameter("bias_logvar", None)
        self._max_logvar = None if cfg.max_std is None else 2.0 * math.log(cfg.max_std)
        self.mnf = None if mnf is None else MNFNoise(weight_shape[self.z_axis], mnf)
        self.r_tanh = True

    # -- hooks of the subclasses
    def _mean(self, x: Tensor, z: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _var(self, x2: Tensor, w_var: Tensor, b_var: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _z_batch_shape(self, x: Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def _cw_moments(self, z: Tensor, w_var: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    # -- shared
    def _forward_vars(self) -> tuple[Tensor, Tensor | None]:
        """Weight and bias variances with the forward-pass std clamp, one exp each."""
        lv, blv = self.weight_logvar, self.bias_logvar
        if self._max_logvar is not None:
            lv = lv.clamp(max=self._max_logvar)
            blv = None if blv is None else blv.clamp(max=self._max_logvar)
        return lv.exp(), None if blv is None else blv.exp()

    def sample_z(self, x: Tensor) -> Tensor | None:
        """One ``z`` per example of ``x`` (``None`` when the layer has no ``z``)."""
        return None if self.mnf is None else self.mnf.sample(self._z_batch_shape(x))

    def moments(self, x: Tensor, z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and variance of the pre-activations given ``x`` and ``z``.

        ``z`` (MNF only) defaults to a fresh draw per example; pass a ``[D_z]`` or
        ``[batch, D_z]`` tensor to condition on it. Without MNF, ``z = 1``.
        """
        if z is None:
            z = self.sample_z(x)
        elif self.mnf is None:
            raise ValueError("this layer has no multiplicative z")
        w_var, b_var = self._forward_vars()
        return self._mean(x, z), self._var(x * x, w_var, b_var)

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        """One local-reparametrised sample: ``M_h + sqrt(V_h) * E``, ``E ~ N(0, 1)``."""
        mean, var = self.moments(x, z)
        # var is a fresh tensor: shift and root it in place (autograd-safe, no extra copies).
        return torch.addcmul(mean, var.add_(VAR_EPS).sqrt_(), standard_normal_like(mean))

    def _z_view(self, z: Tensor) -> Tensor:
        shape = [1] * self.weight_mean.dim()
        shape[self.z_axis] = -1
        return z.view(shape)

    def kl(self) -> Tensor:
        """KL(q || p) of this layer's weights and biases (MNF: the eq. 13 bound, 1 sample)."""
        parts = self.kl_parts()
        if "log_q" not in parts:
            return parts["kl_w"]
        return parts["kl_w"] + parts["log_q"] - parts["log_r"]

    def kl_parts(self) -> dict[str, Tensor]:
        """The terms of :meth:`kl` (one sample): ``kl_w`` = KL(q(W|z) || p(W)) (eq. 14;
        without MNF the whole KL), and with MNF ``z`` (z_Tf), ``log_q`` = log q(z_Tf)
        (eq. 16) and ``log_r`` = log r(z_Tf | W) (eq. 15): KL = kl_w + log_q - log_r."""
        mean, logvar = self.weight_mean, self.weight_logvar
        if self.cfg.prior == "log-uniform":
            return {"kl_w": loguniform_kl(mean, logvar, self.cfg.log_alpha_clip)}
        var = logvar.exp()
        if self.mnf is None:
            kl = gaussian_kl(mean, logvar, var)
            if self.bias_logvar is not None:
                kl = kl + gaussian_kl(self.bias_mean, self.bias_logvar)
            return {"kl_w": kl}
        z, log_q = self.mnf.sample_with_log_q()
        kl = gaussian_kl(mean * self._z_view(z), logvar, var)  # eq. 14
        if self.bias_logvar is not None:
            b_mean = self.bias_mean * z if self.z_axis == 0 else self.bias_mean
            kl = kl + gaussian_kl(b_mean, self.bias_logvar)
        a_mean, a_var = self._cw_moments(z, var)
        a = torch.addcmul(a_mean, torch.sqrt(a_var + VAR_EPS), standard_normal_like(a_mean))
        if self.r_tanh:
            a = torch.tanh(a)
        return {"kl_w": kl, "z": z, "log_q": log_q, "log_r": self.mnf.log_r(z, a)}

    @torch.no_grad()
    def q_diagnostics(self, n_samples: int = 32) -> dict[str, float]:
        """What q does in this layer, averaged over ``n_samples`` draws of the KL terms.

        ``weight_std``: mean std of q(W|z) (unclamped); ``kl_w``, ``log_q``, ``log_r``,
        ``kl``: the terms of :meth:`kl_parts` and their total; with MNF, ``z_mean`` and
        ``z_spread`` (mean over units of z_Tf's mean and std across draws) and
        ``z_spread_rel`` (z_spread / |z_mean|, the share by which z rescales a weight).
        """
        draws = [self.kl_parts() for _ in range(n_samples)]
        out = {"weight_std": float(torch.exp(0.5 * self.weight_logvar.double()).mean())}
        for key in ("kl_w", "log_q", "log_r"):
            if key in draws[0]:
                out[key] = float(torch.stack([d[key].double() for d in draws]).mean())
        out["kl"] = out["kl_w"] + out.get("log_q", 0.0) - out.get("log_r", 0.0)
        if "z" in draws[0]:
            z = torch.stack([d["z"].double() for d in draws])
            out["z_mean"] = float(z.mean())
            out["z_spread"] = float(z.std(0).mean())
            out["z_spread_rel"] = float((z.std(0) / z.mean(0).abs().clamp_min(1e-12)).mean())
        return out

    def sparsity(self, threshold: float = 5.0) -> float:
        """Share of weights with ``log sigma^2 - log mu^2 >= threshold`` (paper fn. 6)."""
        with torch.no_grad():
            mu2 = self.weight_mean.double().pow(2)
            log_alpha = self.weight_logvar.double() - torch.log(mu2)
            return float((log_alpha >= threshold).double().mean())


class BayesLinear(_BayesianLayer):
    """Dense layer ``in -> out``; MNF's ``z`` scales the inputs (eq. 4, Algorithm 1).

    Weights are stored as ``[out, in]`` (``F.linear`` layout).
    """

    z_axis = 1

    def __init__(
        self,
        in_features: int,
        out_features: int,
        cfg: GaussianLayerConfig,
        mnf: MNFConfig | None = None,
        index: int = 0,
    ) -> None:
        super().__init__((out_features, in_features), out_features, in_features, cfg, mnf, index)
        self.in_features, self.out_features = in_features, out_features

    def _z_batch_shape(self, x: Tensor) -> tuple[int, ...]:
        return tuple(x.shape[:-1])

    def _mean(self, x: Tensor, z: Tensor | None) -> Tensor:
        return F.linear(x if z is None else x * z, self.weight_mean, self.bias_mean)

    def _var(self, x2: Tensor, w_var: Tensor, b_var: Tensor | None) -> Tensor:
        return F.linear(x2, w_var, b_var)

    def _cw_moments(self, z: Tensor, w_var: Tensor) -> tuple[Tensor, Tensor]:
        # c^T W over the inputs, W_ij ~ N(z_i mu_ij, sigma_ij^2): one value per output.
        c = self.mnf.c
        return self.weight_mean @ (c * z), w_var @ (c * c)

    def extra_repr(self) -> str:
        mnf = ", mnf" if self.mnf is not None else ""
        return f"{self.in_features} -> {self.out_features}, prior={self.cfg.prior}{mnf}"


class BayesConv2d(_BayesianLayer):
    """2-D convolution; MNF's ``z`` scales each output filter (eq. 5, Algorithm 2).

    Weights are stored as ``[out, in, k, k]``. The filter's bias mean is scaled by
    ``z`` too (it belongs to the filter).
    """

    z_axis = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        cfg: GaussianLayerConfig,
        mnf: MNFConfig | None = None,
        index: int = 0,
        stride: int = 1,
        padding: int = 0,
        r_tanh: bool = True,
    ) -> None:
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        fan_in = in_channels * kernel_size * kernel_size
        super().__init__(shape, out_channels, fan_in, cfg, mnf, index)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.r_tanh = r_tanh

    def _z_batch_shape(self, x: Tensor) -> tuple[int, ...]:
        return tuple(x.shape[:-3])

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        """As :meth:`_BayesianLayer.forward`; on CPU the maps are kept channels-last.

        Only the memory layout changes (not the values): oneDNN convolutions and the
        following ReLU / max-pool are several times faster on channels-last tensors.
        """
        if x.device.type != "cpu" or x.dim() != 4 or in_functorch_transform(x, self.weight_mean):
            return super().forward(x, z)
        out = super().forward(x.contiguous(memory_format=torch.channels_last), z)
        return out.contiguous(memory_format=torch.channels_last)

    def _mean(self, x: Tensor, z: Tensor | None) -> Tensor:
        # H * (M_w . z) == (H * M_w) . z per filter: one conv for every z of the batch.
        out = F.conv2d(x, self.weight_mean, self.bias_mean, self.stride, self.padding)
        if z is None:
            return out
        return out * z.unsqueeze(-1).unsqueeze(-1)

    def _var(self, x2: Tensor, w_var: Tensor, b_var: Tensor | None) -> Tensor:
        return F.conv2d(x2, w_var, b_var, self.stride, self.padding)

    def _cw_moments(self, z: Tensor, w_var: Tensor) -> tuple[Tensor, Tensor]:
        # mat(W) c: sum over filters, one value per (in, kh, kw) row of mat(W).
        c = self.mnf.c
        n_f = self.out_channels
        mean = self.weight_mean.reshape(n_f, -1).t() @ (c * z)
        var = w_var.reshape(n_f, -1).t() @ (c * c)
        return mean, var

    def extra_repr(self) -> str:
        mnf = ", mnf" if self.mnf is not None else ""
        return (
            f"{self.in_channels} -> {self.out_channels}, k={self.kernel_size}, "
            f"prior={self.cfg.prior}{mnf}"
        )


class GaussianLayers:
    """Layer factory (see :class:`uqbench.architectures.LayerFactory`) for FFG/FFLU/MNF.

    ``mnf=None`` gives ``z = 1`` layers (FFG with the normal prior, FFLU with the
    log-uniform prior); an :class:`MNFConfig` gives MNF layers.
    """

    def __init__(self, cfg: GaussianLayerConfig, mnf: MNFConfig | None = None) -> None:
        self.cfg = cfg
        self.mnf = mnf

    def linear(self, in_features: int, out_features: int, *, index: int, last: bool) -> nn.Module:
        return BayesLinear(in_features, out_features, self.cfg, self.mnf, index=index)

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, *, index: int
    ) -> nn.Module:
        r_tanh = True if self.mnf is None else self.mnf.r_tanh_conv
        return BayesConv2d(
            in_channels, out_channels, kernel_size, self.cfg, self.mnf, index=index, r_tanh=r_tanh
        )


def q_diagnostics(net: nn.Module, n_samples: int = 32) -> dict[str, Any]:
    """``{"q_layers": {layerN: q_diagnostics}}`` of every Bayesian layer of ``net``, for a
    family's ``diagnostics()`` (MNF vs FFG: what z and the auxiliary r contribute)."""
    layers = bayesian_layers(net)
    if not layers:
        return {}
    return {"q_layers": {f"layer{m.index}": m.q_diagnostics(n_samples) for m in layers}}


def bayesian_layers(net: nn.Module) -> list[_BayesianLayer]:
    """The Bayesian layers of ``net`` in network order."""
    return [m for m in net.modules() if isinstance(m, _BayesianLayer)]


__all__ = [
    "BayesConv2d",
    "BayesLinear",
    "GaussianLayerConfig",
    "GaussianLayers",
    "MNFConfig",
    "MNFNoise",
    "MaskedRealNVP",
    "MaskedRealNVPStep",
    "PlanarFlow",
    "bayesian_layers",
    "gaussian_kl",
    "loguniform_kl",
    "resolve_max_std",
]
