"""Adversarial examples for the robustness experiment (paper Section 4.2).

The attack targets the Monte-Carlo predictive, not a single posterior sample: the
loss is the NLL of ``mean_s softmax(logits_s)``, differentiated through
``model.sample_outputs`` with respect to the input only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from uqbench.errors import PluginError
from uqbench.metrics import predictive_log_probs
from uqbench.posterior import family


def fgsm(
    model: Any,
    x: Tensor,
    y: Tensor,
    eps: float,
    n_samples: int,
    input_range: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """Untargeted fast gradient sign attack (Goodfellow et al. 2014) on the MC predictive.

    ``x_adv = clamp(x + eps * sign(grad_x NLL), input_range)`` with
    ``NLL = -sum_i log mean_s softmax(f_s(x_i))[y_i]`` and the ``n_samples`` samples
    drawn by ``model.sample_outputs(x, n_samples)``. ``eps = 0`` returns ``x``
    unchanged. The gradient is taken with respect to ``x`` alone, so no parameter
    accumulates a ``.grad``; the model's train/eval mode is left as it is.
    Returns a detached tensor shaped like ``x``.
    """
    if eps == 0:
        return x.detach()
    x_in = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model.sample_outputs(x_in, n_samples)
        if not out.requires_grad:
            raise PluginError(
                f"{family(model)}: sample_outputs gave outputs with no gradient to the input, "
                "which FGSM needs (is it wrapped in torch.no_grad? evaluation already calls it "
                "under no_grad where no gradient is needed)"
            )
        log_p = predictive_log_probs(out)
        # Summed (not averaged) over the batch: the sign is the same and tiny per-example
        # gradients do not underflow to zero.
        loss = F.nll_loss(log_p, y.to(log_p.device), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_in)
    return fgsm_step(x, grad, eps, input_range)


def fgsm_step(
    x: Tensor, grad: Tensor, eps: float, clamp: tuple[float, float] | None = (0.0, 1.0)
) -> Tensor:
    """The FGSM step ``x + eps * sign(grad)``, clamped to ``clamp`` when given; detached.

    The one home of the step: :func:`fgsm` and Deep Ensembles' adversarial training use it.
    """
    x_adv = x.detach() + eps * grad.sign()
    if clamp is not None:
        x_adv = x_adv.clamp(*clamp)
    return x_adv.detach()
