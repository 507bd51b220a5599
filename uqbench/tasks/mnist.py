"""MNIST digit classification; OOD set by default: notMNIST_small letters."""

from __future__ import annotations

from typing import Any, ClassVar

from uqbench import register_task
from uqbench.data import DataSource, as_source, load_mnist
from uqbench.tasks.base import Task, TaskData, image_splits


@register_task("mnist")
class MNISTTask(Task):
    """MNIST (LeNet-5), as in section 4.2 of Louizos & Welling (2017).

    Preprocessing, identical for the in-distribution and the OOD sets: the uint8 grey
    levels are divided by 255 to float32 in [0, 1], shaped [N, 1, 28, 28], with no mean
    or std normalisation (as the authors' code). Train: the 60,000 MNIST training
    images; test: the 10,000 test images; labels int64 0-9.

    OOD sets (registered, :mod:`uqbench.ood`): ``"notmnist"`` by default, every readable
    image of notMNIST_small (letters A-J, 18,724; the two 0-byte upstream PNGs are
    skipped and named in ``TaskData.notes``); ``"fashion-mnist"`` on request.

    ``n_train``/``n_test`` take seeded class-stratified subsets; None keeps everything.
    """

    display_name: ClassVar[str] = "MNIST (OOD: notMNIST)"
    kind: ClassVar[str] = "classification"
    arch: ClassVar[str] = "lenet5"
    arch_kwargs: ClassVar[dict[str, Any]] = {}
    in_shape: ClassVar[tuple[int, ...]] = (1, 28, 28)
    n_outputs: ClassVar[int] = 10
    class_names: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(10))
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "ffg": {"max_std": 0.5},
        "mnf": {"max_std": 0.5},
        "ensemble": {"members": 10, "adv_eps": 0.25},
    }
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 100, "lr": 1e-3}
    fgsm_eps: ClassVar[tuple[float, ...]] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
    input_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    ood_sets: ClassVar[tuple[str, ...]] = ("notmnist",)

    def load(
        self,
        source: DataSource | Any,
        *,
        n_train: int | None = None,
        n_test: int | None = None,
        n_ood: int | None = None,
        seed: int = 0,
    ) -> TaskData:
        """Read and verify MNIST, scale to [0, 1], subset as asked (OOD sets: the runner)."""
        mnist = load_mnist(as_source(source))
        train, test = image_splits(
            mnist.arrays, n_train=n_train, n_test=n_test, seed=seed, stream="mnist"
        )
        return TaskData(train=train, test=test, files=mnist.files, notes=mnist.notes)
