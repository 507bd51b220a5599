"""Mini-batch training of a posterior family, with checkpoints that survive interruption."""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from uqbench.errors import ConfigError, TrainingError
from uqbench.posterior import Posterior, check_loss, layer_contract_check
from uqbench.results import unique_tmp
from uqbench.tasks.base import Split

#: Seconds between mid-training checkpoints (a checkpoint is also written at the end).
CHECKPOINT_EVERY_S = 60.0


@dataclass
class TrainLog:
    """Per-epoch means of the objective and its parts."""

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    #: Wall time spent training, summed over interrupted and resumed sessions.
    seconds: float = 0.0
    #: How the steps ran (:class:`uqbench.compiling.CompiledLoss`'s ``how``; sessions of a
    #: resumed run joined by ``", then "``). An execution detail: kept in the checkpoint,
    #: not in :meth:`to_dict` (the run record's ``train_log``, whose values CI compares).
    train_steps: str = "eager"

    def to_dict(self) -> dict[str, Any]:
        """The per-epoch log and the seconds (not :attr:`train_steps`)."""
        out = asdict(self)
        del out["train_steps"]
        return out


def train(
    model: Posterior,
    data: Split,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    variance_lr: float | None = None,
    checkpoint: Path | None = None,
    progress: bool = True,
    desc: str = "train",
    log_message: Callable[[str], None] | None = None,
    loss_fn: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]] | None = None,
) -> TrainLog:
    """Train ``model`` on ``data`` with Adam for ``epochs`` passes of shuffled mini-batches.

    ``variance_lr``: Adam's rate for the posterior's spread parameters
    (:meth:`Posterior.configure_optimizer`); ``None``: ``lr`` like every other parameter.

    ``data`` may live on any device; batches are gathered on that device (no host copies
    when it is a GPU). When ``checkpoint`` is given, the model, optimizer, RNG states,
    the position in the epoch (its batch order and step) and the log are saved there
    every ``CHECKPOINT_EVERY_S`` seconds, also in the middle of an epoch, and at the
    end; a run interrupted midway resumes from the last checkpoint exactly as if it had
    not stopped. A checkpoint that cannot be loaded (truncated, or of another model) is
    renamed ``*.bad``, reported through ``log_message`` and training starts afresh.
    The checkpoint also holds what :func:`uqbench.load_posterior` needs to rebuild the
    trained model.

    ``loss_fn``: the training loss of a batch (default ``model.loss``), e.g. a
    :class:`uqbench.compiling.CompiledLoss`, whose ``how`` then goes to the log's
    ``train_steps``. The first step always calls ``model.loss`` eagerly (the layer contract
    is checked there).

    Raises :class:`TrainingError` naming ``desc``, the epoch and the step when the loss
    or the parameters stop being finite; no checkpoint of a diverged model is written.
    """
    loss_of = model.loss if loss_fn is None else loss_fn
    device = data.x.device
    n = len(data)
    steps = max(1, -(-n // batch_size))
    if (
        variance_lr is not None
        and "variance_lr" not in inspect.signature(model.configure_optimizer).parameters
    ):
        raise ConfigError(
            f"{desc}: variance_lr is set but {type(model).__name__}.configure_optimizer "
            "takes no variance_lr argument; leave variance_lr out for this task or accept it"
        )

    def optimizer() -> torch.optim.Optimizer:
        if variance_lr is None:  # the plain call: plug-ins may override it with one argument
            return model.configure_optimizer(lr)
        return model.configure_optimizer(lr, variance_lr=variance_lr)

    opt = optimizer()
    # Asked of the optimiser itself: a plug-in may apply variance_lr its own way.
    unused = not any(g["lr"] == variance_lr and g["params"] for g in opt.param_groups)
    if variance_lr not in (None, lr) and log_message is not None and unused:
        log_message(
            f"    {desc}: variance_lr {variance_lr:g} moves no parameter (no parameter "
            f"group of {type(model).__name__}'s optimiser has that rate)"
        )
    gen = torch.Generator(device="cpu").manual_seed(seed)
    log = TrainLog()
    start_epoch, start_step = 0, 0
    perm: torch.Tensor | None = None
    sums: torch.Tensor | None = None
    data_id = data_fingerprint(data) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint, model, opt, gen, device, log_message, data_id)
        if state is None:  # set aside: start from the initial state
            opt = optimizer()
            gen = torch.Generator(device="cpu").manual_seed(seed)
        else:
            log = TrainLog(**state["log"], train_steps=state.get("train_steps", "eager"))
            start_epoch, start_step = state["epoch"], state.get("step", 0)
            if start_step:
                perm, sums = state["perm"].to(device), state["sums"].to(device)
            if log_message is not None:
                done = start_epoch * steps + start_step
                log_message(
                    f"    {desc}: trained model found in {checkpoint}, not retrained"
                    if done >= epochs * steps
                    else f"    {desc}: resuming from {checkpoint} at step {done} of "
                    f"{epochs * steps} (epoch {start_epoch + 1})"
                )

    model.train()
    bar = tqdm(
        total=epochs * steps,
        initial=start_epoch * steps + start_step,
        desc=desc,
        unit="step",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    params = list(model.parameters())
    before_steps = log.train_steps if (start_epoch, start_step) != (0, 0) else None

    def how() -> str:  # this session's steps, after those of the sessions before
        now = getattr(loss_fn, "how", "eager")
        return now if before_steps in (None, now) else f"{before_steps}, then {now}"

    if start_epoch < epochs:
        log.train_steps = how()
    last_save = t_start = time.monotonic()
    seconds_before = log.seconds
    for epoch in range(start_epoch, epochs):
        first = start_step if epoch == start_epoch else 0
        if not first:
            perm = torch.randperm(n, generator=gen).to(device)
            sums = torch.zeros(3, device=device)
        assert perm is not None and sums is not None
        step_loss = torch.zeros(steps, device=device)
        for i in range(first, steps):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x, y = data.x[idx], data.y[idx]
            opt.zero_grad(set_to_none=True)
            if epoch == start_epoch and i == first:  # the layer contract, checked once
                with layer_contract_check(model):
                    loss, stats = check_loss(model, model.loss(x, y))
            else:
                loss, stats = loss_of(x, y)
            loss.backward()
            opt.step()
            step_loss[i] = loss.detach()
            sums += torch.stack([loss.detach(), stats["nll"], stats["kl"]])
            bar.update(1)
            if progress and i % 50 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4g}", refresh=False)
            if (
                checkpoint is not None
                and i + 1 < steps
                and time.monotonic() - last_save >= CHECKPOINT_EVERY_S
            ):
                _check_finite(desc, epoch, first, i + 1, step_loss, params, steps)
                log.seconds = seconds_before + (time.monotonic() - t_start)
                log.train_steps = how()
                _save_checkpoint(
                    checkpoint,
                    model,
                    opt,
                    gen,
                    log,
                    epoch,
                    device,
                    step=i + 1,
                    perm=perm,
                    sums=sums,
                    data_id=data_id,
                )
                last_save = time.monotonic()
        _check_finite(desc, epoch, first, steps, step_loss, params, steps)
        means = (sums / steps).tolist()
        if not all(map(math.isfinite, means)):  # a step before a mid-epoch resume
            raise TrainingError(
                f"{desc}: training diverged at epoch {epoch + 1} (loss {means[0]}, "
                f"nll {means[1]}, kl {means[2]})"
            )
        log.epoch.append(epoch + 1)
        log.loss.append(means[0])
        log.nll.append(means[1])
        log.kl.append(means[2])
        now = time.monotonic()
        log.seconds = seconds_before + (now - t_start)
        log.train_steps = how()
        if checkpoint is not None and (
            now - last_save >= CHECKPOINT_EVERY_S or epoch + 1 == epochs
        ):
            _save_checkpoint(checkpoint, model, opt, gen, log, epoch + 1, device, data_id=data_id)
            last_save = time.monotonic()
    bar.close()
    model.eval()
    return log


def _check_finite(
    desc: str,
    epoch: int,
    first: int,
    upto: int,
    step_loss: torch.Tensor,
    params: list[torch.Tensor],
    steps: int,
) -> None:
    """TrainingError naming the first step (of ``first..upto``) whose loss was not finite,
    or the last one when the parameters it left are not finite."""
    bad = (~torch.isfinite(step_loss[first:upto])).nonzero()
    if len(bad):
        i = first + int(bad[0])
        raise TrainingError(
            f"{desc}: training diverged at epoch {epoch + 1}, step {i + 1} of {steps}: "
            f"loss {float(step_loss[i])}"
        )
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise TrainingError(
            f"{desc}: training diverged at epoch {epoch + 1}, step {upto} of {steps}: "
            "the parameters it left are not finite"
        )


def data_fingerprint(data: Split) -> str:
    """A short digest of a training split's targets and a strided sample of its inputs,
    kept in checkpoints: a checkpoint trained on other data (a data set replaced by
    another copy, a stand-in by the real files) is not resumed or reused, although the
    settings, and so its file name, are the same. Cheap: under 1% of the inputs."""
    h = hashlib.blake2b(digest_size=12)
    h.update(repr((tuple(data.x.shape), tuple(data.y.shape), str(data.y.dtype))).encode())
    h.update(data.y.detach().cpu().contiguous().numpy().tobytes())
    h.update(data.x.detach().reshape(-1)[::127].cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_checkpoint(
    path: Path,
    model: Posterior,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    device: torch.device,
    log_message: Callable[[str], None] | None,
    data_id: str | None = None,
) -> dict[str, Any] | None:
    """Restore a training checkpoint into ``model``, ``opt``, ``gen`` and torch's RNG.

    Returns its state, or None after renaming an unreadable or mismatched file to
    ``<name>.bad`` (``model`` is then back in the state it had before the attempt). A
    checkpoint whose :func:`data_fingerprint` is not ``data_id`` is mismatched (one that
    has none, written before fingerprints, is taken as it is).
    """
    before = copy.deepcopy(model.state_dict())
    rng_before = torch.get_rng_state()
    cuda_before = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if data_id is not None and state.get("data") not in (None, data_id):
            raise ValueError(
                "it was trained on other data than this run's (another copy of the data "
                "set, or other files under the same settings)"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        TrainLog(**state["log"])
        int(state["epoch"])
        if state.get("step") and not (
            isinstance(state.get("perm"), torch.Tensor)
            and isinstance(state.get("sums"), torch.Tensor)
        ):
            raise ValueError("a mid-epoch checkpoint without its batch order")
        return state
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is set aside
        model.load_state_dict(before)
        torch.set_rng_state(rng_before)
        if cuda_before is not None:
            torch.cuda.set_rng_state(cuda_before, device)
        bad = path.with_name(path.name + ".bad")
        for i in range(1, 1000):  # an earlier bad copy stays
            if not bad.exists():
                break
            bad = path.with_name(f"{path.name}.bad{i}")
        os.replace(path, bad)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in str(exc):  # torch's text goes on to unsafe advice
            reason = (
                "torch.load(weights_only=True) cannot read it: it is damaged, not a "
                "checkpoint, or holds objects other than tensors and plain values; nothing "
                "in it ran"
            )
        if log_message is not None:
            log_message(
                f"    checkpoint {path} cannot be used ({type(exc).__name__}: {reason[:200]}); "
                f"moved to {bad.name}, training from the start"
            )
        return None


def _save_checkpoint(
    path: Path,
    model: Posterior,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    log: TrainLog,
    epoch: int,
    device: torch.device,
    *,
    step: int = 0,
    perm: torch.Tensor | None = None,
    sums: torch.Tensor | None = None,
    data_id: str | None = None,
) -> None:
    """Write the training state: after ``epoch`` epochs and ``step`` steps of the next one
    (whose batch order ``perm`` and running sums ``sums`` are then saved too), and the
    :func:`data_fingerprint` ``data_id`` of the data it trains on.

    ``posterior``, ``spec``, ``config`` and ``state_dict`` make it a model file that
    :func:`uqbench.load_posterior` reads.
    """
    state: dict[str, Any] = {
        "posterior": model.name,
        "spec": model.spec.to_dict(),
        "config": model.config,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "batch_rng": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "log": log.to_dict(),
        "train_steps": log.train_steps,
        "epoch": epoch,
        "step": step,
        "perm": perm.cpu() if step else None,
        "sums": sums.cpu() if step and sums is not None else None,
        "data": data_id,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
