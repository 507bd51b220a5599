"""The interface every posterior family implements, and what they share.

A family is an ``nn.Module`` subclass of :class:`Posterior`, registered with
``@uqbench.register_posterior("name")``. The runner, the metrics and the FGSM attack
only use this interface:

* ``loss(x, y)`` - the training objective for one mini-batch, with one posterior
  sample: mean NLL + KL / N (N = ``spec.n_data``), and its parts for logging;
* ``sample_outputs(x, n_samples)`` - ``[n_samples, batch, out]`` outputs (logits for
  classification, the mean function for regression), differentiable in ``x``;
* ``save(path)`` / :func:`load_posterior` - weights plus the config that built them.

A family usually only provides ``layer_factory()`` (its dense and conv layers) and,
where it has a prior, layers with a ``kl()`` method; the rest is shared here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from uqbench.architectures import (
    CLASSIFICATION,
    LayerFactory,
    ModelSpec,
    build_network,
    legacy_family_settings,
)
from uqbench.errors import ConfigError, PluginError
from uqbench.metrics import regression_predictive

#: Largest number of (sample x example) rows pushed through the network at once.
DEFAULT_CHUNK_ROWS = 4096
#: The same on CPU, where chunks whose activations fit the caches are ~2x faster
#: (LeNet-5: 256 rows of the first conv's maps are ~12 MB) than large ones.
CPU_CHUNK_ROWS = 256


def resolve_chunk_rows(chunk_rows: int | None, device: torch.device) -> int:
    """``chunk_rows``, or the device's default when it is ``None``."""
    if chunk_rows is not None:
        return int(chunk_rows)
    return CPU_CHUNK_ROWS if device.type == "cpu" else DEFAULT_CHUNK_ROWS


class Posterior(nn.Module):
    """Base class of an approximate posterior over a network's weights."""

    #: Registry name, set by ``register_posterior``.
    name: ClassVar[str] = ""
    #: Name used in tables and plots (the paper's, e.g. "MNFG").
    display_name: ClassVar[str] = ""
    #: Family hyper-parameters and their defaults; config keys must be among these.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Config keys added after model files were first saved, with the value those older
    #: files were made with (:func:`load_posterior` fills them in when a file lacks them).
    legacy_defaults: ClassVar[dict[str, Any]] = {}
    #: True when every posterior sample is the same network (a point estimate).
    deterministic: ClassVar[bool] = False
    #: True for families the paper leaves out of the FGSM experiment.
    skip_fgsm_by_default: ClassVar[bool] = False
    #: True when several seeds may be trained as one vectorized model
    #: (``uqbench run --vectorize-seeds``, :mod:`uqbench.vectorize`): every random draw of
    #: its training goes through the noise hooks of :mod:`uqbench.layers` and its ``loss``
    #: runs under ``torch.func.vmap``. Set it only where a test shows seeds trained together
    #: equal separate runs; the others are trained separately.
    vectorize_seeds: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, **config: Any) -> None:
        super().__init__()
        check_config(config, self.defaults, f"posterior {self.name!r}")
        self.spec = spec
        self.config: dict[str, Any] = {**self.defaults, **config}
        self.net = self.build()

    # -- what a family provides -------------------------------------------------
    def layer_factory(self) -> LayerFactory:
        """The family's layers; override unless ``build`` is overridden."""
        raise PluginError(
            f"{family(self)} ({type(self).__module__}."
            f"{type(self).__qualname__}) defines neither layer_factory() nor build(): a family "
            "returns its layers from layer_factory() (see README, 'Posteriors')"
        )

    def build(self) -> nn.Module:
        """Build the network for ``self.spec``; default: the architecture with our layers."""
        return build_network(self.spec, self.layer_factory())

    # -- shared behaviour ---------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Outputs of one posterior sample per example, ``[batch, out]``."""
        return self.net(x)

    def kl(self) -> Tensor:
        """KL(q || p) summed over layers (or the negative log prior for MAP families).

        Each of :func:`kl_modules` contributes its ``kl()`` once: a wrapper whose
        ``kl()`` covers the layer it wraps is not counted twice.
        """
        strict = getattr(self, "_check_contract", False)
        terms = [
            _kl_term(m.kl(), name, m, strict) for name, m in kl_modules(self.net, prefix="net")
        ]
        if not terms:
            return torch.zeros((), device=self._device())
        return torch.stack(terms).sum()

    def nll(self, out: Tensor, y: Tensor) -> Tensor:
        """Mean negative log-likelihood of targets ``y`` under outputs ``out``."""
        if self.spec.kind == CLASSIFICATION:
            return F.cross_entropy(out, y)
        sigma = float(self.spec.noise_std or 1.0)
        resid = (y.reshape(out.shape) - out) / sigma
        return (0.5 * resid.pow(2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)).mean()

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One-sample training objective: mean NLL + KL / N, and its detached parts."""
        nll = self.nll(self(x), y)
        kl = self.kl()
        if type(self).kl is not Posterior.kl:  # a family's own kl(): held to the layers' rules
            kl = _kl_term(kl, "model", self, getattr(self, "_check_contract", False))
        loss = nll + kl / self.spec.n_data
        return loss, {"nll": nll.detach(), "kl": kl.detach()}

    def variance_parameters(self) -> list[nn.Parameter]:
        """The parameters that set the posterior's spread, for their own learning rate.

        Default: those whose name ends in ``logvar`` (the built-in Gaussian layers' weight
        and bias log-variances, MNF's q(z0) log-variance). Override in a plug-in whose
        spread parameters are named otherwise.
        """
        return [p for name, p in self.named_parameters() if name.endswith("logvar")]

    def configure_optimizer(
        self, lr: float, variance_lr: float | None = None
    ) -> torch.optim.Optimizer:
        """Adam with the paper's defaults; ``variance_lr``: a rate of its own for
        :meth:`variance_parameters` (``None``: ``lr``).

        Adam moves a parameter by at most about ``lr`` per step whatever the gradient's
        scale, so a log-variance that starts at the paper's -9 needs ~9 / lr steps to reach
        its optimum: the paper's 100 epochs allow that at lr 1e-3, a CPU suite's 10 do not
        (see benchmarks/suites/quick.toml). The fused kernel (the same update, one call for
        all parameters) is used where torch has one; on CPU it removes a per-parameter
        Python loop (MNF has ~100 parameter tensors).
        """
        params = list(self.parameters())
        fused = bool(params) and all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
        )
        groups: list[dict[str, Any]] = [{"params": params}]
        if variance_lr is not None and variance_lr != lr:
            spread = {id(p) for p in self.variance_parameters()}
            groups = [
                {"params": [p for p in params if id(p) not in spread]},
                {"params": [p for p in params if id(p) in spread], "lr": variance_lr},
            ]
            groups = [g for g in groups if g["params"]]
        return torch.optim.Adam(groups, lr=lr, fused=fused or None)

    def sample_outputs(self, x: Tensor, n_samples: int, chunk_rows: int | None = None) -> Tensor:
        """``[n_samples, batch, out]`` outputs, one independent posterior sample per row.

        Samples are evaluated in large vectorised batches: the input is repeated along
        the batch axis and pushed through once per chunk of about ``chunk_rows`` rows
        (``None``: :func:`resolve_chunk_rows`), instead of a Python loop over samples.
        Every (sample, example) row draws its own weight noise, so each example sees
        ``n_samples`` independent posterior samples.
        """
        if self.deterministic:
            return self(x).unsqueeze(0).expand(n_samples, -1, -1)
        chunk_rows = resolve_chunk_rows(chunk_rows, x.device)
        b = x.shape[0]
        per_chunk = max(1, chunk_rows // max(b, 1))
        outs = []
        done = 0
        while done < n_samples:
            s = min(per_chunk, n_samples - done)
            xr = x.unsqueeze(0).expand(s, *x.shape).reshape(s * b, *x.shape[1:])
            outs.append(self(xr).reshape(s, b, -1))
            done += s
        return torch.cat(outs, 0)

    def sample_logits(self, x: Tensor, n_samples: int) -> Tensor:
        """Alias of :meth:`sample_outputs` for classification tasks."""
        return self.sample_outputs(x, n_samples)

    def predict_regression(self, x: Tensor, n_samples: int) -> tuple[Tensor, Tensor]:
        """Predictive mean and variance (model samples + fixed noise) of a regression."""
        return regression_predictive(self.sample_outputs(x, n_samples)[..., 0], self.spec.noise_std)

    def diagnostics(self) -> dict[str, Any]:
        """Family-specific numbers for the results (e.g. FFLU sparsity); JSON-ready."""
        return {}

    def save(self, path: str | Path) -> None:
        """Write weights plus the spec and config that rebuild the model."""
        torch.save(
            {
                "posterior": self.name,
                "spec": self.spec.to_dict(),
                "config": self.config,
                "state_dict": self.state_dict(),
            },
            path,
        )

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


def family(model: Any) -> str:
    """``"posterior <name>"`` of a model (its class name when it is not registered), to
    name the family in an error."""
    return f"posterior {getattr(model, 'name', None) or type(model).__name__}"


def kl_modules(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The outermost modules under (and including) ``module`` with a callable ``kl``.

    The search does not descend into a module that has one, so a wrapper's ``kl()`` is
    trusted to cover what it wraps. A non-callable attribute named ``kl`` (bayesian-torch
    layers keep ``self.kl = 0``) is not a KL method and is ignored.
    """
    if callable(getattr(module, "kl", None)):
        return [(prefix or type(module).__name__, module)]
    out: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        out += kl_modules(child, f"{prefix}.{name}" if prefix else name)
    return out


def _kl_term(value: Any, name: str, module: nn.Module, strict: bool) -> Tensor:
    """One module's ``kl()`` as a 0-d tensor, or :class:`PluginError` naming the module.

    The shape is checked every step (no device sync); with ``strict`` (the first training
    step) also that the value is finite, and that a non-zero value of a module with
    trainable parameters has a gradient (a Python float or a detached tensor would leave
    the prior without effect).
    """
    where = f"module {name} ({type(module).__name__})"
    if not isinstance(value, Tensor):
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = torch.tensor(float(value))
        else:
            raise PluginError(
                f"{where}: kl() returned {type(value).__name__}, expected a scalar tensor "
                "(the KL summed over the layer's weights, in nats)"
            )
    if value.numel() != 1:
        raise PluginError(
            f"{where}: kl() returned a tensor of shape {list(value.shape)}, expected a scalar "
            "(the KL summed over the layer's weights, in nats)"
        )
    if strict and not bool(torch.isfinite(value).all()):
        raise PluginError(
            f"{where}: kl() returned {float(value.detach())}, expected a finite number"
        )
    if (
        strict
        and not value.requires_grad
        and torch.is_grad_enabled()
        and any(p.requires_grad for p in module.parameters())
        and float(value) != 0.0
    ):
        raise PluginError(
            f"{where}: kl() returned {float(value)} with no gradient to the module's "
            "parameters (a Python float, .item() or detach()), so the prior would have no "
            "effect; return the tensor computed from them"
        )
    return value.reshape(())


@contextmanager
def layer_contract_check(model: Posterior) -> Iterator[None]:
    """Check the layer contract during one forward/loss pass of ``model``.

    Inside the block, every layer of ``model.net`` must return a tensor, and every
    ``kl()`` term must be a finite scalar; a breach raises :class:`PluginError` naming
    the module. A module with a ``kl_loss()`` method that no ``kl()`` covers (a
    bayesian-torch layer used as is) is refused too: its KL would silently be left out.
    The training loop wraps its first step in this.
    """
    own_kl = type(model).kl is not Posterior.kl  # a family-wide kl() covers every module
    tops = [model] if own_kl else [m for _, m in kl_modules(model.net)]
    covered = {id(m) for top in tops for m in top.modules()}
    for name, m in model.named_modules():
        if callable(getattr(m, "kl_loss", None)) and id(m) not in covered:
            raise PluginError(
                f"module {name} ({type(m).__name__}) has kl_loss() but no kl() covers it, so "
                "its KL would not enter the loss; wrap it in a module whose kl() returns the "
                "KL summed over its weights, in nats (see README, 'The layer contract')"
            )

    def hook(name: str):
        def check(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                what = type(output).__name__
                if isinstance(output, tuple | list):
                    inner = ", ".join(type(o).__name__ for o in output)
                    what = f"a {what} ({inner})"
                raise PluginError(
                    f"module {name or 'model'} ({type(module).__name__}): forward returned "
                    f"{what}, expected a tensor. uqbench layers return their output only; "
                    "a layer that also returns its KL (e.g. bayesian-torch's) must be wrapped "
                    "so that forward returns the output and kl() the summed KL "
                    "(see README, 'The layer contract')"
                )

        return check

    # The layers the architecture chains (and the model itself); what a layer does inside
    # (e.g. a flow returning (z, log_det)) is its own business.
    layers = [("", model), *((f"net.{n}", m) for n, m in model.net.named_children())]
    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    model._check_contract = True
    try:
        yield
    finally:
        model._check_contract = False
        for h in handles:
            h.remove()


def check_loss(model: Posterior, result: Any) -> tuple[Tensor, Mapping[str, Tensor]]:
    """After a checked step: ``model.loss`` must return ``(loss, parts)``, the loss a scalar
    tensor with a gradient and ``parts`` holding the scalar ``nll`` and a finite scalar
    ``kl``; a breach raises :class:`PluginError` naming the family. Returns the pair."""
    who = family(model)
    contract = (
        "loss(x, y) must return (loss, parts): the loss a scalar tensor (mean NLL + KL / N) "
        "and parts a dict with its detached scalars 'nll' and 'kl'"
    )
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise PluginError(f"{who}: loss returned {type(result).__name__}; {contract}")
    loss, stats = result
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shown = list(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise PluginError(f"{who}: the loss is {shown}, not a scalar tensor; {contract}")
    if not loss.requires_grad:
        raise PluginError(f"{who}: the loss has no gradient (computed under no_grad?); {contract}")
    if not isinstance(stats, Mapping) or not all(k in stats for k in ("nll", "kl")):
        keys = sorted(stats) if isinstance(stats, Mapping) else type(stats).__name__
        raise PluginError(f"{who}: the loss's parts are {keys}; {contract}")
    nll = stats["nll"]
    if not isinstance(nll, Tensor) or nll.dim() != 0:
        raise PluginError(f"{who}: the loss's 'nll' part is not a scalar tensor; {contract}")
    kl = stats.get("kl")
    if not isinstance(kl, Tensor) or kl.numel() != 1 or not bool(torch.isfinite(kl).all()):
        shown = list(kl.shape) if isinstance(kl, Tensor) and kl.numel() != 1 else kl
        raise PluginError(
            f"{who}: the KL of the first training step is {shown}, expected a finite scalar "
            "(kl() summed in nats)"
        )
    return loss, stats


def load_posterior(path: str | Path, map_location: str | torch.device = "cpu") -> Posterior:
    """Rebuild a posterior saved with :meth:`Posterior.save`, or trained by the runner.

    ``path`` may also be a training checkpoint of ``uqbench run`` (the ``checkpoint``
    path of a run record). Files are read with ``weights_only=True``: they hold
    tensors and plain values only, so a crafted file cannot run code. An unreadable
    file or one that is no model raises :class:`ConfigError` naming it.
    """
    from uqbench.registry import POSTERIORS

    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"no model file at {path}") from None
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path}: not a readable uqbench model file ({first[:200]})") from None
    state = blob.get("state_dict", blob.get("model")) if isinstance(blob, dict) else None
    if state is None or not all(k in blob for k in ("posterior", "spec", "config")):
        raise ConfigError(
            f"{path}: not a uqbench model file (no posterior, spec, config and weights)"
        )
    cls = POSTERIORS.get(blob["posterior"])
    config = dict(blob["config"])
    for key, value in legacy_family_settings(blob["spec"]).items():
        if key in cls.defaults and config.get(key) is None:  # an older file: the spec held it
            config[key] = value
    for key, value in cls.legacy_defaults.items():  # saved before the key existed
        config.setdefault(key, value)
    model = cls(ModelSpec.from_dict(blob["spec"]), **config)
    model.load_state_dict(state)
    return model.to(map_location)


def check_config(config: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` naming any key of ``config`` not in ``allowed``."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )
