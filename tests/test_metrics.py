"""Metrics against closed forms, hand-computed cases, sklearn and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from uqbench import metrics as M


def test_predictive_is_mean_of_softmax_and_stable() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, 4, generator=gen, dtype=torch.float64) * 3
    expected = torch.softmax(logits, -1).mean(0)
    assert torch.allclose(M.predictive_probs(logits), expected, atol=1e-12)
    # Extreme logits: direct log(mean softmax) underflows to -inf, log space does not.
    big = torch.tensor([[[0.0, -200.0]], [[0.0, -400.0]]], dtype=torch.float64)
    lp = M.predictive_log_probs(big)
    assert torch.isfinite(lp).all()
    # log((e^-200 + e^-400) / 2) ~ -200 - ln 2
    assert lp[0, 1].item() == pytest.approx(-200 - math.log(2), abs=1e-9)


def test_error_nll_brier_hand_case() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25]])
    y = torch.tensor([0, 1, 2])
    assert M.error_pct(probs, y) == pytest.approx(200 / 3)
    assert M.nll(probs.log(), y) == pytest.approx(
        -(math.log(0.7) + math.log(0.3) + math.log(0.25)) / 3, rel=1e-6
    )
    # sum_k (p - onehot)^2 per row, by hand:
    # row 0: .09 + .04 + .01 = .14; row 1: .01 + .49 + .36 = .86; row 2: .25 + .0625 + .5625
    assert M.brier(probs, y) == pytest.approx((0.14 + 0.86 + 0.875) / 3, rel=1e-6)
    # A certain, right predictor scores 0 on both proper scores.
    eye = torch.eye(3)
    assert M.brier(eye, torch.arange(3)) == 0.0
    assert M.error_pct(eye.numpy(), np.arange(3)) == 0.0


def test_ece_and_reliability_hand_case() -> None:
    # Two classes; confidences 0.95 (two right, one wrong), 0.55 (one right), 0.65 (wrong).
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.35, 0.65]])
    y = np.array([0, 0, 0, 0, 0])
    # Bins of width 1/15: 0.95 -> bin 14, 0.55 -> bin 8 ((8/15, 9/15]), 0.65 -> bin 9.
    # ECE = 3/5 |2/3 - .95| + 1/5 |1 - .55| + 1/5 |0 - .65|
    expected = 0.6 * abs(2 / 3 - 0.95) + 0.2 * 0.45 + 0.2 * 0.65
    assert M.ece(probs, y) == pytest.approx(expected, abs=1e-12)
    rel = M.reliability(probs, y)
    assert len(rel["count"]) == 15 and sum(rel["count"]) == 5
    assert rel["count"][14] == 3 and rel["count"][8] == 1 and rel["count"][9] == 1
    assert rel["accuracy"][14] == pytest.approx(2 / 3)
    assert rel["confidence"][8] == pytest.approx(0.55)
    assert rel["confidence"][0] is None and rel["accuracy"][0] is None
    assert rel["bin_lower"][0] == 0.0 and rel["bin_upper"][-1] == 1.0
    # A perfectly calibrated-by-construction case: confidence 1 and always right.
    assert M.ece(np.eye(4), np.arange(4)) == pytest.approx(0.0)


def test_entropy_uniform_and_one_hot() -> None:
    for k in (2, 5, 10):
        h = M.entropy(torch.full((3, k), 1.0 / k))
        assert torch.allclose(h, torch.full((3,), math.log(k), dtype=torch.float64))
    assert M.entropy(torch.eye(4)).abs().max().item() == 0.0  # 0 ln 0 = 0, no NaN
    p = np.array([[0.5, 0.25, 0.25]])
    assert M.entropy(p).item() == pytest.approx(1.5 * math.log(2))


def test_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    s_in = np.round(rng.normal(0, 1, 300), 1)  # rounding makes ties
    s_ood = np.round(rng.normal(0.8, 1, 200), 1)
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[s_in, s_ood])
    assert M.auroc(s_in, s_ood) == pytest.approx(expected, abs=1e-12)
    assert M.auroc(torch.tensor([0.0, 0.1]), torch.tensor([1.0, 2.0])) == 1.0


def test_fpr95_hand_case() -> None:
    ood = np.arange(1, 21, dtype=float)  # 20 OOD scores 1..20: 95% = 19 flagged -> thr = 2
    assert M.fpr95(np.array([1.5, 2.0, 2.5, 3.0]), ood) == pytest.approx(0.75)
    assert M.fpr95(np.array([0.5, 1.9]), ood) == 0.0
    # 10 OOD points: 95% needs all 10 -> thr = min = 1.
    assert M.fpr95(np.array([0.9, 1.0, 5.0]), np.arange(1, 11.0)) == pytest.approx(2 / 3)


def test_entropy_ecdf_monotone_and_ends_at_one() -> None:
    rng = np.random.default_rng(1)
    h = rng.uniform(0, math.log(10), 500)
    h[0] = math.log(10) + 1e-7  # a rounding overshoot still counts at the end
    e = M.entropy_ecdf(h, 10)
    grid, cdf = np.array(e["grid"]), np.array(e["cdf"])
    assert len(grid) == 101 and grid[0] == 0.0 and grid[-1] == pytest.approx(math.log(10))
    assert np.all(np.diff(cdf) >= 0) and cdf[-1] == 1.0
    # Independent check at one grid point.
    assert cdf[50] == pytest.approx(np.mean(h <= grid[50]))
    assert M.median_entropy(h) == pytest.approx(np.median(h))


def test_regression_metrics() -> None:
    y = np.array([0.0, 1.0, -2.0, 10.0])
    mean = np.array([0.5, 1.0, 0.0, 0.0])
    var = np.array([1.0, 4.0, 0.25, 9.0])
    expected = norm.logpdf(y, mean, np.sqrt(var))
    assert np.allclose(M.gaussian_log_density(y, mean, var), expected)
    assert M.mean_log_likelihood(y, mean, var) == pytest.approx(expected.mean())
    # |y - m| <= 3 std: 0.5<=3 yes, 0<=6 yes, 2<=1.5 no, 10<=9 no
    assert M.coverage(y, mean, var) == 0.5
    assert M.rmse(y, mean) == pytest.approx(math.sqrt((0.25 + 0 + 4 + 100) / 4))


def test_regression_predictive_is_sample_mean_and_1_over_s_variance_plus_noise() -> None:
    f = torch.tensor([[1.0, -2.0], [3.0, -2.0], [5.0, -2.0]])  # 3 samples, 2 points
    mean, var = M.regression_predictive(f, noise_std=0.5)
    assert mean.tolist() == [3.0, -2.0]
    # (4 + 0 + 4) / 3 = 8/3 for the first point, 0 for the second; plus 0.25 of noise.
    assert var.tolist() == pytest.approx([8 / 3 + 0.25, 0.25])
    assert M.regression_predictive(f, None)[1].tolist() == pytest.approx([8 / 3, 0.0])
