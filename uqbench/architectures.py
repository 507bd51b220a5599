"""Network architectures, each written once against a layer factory.

A posterior family supplies the factory (its own dense and conv layers, plus any
noise it injects between layers); the architecture only says what is connected to
what. ``build_network`` turns a :class:`ModelSpec` into an ``nn.Sequential``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from torch import nn

from uqbench.errors import ConfigError
from uqbench.layers import he_init_

#: The two kinds of task, and of model output: ``"classification"`` (categorical
#: likelihood over ``out_dim`` classes, int64 labels) and ``"regression"`` (Gaussian
#: likelihood with fixed ``noise_std``, float targets ``[N, 1]``).
CLASSIFICATION, REGRESSION = "classification", "regression"
TASK_KINDS = (CLASSIFICATION, REGRESSION)
#: Names of the kinds in model files written before the vocabularies were merged.
_LEGACY_LIKELIHOOD = {"categorical": CLASSIFICATION, "gaussian": REGRESSION}
#: Family settings that model files written before they moved to the family's config held
#: in the spec: spec key -> config key (see :func:`legacy_family_settings`).
_LEGACY_FAMILY_KEYS = {"max_std": "max_std", "adv_eps": "adv_eps", "ensemble_members": "members"}


@dataclass
class ModelSpec:
    """What an architecture is built from, and the likelihood its outputs feed.

    ``kind`` is the task's (:data:`TASK_KINDS`); ``n_data`` is the training-set size N
    that scales the KL (loss = NLL + KL / N); ``noise_std`` is the fixed likelihood
    noise of a regression; ``input_range`` the valid range of inputs (adversarial
    examples are clamped to it; None: unbounded). Settings of posterior families (the
    Gaussian families' std clamp, Deep Ensembles' members and FGSM step) are not here:
    they are the family's config, set per task by the task's ``method_defaults`` and the
    suite's method tables.
    """

    arch: str
    in_shape: tuple[int, ...]
    out_dim: int
    kind: str
    n_data: int
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    noise_std: float | None = None
    input_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ConfigError(
                f"model spec: kind must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}"
            )
        if self.input_range is not None and not self.input_range[0] < self.input_range[1]:
            raise ConfigError(f"model spec: input_range needs lo < hi, got {self.input_range!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_shape"] = list(self.in_shape)
        if self.input_range is not None:
            d["input_range"] = list(self.input_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """The spec of :meth:`to_dict`; also reads older files (``likelihood`` for
        ``kind``; family settings, which :func:`legacy_family_settings` returns)."""
        d = {k: v for k, v in d.items() if k not in _LEGACY_FAMILY_KEYS}
        if "likelihood" in d:
            d["kind"] = _LEGACY_LIKELIHOOD.get(d.pop("likelihood"), "")
        d["in_shape"] = tuple(d["in_shape"])
        if d.get("input_range") is not None:
            d["input_range"] = tuple(d["input_range"])
        return cls(**d)


def legacy_family_settings(d: dict[str, Any]) -> dict[str, Any]:
    """Family config held by the spec dict of a model file written before such settings
    moved to the family's config (``{"max_std": 0.5, "members": 10, ...}``; set ones only)."""
    return {new: d[old] for old, new in _LEGACY_FAMILY_KEYS.items() if d.get(old) is not None}


class LayerFactory(Protocol):
    """What a posterior family provides to build an architecture.

    ``index`` counts weight layers from 0 (input layer) to the output layer; ``last``
    marks the output layer. Families that inject noise between layers (dropout) do so
    inside the module they return.
    """

    def linear(
        self, in_features: int, out_features: int, *, index: int, last: bool
    ) -> nn.Module: ...

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, *, index: int
    ) -> nn.Module: ...


class PlainLayers:
    """Deterministic ``nn.Linear`` / ``nn.Conv2d`` with He-initialised weights."""

    def linear(self, in_features: int, out_features: int, *, index: int, last: bool) -> nn.Module:
        return he_init_(nn.Linear(in_features, out_features))

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, *, index: int
    ) -> nn.Module:
        return he_init_(nn.Conv2d(in_channels, out_channels, kernel_size))


def _lenet(spec: ModelSpec, f: LayerFactory, channels: tuple[int, int], hidden: int) -> nn.Module:
    c, h, w = spec.in_shape
    c1, c2 = channels
    h_out = ((h - 4) // 2 - 4) // 2
    w_out = ((w - 4) // 2 - 4) // 2
    return nn.Sequential(
        f.conv2d(c, c1, 5, index=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        f.conv2d(c1, c2, 5, index=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        f.linear(c2 * h_out * w_out, hidden, index=2, last=False),
        nn.ReLU(),
        f.linear(hidden, spec.out_dim, index=3, last=True),
    )


def lenet5(spec: ModelSpec, f: LayerFactory) -> nn.Module:
    """Caffe LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, dense 500, dense out, ReLU."""
    kw = spec.arch_kwargs
    return _lenet(spec, f, tuple(kw.get("channels", (20, 50))), int(kw.get("hidden", 500)))


def lenet_cifar(spec: ModelSpec, f: LayerFactory) -> nn.Module:
    """The larger LeNet of Gal & Ghahramani: 192 filters per conv, 1000 dense units."""
    kw = spec.arch_kwargs
    return _lenet(spec, f, tuple(kw.get("channels", (192, 192))), int(kw.get("hidden", 1000)))


def mlp(spec: ModelSpec, f: LayerFactory) -> nn.Module:
    """One-hidden-layer ReLU MLP (toy regression: 1-100-1)."""
    hidden = int(spec.arch_kwargs.get("hidden", 100))
    (d_in,) = spec.in_shape
    return nn.Sequential(
        f.linear(d_in, hidden, index=0, last=False),
        nn.ReLU(),
        f.linear(hidden, spec.out_dim, index=1, last=True),
    )


ARCHITECTURES = {"lenet5": lenet5, "lenet-cifar": lenet_cifar, "mlp": mlp}
#: The ``arch_kwargs`` each architecture reads: key -> (check, what it must be).
_POSITIVE_INT = (
    lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "a positive int",
)
_TWO_CHANNELS = (
    lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(_POSITIVE_INT[0](c) for c in v),
    "a list of two positive ints",
)
ARCH_KEYS: dict[str, dict[str, tuple[Any, str]]] = {
    "lenet5": {"channels": _TWO_CHANNELS, "hidden": _POSITIVE_INT},
    "lenet-cifar": {"channels": _TWO_CHANNELS, "hidden": _POSITIVE_INT},
    "mlp": {"hidden": _POSITIVE_INT},
}


def check_arch_kwargs(arch: str, kwargs: dict[str, Any], where: str) -> None:
    """ConfigError naming a key ``arch`` does not read, or a value of the wrong type.

    Architectures without an entry in ``ARCH_KEYS`` (added by a plug-in) are not checked.
    """
    known = ARCH_KEYS.get(arch)
    if known is None:
        return
    bad = sorted(set(kwargs) - set(known))
    if bad:
        raise ConfigError(
            f"{where}: architecture {arch!r} has no key(s) {', '.join(bad)}; "
            f"known: {', '.join(sorted(known))}"
        )
    for k, v in kwargs.items():
        ok, what = known[k]
        if not ok(v):
            raise ConfigError(f"{where}: {k} must be {what}, got {v!r}")


def build_network(spec: ModelSpec, factory: LayerFactory) -> nn.Module:
    """Build ``spec.arch`` with the layers of ``factory``."""
    try:
        builder = ARCHITECTURES[spec.arch]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {spec.arch!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    return builder(spec, factory)
