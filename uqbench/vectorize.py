"""Several seeds of one (method, task) trained together as one vectorized model.

``uqbench run --vectorize-seeds`` trains the seeds of each (method, task) as one model:
the k seeds' networks, each initialised exactly as its separate run initialises it, are
stacked along a leading replica axis (:func:`torch.func.stack_module_state` layout), the
family's ``loss`` is ``vmap``-ed over that axis with ``functional_call``, and one Adam
steps the stacked parameters (Adam is elementwise, so that is k Adams). Everything random
comes from each seed's own source, in the order its separate run draws it:

* the batch order from a ``torch.Generator`` seeded with the seed, as :func:`uqbench.train.train`;
* every noise draw of the layers (weight and activation noise, dropout masks, MNF's ``z``,
  flow masks and ``a``) through the hook of :func:`uqbench.layers.noise_source`: :class:`SeedNoise`
  draws each replica's noise from a generator holding the state the global RNG of the
  separate run would hold, with the shape and memory layout that run draws, and hands the
  vmapped computation the stacked draws as one batched tensor. The vmap runs with
  ``randomness="error"``, so a draw that bypasses the hook stops the group (it then trains
  separately) instead of silently breaking the equality.

So k seeds trained together give each seed the losses, parameters and metrics of its separate
run up to floating-point rounding (the stacked convolutions and matrix products sum in another
order). Each seed keeps its own checkpoint, in the format and at the path its separate run
uses, so an interrupted group resumes together (or seed by seed, without the flag), and the
evaluation that follows is the separate run's. A family opts in with the class attribute
``vectorize_seeds = True`` (:class:`uqbench.posterior.Posterior`), after a test shows the
equality; the runner trains the others separately and says so.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from uqbench import train as train_module
from uqbench.errors import TrainingError, UQBenchError
from uqbench.layers import noise_source
from uqbench.posterior import Posterior
from uqbench.results import unique_tmp
from uqbench.tasks.base import Split
from uqbench.train import TrainLog, _check_finite, data_fingerprint


class VectorizeError(UQBenchError):
    """These seeds cannot be trained as one (they are then trained separately)."""


def cannot_vectorize(cls: type) -> str | None:
    """Why seeds of family ``cls`` cannot be trained as one, or None when they can."""
    if not getattr(cls, "vectorize_seeds", False):
        return (
            f"family {getattr(cls, 'name', '') or cls.__name__} has not opted in "
            "(vectorize_seeds = False: some of its randomness is not routed per seed)"
        )
    try:
        from torch.func import functional_call, vmap  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.func"
    functorch = getattr(torch._C, "_functorch", None)
    needed = ("_add_batch_dim", "maybe_current_level")
    if (
        functorch is None
        or not all(hasattr(functorch, n) for n in needed)
        or not hasattr(torch._C, "_DisableFuncTorch")
    ):
        return f"torch {torch.__version__} cannot hand per-seed noise to vmap"
    return None


class SeedNoise:
    """The noise hook of :func:`uqbench.layers.noise_source` for k stacked seeds.

    Replica i's draws come from ``generators[i]`` with the shape (and, for the channels-last
    maps of a CPU convolution, the memory order) that its separate run draws, so they are
    the separate run's values; they are stacked into one tensor batched at the current
    vmap level.
    """

    def __init__(self, generators: Sequence[torch.Generator], layouts: Sequence[bool] = ()) -> None:
        self.generators = list(generators)
        #: Per ``*_like`` call of one loss, in order: whether the separate run's
        #: tensor is channels-last (it then fills it in NHWC order); see :class:`LayoutProbe`.
        self.layouts = list(layouts)
        self._calls = 0

    def _draw(self, fill: Callable[..., Tensor], shape: tuple[int, ...], like: Tensor) -> Tensor:
        """Replica i's ``fill(shape, generator=generators[i])``, all as one batched tensor."""
        level = torch._C._functorch.maybe_current_level()
        if level is None:
            raise RuntimeError("per-seed noise drawn outside the vmapped loss")
        kw = {"dtype": like.dtype, "device": like.device}
        with torch._C._DisableFuncTorch():  # a plain draw, below vmap's randomness check
            draws = torch.stack([fill(shape, generator=g, **kw) for g in self.generators])
        return torch._C._functorch._add_batch_dim(draws, 0, level)

    def normal(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """``torch.randn(shape)`` of every replica."""
        return self._draw(torch.randn, tuple(shape), like)

    def normal_like(self, t: Tensor) -> Tensor:
        """:func:`uqbench.layers.standard_normal_like` of every replica: in NHWC order where
        the separate run's tensor is channels-last (a CPU convolution's maps, as recorded
        by :class:`LayoutProbe`), else in the tensor's order."""
        return self._like(torch.randn, t)

    def uniform(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """``torch.rand(shape)`` of every replica."""
        return self._draw(torch.rand, tuple(shape), like)

    def uniform_like(self, t: Tensor) -> Tensor:
        """``torch.rand_like(t)`` of every replica (in NHWC order likewise)."""
        return self._like(torch.rand, t)

    def _like(self, fill: Callable[..., Tensor], t: Tensor) -> Tensor:
        call, self._calls = self._calls, self._calls + 1
        if call < len(self.layouts) and self.layouts[call]:
            n, c, h, w = t.shape
            return self._draw(fill, (n, h, w, c), t).permute(0, 3, 1, 2)
        return self._draw(fill, tuple(t.shape), t)


class LayoutProbe:
    """A noise hook that records the memory layout of every ``*_like`` draw of
    one eager loss (True: channels-last, which it fills in NHWC order) and draws nothing:
    every draw is zeros, so no RNG moves."""

    def __init__(self) -> None:
        self.layouts: list[bool] = []

    def normal(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def normal_like(self, t: Tensor) -> Tensor:
        self.layouts.append(
            t.dim() == 4
            and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last)
        )
        return torch.zeros_like(t)

    uniform_like = normal_like  # rand_like fills a channels-last tensor in memory order too
    uniform = normal


class _Objective(nn.Module):
    """``forward(x, y)`` = the family's ``loss`` and its logged parts, for ``functional_call``."""

    def __init__(self, model: Posterior) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        loss, stats = self.model.loss(x, y)
        return loss, stats["nll"].reshape(()), stats["kl"].reshape(())


def _set_tensor(root: nn.Module, name: str, value: Tensor, parameter: bool) -> None:
    """Replace the parameter or buffer ``name`` (dotted) of ``root`` by ``value``."""
    *path, leaf = name.split(".")
    mod = root
    for part in path:
        mod = getattr(mod, part)
    if parameter:
        mod._parameters[leaf] = nn.Parameter(value)
    else:
        mod._buffers[leaf] = value


def _per_element(key: str, value: Any, shape: tuple[int, ...]) -> bool:
    """Whether an optimizer state entry holds one value per parameter element (Adam's
    moments) rather than one for the tensor (its ``step``)."""
    return isinstance(value, Tensor) and key != "step" and tuple(value.shape) == shape


def _optimizer(model: Posterior, lr: float, variance_lr: float | None) -> torch.optim.Optimizer:
    """The optimizer :func:`uqbench.train.train` builds for ``model``."""
    if variance_lr is None:
        return model.configure_optimizer(lr)
    return model.configure_optimizer(lr, variance_lr=variance_lr)


class SeedGroup:
    """k models of one family and spec, one per seed, trained as one (module docstring).

    ``models[i]`` must be built as seed ``seeds[i]``'s separate run builds it
    (``torch.manual_seed(seed)``, then the family's constructor, then ``.to(device)``),
    and ``rng_states[i]`` hold the global RNG states right after that: ``(cpu, cuda or
    None)``. ``data[i]`` is seed i's training split (all the same size).
    """

    def __init__(
        self,
        models: Sequence[Posterior],
        data: Sequence[Split],
        *,
        seeds: Sequence[int],
        rng_states: Sequence[tuple[Tensor, Tensor | None]],
        checkpoints: Sequence[Path] | None = None,
    ) -> None:
        from torch.func import functional_call, vmap

        if not len(models) == len(data) == len(seeds) == len(rng_states):
            raise VectorizeError("one model, split, seed and RNG state per seed")
        self.models, self.seeds, self.k = list(models), [int(s) for s in seeds], len(models)
        self.rng_states = list(rng_states)
        self.checkpoints = None if checkpoints is None else [Path(p) for p in checkpoints]
        sizes = {len(d) for d in data}
        if len(sizes) != 1:
            raise VectorizeError(f"the seeds' training sets differ in size ({sorted(sizes)})")
        self.n = sizes.pop()
        self.device = data[0].x.device
        # One copy of the inputs when every seed trains on the same set, else a stack.
        same = all(d.x.shape == data[0].x.shape and torch.equal(d.x, data[0].x) for d in data)
        same = same and all(torch.equal(d.y, data[0].y) for d in data)
        self._x = data[0].x if same else torch.stack([d.x for d in data])
        self._y = data[0].y if same else torch.stack([d.y for d in data])
        self._shared_data = same
        self._data_ids = [data_fingerprint(d) for d in data] if checkpoints is not None else []
        #: The seeds this group's checkpoints say were trained together (None: none yet).
        self.vectorized_seeds: list[int] | None = None

        shapes = [{n: tuple(p.shape) for n, p in m.state_dict().items()} for m in self.models]
        if any(s != shapes[0] for s in shapes):
            raise VectorizeError("the seeds' models differ in structure")
        self.template = copy.deepcopy(self.models[0])
        for name, _ in list(self.template.named_parameters()):
            per = [dict(m.named_parameters())[name].detach() for m in self.models]
            _set_tensor(self.template, name, torch.stack(per), parameter=True)
        for name, _ in list(self.template.named_buffers()):
            per = [dict(m.named_buffers())[name] for m in self.models]
            _set_tensor(self.template, name, torch.stack(per), parameter=False)
        objective = _Objective(self.template)

        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor):
            return functional_call(objective, (params, buffers), (x, y))

        self._losses = vmap(one, in_dims=(0, 0, 0, 0), randomness="error")
        self._layouts: list[bool] = []

    def probe_layouts(self, batch_size: int) -> None:
        """Record the layout of each noise draw of one eager loss of (a copy of) seed 0's
        model, which a loss may change (learned dropout's baseline)."""
        probe = LayoutProbe()
        x, y = self._batch(torch.arange(min(batch_size, self.n), device=self.device).expand(1, -1))
        model = copy.deepcopy(self.models[0]).train()
        with torch.no_grad(), noise_source(probe):
            model.loss(x[0], y[0])
        self._layouts = probe.layouts

    # -- state of one seed <-> the stack ------------------------------------------------
    def _stacked_params(self) -> dict[str, Tensor]:
        return {f"model.{n}": p for n, p in self.template.named_parameters()}

    def _stacked_buffers(self) -> dict[str, Tensor]:
        return {f"model.{n}": b for n, b in self.template.named_buffers()}

    def _flat_params(self, opt: torch.optim.Optimizer) -> list[Tensor]:
        """The optimizer's parameters in ``state_dict`` index order."""
        return [p for g in opt.param_groups for p in g["params"]]

    def seed_model_state(self, i: int) -> dict[str, Tensor]:
        """Seed i's ``state_dict``, as its separate run's model would give it."""
        return {n: t[i].clone() for n, t in self.template.state_dict().items()}

    def seed_optimizer_state(self, opt: torch.optim.Optimizer, i: int) -> dict[str, Any]:
        """Seed i's slice of the stacked optimizer's ``state_dict`` (per-element states
        sliced, shared ones such as Adam's step count copied)."""
        sd = opt.state_dict()
        flat = self._flat_params(opt)
        state = {}
        for j, entry in sd["state"].items():
            shape = tuple(flat[j].shape)
            state[j] = {
                key: v[i].clone() if _per_element(key, v, shape) else copy.deepcopy(v)
                for key, v in entry.items()
            }
        return {"state": state, "param_groups": copy.deepcopy(sd["param_groups"])}

    def _save(
        self,
        i: int,
        opt: torch.optim.Optimizer,
        gens: list[torch.Generator],
        noise: list[torch.Generator],
        log: TrainLog,
        epoch: int,
        step: int = 0,
        perms: Tensor | None = None,
        sums: Tensor | None = None,
    ) -> None:
        """Write seed i's checkpoint exactly as :func:`uqbench.train._save_checkpoint` of its
        separate run would (plus ``vectorized_seeds``)."""
        assert self.checkpoints is not None
        model = self.models[i]
        cuda = self.device.type == "cuda"
        state: dict[str, Any] = {
            "posterior": model.name,
            "spec": model.spec.to_dict(),
            "config": model.config,
            "model": self.seed_model_state(i),
            "optimizer": self.seed_optimizer_state(opt, i),
            "batch_rng": gens[i].get_state(),
            "torch_rng": self.rng_states[i][0] if cuda else noise[i].get_state(),
            "cuda_rng": noise[i].get_state() if cuda else None,
            "log": log.to_dict(),
            "epoch": epoch,
            "step": step,
            "perm": perms[i].cpu() if step and perms is not None else None,
            "sums": sums[i].cpu() if step and sums is not None else None,
            "vectorized_seeds": self.seeds,
            "data": self._data_ids[i],
        }
        path = self.checkpoints[i]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = unique_tmp(path)
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _resume(
        self,
        opt: torch.optim.Optimizer,
        lr: float,
        variance_lr: float | None,
        gens: list[torch.Generator],
        noise: list[torch.Generator],
    ) -> tuple[int, int, list[TrainLog], Tensor | None, Tensor | None] | None:
        """Load every seed's checkpoint into the stack: ``(epoch, step, logs, perms, sums)``,
        or None when none exists. VectorizeError when only some exist, one cannot be read
        or they stand at different points (the seeds then train separately, each resuming
        its own checkpoint)."""
        assert self.checkpoints is not None
        present = [p.exists() for p in self.checkpoints]
        if not any(present):
            return None
        if not all(present):
            raise VectorizeError("only some of the seeds have a checkpoint")
        blobs = []
        for path in self.checkpoints:
            try:
                blobs.append(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as exc:  # noqa: BLE001 - the separate run sets it aside
                raise VectorizeError(f"checkpoint {path.name} cannot be read ({exc})") from None
        if any(b.get("data") not in (None, d) for b, d in zip(blobs, self._data_ids, strict=True)):
            raise VectorizeError("a checkpoint was trained on other data")  # set aside alone
        points = {(int(b["epoch"]), int(b.get("step", 0))) for b in blobs}
        if len(points) != 1:
            raise VectorizeError(f"the seeds' checkpoints stand at different points {points}")
        epoch, step = points.pop()
        single_sds = []
        for model, blob in zip(self.models, blobs, strict=True):
            try:
                model.load_state_dict(blob["model"])
                single = _optimizer(model, lr, variance_lr)
                single.load_state_dict(blob["optimizer"])
            except Exception as exc:  # noqa: BLE001 - of another model: separate runs decide
                raise VectorizeError(f"a checkpoint does not fit its model ({exc})") from None
            single_sds.append(single.state_dict())
        with torch.no_grad():
            for name, p in self.template.named_parameters():
                p.copy_(torch.stack([dict(m.named_parameters())[name] for m in self.models]))
            for name, b in self.template.named_buffers():
                b.copy_(torch.stack([dict(m.named_buffers())[name] for m in self.models]))
        flat = self._flat_params(opt)
        stacked_state = {}
        for j, entry in single_sds[0]["state"].items():
            out = {}
            for key, v in entry.items():
                if _per_element(key, v, tuple(flat[j].shape[1:])):
                    out[key] = torch.stack([sd["state"][j][key] for sd in single_sds])
                else:
                    out[key] = v
            stacked_state[j] = out
        opt.load_state_dict({"state": stacked_state, "param_groups": single_sds[0]["param_groups"]})
        cuda = self.device.type == "cuda"
        for i, blob in enumerate(blobs):
            gens[i].set_state(blob["batch_rng"])
            noise[i].set_state(blob["cuda_rng"] if cuda else blob["torch_rng"])
            if cuda:
                self.rng_states[i] = (blob["torch_rng"], self.rng_states[i][1])
        seeds = blobs[0].get("vectorized_seeds")
        if all(b.get("vectorized_seeds") == seeds for b in blobs) and seeds is not None:
            self.vectorized_seeds = list(seeds)
        logs = [TrainLog(**b["log"]) for b in blobs]
        perms = sums = None
        if step:
            perms = torch.stack([b["perm"] for b in blobs]).to(self.device)
            sums = torch.stack([b["sums"] for b in blobs]).to(self.device)
        return epoch, step, logs, perms, sums

    # -- training -----------------------------------------------------------------------
    def _batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """``[k, batch, ...]`` inputs and targets, replica i at ``idx[i]`` of its own split."""
        if self._shared_data:
            return self._x[idx], self._y[idx]
        rows = torch.arange(self.k, device=idx.device).unsqueeze(1)
        return self._x[rows, idx], self._y[rows, idx]

    def noise_generators(self) -> list[torch.Generator]:
        """One generator per seed on the device, in the state its separate run's global RNG
        has when training starts."""
        out = []
        for cpu_state, cuda_state in self.rng_states:
            g = torch.Generator(device=self.device)
            g.set_state(cuda_state if self.device.type == "cuda" else cpu_state)
            out.append(g)
        return out

    def optimizer(self, lr: float, variance_lr: float | None = None) -> torch.optim.Optimizer:
        """The family's optimizer over the stacked parameters (its groups, one Adam)."""
        return _optimizer(self.template, lr, variance_lr)

    def step(
        self, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, noise: Sequence[torch.Generator]
    ) -> Tensor:
        """One training step of every seed (replica i on ``x[i]``, ``y[i]``); the ``[k]``
        losses. Call :meth:`probe_layouts` once first."""
        opt.zero_grad(set_to_none=True)
        loss, _, _ = self.losses(x, y, noise)
        loss.sum().backward()  # replica i's loss depends on slice i alone
        opt.step()
        return loss.detach()

    def losses(self, x: Tensor, y: Tensor, noise: Sequence[torch.Generator]) -> tuple[Tensor, ...]:
        """``(loss, nll, kl)``, each ``[k]``: replica i's objective on ``x[i]``, ``y[i]``
        with its noise from ``noise[i]``."""
        with noise_source(SeedNoise(noise, self._layouts)):
            return self._losses(self._stacked_params(), self._stacked_buffers(), x, y)

    def train(
        self,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        variance_lr: float | None = None,
        progress: bool = False,
        desc: str = "train",
        log_message: Callable[[str], None] | None = None,
    ) -> list[TrainLog]:
        """Train every seed as :func:`uqbench.train.train` trains it alone; one log per seed.

        Checkpoints (when given) are written per seed every ``CHECKPOINT_EVERY_S`` seconds
        and at the end, and read back at the start (:meth:`_resume`). The models of
        ``models`` hold the trained weights afterwards. Raises :class:`TrainingError`
        naming the seed whose loss or parameters stopped being finite (no checkpoint of it
        is written), :class:`VectorizeError` when the checkpoints cannot be resumed together.
        """
        from tqdm.auto import tqdm

        device, n, k = self.device, self.n, self.k
        steps = max(1, -(-n // batch_size))
        self.probe_layouts(batch_size)
        opt = self.optimizer(lr, variance_lr)
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in self.seeds]
        noise = self.noise_generators()
        logs = [TrainLog() for _ in range(k)]
        start_epoch, start_step = 0, 0
        perms: Tensor | None = None
        sums: Tensor | None = None
        if self.checkpoints is not None:
            resumed = self._resume(opt, lr, variance_lr, gens, noise)
            if resumed is not None:
                start_epoch, start_step, logs, perms, sums = resumed
        if start_epoch < epochs:
            self.vectorized_seeds = list(self.seeds)
        self.template.train()
        bar = tqdm(
            total=epochs * steps,
            initial=start_epoch * steps + start_step,
            desc=desc,
            unit="step",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        params = list(self.template.parameters())
        last_save = t_start = time.monotonic()
        seconds_before = [log.seconds for log in logs]

        def check(epoch: int, first: int, upto: int, step_loss: Tensor) -> None:
            for i in range(k):
                _check_finite(
                    f"{desc} (seed {self.seeds[i]})",
                    epoch,
                    first,
                    upto,
                    step_loss[i],
                    [p[i] for p in params],
                    steps,
                )

        def stamp() -> None:
            for i, log in enumerate(logs):
                log.seconds = seconds_before[i] + (time.monotonic() - t_start)

        for epoch in range(start_epoch, epochs):
            first = start_step if epoch == start_epoch else 0
            if not first:
                perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
                sums = torch.zeros(k, 3, device=device)
            assert perms is not None and sums is not None
            step_loss = torch.zeros(k, steps, device=device)
            for i in range(first, steps):
                x, y = self._batch(perms[:, i * batch_size : (i + 1) * batch_size])
                opt.zero_grad(set_to_none=True)
                loss, nll, kl = self.losses(x, y, noise)
                loss.sum().backward()  # replica i's loss depends on slice i alone
                opt.step()
                step_loss[:, i] = loss.detach()
                sums += torch.stack([loss.detach(), nll, kl], 1)
                bar.update(1)
                if (
                    self.checkpoints is not None
                    and i + 1 < steps
                    and time.monotonic() - last_save >= train_module.CHECKPOINT_EVERY_S
                ):
                    check(epoch, first, i + 1, step_loss)
                    stamp()
                    for s in range(k):
                        self._save(s, opt, gens, noise, logs[s], epoch, i + 1, perms, sums)
                    last_save = time.monotonic()
            check(epoch, first, steps, step_loss)
            means = (sums / steps).tolist()
            for s, m in enumerate(means):
                if not all(map(math.isfinite, m)):
                    raise TrainingError(
                        f"{desc} (seed {self.seeds[s]}): training diverged at epoch "
                        f"{epoch + 1} (loss {m[0]}, nll {m[1]}, kl {m[2]})"
                    )
                logs[s].epoch.append(epoch + 1)
                logs[s].loss.append(m[0])
                logs[s].nll.append(m[1])
                logs[s].kl.append(m[2])
            stamp()
            now = time.monotonic()
            if self.checkpoints is not None and (
                now - last_save >= train_module.CHECKPOINT_EVERY_S or epoch + 1 == epochs
            ):
                for s in range(k):
                    self._save(s, opt, gens, noise, logs[s], epoch + 1)
                last_save = time.monotonic()
        bar.close()
        for i, model in enumerate(self.models):  # each seed's model holds its weights
            model.load_state_dict(self.seed_model_state(i))
            model.eval()
        return logs
