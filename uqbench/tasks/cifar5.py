"""CIFAR-5: the first five CIFAR-10 classes, with the other five as hidden OOD classes."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from uqbench import register_task
from uqbench.data import (
    DataSource,
    as_source,
    images_to_tensor,
    labels_to_tensor,
    load_cifar10,
    stratified_indices,
)
from uqbench.errors import DataError
from uqbench.tasks.base import Split, Task, TaskData

SEEN = ("airplane", "automobile", "bird", "cat", "deer")
HIDDEN = ("dog", "frog", "horse", "ship", "truck")


@register_task("cifar5")
class Cifar5Task(Task):
    """CIFAR-5 (larger LeNet), as in section 4.2 of Louizos & Welling (2017).

    Train on the CIFAR-10 training images of airplane, automobile, bird, cat and deer
    (labels 0-4 in that order; 25,000 images); test on their 5,000 test images. OOD
    ``"cifar5-hidden"``: the 5,000 test images of the five hidden classes (dog, frog,
    horse, ship, truck).

    Preprocessing, identical for all sets: uint8 RGB divided by 255 to float32 in
    [0, 1], shaped [N, 3, 32, 32] (the channel-major rows of the CIFAR batches), with no
    mean or std normalisation (as the authors' code).

    The copy of CIFAR-10 in ``shared/data`` is a lossy JPEG stand-in whose md5 does not
    match upstream: it is refused unless unverified data are allowed, and then
    ``TaskData.notes`` says so. ``n_train``/``n_test``/``n_ood`` take seeded
    class-stratified subsets; None keeps everything.
    """

    display_name: ClassVar[str] = "CIFAR-5 (OOD: the 5 hidden classes)"
    kind: ClassVar[str] = "classification"
    arch: ClassVar[str] = "lenet-cifar"
    arch_kwargs: ClassVar[dict[str, Any]] = {}
    in_shape: ClassVar[tuple[int, ...]] = (3, 32, 32)
    n_outputs: ClassVar[int] = 5
    class_names: ClassVar[tuple[str, ...]] = SEEN
    hints: ClassVar[dict[str, Any]] = {"max_std": 0.4, "adv_eps": 0.1, "ensemble_members": 5}
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 100, "lr": 1e-3}
    fgsm_eps: ClassVar[tuple[float, ...]] = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1)
    input_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def load(
        self,
        source: DataSource | Any,
        *,
        n_train: int | None = None,
        n_test: int | None = None,
        n_ood: int | None = None,
        seed: int = 0,
    ) -> TaskData:
        """Read and verify CIFAR-10, split seen/hidden classes, scale to [0, 1], subset."""
        raw = load_cifar10(as_source(source))
        names = list(raw.info["label_names"])
        try:
            seen = [names.index(c) for c in SEEN]
            hidden = [names.index(c) for c in HIDDEN]
        except ValueError:
            raise DataError(
                f"{raw.location}: CIFAR-10 label names {names} lack one of {SEEN + HIDDEN}"
            ) from None
        # CIFAR-10 label -> CIFAR-5 label (0-4), or -1 for the hidden classes.
        remap = np.full(10, -1, dtype=np.int64)
        remap[seen] = np.arange(5)
        a = raw.arrays

        splits = {}
        for split, n in (("train", n_train), ("test", n_test)):
            keep = np.flatnonzero(remap[a[f"{split}_y"]] >= 0)
            y5 = remap[a[f"{split}_y"][keep]]
            idx = keep[stratified_indices(y5, n, seed, stream=f"cifar5/{split}")]
            splits[split] = Split(
                images_to_tensor(a[f"{split}_x"][idx]),
                labels_to_tensor(remap[a[f"{split}_y"][idx]]),
            )
        ood_pool = np.flatnonzero(np.isin(a["test_y"], hidden))
        idx = ood_pool[
            stratified_indices(a["test_y"][ood_pool], n_ood, seed, stream="cifar5/ood/hidden")
        ]
        return TaskData(
            train=splits["train"],
            test=splits["test"],
            ood={"cifar5-hidden": images_to_tensor(a["test_x"][idx])},
            files=raw.files,
            notes=raw.notes,
        )
