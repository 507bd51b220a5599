"""Shared fixtures: an isolated cache, and a tiny synthetic task for runner tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from uqbench.registry import POSTERIORS, TASKS
from uqbench.tasks.base import Split, Task, TaskData

REAL_DATA = os.environ.get("UQBENCH_DATA_DIR")


@pytest.fixture(scope="session")
def _shared_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of decoded data sets for the whole session (decoding notMNIST takes seconds)."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, _shared_data_cache, monkeypatch):
    """Checkpoints of tests never mix with each other's or a user's cache."""
    cache = tmp_path_factory.mktemp("cache")
    (cache / "data").symlink_to(_shared_data_cache, target_is_directory=True)
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(cache))


class TinyBlobs(Task):
    """Two separable Gaussian blobs in 2-D; OOD set: points far from both."""

    display_name = "Tiny blobs"
    kind = "classification"
    arch = "mlp"
    arch_kwargs = {"hidden": 16}
    in_shape = (2,)
    n_outputs = 2
    class_names = ("a", "b")
    method_defaults = {
        "ffg": {"max_std": 0.5},
        "mnf": {"max_std": 0.5},
        "ensemble": {"members": 2, "adv_eps": 0.1},
    }
    train_defaults = {"epochs": 3, "batch_size": 50, "lr": 1e-2}
    fgsm_eps = (0.0, 0.1)
    input_range = (-10.0, 10.0)

    def load(self, source, *, n_train=None, n_test=None, n_ood=None, seed=0) -> TaskData:
        g = torch.Generator().manual_seed(seed)

        def blobs(n: int) -> Split:
            y = torch.arange(n) % 2
            x = torch.randn(n, 2, generator=g) * 0.5 + (y[:, None] * 2 - 1) * 2.0
            return Split(x, y)

        ood = torch.randn(n_ood or 100, 2, generator=g) + torch.tensor([0.0, 8.0])
        return TaskData(blobs(n_train or 200), blobs(n_test or 100), {"far": ood})


@pytest.fixture
def clean_registry() -> Iterator:
    """Restore the posterior registry, and forget plug-in modules a test imported."""
    before = set(sys.modules)
    state = POSTERIORS.snapshot()
    yield POSTERIORS
    POSTERIORS.restore(state)
    for name in set(sys.modules) - before:
        if name.startswith("uqbench_"):
            del sys.modules[name]


@pytest.fixture
def tiny_task() -> Iterator[str]:
    """Register the tiny task for one test."""
    state = TASKS.snapshot()
    TASKS.add("tiny-blobs", TinyBlobs)
    yield "tiny-blobs"
    TASKS.restore(state)


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
