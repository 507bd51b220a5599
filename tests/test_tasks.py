"""The three tasks: stratified seeded subsetting, preprocessing, class mapping, toy data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import uqbench
from uqbench import ood as ood_mod
from uqbench.data import DataSource, RawData, stratified_indices
from uqbench.data.subset import class_quotas
from uqbench.errors import ConfigError
from uqbench.tasks import cifar5 as cifar5_mod
from uqbench.tasks import mnist as mnist_mod

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# -- subsetting ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "counts,n,want",
    [
        ([50, 30, 20], 10, [5, 3, 2]),  # exact proportions
        ([3, 3, 3], 4, [2, 1, 1]),  # equal remainders: lowest class first
        ([10, 1], 5, [5, 0]),  # 4.55 / 0.45: the larger remainder wins
        ([7, 5, 3], 6, [3, 2, 1]),  # 2.8, 2.0, 1.2 -> floors 2, 2, 1 + one to class 0
    ],
)
def test_class_quotas_largest_remainder(counts, n, want) -> None:
    assert class_quotas(np.array(counts), n).tolist() == want


def test_stratified_indices_proportional_and_deterministic() -> None:
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat(np.arange(4), [400, 300, 200, 100]))
    idx = stratified_indices(labels, 100, seed=3, stream="train")
    assert len(idx) == 100 and len(np.unique(idx)) == 100
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < len(labels)
    assert np.bincount(labels[idx], minlength=4).tolist() == [40, 30, 20, 10]
    np.testing.assert_array_equal(idx, stratified_indices(labels, 100, seed=3, stream="train"))
    assert not np.array_equal(idx, stratified_indices(labels, 100, seed=4, stream="train"))
    assert not np.array_equal(idx, stratified_indices(labels, 100, seed=3, stream="test"))
    # Torch labels work the same.
    np.testing.assert_array_equal(
        idx, stratified_indices(torch.from_numpy(labels), 100, seed=3, stream="train")
    )


def test_stratified_indices_all_and_bad_sizes() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(stratified_indices(labels, None, seed=0), np.arange(6))
    np.testing.assert_array_equal(stratified_indices(labels, 100, seed=0), np.arange(6))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError):
            stratified_indices(labels, bad, seed=0)


def test_stratified_draw_is_uniform_within_class() -> None:
    # Over many seeds each member of a class is picked about equally often (n_c / N_c).
    labels = np.repeat([0, 1], [20, 10])
    hits = np.zeros(30)
    for seed in range(2000):
        hits[stratified_indices(labels, 6, seed=seed)] += 1
    np.testing.assert_allclose(hits[:20] / 2000, 4 / 20, atol=0.04)
    np.testing.assert_allclose(hits[20:] / 2000, 2 / 10, atol=0.05)


# -- MNIST and CIFAR-5 on in-memory data (the loaders are replaced) -------------------
def fake_mnist(n_per_class: int = 12) -> RawData:
    y = np.tile(np.arange(10), n_per_class)
    # Each image's first pixel encodes its index so subsets can be traced back.
    x = np.zeros((len(y), 28, 28), dtype=np.uint8)
    x[:, 0, 0] = np.arange(len(y)) % 256
    x[:, 1, :] = 255
    files = [{"dataset": "mnist", "file": "f", "path": "p", "md5": "a", "expected_md5": "a"}]
    files[0]["verified"] = True
    return RawData("mnist", {"train_x": x, "train_y": y, "test_x": x, "test_y": y}, files, Path())


def fake_notmnist() -> RawData:
    y = np.repeat(np.arange(10), [5, 7, 7, 7, 7, 5, 7, 7, 7, 7])
    x = np.full((len(y), 28, 28), 51, dtype=np.uint8)
    files = [{"dataset": "notmnist", "file": "n", "path": "p", "md5": "b", "expected_md5": "b"}]
    files[0]["verified"] = True
    return RawData("notmnist", {"x": x, "y": y}, files, Path(), notes=["2 unreadable"])


def test_mnist_task_preprocessing_and_subsets(monkeypatch) -> None:
    monkeypatch.setattr(mnist_mod, "load_mnist", lambda src: fake_mnist())
    monkeypatch.setattr(ood_mod, "load_notmnist", lambda src: fake_notmnist())
    task = uqbench.get_task("mnist")()
    assert task.load(DataSource(root=None, download=False)).ood == {}  # OOD: registered sets
    full = task.load_with_ood(DataSource(root=None, download=False))
    assert full.train.x.shape == (120, 1, 28, 28) and full.train.x.dtype == torch.float32
    assert full.train.y.dtype == torch.int64
    assert torch.all(full.train.x[:, 0, 1, :] == 1.0)  # 255 -> 1.0
    assert torch.allclose(full.train.x[:, 0, 0, 0], torch.arange(120.0) / 255)
    assert full.ood["notmnist"].shape == (66, 1, 28, 28)
    assert torch.allclose(full.ood["notmnist"], torch.tensor(51 / 255))  # same scaling
    assert full.verified and full.notes == ["2 unreadable"] and len(full.files) == 2

    sub = task.load_with_ood(DataSource(), n_train=50, n_test=20, n_ood=33, seed=5)
    assert torch.bincount(sub.train.y, minlength=10).tolist() == [5] * 10
    assert torch.bincount(sub.test.y, minlength=10).tolist() == [2] * 10
    # The subset keeps each image with its own label.
    src_index = (sub.train.x[:, 0, 0, 0] * 255).round().long()
    assert torch.equal(sub.train.y, src_index % 10)
    assert torch.equal(sub.train.index, src_index)  # where each image lies in the file
    assert len(sub.ood_index["notmnist"]) == 33
    assert sub.ood["notmnist"].shape[0] == 33
    again = task.load_with_ood(DataSource(), n_train=50, n_test=20, n_ood=33, seed=5)
    assert torch.equal(again.train.x, sub.train.x) and torch.equal(again.test.y, sub.test.y)


def _mnist_loading_also(monkeypatch, change):
    """The MNIST task on fake files, whose ``load`` then applies ``change`` to its data (as a
    plug-in task's ``load`` might have made it)."""
    monkeypatch.setattr(mnist_mod, "load_mnist", lambda src: fake_mnist())
    monkeypatch.setattr(ood_mod, "load_notmnist", lambda src: fake_notmnist())
    task = uqbench.get_task("mnist")()
    original = task.load

    def load(*args, **kw):
        data = original(*args, **kw)
        change(data)
        return data

    monkeypatch.setattr(task, "load", load)
    return task


@pytest.mark.parametrize(
    "index",
    [torch.arange(19), torch.arange(20.0), -torch.arange(20), torch.arange(20).reshape(4, 5)],
)
def test_positions_that_cannot_say_where_inputs_lie_are_a_plugin_error(monkeypatch, index):
    from uqbench.errors import PluginError
    from uqbench.tasks.base import Split

    def change(data):
        data.test = Split(data.test.x, data.test.y, index)

    task = _mnist_loading_also(monkeypatch, change)
    with pytest.raises(PluginError, match="task 'mnist': its test split: index must be"):
        task.load_with_ood(DataSource(), n_test=20)


@pytest.mark.parametrize(
    ("own", "index", "error"),
    [
        ("extra", torch.arange(7), None),
        ("extra", torch.arange(6), "its OOD set 'extra': index must be"),
        ("extra", torch.arange(7.0), "its OOD set 'extra': index must be"),
        ("other", torch.arange(7), "its ood_index names 'other', which is not one of"),
    ],
)
def test_positions_of_a_tasks_own_ood_inputs_are_checked(monkeypatch, own, index, error):
    """A task's ``load`` may bring OOD inputs of its own with positions; they are held to the
    same rule as a split's and a registered OOD set's."""
    from uqbench.errors import PluginError

    def change(data):
        data.ood["extra"] = torch.zeros(7, 1, 28, 28)
        data.ood_index[own] = index

    task = _mnist_loading_also(monkeypatch, change)
    if error is None:
        data = task.load_with_ood(DataSource(), n_test=20)
        assert torch.equal(data.ood_index["extra"], index) and "notmnist" in data.ood_index
    else:
        with pytest.raises(PluginError, match=error):
            task.load_with_ood(DataSource(), n_test=20)


def test_notmnist_ood_subset_stratified_by_letter(monkeypatch) -> None:
    monkeypatch.setattr(mnist_mod, "load_mnist", lambda src: fake_mnist())
    notm = fake_notmnist()
    notm.arrays["x"][:, 0, 0] = notm.arrays["y"]  # letter index in the first pixel
    monkeypatch.setattr(ood_mod, "load_notmnist", lambda src: notm)
    data = uqbench.get_task("mnist")().load_with_ood(DataSource(), n_ood=33, seed=0)
    letters = (data.ood["notmnist"][:, 0, 0, 0] * 255).round().long()
    # 33 of 66 with counts 5/7: exactly half of each letter, remainders to the 5s.
    want = class_quotas(np.bincount(notm.arrays["y"]), 33).tolist()
    assert torch.bincount(letters, minlength=10).tolist() == want


def fake_cifar(label_names: list[str]) -> RawData:
    def split(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.tile(np.arange(10), n_per_class)
        x = np.zeros((len(y), 3, 32, 32), dtype=np.uint8)
        x[:, 0] = (y * 20)[:, None, None]  # red channel encodes the CIFAR-10 label
        x[:, 2] = 255
        return x, y

    tx, ty = split(8)
    vx, vy = split(4)
    arrays = {"train_x": tx, "train_y": ty, "test_x": vx, "test_y": vy}
    files = [
        {
            "dataset": "cifar10",
            "file": "cifar-10-python.tar.gz",
            "path": "p",
            "md5": "x",
            "expected_md5": "y",
            "verified": False,
        }
    ]
    return RawData(
        "cifar10", arrays, files, Path(), notes=["UNVERIFIED"], info={"label_names": label_names}
    )


@pytest.mark.parametrize("permuted", [False, True])
def test_cifar5_classes_and_hidden_set(monkeypatch, permuted: bool) -> None:
    names = NAMES[::-1] if permuted else NAMES
    monkeypatch.setattr(cifar5_mod, "load_cifar10", lambda src: fake_cifar(names))
    monkeypatch.setattr(ood_mod, "load_cifar10", lambda src: fake_cifar(names))
    task = uqbench.get_task("cifar5")()
    data = task.load_with_ood(DataSource())
    assert data.train.x.shape == (40, 3, 32, 32) and data.test.x.shape == (20, 3, 32, 32)
    assert data.ood["cifar5-hidden"].shape == (20, 3, 32, 32)
    assert torch.all(data.train.x[:, 2] == 1.0)
    # Recover each image's CIFAR-10 class name from its red channel.
    for split in (data.train, data.test):
        orig = (split.x[:, 0, 0, 0] * 255 / 20).round().long()
        got = [names[i] for i in orig.tolist()]
        assert got == [task.class_names[k] for k in split.y.tolist()]
        assert set(got) == {"airplane", "automobile", "bird", "cat", "deer"}
    hidden = (data.ood["cifar5-hidden"][:, 0, 0, 0] * 255 / 20).round().long()
    assert {names[i] for i in hidden.tolist()} == {"dog", "frog", "horse", "ship", "truck"}
    assert not data.verified and data.notes == ["UNVERIFIED"]

    sub = task.load_with_ood(DataSource(), n_train=10, n_test=5, n_ood=10, seed=2)
    assert torch.bincount(sub.train.y, minlength=5).tolist() == [2] * 5
    assert torch.bincount(sub.test.y, minlength=5).tolist() == [1] * 5
    hidden = (sub.ood["cifar5-hidden"][:, 0, 0, 0] * 255 / 20).round().long()
    assert sorted(torch.bincount(hidden, minlength=10)[hidden.unique()].tolist()) == [2] * 5


def test_task_class_settings() -> None:
    m, c, t = (uqbench.get_task(n) for n in ("mnist", "cifar5", "toy-cubic"))
    assert (m.arch, m.in_shape, m.n_outputs) == ("lenet5", (1, 28, 28), 10)
    assert m.method_defaults == {
        "ffg": {"max_std": 0.5},
        "mnf": {"max_std": 0.5},
        "ensemble": {"members": 10, "adv_eps": 0.25},
    }
    assert m.fgsm_eps == (0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
    assert (c.arch, c.in_shape, c.n_outputs) == ("lenet-cifar", (3, 32, 32), 5)
    assert c.method_defaults == {
        "ffg": {"max_std": 0.4},
        "mnf": {"max_std": 0.4},
        "ensemble": {"members": 5, "adv_eps": 0.1},
    }
    assert c.fgsm_eps == (0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1)
    assert (t.kind, t.arch, t.arch_kwargs, t.in_shape, t.n_outputs) == (
        "regression",
        "mlp",
        {"hidden": 100},
        (1,),
        1,
    )
    assert t.noise_std == 3.0 and t.method_defaults == {} and t.fgsm_eps == ()
    assert t.train_defaults == {"epochs": 1000, "batch_size": 20, "lr": 0.01}


# -- toy cubic -------------------------------------------------------------------------
def test_toy_cubic_default_shapes_and_extras() -> None:
    task = uqbench.get_task("toy-cubic")()
    d = task.load(None, seed=0)
    assert d.train.x.shape == (20, 1) and d.train.y.shape == (20, 1)
    assert d.train.x.dtype == torch.float32 and d.files == [] and d.ood == {}
    ins, outs = d.extra["test_inside"], d.extra["test_outside"]
    assert len(ins) == 500 and len(outs) == 500 and len(d.test) == 1000
    assert torch.equal(d.test.x, torch.cat([ins.x, outs.x]))
    assert torch.equal(d.test.y, torch.cat([ins.y, outs.y]))
    assert d.extra["train_range"] == (-4.0, 4.0)
    grid = d.extra["grid"]
    assert grid.shape == (241, 1)
    np.testing.assert_allclose(grid[:, 0].numpy(), np.arange(-120, 121) * 0.05, atol=1e-6)
    spec = task.model_spec(d)
    assert spec.noise_std == 3.0 and spec.n_data == 20 and spec.kind == "regression"
    again = task.load(None, seed=0)
    assert torch.equal(again.train.x, d.train.x) and torch.equal(again.test.y, d.test.y)
    assert not torch.equal(task.load(None, seed=1).train.x, d.train.x)


def test_toy_cubic_matches_its_definition() -> None:
    d = uqbench.get_task("toy-cubic")().load(None, n_train=100_000, n_test=100_000, seed=7)
    x = d.train.x[:, 0].double().numpy()
    resid = d.train.y[:, 0].double().numpy() - x**3
    assert x.min() >= -4 and x.max() <= 4
    assert stats.kstest(x, stats.uniform(loc=-4, scale=8).cdf).pvalue > 1e-3
    # Noise: mean 0, variance 9 (standard error of the variance ~ 9 * sqrt(2 / n) = 0.04).
    assert abs(resid.mean()) < 0.05
    assert abs(resid.var() - 9.0) < 0.2
    assert stats.kstest(resid, stats.norm(scale=3.0).cdf).pvalue > 1e-3
    xo = d.extra["test_outside"].x[:, 0].double().numpy()
    assert np.all((np.abs(xo) > 4) & (np.abs(xo) <= 6))
    assert abs(np.mean(xo > 0) - 0.5) < 0.01
    assert stats.kstest(np.abs(xo), stats.uniform(loc=4, scale=2).cdf).pvalue > 1e-3
    ro = d.extra["test_outside"].y[:, 0].double().numpy() - xo**3
    assert abs(ro.var() - 9.0) < 0.3
    xi = d.extra["test_inside"].x[:, 0].numpy()
    assert xi.min() >= -4 and xi.max() <= 4
