"""The toy regression of section 4.1: y = x^3 + noise, 20 points in [-4, 4]."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from uqbench import register_task
from uqbench.errors import ConfigError
from uqbench.tasks.base import Split, Task, TaskData

NOISE_STD = 3.0
TRAIN_RANGE = (-4.0, 4.0)
OUTER = 6.0  # test points outside the training range lie in [-6, -4) U (4, 6]


def _cubic(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x**3 + rng.normal(0.0, NOISE_STD, size=x.shape)


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(
        torch.from_numpy(x.astype(np.float32)).reshape(-1, 1),
        torch.from_numpy(y.astype(np.float32)).reshape(-1, 1),
    )


@register_task("toy-cubic")
class ToyCubicTask(Task):
    """Toy regression y = x^3 + eps, eps ~ N(0, 3^2) (Hernandez-Lobato & Adams 2015).

    Data come from a generator seeded by ``seed`` (no files): ``n_train`` (default 20)
    training inputs x ~ U[-4, 4]; a held-out test set of ``n_test`` (default 1,000)
    points, half inside the training range (x ~ U[-4, 4]) and half outside
    (|x| ~ U(4, 6], random sign), all with the same noise. Inputs and targets are
    float32 [N, 1], unnormalised. ``extra`` holds ``grid`` (241 points over [-6, 6],
    [241, 1], for plots), ``test_inside`` and ``test_outside`` (the two halves of the
    test set, which is their concatenation) and ``train_range``. The network is a
    1-100-1 ReLU MLP trained full batch for 1,000 steps (as a public port of the
    authors' code). No OOD sets, no FGSM.
    """

    display_name: ClassVar[str] = "Toy cubic regression"
    kind: ClassVar[str] = "regression"
    arch: ClassVar[str] = "mlp"
    arch_kwargs: ClassVar[dict[str, Any]] = {"hidden": 100}
    in_shape: ClassVar[tuple[int, ...]] = (1,)
    n_outputs: ClassVar[int] = 1
    class_names: ClassVar[tuple[str, ...]] = ()
    noise_std: ClassVar[float | None] = NOISE_STD
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 1000, "batch_size": 20, "lr": 0.01}
    fgsm_eps: ClassVar[tuple[float, ...]] = ()
    input_range: ClassVar[tuple[float, float]] = (-OUTER, OUTER)

    def load(
        self,
        source: Any = None,
        *,
        n_train: int | None = None,
        n_test: int | None = None,
        n_ood: int | None = None,
        seed: int = 0,
    ) -> TaskData:
        """Draw the data from a generator seeded by ``seed``; ``source`` is not used."""
        n_train = 20 if n_train is None else n_train
        n_test = 1000 if n_test is None else n_test
        for key, n in (("n_train", n_train), ("n_test", n_test)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(f"toy-cubic: {key} must be a positive integer, got {n!r}")
        rng = np.random.default_rng(seed)
        lo, hi = TRAIN_RANGE
        x_train = rng.uniform(lo, hi, size=n_train)
        y_train = _cubic(x_train, rng)
        n_in = n_test - n_test // 2
        n_out = n_test // 2
        x_in = rng.uniform(lo, hi, size=n_in)
        y_in = _cubic(x_in, rng)
        # |x| = 6 - U[0, 2) lies in (4, 6]; the sign is a fair coin.
        x_out = rng.choice([-1.0, 1.0], size=n_out) * (OUTER - rng.uniform(0.0, OUTER - hi, n_out))
        y_out = _cubic(x_out, rng)
        inside, outside = _split(x_in, y_in), _split(x_out, y_out)
        test = Split(torch.cat([inside.x, outside.x]), torch.cat([inside.y, outside.y]))
        return TaskData(
            train=_split(x_train, y_train),
            test=test,
            ood={},
            files=[],
            notes=[],
            extra={
                "grid": torch.linspace(-OUTER, OUTER, 241, dtype=torch.float32).reshape(-1, 1),
                "test_inside": inside,
                "test_outside": outside,
                "train_range": TRAIN_RANGE,
            },
        )
