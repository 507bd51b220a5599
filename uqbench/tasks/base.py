"""The interface of a task: a data set, its architecture and how it is evaluated.

A task is one file: a :class:`Task` subclass registered with
``@uqbench.register_task("name")`` (and listed in the ``uqbench.tasks`` entry-point
group). ``load`` returns tensors already preprocessed for the model; the runner and
the metrics never see file formats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from uqbench.architectures import CLASSIFICATION, REGRESSION, ModelSpec
from uqbench.data.subset import images_to_tensor, labels_to_tensor, stratified_indices
from uqbench.errors import ConfigError, PluginError, plugin_call


@dataclass
class Split:
    """Inputs and targets of one split (classification: int64 labels; regression: float).

    ``index`` (optional): where each input lies in the data set it was taken from (its
    position in the upstream test split, say), so that runs scoring different subsets of
    one pool can be paired image by image (:func:`uqbench.compare._test_variance`).
    """

    x: Tensor
    y: Tensor
    index: Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _check_index(where: str, index: Tensor | None, n: int) -> None:
    """Refuse positions (:attr:`Split.index`) that cannot say where ``n`` inputs lie."""
    if index is None:
        return
    ok = isinstance(index, Tensor) and index.dim() == 1 and not index.is_floating_point()
    if not ok or len(index) != n or (n and int(index.min()) < 0):
        raise PluginError(
            f"{where}: index must be a 1-D integer tensor of {n} positions >= 0 (one per "
            f"input), got {_describe(index)}"
        )


def _describe(t: object) -> str:
    if isinstance(t, Tensor):
        return f"{t.dtype} {list(t.shape)}"
    return type(t).__name__


def check_inputs(
    where: str, x: object, in_shape: Sequence[int], *, allow_empty: bool = False
) -> None:
    """Refuse inputs the models cannot take: not a float32 ``[N, *in_shape]`` tensor, or
    (unless ``allow_empty``) an empty one (a :class:`uqbench.errors.PluginError` naming
    ``where``)."""
    want = [*in_shape]
    ok = isinstance(x, Tensor) and x.dtype == torch.float32 and list(x.shape[1:]) == want
    if not ok or (len(x) == 0 and not allow_empty):  # type: ignore[arg-type]
        some = "" if allow_empty else "non-empty "
        raise PluginError(
            f"{where}: inputs must be a {some}float32 tensor [N, {', '.join(map(str, want))}]"
            f" (the task's in_shape {tuple(want)}), got {_describe(x)}"
        )


def check_labels(where: str, y: object, n: int, n_classes: int | None = None) -> None:
    """Refuse class labels that are not int64 ``[n]`` in ``[0, n_classes)`` (``None``: any
    class >= 0)."""
    ok = isinstance(y, Tensor) and y.dtype == torch.int64 and list(y.shape) == [n]
    if ok and n:
        lo, hi = int(y.min()), int(y.max())  # type: ignore[union-attr]
        ok = lo >= 0 and (n_classes is None or hi < n_classes)
    if not ok:
        classes = "" if n_classes is None else f" in [0, {n_classes})"
        raise PluginError(
            f"{where}: labels must be an int64 tensor [{n}] of classes{classes}, got "
            f"{_describe(y)}"
            + (f" with values {int(y.min())}..{int(y.max())}" if _numeric(y, n) else "")
        )


def _numeric(y: object, n: int) -> bool:
    return isinstance(y, Tensor) and y.dim() == 1 and len(y) == n > 0 and not y.is_complex()


def check_split(where: str, split: object, task: Task, *, allow_empty: bool = False) -> None:
    """Refuse a :class:`Split` whose inputs or targets do not fit ``task``: float32 inputs
    of its ``in_shape``; int64 labels of its classes, or float32 targets ``[N, 1]``."""
    if not isinstance(split, Split):
        raise PluginError(f"{where} must be a uqbench.tasks.base.Split, got {_describe(split)}")
    check_inputs(where, split.x, task.in_shape, allow_empty=allow_empty)
    n = len(split)
    if task.kind == CLASSIFICATION:
        check_labels(where, split.y, n, task.n_outputs)
    elif not (
        isinstance(split.y, Tensor)
        and split.y.dtype == torch.float32
        and list(split.y.shape) == [n, 1]
    ):
        raise PluginError(
            f"{where}: regression targets must be a float32 tensor [{n}, 1], got "
            f"{_describe(split.y)}"
        )
    _check_index(where, split.index, n)


@dataclass
class TaskData:
    """Preprocessed data of a task, plus where it came from.

    ``ood`` maps the name of each out-of-distribution set to its inputs, and
    ``ood_labels`` (where the set supplies them) to each input's class within that set.
    ``files`` records every data file used: ``{"dataset", "file", "path", "md5",
    "expected_md5", "verified"}``. ``notes`` are caveats that must reach the report
    (e.g. an unverified CIFAR-10 stand-in). ``extra`` holds task-specific tensors
    (the toy task's plotting grid and held-out sets).
    """

    train: Split
    test: Split
    ood: dict[str, Tensor] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    ood_labels: dict[str, Tensor] = field(default_factory=dict)
    ood_index: dict[str, Tensor] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        """True when every data file matched its published checksum."""
        return all(f.get("verified", False) for f in self.files)

    def class_counts(self) -> dict[str, list[int]]:
        """How many inputs of each class every labelled split holds: ``train`` and ``test``
        (classification labels), ``ood.<set>`` (where the set gave labels).

        A seeded stratified subset has the same counts for every seed, so the regression
        check compares them with the reference's whatever the seeds: a subset drawn another
        way (the first files of a set, one class missing) changes them.
        """
        labelled = {"train": self.train.y, "test": self.test.y}
        labelled.update({f"ood.{k}": v for k, v in self.ood_labels.items()})
        return {
            name: torch.bincount(y.cpu()).tolist()
            for name, y in labelled.items()
            if not y.is_floating_point() and y.ndim == 1 and (len(y) == 0 or y.min() >= 0)
        }


def image_splits(
    arrays: Mapping[str, np.ndarray],
    *,
    n_train: int | None,
    n_test: int | None,
    seed: int,
    stream: str,
    label_map: np.ndarray | None = None,
) -> tuple[Split, Split]:
    """The train and test :class:`Split` of an image data set's decoded arrays.

    What an image classification task's ``load`` does once it has read its files:
    ``arrays`` holds uint8 images ``train_x``/``test_x`` and integer labels
    ``train_y``/``test_y``. ``label_map`` (None: labels kept as they are) maps each stored
    label to the task's label, or to -1 for a class the task leaves out. Each split keeps
    a seeded class-stratified subset of ``n_train``/``n_test`` images (None: all; more than
    the split has: :class:`ConfigError`), drawn on the stream ``<stream>/<split>``; pixels
    become float32 in [0, 1], labels int64.
    """
    splits = []
    for split, n in (("train", n_train), ("test", n_test)):
        y = arrays[f"{split}_y"]
        have = len(y) if label_map is None else int((label_map[y] >= 0).sum())
        if n is not None and n > have:  # a run would record a size its data lacks
            raise ConfigError(
                f"{stream}: n_{split} {n} is more than the {have} examples of its {split} split; "
                "leave it unset to use them all"
            )
        if label_map is None:
            idx = stratified_indices(y, n, seed, stream=f"{stream}/{split}")
        else:
            keep = np.flatnonzero(label_map[y] >= 0)
            idx = keep[stratified_indices(label_map[y[keep]], n, seed, stream=f"{stream}/{split}")]
            y = label_map[y]
        x, labels = images_to_tensor(arrays[f"{split}_x"][idx]), labels_to_tensor(y[idx])
        splits.append(Split(x, labels, labels_to_tensor(idx)))
    return splits[0], splits[1]


class Task:
    """Base class of a benchmark task."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    #: "classification" or "regression" (:data:`uqbench.architectures.TASK_KINDS`).
    kind: ClassVar[str] = CLASSIFICATION
    arch: ClassVar[str] = "lenet5"
    arch_kwargs: ClassVar[dict[str, Any]] = {}
    in_shape: ClassVar[tuple[int, ...]] = ()
    n_outputs: ClassVar[int] = 10
    class_names: ClassVar[tuple[str, ...]] = ()
    #: The paper's settings of posterior families on this task, as a suite's
    #: ``[task.<name>] method`` table (``{"ffg": {"max_std": 0.5}, "ensemble": {...}}``):
    #: the first layer of each family's config, under the suite's ``[method.<name>]`` and
    #: ``[task.<name>.method.<name>]``. Families not installed are skipped.
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Regression: the fixed std of the Gaussian likelihood (None: 1 in the loss, 0 in
    #: the predictive's variance).
    noise_std: ClassVar[float | None] = None
    #: Training defaults (epochs, batch_size, lr) when a suite says nothing.
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 10, "batch_size": 100, "lr": 1e-3}
    #: FGSM perturbation sizes (in input units, pixels in [0, 1]).
    fgsm_eps: ClassVar[tuple[float, ...]] = ()
    #: Valid input range, for clamping adversarial examples.
    input_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    #: Registered OOD sets (``uqbench.register_ood_set``) evaluated by default; a suite
    #: replaces them per task with ``[task.<name>] ood = [...]``.
    ood_sets: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def takes_shift(cls) -> bool:
        """Whether the dataset-shift evaluation (:mod:`uqbench.shift`: rotations and image
        corruptions) applies: classification of images ``[C, H, W]`` with pixels in [0, 1].
        For other tasks a suite's shift settings are not evaluated."""
        return (
            cls.kind == CLASSIFICATION
            and len(cls.in_shape) == 3
            and tuple(cls.input_range) == (0.0, 1.0)
        )

    def load(
        self,
        source: Any,
        *,
        n_train: int | None = None,
        n_test: int | None = None,
        n_ood: int | None = None,
        seed: int = 0,
    ) -> TaskData:
        """Read, verify, preprocess and (stratified, seeded) subset the task's data.

        ``source`` is a :class:`uqbench.data.DataSource` (where to look, whether to
        download, whether unverified copies are accepted).
        """
        raise NotImplementedError

    def load_with_ood(
        self,
        source: Any,
        *,
        ood: Sequence[str] | None = None,
        n_train: int | None = None,
        n_test: int | None = None,
        n_ood: int | None = None,
        seed: int = 0,
    ) -> TaskData:
        """:meth:`load`, plus the registered OOD sets ``ood`` (None: :attr:`ood_sets`).

        What the runner calls. Each set is subset to ``n_ood`` inputs (seeded, stream
        ``<task>/ood/<set>``); its inputs, file records and notes are added to those
        of the task's own data. A set whose name the task's ``load`` already used is an
        error, as is a set whose inputs do not have the shape :attr:`in_shape`. Positions
        (``Split.index``, ``TaskData.ood_index``, a set's ``index``) that do not give one
        position >= 0 per input are a :class:`uqbench.errors.PluginError`.
        """
        from uqbench.data import as_source
        from uqbench.ood import load_ood_set

        src = as_source(source)
        where = f"task {self.name!r}"
        with plugin_call(f"{where}: load()", type(self)):
            data = self.load(src, n_train=n_train, n_test=n_test, n_ood=n_ood, seed=seed)
        if not isinstance(data, TaskData):
            raise PluginError(f"{where}: load() must return a TaskData, got {_describe(data)}")
        for split_name, split in (("train", data.train), ("test", data.test)):
            check_split(f"{where}: its {split_name} split", split, self)
        if self.kind == REGRESSION:  # what evaluate_regression scores and plots
            for key in ("test_inside", "test_outside"):  # one may be empty (toy: --n-test 1)
                split = data.extra.get(key)
                check_split(f"{where}: its extra[{key!r}]", split, self, allow_empty=True)
            if tuple(self.in_shape) == (1,):
                check_inputs(f"{where}: its extra['grid']", data.extra.get("grid"), self.in_shape)
        for name, x in data.ood.items():
            check_inputs(f"{where}: its OOD set {name!r}", x, self.in_shape)
        for name, labels in data.ood_labels.items():
            if name not in data.ood:
                raise PluginError(
                    f"{where}: its ood_labels names {name!r}, which is not one of its OOD sets "
                    f"({sorted(data.ood) or 'none'})"
                )
            n = len(data.ood[name])
            check_labels(f"{where}: the labels of its OOD set {name!r}", labels, n)
        for name, index in data.ood_index.items():
            if name not in data.ood:
                raise PluginError(
                    f"task {self.name!r}: its ood_index names {name!r}, which is not one of "
                    f"its OOD sets ({sorted(data.ood) or 'none'})"
                )
            _check_index(f"task {self.name!r}: its OOD set {name!r}", index, len(data.ood[name]))
        for name in self.ood_sets if ood is None else ood:
            if name in data.ood:
                raise ConfigError(
                    f"task {self.name!r}: its own data already has an OOD set {name!r}"
                )
            got = load_ood_set(
                name, src, task=self.name, in_shape=tuple(self.in_shape), n=n_ood, seed=seed
            )
            data.ood[name] = got.x
            if got.labels is not None:
                check_labels(f"OOD set {name!r}: its labels", got.labels, len(got.x))
                data.ood_labels[name] = got.labels
            if got.index is not None:
                _check_index(f"OOD set {name!r}", got.index, len(got.x))
                data.ood_index[name] = got.index
            # A set read from the task's own files (cifar5-hidden) adds no new record.
            data.files = data.files + [f for f in got.files if f not in data.files]
            data.notes = data.notes + [n for n in got.notes if n not in data.notes]
        return data

    def model_spec(self, data: TaskData, arch_kwargs: dict[str, Any] | None = None) -> ModelSpec:
        """The :class:`ModelSpec` of this task's architecture for ``data``."""
        if getattr(self, "hints", None):
            raise PluginError(
                f"task {self.name!r}: 'hints' is no longer read; declare family settings in "
                "method_defaults (e.g. {'ffg': {'max_std': 0.5}, 'ensemble': {'members': 5, "
                "'adv_eps': 0.25}}) and a regression's noise in noise_std"
            )
        return ModelSpec(
            arch=self.arch,
            in_shape=tuple(self.in_shape),
            out_dim=self.n_outputs,
            kind=self.kind,
            n_data=len(data.train),
            arch_kwargs={**self.arch_kwargs, **(arch_kwargs or {})},
            noise_std=self.noise_std,
            input_range=tuple(self.input_range) if self.kind == CLASSIFICATION else None,
        )
