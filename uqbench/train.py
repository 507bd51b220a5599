"""Mini-batch training of a posterior family, with checkpoints that survive interruption."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from uqbench.errors import TrainingError
from uqbench.posterior import Posterior, check_loss_parts, layer_contract_check
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train(
    model: Posterior,
    data: Split,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    checkpoint: Path | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainLog:
    """Train ``model`` on ``data`` with Adam for ``epochs`` passes of shuffled mini-batches.

    ``data`` may live on any device; batches are gathered on that device (no host copies
    when it is a GPU). When ``checkpoint`` is given, the model, optimizer, RNG states
    and log are saved there at most every ``CHECKPOINT_EVERY_S`` seconds and at each
    epoch's end, and a run interrupted midway resumes from the last checkpoint.
    """
    device = data.x.device
    n = len(data)
    steps = max(1, -(-n // batch_size))
    opt = model.configure_optimizer(lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    log = TrainLog()
    start_epoch = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        log = TrainLog(**state["log"])
        start_epoch = state["epoch"]

    model.train()
    bar = tqdm(
        total=epochs * steps,
        initial=start_epoch * steps,
        desc=desc,
        unit="step",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    last_save = t_start = time.monotonic()
    seconds_before = log.seconds
    for epoch in range(start_epoch, epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        sums = torch.zeros(3, device=device)
        for i in range(steps):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x, y = data.x[idx], data.y[idx]
            opt.zero_grad(set_to_none=True)
            if epoch == start_epoch and i == 0:  # the layer contract, checked once
                with layer_contract_check(model):
                    loss, stats = model.loss(x, y)
                check_loss_parts(model, stats)
            else:
                loss, stats = model.loss(x, y)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), stats["nll"], stats["kl"]])
            bar.update(1)
            if progress and i % 50 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4g}", refresh=False)
        means = (sums / steps).tolist()
        if not all(map(math.isfinite, means)):
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
        if checkpoint is not None and (
            now - last_save >= CHECKPOINT_EVERY_S or epoch + 1 == epochs
        ):
            _save_checkpoint(checkpoint, model, opt, gen, log, epoch + 1, device)
            last_save = now
    bar.close()
    model.eval()
    return log


def _save_checkpoint(
    path: Path,
    model: Posterior,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    log: TrainLog,
    epoch: int,
    device: torch.device,
) -> None:
    state: dict[str, Any] = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "batch_rng": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "log": log.to_dict(),
        "epoch": epoch,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
