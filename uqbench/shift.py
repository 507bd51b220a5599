"""Dataset shift: rotated test sets and common corruptions at five severities.

Rotations follow Ovadia et al. (2019): the test set rotated by each angle (bilinear,
zero fill). Corruptions follow CIFAR-10-C (Hendrycks & Dietterich 2019), with its
CIFAR-10 severity parameters for both MNIST and CIFAR-5 (MNIST-C has no graded
severities), built from torchvision's functional transforms and tensor noise. Inputs
are ``[N, C, H, W]`` floats in [0, 1]; outputs too. Every random corruption draws from
its own seeded generator, never from the global RNG, so the shifted sets are fixed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.transforms import InterpolationMode

#: Severities of every corruption (1 = mildest).
SEVERITIES = (1, 2, 3, 4, 5)
#: The Ovadia et al. rotation grid, in degrees.
DEFAULT_ROTATIONS = tuple(range(0, 181, 15))

# CIFAR-10-C parameters per severity (Hendrycks & Dietterich's make_cifar_c.py).
_GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
_SHOT_NOISE_RATE = (500.0, 250.0, 100.0, 75.0, 50.0)
_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
_CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
_BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)
_JPEG_QUALITY = (80, 65, 58, 50, 40)
_PIXELATE_SCALE = (0.95, 0.9, 0.85, 0.75, 0.65)


def rotate(x: Tensor, angle: float) -> Tensor:
    """``x`` rotated by ``angle`` degrees counter-clockwise about the centre (zero fill)."""
    return TF.rotate(x, float(angle), interpolation=InterpolationMode.BILINEAR, fill=0.0)


def _gaussian_noise(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype) * _GAUSSIAN_NOISE_STD[s - 1]
    return (x + noise).clamp(0.0, 1.0)


def _shot_noise(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    rate = _SHOT_NOISE_RATE[s - 1]
    return (torch.poisson(x * rate, generator=gen) / rate).clamp(0.0, 1.0)


def _gaussian_blur(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    sigma = _BLUR_SIGMA[s - 1]
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, [k, k], [sigma, sigma]).clamp(0.0, 1.0)


def _contrast(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    # Blend towards the image's mean grey level, as CIFAR-10-C's (x - mean) * c + mean.
    return TF.adjust_contrast(x, _CONTRAST_FACTOR[s - 1])


def _brightness(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    # CIFAR-10-C adds c to HSV value; with hue and saturation fixed, RGB scales by V'/V.
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + _BRIGHTNESS_SHIFT[s - 1]).clamp(0.0, 1.0)
    scaled = x * (v_new / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, v_new.expand_as(x))


def _jpeg(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    u8 = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 points its JPEG codec to TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        out = TF.jpeg(u8, _JPEG_QUALITY[s - 1])
    return out.to(x.dtype) / 255.0


def _pixelate(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    h, w = x.shape[-2:]
    c = _PIXELATE_SCALE[s - 1]
    small = TF.resize(
        x, [int(h * c), int(w * c)], interpolation=InterpolationMode.BILINEAR, antialias=True
    )
    return TF.resize(small, [h, w], interpolation=InterpolationMode.NEAREST).clamp(0.0, 1.0)


Corruption = Callable[[Tensor, int, torch.Generator], Tensor]
#: The corruptions by name (CIFAR-10-C's names).
CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "jpeg_compression": _jpeg,
    "pixelate": _pixelate,
}


def corrupt(x: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """``x`` (``[N, C, H, W]`` in [0, 1]) with corruption ``name`` at ``severity`` 1..5.

    Random corruptions draw from a generator seeded by ``seed``, the corruption and
    the severity, so the same call always gives the same images.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    offset = list(CORRUPTIONS).index(name) * 10 + severity
    gen = torch.Generator().manual_seed(seed * 1000 + offset)
    return CORRUPTIONS[name](x.float().cpu(), severity, gen)
