"""Gaussian dropout (Srivastava et al. 2014) as a uqbench posterior, from outside uqbench.

The inputs of every weight layer but the first are multiplied by fresh N(1, p / (1 - p))
noise, in training and at prediction time: each forward pass is one posterior sample.
"""

import torch
from torch import nn

import uqbench


class NoisyInput(nn.Module):
    """A weight layer with multiplicative N(1, alpha) noise on its input."""

    def __init__(self, layer: nn.Module, alpha: float) -> None:
        super().__init__()
        self.layer, self.alpha = layer, alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x * (1 + self.alpha**0.5 * torch.randn_like(x)))

    def kl(self) -> torch.Tensor:  # optional; the loss adds kl / N. Here: a N(0, 1) prior
        return 0.5 * self.layer.weight.pow(2).sum()


class NoisyLayers(uqbench.PlainLayers):
    """uqbench's He-initialised layers, each wrapped in NoisyInput (no noise on the first)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def linear(self, d_in: int, d_out: int, *, index: int, last: bool) -> nn.Module:
        layer = super().linear(d_in, d_out, index=index, last=last)
        return NoisyInput(layer, self.alpha if index > 0 else 0.0)

    def conv2d(self, c_in: int, c_out: int, kernel_size: int, *, index: int) -> nn.Module:
        layer = super().conv2d(c_in, c_out, kernel_size, index=index)
        return NoisyInput(layer, self.alpha if index > 0 else 0.0)


@uqbench.register_posterior("gaussian-dropout")
class GaussianDropout(uqbench.Posterior):
    display_name = "Gauss. dropout"
    defaults = {"p": 0.5}  # config keys and defaults; p: the dropout rate it mimics

    def layer_factory(self) -> NoisyLayers:
        return NoisyLayers(self.config["p"] / (1 - self.config["p"]))
