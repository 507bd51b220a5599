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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from uqbench.architectures import LayerFactory, ModelSpec, build_network
from uqbench.errors import ConfigError

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
    #: True when every posterior sample is the same network (a point estimate).
    deterministic: ClassVar[bool] = False
    #: True for families the paper leaves out of the FGSM experiment.
    skip_fgsm_by_default: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, **config: Any) -> None:
        super().__init__()
        check_config(config, self.defaults, f"posterior {self.name!r}")
        self.spec = spec
        self.config: dict[str, Any] = {**self.defaults, **config}
        self.net = self.build()

    # -- what a family provides -------------------------------------------------
    def layer_factory(self) -> LayerFactory:
        """The family's layers; override unless ``build`` is overridden."""
        raise NotImplementedError

    def build(self) -> nn.Module:
        """Build the network for ``self.spec``; default: the architecture with our layers."""
        return build_network(self.spec, self.layer_factory())

    # -- shared behaviour ---------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Outputs of one posterior sample per example, ``[batch, out]``."""
        return self.net(x)

    def kl(self) -> Tensor:
        """KL(q || p) summed over layers (or the negative log prior for MAP families)."""
        terms = [m.kl() for m in self.net.modules() if hasattr(m, "kl")]
        if not terms:
            return torch.zeros((), device=self._device())
        return torch.stack([t.reshape(()) for t in terms]).sum()

    def nll(self, out: Tensor, y: Tensor) -> Tensor:
        """Mean negative log-likelihood of targets ``y`` under outputs ``out``."""
        if self.spec.likelihood == "categorical":
            return F.cross_entropy(out, y)
        sigma = float(self.spec.noise_std or 1.0)
        resid = (y.reshape(out.shape) - out) / sigma
        return (0.5 * resid.pow(2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)).mean()

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One-sample training objective: mean NLL + KL / N, and its detached parts."""
        nll = self.nll(self(x), y)
        kl = self.kl()
        loss = nll + kl / self.spec.n_data
        return loss, {"nll": nll.detach(), "kl": kl.detach()}

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """Adam with the paper's defaults.

        The fused kernel (the same update, one call for all parameters) is used where
        torch has one; on CPU it removes a per-parameter Python loop (MNF has ~100
        parameter tensors).
        """
        params = list(self.parameters())
        fused = bool(params) and all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
        )
        return torch.optim.Adam(params, lr=lr, fused=fused or None)

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
        f = self.sample_outputs(x, n_samples)[..., 0]
        noise_var = float(self.spec.noise_std or 0.0) ** 2
        return f.mean(0), f.var(0, unbiased=False) + noise_var

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
    model = cls(ModelSpec.from_dict(blob["spec"]), **blob["config"])
    model.load_state_dict(state)
    return model.to(map_location)


def check_config(config: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` naming any key of ``config`` not in ``allowed``."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )
