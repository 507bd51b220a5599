"""Out-of-distribution sets: a registry of their own, selectable per task in a suite.

An OOD set is one class: an :class:`OODSet` subclass registered with
``@uqbench.register_ood_set("name")`` (from a third-party package: in the
``uqbench.ood_sets`` entry-point group). Its ``load`` returns inputs preprocessed like
the tasks' (pixels in [0, 1], ``[N, *in_shape]``) plus the records of the files they
came from. A task names its default sets in ``Task.ood_sets``; a suite may replace
them per task (``[task.mnist] ood = ["notmnist", "fashion-mnist"]``). Each set's name
becomes its key under ``metrics.ood`` in the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from uqbench.data import (
    as_source,
    images_to_tensor,
    labels_to_tensor,
    load_cifar10,
    load_fashion_mnist,
    load_notmnist,
    stratified_indices,
)
from uqbench.errors import DataError, PluginError, plugin_call
from uqbench.registry import OOD_SETS
from uqbench.tasks.base import check_inputs


@dataclass
class OODData:
    """The inputs of an OOD set and where they came from (as :class:`uqbench.TaskData`).

    ``labels`` (optional): each input's class within its own set (a notMNIST letter, a
    clothing class), so that the run records the subset's class counts and the regression
    check sees a subset drawn differently. ``index`` (optional): each input's position in
    the set's files, so that seeds scoring different subsets can be paired input by input.
    """

    x: Tensor
    files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels: Tensor | None = None
    index: Tensor | None = None


class OODSet:
    """Base class of an out-of-distribution set."""

    #: Registry name, set by ``register_ood_set``; the key of its metrics.
    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    #: The input shapes ``load`` can give, so that a suite pairing the set with a task of
    #: another shape is refused before any data is read; None: it adapts, or cannot say.
    in_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = None

    def load(
        self, source: Any, *, in_shape: tuple[int, ...], n: int | None, seed: int, stream: str
    ) -> OODData:
        """Read, verify and preprocess the set; a seeded subset of ``n`` inputs (None: all).

        ``source`` is a :class:`uqbench.data.DataSource`; ``in_shape`` the input shape of
        the task it is used with (a set may adapt to it, or not: the runner refuses a set
        whose inputs do not have the task's shape); ``stream`` (e.g. ``"mnist/ood/name"``)
        with ``seed`` makes the subset's draw reproducible and independent of the others.
        """
        raise NotImplementedError


def load_ood_set(
    name: str,
    source: Any,
    *,
    task: str,
    in_shape: tuple[int, ...],
    n: int | None,
    seed: int,
) -> OODData:
    """Load the registered OOD set ``name`` for ``task``, checking its input shape."""
    ood_set = OOD_SETS.get(name)()
    stream = f"{task}/ood/{getattr(ood_set, 'stream_name', '') or name}"
    with plugin_call(f"OOD set {name!r}: load()", type(ood_set)):
        data = ood_set.load(
            as_source(source), in_shape=tuple(in_shape), n=n, seed=seed, stream=stream
        )
    if not isinstance(data, OODData) or not isinstance(data.x, Tensor):
        raise DataError(f"OOD set {name!r}: load() must return an OODData with a tensor x")
    if tuple(data.x.shape[1:]) != tuple(in_shape):
        raise DataError(
            f"OOD set {name!r} gives inputs of shape {list(data.x.shape[1:])}, but task "
            f"{task!r} takes {list(in_shape)}"
        )
    check_inputs(f"OOD set {name!r} (for task {task!r})", data.x, in_shape)
    if n is not None and len(data.x) > n:
        raise PluginError(f"OOD set {name!r}: asked for at most n={n} inputs, gave {len(data.x)}")
    if n is not None and len(data.x) < n:  # the whole set: fine, but the report must say so
        short = (
            f"OOD set {name!r} has {len(data.x)} inputs, fewer than the n_ood={n} asked for: "
            "all of them are used"
        )
        data = replace(data, notes=[*data.notes, short])
    return data


@OOD_SETS.register("notmnist")
class NotMNIST(OODSet):
    """notMNIST_small: every readable image of the letters A-J (18,724), [N, 1, 28, 28].

    The two 0-byte upstream PNGs are skipped and named in the notes. Subsets are
    stratified by letter.
    """

    display_name: ClassVar[str] = "notMNIST"
    in_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = ((1, 28, 28),)

    def load(
        self, source: Any, *, in_shape: tuple[int, ...], n: int | None, seed: int, stream: str
    ) -> OODData:
        raw = load_notmnist(source)
        idx = stratified_indices(raw.arrays["y"], n, seed, stream=stream)
        x, y = images_to_tensor(raw.arrays["x"][idx]), labels_to_tensor(raw.arrays["y"][idx])
        return OODData(x, raw.files, raw.notes, labels=y, index=labels_to_tensor(idx))


@OOD_SETS.register("fashion-mnist")
class FashionMNIST(OODSet):
    """Fashion-MNIST's 10,000 test images (Xiao et al. 2017), [N, 1, 28, 28] in [0, 1].

    Subsets are stratified by clothing class.
    """

    display_name: ClassVar[str] = "Fashion-MNIST"
    in_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = ((1, 28, 28),)

    def load(
        self, source: Any, *, in_shape: tuple[int, ...], n: int | None, seed: int, stream: str
    ) -> OODData:
        raw = load_fashion_mnist(source)
        idx = stratified_indices(raw.arrays["test_y"], n, seed, stream=stream)
        x, y = (
            images_to_tensor(raw.arrays["test_x"][idx]),
            labels_to_tensor(raw.arrays["test_y"][idx]),
        )
        return OODData(x, raw.files, raw.notes, labels=y, index=labels_to_tensor(idx))


#: The CIFAR-10 classes CIFAR-5 holds out (its OOD set).
CIFAR5_HIDDEN = ("dog", "frog", "horse", "ship", "truck")


@OOD_SETS.register("cifar5-hidden")
class Cifar5Hidden(OODSet):
    """The 5,000 CIFAR-10 test images of dog, frog, horse, ship and truck, [N, 3, 32, 32].

    Subsets are stratified by class.
    """

    display_name: ClassVar[str] = "CIFAR-5 hidden classes"
    in_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = ((3, 32, 32),)
    #: Subset stream ``<task>/ood/hidden``: the draws made before OOD sets were a registry.
    stream_name: ClassVar[str] = "hidden"

    def load(
        self, source: Any, *, in_shape: tuple[int, ...], n: int | None, seed: int, stream: str
    ) -> OODData:
        raw = load_cifar10(source)
        names = list(raw.info["label_names"])
        missing = [c for c in CIFAR5_HIDDEN if c not in names]
        if missing:
            raise DataError(f"{raw.location}: CIFAR-10 label names {names} lack {missing}")
        hidden = [names.index(c) for c in CIFAR5_HIDDEN]
        test_y = raw.arrays["test_y"]
        pool = np.flatnonzero(np.isin(test_y, hidden))
        idx = pool[stratified_indices(test_y[pool], n, seed, stream=stream)]
        x, y = images_to_tensor(raw.arrays["test_x"][idx]), labels_to_tensor(test_y[idx])
        return OODData(x, raw.files, raw.notes, labels=y, index=labels_to_tensor(idx))
