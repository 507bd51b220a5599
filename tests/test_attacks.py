"""FGSM and the evaluation functions, on tiny deterministic and stochastic stand-in models."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from torch import nn

from uqbench.architectures import ModelSpec, PlainLayers
from uqbench.attacks import fgsm
from uqbench.data.subset import stratified_subset
from uqbench.evaluate import evaluate_classification, evaluate_regression
from uqbench.posterior import Posterior
from uqbench.tasks.base import Split, Task, TaskData

D, K = 12, 3


class TinyMLP(Posterior):
    """A deterministic point estimate: the mlp architecture with plain layers."""

    deterministic = True

    def layer_factory(self) -> PlainLayers:
        return PlainLayers()

    def diagnostics(self) -> dict[str, float]:
        return {"n_params": float(sum(p.numel() for p in self.parameters()))}


class NoisyMLP(TinyMLP):
    """Stochastic stand-in: Gaussian noise on the outputs in either mode, like MC dropout."""

    deterministic = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out + 0.5 * torch.randn_like(out)


class TinyTask(Task):
    name = "tiny"
    kind = "classification"
    n_outputs = K
    fgsm_eps: ClassVar[tuple[float, ...]] = (0.0, 0.05, 0.2)


def _spec(n_data: int = 60, kind: str = "classification", **kw) -> ModelSpec:
    out = K if kind == "classification" else 1
    d = D if kind == "classification" else 1
    return ModelSpec("mlp", (d,), out, kind, n_data, {"hidden": 16}, **kw)


def _data(n: int = 60, seed: int = 0) -> TaskData:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=gen)
    y = torch.arange(n) % K
    ood = {"noise": torch.rand(40, D, generator=gen)}
    return TaskData(train=Split(x, y), test=Split(x.clone(), y.clone()), ood=ood)


def _model(cls: type[Posterior] = TinyMLP) -> Posterior:
    torch.manual_seed(0)
    return cls(_spec())


def test_fgsm_eps_zero_returns_input() -> None:
    model, data = _model(), _data()
    x_adv = fgsm(model, data.test.x, data.test.y, 0.0, 4)
    assert torch.equal(x_adv, data.test.x)


def test_fgsm_moves_each_pixel_by_eps_unless_clipped() -> None:
    model, data = _model(), _data()
    x, y, eps = data.test.x, data.test.y, 0.1
    x_adv = fgsm(model, x, y, eps, 3)
    inside = (x - eps >= 0) & (x + eps <= 1)
    assert inside.float().mean() > 0.5  # the check below covers most pixels
    assert torch.allclose((x_adv - x).abs()[inside], torch.full_like(x[inside], eps), atol=1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # Direction: the sign of the gradient of the NLL, computed independently here.
    xr = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(xr), y, reduction="sum").backward()
    step = torch.sign(x_adv - x)[inside]
    assert torch.equal(step, torch.sign(xr.grad)[inside])
    # The attack increases the loss.
    with torch.no_grad():
        before = nn.functional.cross_entropy(model(x), y)
        after = nn.functional.cross_entropy(model(x_adv), y)
    assert after > before


def test_fgsm_leaves_no_parameter_grads_and_keeps_mode() -> None:
    for train_mode in (False, True):
        model = _model(NoisyMLP)
        model.train(train_mode)
        data = _data()
        fgsm(model, data.test.x, data.test.y, 0.1, 5)
        assert all(p.grad is None for p in model.parameters())
        assert model.training is train_mode
        assert all(m.training is train_mode for m in model.modules())


def test_stratified_subset_keeps_class_shares() -> None:
    y = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_subset(y, 20, seed=3)
    counts = torch.bincount(y[idx], minlength=3).tolist()
    assert len(set(idx.tolist())) == 20 and counts == [12, 6, 2]
    assert torch.equal(idx, stratified_subset(y, 20, seed=3))
    assert len(stratified_subset(y, None)) == 100


def test_saved_outputs_say_where_each_example_lies_when_the_data_does() -> None:
    """``Split.index`` and ``TaskData.ood_index`` reach the saved outputs (``test.index``,
    ``ood.<set>.index``): what pairs seeds that scored different subsets of one pool."""
    model, data = _model(), _data()
    data.test.index = torch.arange(100, 160)
    data.ood_index["noise"] = torch.arange(40) * 3
    keep: dict[str, np.ndarray] = {}
    kw = dict(test_samples=1, fgsm=True, fgsm_samples=1, fgsm_n=10, progress=False)
    evaluate_classification(model, TinyTask(), data, keep=keep, **kw)
    assert keep["test.index"].tolist() == list(range(100, 160))
    assert keep["ood.noise.index"].tolist() == list(range(0, 120, 3))
    bare: dict[str, np.ndarray] = {}
    evaluate_classification(model, TinyTask(), _data(), keep=bare, **kw)
    assert "test.index" not in bare and "ood.noise.index" not in bare


def test_evaluate_classification_deterministic_model() -> None:
    model, data, task = _model(), _data(), TinyTask()
    model.eval()
    res = evaluate_classification(
        model,
        task,
        data,
        test_samples=3,
        fgsm=True,
        fgsm_samples=2,
        fgsm_n=None,
        batch_size=7,
        progress=False,
    )
    with torch.no_grad():
        probs = torch.softmax(model(data.test.x).double(), -1).numpy()
        p_ood = torch.softmax(model(data.ood["noise"]).double(), -1).numpy()
    y = data.test.y.numpy()
    err = 100 * np.mean(probs.argmax(1) != y)
    assert res["error_pct"] == pytest.approx(err)
    assert res["nll"] == pytest.approx(-np.mean(np.log(probs[np.arange(len(y)), y])), rel=1e-5)
    h_in = -(probs * np.log(probs)).sum(1)
    h_ood = -(p_ood * np.log(p_ood)).sum(1)
    o = res["ood"]["noise"]
    labels = np.r_[np.zeros(len(h_in)), np.ones(len(h_ood))]
    assert o["auroc"] == pytest.approx(roc_auc_score(labels, np.r_[h_in, h_ood]), abs=1e-4)
    assert o["median_entropy"] == pytest.approx(np.median(h_ood), rel=1e-5)
    assert res["test_entropy"]["mean"] == pytest.approx(h_in.mean(), rel=1e-5)
    assert len(o["entropy_ecdf"]["grid"]) == 101
    assert o["entropy_ecdf"]["grid"][-1] == pytest.approx(math.log(K))
    assert len(res["reliability"]["count"]) == 15 and sum(res["reliability"]["count"]) == 60
    # FGSM at eps 0 is the clean accuracy; the fraction is in [0, 1].
    assert res["fgsm"]["eps"] == [0.0, 0.05, 0.2]
    assert res["fgsm"]["accuracy"][0] == pytest.approx(1 - err / 100)
    assert res["fgsm"]["mean_entropy"][0] == pytest.approx(h_in.mean(), rel=1e-5)
    assert res["fgsm"]["accuracy"][-1] <= res["fgsm"]["accuracy"][0]
    assert res["diagnostics"]["n_params"] > 0
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_perturbation_and_budget_share_match_an_independent_attack() -> None:
    """Per eps, the mean |x_adv - x| of the CE-gradient sign step clamped to [0, 1], computed
    here by hand; the budget share is below 1 with clipping and 1 without (no input of this
    model has a zero gradient)."""
    model, data, task = _model(), _data(), TinyTask()
    model.eval()
    x, y = data.test.x, data.test.y
    xr = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(xr), y, reduction="sum").backward()
    step = torch.sign(xr.grad)
    expected = [float(((x + e * step).clamp(0, 1) - x).abs().mean()) for e in task.fgsm_eps]
    kw = dict(test_samples=1, fgsm=True, fgsm_samples=1, fgsm_n=None, progress=False)
    res = evaluate_classification(model, task, data, **kw)["fgsm"]
    assert res["perturbation"] == pytest.approx(expected, abs=1e-6)
    assert res["perturbation"][0] == 0.0
    share = sum(expected) / sum(task.fgsm_eps)
    assert res["budget_share"] == pytest.approx(share, abs=1e-6) and share < 0.99

    class Unbounded(TinyTask):
        input_range = (-10.0, 10.0)  # no pixel is clipped

    res = evaluate_classification(model, Unbounded(), data, **kw)["fgsm"]
    assert res["budget_share"] == pytest.approx(1.0, abs=1e-6)


def test_evaluate_classification_no_fgsm_and_subset() -> None:
    model, data, task = _model(NoisyMLP), _data(), TinyTask()
    res = evaluate_classification(
        model, task, data, test_samples=4, fgsm=False, fgsm_samples=2, fgsm_n=10, progress=False
    )
    assert res["fgsm"] is None
    res = evaluate_classification(
        model, task, data, test_samples=4, fgsm=True, fgsm_samples=2, fgsm_n=9, progress=False
    )
    assert len(res["fgsm"]["accuracy"]) == 3
    # 9 points: every accuracy is a multiple of 1/9.
    for a in res["fgsm"]["accuracy"]:
        assert a * 9 == pytest.approx(round(a * 9), abs=1e-9)


def test_evaluate_regression_matches_gaussian_closed_form() -> None:
    torch.manual_seed(0)
    model = TinyMLP(_spec(20, "regression", noise_std=3.0)).eval()
    gen = torch.Generator().manual_seed(1)
    x_in = torch.rand(30, 1, generator=gen) * 8 - 4
    x_out = torch.rand(10, 1, generator=gen) * 2 + 4
    data = TaskData(
        train=Split(torch.linspace(-4, 4, 20).reshape(-1, 1), torch.randn(20, generator=gen)),
        test=Split(x_in, x_in[:, 0] ** 3),
        extra={
            "grid": torch.linspace(-6, 6, 50).reshape(-1, 1),
            "test_inside": Split(x_in, x_in[:, 0] ** 3),
            "test_outside": Split(x_out, (x_out**3).reshape(-1, 1)),
        },
    )
    res = evaluate_regression(model, TinyTask(), data, test_samples=5, progress=False)
    with torch.no_grad():
        m_in = model(x_in)[:, 0].double().numpy()
        m_out = model(x_out)[:, 0].double().numpy()
    y_in, y_out = (x_in[:, 0] ** 3).double().numpy(), (x_out[:, 0] ** 3).double().numpy()
    assert res["loglik_inside"] == pytest.approx(norm.logpdf(y_in, m_in, 3.0).mean(), rel=1e-5)
    assert res["loglik_outside"] == pytest.approx(norm.logpdf(y_out, m_out, 3.0).mean(), rel=1e-5)
    assert res["coverage_3std_outside"] == pytest.approx(np.mean(np.abs(y_out - m_out) <= 9))
    all_y, all_m = np.r_[y_in, y_out], np.r_[m_in, m_out]
    assert res["rmse"] == pytest.approx(np.sqrt(np.mean((all_y - all_m) ** 2)), rel=1e-5)
    assert len(res["bands"]["x"]) == 50 and res["bands"]["std"] == pytest.approx([3.0] * 50)
    assert len(res["train_points"]["x"]) == 20
