"""What several test modules build the same way: the tiny suite's runner, small models and
specs, a hand-made classifier with known outputs, and `uqbench run` argument lists.

Fixtures live in ``conftest.py``; these are plain functions and classes, imported by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from uqbench import get_posterior
from uqbench.architectures import ModelSpec
from uqbench.data import DataSource
from uqbench.runner import Runner
from uqbench.suites import load_suite
from uqbench.tasks.base import Split, TaskData

#: Two methods on the tiny task (the ``tiny_task`` fixture), two seeds, a cheap evaluation.
TINY_SUITE = """
name = "tiny"
methods = ["l2", "ffg"]
tasks = ["tiny-blobs"]
seeds = [0, 1]
[eval]
test_samples = 4
fgsm_samples = 2
"""


def tiny_runner(
    tmp_path: Path,
    suite: str = TINY_SUITE,
    *,
    command: str = "uqbench run --suite tiny.toml",
    **kw: Any,
) -> Runner:
    """A quiet CPU :class:`Runner` of ``suite`` (written to ``tmp_path/tiny.toml``), its
    results in ``tmp_path/results``, no data download; ``kw`` go to the Runner."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(suite)
    return Runner(
        load_suite(suite_file),
        out=tmp_path / "results",
        source=DataSource(root=tmp_path, download=False),
        device=torch.device("cpu"),
        command=command,
        progress=False,
        **{"log": lambda *_: None, **kw},
    )


def count_runs(monkeypatch: Any, interrupt_at: int | None = None) -> list[str]:
    """The key of every run :meth:`Runner.run_one` starts, in order, from now on; with
    ``interrupt_at`` the run of that number (1-based) is stopped as by Ctrl-C instead."""
    calls: list[str] = []
    original = Runner.run_one

    def counting(self, spec, env):
        calls.append(spec.key)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return original(self, spec, env)

    monkeypatch.setattr(Runner, "run_one", counting)
    return calls


def blob_spec(n_data: int = 200, hidden: int = 16) -> ModelSpec:
    """An MLP classifying 2-D points into two classes."""
    return ModelSpec(
        arch="mlp",
        in_shape=(2,),
        out_dim=2,
        kind="classification",
        n_data=n_data,
        arch_kwargs={"hidden": hidden},
    )


def toy_spec(hidden: int = 8) -> ModelSpec:
    """The toy regression's shape: 1-``hidden``-1, 20 points, noise std 3."""
    return ModelSpec(
        arch="mlp",
        in_shape=(1,),
        out_dim=1,
        kind="regression",
        n_data=20,
        noise_std=3.0,
        arch_kwargs={"hidden": hidden},
    )


#: LeNet-5 on MNIST shapes, narrowed so that a training step costs milliseconds.
TINY_LENET = ModelSpec(
    arch="lenet5",
    in_shape=(1, 28, 28),
    out_dim=10,
    kind="classification",
    n_data=600,
    arch_kwargs={"channels": [4, 6], "hidden": 16},
)


def toy_mlp(method: str, **config: Any) -> torch.nn.Module:
    """``method``'s model of the toy regression's shape (1-8-1, noise std 3), seeded 0."""
    torch.manual_seed(0)
    return get_posterior(method)(toy_spec(), **config)


class StubTask:
    """The task attributes ``evaluate_classification`` reads: two classes, no FGSM."""

    name = "tiny"
    n_outputs = 2
    fgsm_eps: tuple = ()
    input_range = (0.0, 1.0)


class MeanBrightness:
    """Class 1 iff the image is brighter than 0.5 on average; two samples that disagree
    by a fixed margin, so the predictive and its mutual information are known."""

    def sample_outputs(self, x: torch.Tensor, n: int) -> torch.Tensor:
        z = (x.mean(dim=(1, 2, 3)) - 0.5) * 20
        base = torch.stack([-z, z], -1)
        return torch.stack([base + torch.tensor([1.0, -1.0]), base - torch.tensor([1.0, -1.0])])


def grey_levels_data() -> TaskData:
    """60 flat 8x8 images of seeded grey levels, labelled by level > 0.5 (two of them the
    training split); OOD set ``grey``: 10 images at exactly 0.5."""
    gen = torch.Generator().manual_seed(0)
    level = torch.rand(60, generator=gen)
    x = level.reshape(-1, 1, 1, 1) * torch.ones(60, 1, 8, 8)
    y = (level > 0.5).long()
    ood = torch.full((10, 1, 8, 8), 0.5)
    return TaskData(train=Split(x[:2], y[:2]), test=Split(x, y), ood={"grey": ood})


def smoke_argv(task: str, *options: str) -> list[str]:
    """``uqbench run`` arguments: the smoke suite's L2 run on ``task``, quiet, then ``options``."""
    return ["run", "--suite", "smoke", "--methods", "l2", "--tasks", task, "--quiet", *options]
