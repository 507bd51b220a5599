"""CIFAR-5: five CIFAR-10 classes; OOD set by default: the other five (``cifar5-hidden``)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from uqbench import register_task
from uqbench.data import DataSource, as_source, load_cifar10
from uqbench.errors import DataError
from uqbench.ood import CIFAR5_HIDDEN
from uqbench.tasks.base import Task, TaskData, image_splits

SEEN = ("airplane", "automobile", "bird", "cat", "deer")
HIDDEN = CIFAR5_HIDDEN


@register_task("cifar5")
class Cifar5Task(Task):
    """CIFAR-5 (larger LeNet), as in section 4.2 of Louizos & Welling (2017).

    Train on the CIFAR-10 training images of airplane, automobile, bird, cat and deer
    (labels 0-4 in that order; 25,000 images); test on their 5,000 test images. OOD set
    (registered, :mod:`uqbench.ood`) by default: ``"cifar5-hidden"``, the 5,000 test
    images of the five hidden classes (dog, frog, horse, ship, truck).

    Preprocessing, identical for all sets: uint8 RGB divided by 255 to float32 in
    [0, 1], shaped [N, 3, 32, 32] (the channel-major rows of the CIFAR batches), with no
    mean or std normalisation (as the authors' code).

    The copy of CIFAR-10 in ``shared/data`` is a lossy JPEG stand-in whose md5 does not
    match upstream: it is refused unless unverified data are allowed, and then
    ``TaskData.notes`` says so. ``n_train``/``n_test`` take seeded class-stratified
    subsets; None keeps everything.
    """

    display_name: ClassVar[str] = "CIFAR-5 (OOD: the 5 hidden classes)"
    kind: ClassVar[str] = "classification"
    arch: ClassVar[str] = "lenet-cifar"
    arch_kwargs: ClassVar[dict[str, Any]] = {}
    in_shape: ClassVar[tuple[int, ...]] = (3, 32, 32)
    n_outputs: ClassVar[int] = 5
    class_names: ClassVar[tuple[str, ...]] = SEEN
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "ffg": {"max_std": 0.4},
        "mnf": {"max_std": 0.4},
        "ensemble": {"members": 5, "adv_eps": 0.1},
    }
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 100, "lr": 1e-3}
    fgsm_eps: ClassVar[tuple[float, ...]] = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1)
    input_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    ood_sets: ClassVar[tuple[str, ...]] = ("cifar5-hidden",)

    def load(
        self,
        source: DataSource | Any,
        *,
        n_train: int | None = None,
        n_test: int | None = None,
        n_ood: int | None = None,
        seed: int = 0,
    ) -> TaskData:
        """Read and verify CIFAR-10, keep the seen classes, scale to [0, 1], subset."""
        raw = load_cifar10(as_source(source))
        names = list(raw.info["label_names"])
        try:
            seen = [names.index(c) for c in SEEN]
        except ValueError:
            raise DataError(
                f"{raw.location}: CIFAR-10 label names {names} lack one of {SEEN}"
            ) from None
        # CIFAR-10 label -> CIFAR-5 label (0-4), or -1 for the hidden classes.
        remap = np.full(10, -1, dtype=np.int64)
        remap[seen] = np.arange(5)
        train, test = image_splits(
            raw.arrays, n_train=n_train, n_test=n_test, seed=seed, stream="cifar5", label_map=remap
        )
        return TaskData(train=train, test=test, files=raw.files, notes=raw.notes)
