"""Deep Ensembles (Lakshminarayanan et al. 2017): Table 1's "mixture of peaks".

``members`` deterministic networks (He-initialised independently), each trained with
FGSM adversarial training: per member ``m``,
``loss_m = NLL_m(x) + NLL_m(x_adv_m) + kl_m / N`` with
``x_adv_m = clamp(x + eps * sign(grad_x NLL_m(x)), 0, 1)`` (each member attacks its own
inputs). ``kl_m = 0.5 * ||W_m||^2`` is the same N(0, 1)-prior weight decay as
:mod:`uqbench.baselines.l2` (biases undecayed); the original paper used a tuned weight decay,
we keep the one prior that every family here shares.

Joint training. All members live in one network whose layers hold a leading member
axis (grouped convolutions and batched matrix products), and one optimiser step
minimises the *sum* of the member losses on a shared mini-batch. No parameter is
shared between members and Adam's update is per parameter, so this is exactly
independent training of each member with the same batch order (the original shuffles
per member; here only the initialisations differ). The ``nll`` statistic is the mean
clean NLL over members; ``loss`` is the summed objective.

Settings: ``members`` (None: 5) and ``adv_eps`` (None or 0: no adversarial training);
tasks set theirs in ``method_defaults`` (MNIST: 10 members, eps 0.25), suites in their
method tables. Adversarial inputs are clamped to the task's input range
(``spec.input_range``; None: unclamped).

Prediction. ``sample_outputs(x, n_samples)`` returns ``[members, batch, out]``, one
row per member: the predictive is the uniform mixture of the members, so
``n_samples`` is ignored (averaging over axis 0 gives the exact mixture; tiling to
``n_samples`` would add nothing, and bias it when ``n_samples`` is not a multiple of
``members``). All members run in one pass. ``forward`` (one posterior sample per
example) picks a member uniformly at random for each example.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import uqbench
from uqbench.architectures import LayerFactory, ModelSpec, PlainLayers, build_network
from uqbench.attacks import fgsm_step
from uqbench.errors import ConfigError
from uqbench.layers import in_functorch_transform
from uqbench.posterior import Posterior, resolve_chunk_rows

DEFAULT_MEMBERS = 5

# Inside the ensemble network a batch of B examples is a tensor of B * M rows ordered
# (example, member): row b * M + m is example b seen by member m. With that order a
# conv input [B * M, C, H, W] is a free view of [B, M * C, H, W], the input layout of a
# grouped convolution with one group per member.


class EnsembleLinear(nn.Module):
    """``members`` independent dense layers applied to rows ordered (example, member)."""

    def __init__(self, in_features: int, out_features: int, members: int) -> None:
        super().__init__()
        self.members = members
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(members, out_features))
        for w in self.weight:
            nn.init.kaiming_normal_(w, nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        h = x.reshape(-1, self.members, x.shape[-1])
        out = torch.einsum("bmi,moi->bmo", h, self.weight) + self.bias
        return out.reshape(-1, out.shape[-1])

    def kl(self) -> Tensor:
        """Sum over members of the N(0, 1) negative log prior ``0.5 * ||W_m||^2``."""
        return 0.5 * self.weight.pow(2).sum()


class EnsembleConv2d(nn.Module):
    """``members`` independent convolutions as one grouped convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, members: int):
        super().__init__()
        self.members = members
        self.weight = nn.Parameter(
            torch.empty(members, out_channels, in_channels, kernel_size, kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(members, out_channels))
        for w in self.weight:
            nn.init.kaiming_normal_(w, nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        m = self.members
        _, c, h, w = x.shape
        grouped = x.reshape(-1, m * c, h, w)
        out = F.conv2d(
            grouped, self.weight.flatten(0, 1), self.bias.flatten(), groups=m
        )  # [B, M * C_out, H', W']
        return out.reshape(-1, out.shape[1] // m, out.shape[2], out.shape[3])

    def kl(self) -> Tensor:
        """Sum over members of the N(0, 1) negative log prior ``0.5 * ||W_m||^2``."""
        return 0.5 * self.weight.pow(2).sum()


class EnsembleLayers:
    """Layer factory of ``members`` stacked deterministic networks."""

    def __init__(self, members: int) -> None:
        self.members = members

    def linear(self, in_features: int, out_features: int, *, index: int, last: bool) -> nn.Module:
        return EnsembleLinear(in_features, out_features, self.members)

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, *, index: int
    ) -> nn.Module:
        return EnsembleConv2d(in_channels, out_channels, kernel_size, self.members)


@uqbench.register_posterior("ensemble")
class Ensemble(Posterior):
    """A uniform mixture of independently trained, adversarially trained networks."""

    display_name = "D.Ensem."
    defaults: dict[str, Any] = {"members": None, "adv_eps": None}
    #: Types of the keys whose default is None (suite files are checked against them).
    config_types: dict[str, Any] = {"members": int, "adv_eps": float}
    skip_fgsm_by_default = True
    vectorize_seeds = True  # tests/test_vectorize.py

    def __init__(self, spec: ModelSpec, **config: Any) -> None:
        merged = {**self.defaults, **config}
        members = merged["members"]
        self.members = int(members) if members is not None else DEFAULT_MEMBERS
        if self.members < 1:
            raise ConfigError(f"ensemble: members must be >= 1, got {self.members}")
        eps = merged["adv_eps"]
        self.adv_eps = float(eps) if eps is not None else 0.0
        if not math.isfinite(self.adv_eps) or self.adv_eps < 0:
            raise ConfigError(f"ensemble: adv_eps must be a finite number >= 0, got {eps!r}")
        self.input_range = spec.input_range
        super().__init__(spec, **config)

    def layer_factory(self) -> LayerFactory:
        return EnsembleLayers(self.members)

    # -- one pass through all members ---------------------------------------------
    def member_outputs(self, x: Tensor) -> Tensor:
        """``[batch, members, out]``: every member on every example of ``x``."""
        b, m = x.shape[0], self.members
        rows = x.unsqueeze(1).expand(b, m, *x.shape[1:]).reshape(b * m, *x.shape[1:])
        return self.net(rows).reshape(b, m, -1)

    def member_inputs_outputs(self, x_rep: Tensor) -> Tensor:
        """``[batch, members, out]`` for per-member inputs ``x_rep`` ``[batch, members, ...]``."""
        b, m = x_rep.shape[:2]
        return self.net(x_rep.reshape(b * m, *x_rep.shape[2:])).reshape(b, m, -1)

    def summed_member_nll(self, out: Tensor, y: Tensor) -> Tensor:
        """``sum_m mean_b NLL(out[b, m], y[b])`` for ``out`` ``[batch, members, out]``."""
        b, m = out.shape[:2]
        y_rep = y.repeat_interleave(m, dim=0)
        return self.nll(out.reshape(b * m, -1), y_rep) * m

    def adversarial_inputs(self, x: Tensor, y: Tensor) -> Tensor:
        """``[batch, members, ...]``: each member's FGSM example of ``x`` at ``adv_eps``."""
        b, m = x.shape[0], self.members
        x_rep = x.detach().unsqueeze(1).expand(b, m, *x.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad():
            nll = self.summed_member_nll(self.member_inputs_outputs(x_rep), y)
            # Member m's loss depends on x_rep[:, m] only: this is each member's gradient.
            (grad,) = torch.autograd.grad(nll, x_rep)
        return fgsm_step(x_rep, grad, self.adv_eps, self.input_range)

    # -- Posterior interface ------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Sum over members of ``NLL(x) + NLL(x_adv) + kl_m / N``."""
        b, m = x.shape[0], self.members
        clean = x.unsqueeze(1).expand(b, m, *x.shape[1:])
        if self.adv_eps > 0 and torch.is_grad_enabled() and in_functorch_transform(x):
            # Seeds trained as one (uqbench.vectorize): the same pass and input gradient
            # through torch.func.vjp, since autograd.grad cannot run under vmap.
            def clean_nll(x_rep: Tensor) -> Tensor:
                return self.summed_member_nll(self.member_inputs_outputs(x_rep), y)

            nll, vjp = torch.func.vjp(clean_nll, clean)
            (grad,) = vjp(torch.ones_like(nll))
            x_adv = fgsm_step(clean, grad, self.adv_eps, self.input_range)
            nll_adv = self.summed_member_nll(self.member_inputs_outputs(x_adv), y)
        elif self.adv_eps > 0 and torch.is_grad_enabled():
            # The clean pass that gives FGSM its input gradient is the clean term of the
            # loss too: keep its graph instead of running the clean inputs twice.
            x_rep = clean.detach().clone().requires_grad_(True)
            nll = self.summed_member_nll(self.member_inputs_outputs(x_rep), y)
            (grad,) = torch.autograd.grad(nll, x_rep, retain_graph=True)
            x_adv = fgsm_step(x_rep, grad, self.adv_eps, self.input_range)
            nll_adv = self.summed_member_nll(self.member_inputs_outputs(x_adv), y)
        elif self.adv_eps > 0:
            x_all = torch.cat([clean, self.adversarial_inputs(x, y)], 0)
            out = self.member_inputs_outputs(x_all)
            nll = self.summed_member_nll(out[:b], y)
            nll_adv = self.summed_member_nll(out[b:], y)
        else:
            nll = self.summed_member_nll(self.member_inputs_outputs(clean), y)
            nll_adv = torch.zeros((), device=x.device)
        kl = self.kl()
        loss = nll + nll_adv + kl / self.spec.n_data
        stats = {
            "nll": nll.detach() / m,
            "nll_adv": nll_adv.detach() / m,
            "kl": kl.detach(),
        }
        return loss, stats

    def forward(self, x: Tensor) -> Tensor:
        """One mixture sample per example: a uniformly drawn member's output."""
        out = self.member_outputs(x)
        pick = torch.randint(self.members, (x.shape[0],), device=x.device)
        return out[torch.arange(x.shape[0], device=x.device), pick]

    def sample_outputs(self, x: Tensor, n_samples: int, chunk_rows: int | None = None) -> Tensor:
        """``[members, batch, out]``: every member once (``n_samples`` is ignored)."""
        chunk_rows = resolve_chunk_rows(chunk_rows, x.device)
        per_chunk = max(1, chunk_rows // self.members)
        outs = [self.member_outputs(x[i : i + per_chunk]) for i in range(0, x.shape[0], per_chunk)]
        return torch.cat(outs, 0).transpose(0, 1)

    def member(self, index: int) -> nn.Module:
        """Member ``index`` as a standalone network of ``nn.Linear`` / ``nn.Conv2d``."""
        net = build_network(self.spec, PlainLayers()).to(self._device())
        mine = [m for m in self.net.modules() if isinstance(m, (EnsembleLinear, EnsembleConv2d))]
        plain = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        with torch.no_grad():
            for src, dst in zip(mine, plain, strict=True):
                dst.weight.copy_(src.weight[index])
                dst.bias.copy_(src.bias[index])
        return net

    def diagnostics(self) -> dict[str, Any]:
        return {"members": self.members, "adv_eps": self.adv_eps}
