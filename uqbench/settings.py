"""Typed run settings: one declaration per setting, read everywhere it is needed.

Each setting is a field of :class:`TrainSettings`, :class:`DataSettings` or
:class:`EvalSettings` carrying its type (the annotation), its default and, in its
metadata, the command-line flag that sets it for every task, its help text, its
allowed values and how list items are checked. Suite validation
(:mod:`uqbench.suites`), the ``uqbench run`` flags (:mod:`uqbench.cli`) and the
evaluation (:func:`uqbench.evaluate.evaluate_run`) all derive from these classes, so a
new evaluation setting is one field here plus the code that uses it.
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

from uqbench.errors import ConfigError

#: Values of ``EvalSettings.fgsm``.
FGSM_MODES = ("default", "all", "none")


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    choices: tuple[Any, ...] | None = None,
    items: str | None = None,
    when_set: bool = False,
) -> Any:
    """A settings field: ``default``, ``help``, the all-task ``flag`` of ``uqbench run``
    (None: suite files and ``--set`` only), allowed ``choices``, the check of list
    ``items`` (a key of :func:`_item_checks`), and ``when_set``: recorded in a run's
    settings only when given (so that adding it leaves older suites' run hashes alone)."""
    meta = {"help": help, "flag": flag, "choices": choices, "items": items, "when_set": when_set}
    return field(default=default, metadata=meta)


class _Settings:
    """What the three settings classes share: their fields' types, defaults, checks."""

    #: Name of the section in suites, ``--set`` and a run's config.
    section: ClassVar[str] = ""

    @classmethod
    def types(cls) -> dict[str, type]:
        """``{name: type}`` with the value type of each field (``int | None`` -> int)."""
        hints = typing.get_type_hints(cls)
        out = {}
        for f in fields(cls):  # type: ignore[arg-type]
            t = hints[f.name]
            args = [a for a in typing.get_args(t) if a is not type(None)]
            base = args[0] if args else t
            out[f.name] = typing.get_origin(base) or base
        return out

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The recorded defaults: every field not marked ``when_set``."""
        return {
            f.name: f.default
            for f in fields(cls)  # type: ignore[arg-type]
            if not f.metadata["when_set"] and f.default is not MISSING
        }

    @classmethod
    def flags(cls) -> list[tuple[str, str, type, dict[str, Any]]]:
        """``(flag, field, type, metadata)`` of the fields with a command-line flag."""
        types = cls.types()
        return [
            (f.metadata["flag"], f.name, types[f.name], dict(f.metadata))
            for f in fields(cls)  # type: ignore[arg-type]
            if f.metadata["flag"]
        ]

    @classmethod
    def check(cls, table: Any, where: str) -> None:
        """ConfigError naming the first unknown key or bad value of a settings table."""
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table, got {table!r}")
        types = cls.types()
        bad = sorted(set(table) - set(types))
        if bad:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(types))}"
            )
        meta = {f.name: f.metadata for f in fields(cls)}  # type: ignore[arg-type]
        for k, v in table.items():
            want = types[k]
            ok = isinstance(v, want) and not isinstance(v, bool)
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                ok = True
            if not ok:
                raise ConfigError(f"{where}: {k} must be {want.__name__}, got {v!r}")
            if want is float and not math.isfinite(v):
                raise ConfigError(f"{where}: {k} must be a finite number, got {v!r}")
            if want in (int, float) and v <= 0:
                raise ConfigError(f"{where}: {k} must be positive, got {v!r}")
            choices = meta[k]["choices"]
            if choices and v not in choices:
                shown = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
                raise ConfigError(f"{where}: {k} must be {shown}, got {v!r}")
            if meta[k]["items"]:
                _check_items(meta[k]["items"], k, v, where)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """The settings of a resolved table (keys not fields of ``cls`` are ignored)."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain values."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class TrainSettings(_Settings):
    """How a model is trained (a task's ``train_defaults`` replace these defaults)."""

    section: ClassVar[str] = "train"

    epochs: int = setting(10, "training epochs for every task (one task: --set)", flag="--epochs")
    batch_size: int = setting(100, "training mini-batch size for every task", flag="--batch-size")
    lr: float = setting(1e-3, "Adam learning rate for every task", flag="--lr")
    variance_lr: float | None = setting(
        None,
        "Adam learning rate of the posterior's log-variances (absent: lr)",
        flag="--variance-lr",
        when_set=True,
    )


@dataclass(frozen=True)
class DataSettings(_Settings):
    """Seeded class-stratified subsets of a task's data (None: all)."""

    section: ClassVar[str] = "data"

    n_train: int | None = setting(None, "training subset size for every task", flag="--n-train")
    n_test: int | None = setting(None, "test subset size for every task", flag="--n-test")
    n_ood: int | None = setting(None, "subset size of every OOD set", flag="--n-ood")


@dataclass(frozen=True)
class EvalSettings(_Settings):
    """How a trained model is evaluated (the paper's: 100 predictive samples)."""

    section: ClassVar[str] = "eval"

    test_samples: int = setting(100, "posterior samples of the predictive", flag="--test-samples")
    fgsm: str = setting(
        "default",
        "which methods get FGSM curves: default (not ensembles, as the paper), all or none",
        flag="--fgsm",
        choices=FGSM_MODES,
    )
    fgsm_samples: int = setting(100, "posterior samples in the FGSM attack", flag="--fgsm-samples")
    fgsm_n: int | None = setting(
        None, "test points attacked by FGSM (default: all)", flag="--fgsm-n"
    )
    batch_size: int = setting(500, "evaluation batch")
    # Dataset shift (uqbench.shift); absent = not evaluated.
    shift_n: int | None = setting(
        None, "test points shifted (seeded, stratified); absent: all", when_set=True
    )
    rotations: list[float] | None = setting(
        None, "rotation angles in degrees", items="rotations", when_set=True
    )
    corruptions: list[str] | None = setting(
        None, "corruption names (uqbench.shift.CORRUPTIONS)", items="corruptions", when_set=True
    )
    severities: list[int] | None = setting(
        None, "corruption severities of 1..5; absent: all five", items="severities", when_set=True
    )

    def fgsm_for(self, model: Any, task: Any) -> bool:
        """Whether ``model`` gets FGSM curves on ``task`` under :attr:`fgsm`."""
        wanted = {"default": not model.skip_fgsm_by_default, "all": True, "none": False}
        return wanted[self.fgsm] and bool(task.fgsm_eps)

    def shift(self) -> dict[str, Any]:
        """The dataset-shift settings as :func:`uqbench.evaluate.evaluate_shift` reads them."""
        return {
            "n": self.shift_n,
            "rotations": self.rotations or [],
            "corruptions": self.corruptions or [],
            "severities": self.severities,
        }


SETTINGS: tuple[type[_Settings], ...] = (TrainSettings, DataSettings, EvalSettings)


def _check_items(kind: str, key: str, value: list, where: str) -> None:
    """Refuse a list setting (``rotations``, ``corruptions``, ``severities``) with bad items."""
    from uqbench.shift import CORRUPTIONS, SEVERITIES

    for item in value:
        if kind == "rotations":
            ok = isinstance(item, int | float) and not isinstance(item, bool)
            want = "angles in degrees (numbers)"
        elif kind == "corruptions":
            ok = item in CORRUPTIONS
            want = f"corruption names ({', '.join(CORRUPTIONS)})"
        else:
            ok = item in SEVERITIES and not isinstance(item, bool)
            want = f"severities in {list(SEVERITIES)}"
        if not ok:
            raise ConfigError(f"{where}: {key} must be a list of {want}, got {item!r}")
