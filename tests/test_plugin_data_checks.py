"""A plug-in task's or OOD set's mistakes are one PluginError naming it, before any training.

Each case is a mistake a plug-in author makes (labels as floats, inputs as float64, a split
left empty, a ``load`` that raises): without the checks each ended in a torch error from
deep inside training or evaluation, or worse, in a silently wrong record.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TinyBlobs

from uqbench.data import DataSource
from uqbench.errors import PluginError
from uqbench.ood import OODData, OODSet
from uqbench.registry import OOD_SETS
from uqbench.tasks.base import Split, TaskData


def _task_loading(change):
    """TinyBlobs whose ``load`` result ``change`` edits (returns what ``load`` returns)."""

    class Changed(TinyBlobs):
        name = "changed-blobs"

        def load(self, source, **kw):
            return change(super().load(source, **kw))

    return Changed()


def _set(data, split, **kw):
    old = getattr(data, split)
    setattr(data, split, Split(kw.get("x", old.x), kw.get("y", old.y), old.index))
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: _set(d, "train", x=d.train.x.double()),
            "train split: inputs must be a "
            "non-empty float32 tensor [N, 2] (the task's in_shape (2,)), got torch.float64",
        ),
        (lambda d: _set(d, "test", x=d.test.x[:, :1]), "test split: inputs must be"),
        (lambda d: _set(d, "test", x=d.test.x[:0], y=d.test.y[:0]), "got torch.float32 [0, 2]"),
        (
            lambda d: _set(d, "train", y=d.train.y.float()),
            "train split: labels must be an int64 "
            "tensor [200] of classes in [0, 2), got torch.float32 [200] with values 0..1",
        ),
        (lambda d: _set(d, "train", y=d.train.y.int()), "got torch.int32"),
        (
            lambda d: _set(d, "test", y=d.test.y + 1),
            "in [0, 2), got torch.int64 [100] with values 1..2",
        ),
        (lambda d: _set(d, "test", y=d.test.y[:, None]), "got torch.int64 [100, 1]"),
        (lambda d: _set(d, "test", y=d.test.y[:50]), "labels must be an int64 tensor [100]"),
        (lambda d: {"train": d.train}, "load() must return a TaskData, got dict"),
        (
            lambda d: TaskData(d.train, d.test, {"far": d.ood["far"].double()}),
            "its OOD set 'far': inputs must be",
        ),
        (
            lambda d: TaskData(d.train, d.test, d.ood, ood_labels={"far": torch.zeros(3).long()}),
            "the labels of its OOD set 'far': labels must be an int64 tensor [100]",
        ),
        (
            lambda d: TaskData(d.train, d.test, d.ood, ood_labels={"near": torch.zeros(3).long()}),
            "its ood_labels names 'near', which is not one of its OOD sets (['far'])",
        ),
    ],
)
def test_a_plug_in_tasks_bad_data_is_named(change, message) -> None:
    task = _task_loading(change)
    with pytest.raises(PluginError) as err:
        task.load_with_ood(DataSource())
    assert str(err.value).startswith("task 'changed-blobs': ")
    assert message in str(err.value)


def test_a_plug_in_tasks_own_failure_is_named_in_one_line() -> None:
    class Unfinished(TinyBlobs):
        name = "unfinished"

        def load(self, source, **kw):
            raise NotImplementedError("load is still to be written")

    with pytest.raises(PluginError) as err:
        Unfinished().load_with_ood(DataSource())
    assert str(err.value) == (
        "task 'unfinished': load() raised NotImplementedError: load is still to be written"
    )


def test_regression_targets_must_be_float32_columns() -> None:
    from uqbench.registry import TASKS

    toy = TASKS.get("toy-cubic")()
    data = toy.load_with_ood(DataSource(), n_train=20, n_test=10)  # the built-in passes
    assert data.train.y.shape == (20, 1)
    one = toy.load_with_ood(DataSource(), n_train=20, n_test=1)  # a held-out half may be empty
    assert len(one.extra["test_inside"]) == 1 and len(one.extra["test_outside"]) == 0

    class Flat(type(toy)):
        name = "flat-targets"

        def load(self, source, **kw):
            d = super().load(source, **kw)
            return _set(d, "train", y=d.train.y[:, 0])

    with pytest.raises(PluginError, match=r"regression targets must be a float32 tensor \[20, 1\]"):
        Flat().load_with_ood(DataSource(), n_train=20, n_test=10)


def _ood_set(make):
    class Probe(OODSet):
        def load(self, source, *, in_shape, n, seed, stream):
            return make(n)

    return Probe


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda n: OODData(torch.zeros(n, 2, dtype=torch.float64)), "got torch.float64 [7, 2]"),
        (lambda n: OODData(torch.zeros(0, 2)), "inputs must be a non-empty float32 tensor"),
        (lambda n: OODData(torch.zeros(n + 3, 2)), "asked for at most n=7 inputs, gave 10"),
        (
            lambda n: OODData(torch.zeros(n, 2), labels=torch.zeros(1).long()),
            "its labels: labels must be an int64 tensor [7]",
        ),
        (lambda n: OODData(torch.zeros(n, 2), labels=torch.zeros(n)), "got torch.float32 [7]"),
        (lambda n: 1 / 0, "load() raised ZeroDivisionError: division by zero"),
    ],
)
def test_a_plug_in_ood_sets_mistakes_are_named(make, message) -> None:
    state = OOD_SETS.snapshot()
    OOD_SETS.add("probe-bad", _ood_set(make))
    try:
        with pytest.raises(PluginError) as err:
            TinyBlobs().load_with_ood(DataSource(), ood=["probe-bad"], n_ood=7)
    finally:
        OOD_SETS.restore(state)
    assert str(err.value).startswith("OOD set 'probe-bad'")
    assert message in str(err.value)


class Plane(TinyBlobs):
    """A 3-input regression plug-in: y = x1 + x2 + x3 + noise, held out inside and outside."""

    name = "plane"
    display_name = "Plane"
    kind = "regression"
    in_shape = (3,)
    n_outputs = 1
    noise_std = 0.1
    method_defaults = {}
    fgsm_eps = ()
    ood_sets = ()
    train_defaults = {"epochs": 2, "batch_size": 50, "lr": 1e-2}

    def load(self, source, *, n_train=None, n_test=None, n_ood=None, seed=0) -> TaskData:
        g = torch.Generator().manual_seed(seed)

        def split(n: int, scale: float) -> Split:
            x = (torch.rand(n, 3, generator=g) * 2 - 1) * scale
            return Split(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g))

        inside, outside = split(20, 1.0), split(20, 3.0)
        both = Split(torch.cat([inside.x, outside.x]), torch.cat([inside.y, outside.y]))
        extra = {"test_inside": inside, "test_outside": outside}
        return TaskData(split(100, 1.0), both, extra=extra)


def _run_and_report(tmp_path, task: type) -> tuple[dict, str]:
    """One l2 run of the regression plug-in ``task`` (registered for the call), its record
    and its report's Markdown."""
    from helpers import tiny_runner

    from uqbench.registry import TASKS
    from uqbench.report import write_report

    state = TASKS.snapshot()
    TASKS.add(task.name, task)
    try:
        suite = f'name = "p"\nmethods = ["l2"]\ntasks = ["{task.name}"]\nseeds = [0]\n'
        runner = tiny_runner(tmp_path, suite + "[eval]\ntest_samples = 2\n")
        results = runner.run()
        write_report(results, runner.out)
    finally:
        TASKS.restore(state)
    (record,) = results["runs"]
    assert record["status"] == "ok", record.get("error")
    return record, (runner.out / "report.md").read_text()


def test_a_regression_plug_in_with_several_inputs_runs_and_reports(tmp_path) -> None:
    """Scored on its held-out sets inside and outside the training range; no bands (they
    need a 1-D input), so no bands figure, and nothing of the toy task's x^3."""
    record, report = _run_and_report(tmp_path, Plane)
    metrics = record["metrics"]
    assert {"rmse", "loglik_inside", "loglik_outside"} <= set(metrics)
    assert "bands" not in metrics and "train_points" not in metrics
    assert "Plane" in report and "true x³" not in report
    assert "Plane (paper Figure 6)" not in report

    class NoOutside(Plane):
        def load(self, source, **kw):
            data = super().load(source, **kw)
            del data.extra["test_outside"]
            return data

    with pytest.raises(PluginError, match=r"its extra\['test_outside'\] must be a "):
        NoOutside().load_with_ood(DataSource())


class Line(Plane):
    """A 1-input regression plug-in (y = 2x + noise), with a plotting grid: bands drawn, but
    neither the toy task's x^3 nor its Figure 6 caption."""

    name = "line"
    display_name = "Line"
    in_shape = (1,)

    def load(self, source, *, n_train=None, n_test=None, n_ood=None, seed=0) -> TaskData:
        g = torch.Generator().manual_seed(seed)

        def split(n: int, lo: float, hi: float) -> Split:
            x = lo + (hi - lo) * torch.rand(n, 1, generator=g)
            return Split(x, 2 * x + 0.1 * torch.randn(n, 1, generator=g))

        inside, outside = split(20, -1.0, 1.0), split(20, 1.0, 2.0)
        both = Split(torch.cat([inside.x, outside.x]), torch.cat([inside.y, outside.y]))
        grid = torch.linspace(-2, 2, 41).reshape(-1, 1)
        extra = {"test_inside": inside, "test_outside": outside, "grid": grid}
        return TaskData(split(100, -1.0, 1.0), both, extra=extra)


def test_a_one_dimensional_regression_plug_in_gets_bands_without_the_toy_tasks_truth(tmp_path):
    record, report = _run_and_report(tmp_path, Line)
    assert len(record["metrics"]["bands"]["x"]) == 41
    # the recorded display name (a plug-in's was shown by its registered name before)
    caption = next(ln for ln in report.splitlines() if ln.startswith("*Line: predictive mean"))
    assert "true x³" not in caption and "Figure 6" not in caption
    assert "toy-bands-line.png" in report
