"""Uncertainty and accuracy metrics, as small pure functions.

Classification metrics take the Monte-Carlo predictive: ``probs`` ``[N, K]`` (rows sum
to one) or its logarithm, and integer labels ``y`` ``[N]``. Score metrics (AUROC,
FPR95, ECDF) take 1-d arrays of per-example scores. Each function says what it
measures and which direction is better. Inputs may be tensors or numpy arrays; the
results are Python floats (or JSON-ready dicts of lists).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor
from torch.nn import functional as F

#: Number of equal-width confidence bins of the ECE and the reliability diagram.
ECE_BINS = 15
#: Number of points of the entropy ECDF grid over [0, ln K].
ECDF_POINTS = 101

ArrayLike = Tensor | np.ndarray


def _as_numpy(a: ArrayLike | list[float]) -> np.ndarray:
    """A float64 numpy copy of ``a`` (tensor on any device, array or list)."""
    if isinstance(a, Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def _as_tensor(a: ArrayLike) -> Tensor:
    """``a`` as a tensor (numpy arrays are converted, tensors kept)."""
    return a if isinstance(a, Tensor) else torch.as_tensor(a)


# -- the Monte-Carlo predictive ---------------------------------------------------------


def predictive_log_probs(logits: Tensor) -> Tensor:
    """Log of the MC predictive ``log mean_s softmax(logits_s)``, ``[S, B, K] -> [B, K]``.

    Computed in log space (``logsumexp_s log_softmax - log S``) so that confident
    samples do not underflow to ``log 0``.
    """
    s = logits.shape[0]
    return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(s)


def predictive_probs(logits: Tensor) -> Tensor:
    """MC predictive ``mean_s softmax(logits_s)``: ``[S, B, K]`` logits -> ``[B, K]`` probs."""
    return predictive_log_probs(logits).exp()


def regression_predictive(f: Tensor, noise_std: float | None) -> tuple[Tensor, Tensor]:
    """Mean and variance of a regression's MC predictive from ``f`` ``[S, B]``, the mean
    functions of S posterior samples: ``mean_s f_s`` and ``var_s f_s`` (the 1/S sample
    variance) plus the fixed likelihood noise ``noise_std ** 2`` (None: 0)."""
    noise_var = float(noise_std or 0.0) ** 2
    return f.mean(0), f.var(0, unbiased=False) + noise_var


# -- accuracy and proper scores ------------------------------------------------------------


def error_pct(probs: ArrayLike, y: ArrayLike) -> float:
    """Test error in percent: share of examples whose arg-max class is wrong. Lower is better."""
    p, t = _as_tensor(probs), _as_tensor(y)
    return float((p.argmax(-1) != t.to(p.device)).double().mean().item() * 100.0)


def nll(log_probs: ArrayLike, y: ArrayLike) -> float:
    """Mean negative log-likelihood ``-mean_i log p(y_i | x_i)`` of the predictive.

    Takes *log* predictive probabilities (see :func:`predictive_log_probs`). Lower is
    better; 0 is a perfect, certain predictor.
    """
    lp, t = _as_tensor(log_probs), _as_tensor(y).long()
    picked = lp.gather(-1, t.to(lp.device).unsqueeze(-1)).squeeze(-1)
    return float(-picked.double().mean().item())


def brier(probs: ArrayLike, y: ArrayLike) -> float:
    """Brier score ``mean_i sum_k (p_ik - 1[y_i = k])^2``, in [0, 2]. Lower is better."""
    p, t = _as_tensor(probs).double(), _as_tensor(y).long()
    onehot = F.one_hot(t.to(p.device), p.shape[-1]).double()
    return float((p - onehot).pow(2).sum(-1).mean().item())


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence for bins ``(b/n, (b+1)/n]`` (0 goes to the first bin)."""
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability(probs: ArrayLike, y: ArrayLike, n_bins: int = ECE_BINS) -> dict[str, list[Any]]:
    """Reliability-diagram data over ``n_bins`` equal-width confidence bins.

    Confidence is the predictive's top probability; bin ``b`` holds confidences in
    ``(b/n, (b+1)/n]``. Returns per-bin ``bin_lower``, ``bin_upper``, mean
    ``confidence``, ``accuracy`` (share of top-class hits; both ``None`` for empty
    bins) and ``count``. A calibrated model has accuracy = confidence in every bin.
    """
    p, t = _as_numpy(probs), _as_numpy(y).astype(np.int64)
    conf = p.max(-1)
    hit = (p.argmax(-1) == t).astype(np.float64)
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(idx, weights=hit, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "bin_lower": [float(e) for e in edges[:-1]],
        "bin_upper": [float(e) for e in edges[1:]],
        "confidence": [float(c / n) if n else None for c, n in zip(conf_sum, count, strict=True)],
        "accuracy": [float(h / n) if n else None for h, n in zip(hit_sum, count, strict=True)],
        "count": [int(n) for n in count],
    }


def ece(probs: ArrayLike, y: ArrayLike, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error ``sum_b (n_b / N) |acc_b - conf_b|`` over equal-width bins.

    Bins as in :func:`reliability`. In [0, 1]; lower is better.
    """
    rel = reliability(probs, y, n_bins)
    n = sum(rel["count"])
    total = 0.0
    for acc, conf, cnt in zip(rel["accuracy"], rel["confidence"], rel["count"], strict=True):
        if cnt:
            total += cnt / n * abs(acc - conf)
    return float(total)


# -- entropy-based uncertainty ------------------------------------------------------------


def entropy(probs: ArrayLike) -> Tensor:
    """Per-example predictive entropy ``-sum_k p_k ln p_k`` in nats (``0 ln 0 = 0``), ``[N]``.

    In [0, ln K]; for out-of-distribution inputs higher is better (the ideal is ln K),
    for confidently right in-distribution inputs lower.
    """
    p = _as_tensor(probs).double()
    return -torch.special.xlogy(p, p).sum(-1)


def median_entropy(entropies: ArrayLike) -> float:
    """Median of per-example entropies (nats); on OOD data higher is better."""
    return float(np.median(_as_numpy(entropies)))


def entropy_ecdf(
    entropies: ArrayLike, n_classes: int, n_points: int = ECDF_POINTS
) -> dict[str, list[float]]:
    """Empirical CDF of entropies on a fixed grid of ``n_points`` over ``[0, ln K]``.

    ``cdf[i]`` is the share of examples with entropy ``<= grid[i]``. Entropies are
    clipped to ``[0, ln K]`` first (rounding can push a uniform predictive a hair past
    ln K), so the CDF ends at 1. On OOD data a lower curve (fewer confident
    predictions) is better.
    """
    h_max = math.log(n_classes)
    grid = np.linspace(0.0, h_max, n_points)
    h = np.sort(np.clip(_as_numpy(entropies), 0.0, h_max))
    cdf = np.searchsorted(h, grid, side="right") / max(len(h), 1)
    cdf[-1] = 1.0 if len(h) else 0.0  # grid[-1] may round below ln K
    return {"grid": [float(g) for g in grid], "cdf": [float(c) for c in cdf]}


def auroc(in_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the ROC curve separating OOD (positive) from in-distribution by a score.

    Computed as the Mann-Whitney statistic ``P(s_ood > s_in) + P(s_ood = s_in) / 2``
    (identical to ``roc_auc_score(is_ood, score)``). In [0, 1]; higher is better, 0.5 is
    chance.
    """
    s_in, s_ood = _as_numpy(in_scores).ravel(), _as_numpy(ood_scores).ravel()
    n_in, n_ood = len(s_in), len(s_ood)
    if n_in == 0 or n_ood == 0:
        raise ValueError("auroc needs at least one in-distribution and one OOD score")
    ranks = rankdata(np.concatenate([s_in, s_ood]))  # average ranks for ties
    u = ranks[n_in:].sum() - n_ood * (n_ood + 1) / 2.0
    return float(u / (n_in * n_ood))


def fpr95(in_scores: ArrayLike, ood_scores: ArrayLike, tpr: float = 0.95) -> float:
    """False-positive rate at 95% true-positive rate, OOD positive, flagged by ``score >= thr``.

    ``thr`` is the largest threshold that still flags at least ``tpr`` of the OOD points;
    the result is the share of in-distribution points with ``score >= thr``. In [0, 1];
    lower is better.
    """
    s_in, s_ood = _as_numpy(in_scores).ravel(), _as_numpy(ood_scores).ravel()
    if len(s_ood) == 0 or len(s_in) == 0:
        raise ValueError("fpr95 needs at least one in-distribution and one OOD score")
    need = math.ceil(tpr * len(s_ood) - 1e-9)  # OOD points that must be flagged
    thr = np.sort(s_ood)[::-1][max(need, 1) - 1]
    return float(np.mean(s_in >= thr))


def fpr95_in(in_scores: ArrayLike, ood_scores: ArrayLike, tpr: float = 0.95) -> float:
    """FPR at 95% TPR as in the OOD literature (Hendrycks & Gimpel 2017, OpenOOD).

    In-distribution is the positive class, detected by a *low* score (entropy): the
    threshold keeps at least ``tpr`` of the in-distribution points, and the result is the
    share of OOD points that pass it too. In [0, 1]; lower is better.
    """
    s_in, s_ood = _as_numpy(in_scores).ravel(), _as_numpy(ood_scores).ravel()
    return fpr95(-s_ood, -s_in, tpr)


# -- regression ------------------------------------------------------------------------


def gaussian_log_density(y: ArrayLike, mean: ArrayLike, var: ArrayLike) -> np.ndarray:
    """Per-point log density ``log N(y; mean, var)`` of a Gaussian predictive. Higher is better."""
    y_, m, v = _as_numpy(y).ravel(), _as_numpy(mean).ravel(), _as_numpy(var).ravel()
    return -0.5 * (np.log(2.0 * math.pi * v) + (y_ - m) ** 2 / v)


def mean_log_likelihood(y: ArrayLike, mean: ArrayLike, var: ArrayLike) -> float:
    """Mean Gaussian predictive log density per point. Higher is better."""
    return float(np.mean(gaussian_log_density(y, mean, var)))


def coverage(y: ArrayLike, mean: ArrayLike, var: ArrayLike, k: float = 3.0) -> float:
    """Share of targets inside ``mean +- k std``; for k = 3 a calibrated Gaussian gives 0.997."""
    y_, m, v = _as_numpy(y).ravel(), _as_numpy(mean).ravel(), _as_numpy(var).ravel()
    return float(np.mean(np.abs(y_ - m) <= k * np.sqrt(v)))


def rmse(y: ArrayLike, mean: ArrayLike) -> float:
    """Root mean squared error of the predictive mean. Lower is better."""
    y_, m = _as_numpy(y).ravel(), _as_numpy(mean).ravel()
    return float(np.sqrt(np.mean((y_ - m) ** 2)))


# -- epistemic vs aleatoric ---------------------------------------------------------------


def expected_entropy(logits: ArrayLike) -> Tensor:
    """Mean over samples of each sample's entropy, ``[S, N, K]`` logits -> ``[N]`` nats.

    The aleatoric part of the predictive entropy, computed in the logits' precision (the
    evaluation's float32 costs a third of float64 here) and returned as float64.
    """
    log_p = F.log_softmax(_as_tensor(logits), dim=-1)
    return (-(log_p.exp() * log_p).sum(-1).mean(0)).double()


def entropy_decomposition(logits: ArrayLike) -> dict[str, Tensor]:
    """Split the predictive entropy of per-sample logits ``[S, N, K]`` into its two parts.

    ``total`` is the entropy of the MC predictive ``H[mean_s p_s]``; ``expected`` (the
    aleatoric part) is ``mean_s H[p_s]``; ``mutual_info`` (the epistemic part, the
    information the label carries about the weights) is ``total - expected >= 0``. Each
    is ``[N]`` in nats. Samples that agree give ``mutual_info = 0``.
    """
    lg = _as_tensor(logits).double()
    expected = expected_entropy(lg)
    total = entropy(predictive_probs(lg))
    return {"total": total, "expected": expected, "mutual_info": (total - expected).clamp_min(0)}


# -- OOD detection as precision-recall ----------------------------------------------------


def _average_precision(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Average precision ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds (ties grouped).

    The step-wise area of sklearn's ``average_precision_score``, positives flagged by
    ``score >= threshold``.
    """
    scores = np.concatenate([pos_scores, neg_scores])
    is_pos = np.concatenate([np.ones(len(pos_scores)), np.zeros(len(neg_scores))])
    order = np.argsort(-scores, kind="stable")
    scores, is_pos = scores[order], is_pos[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(is_pos)[last_of_tie]
    flagged = last_of_tie + 1.0
    recall = tp / len(pos_scores)
    precision = tp / flagged
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_out(in_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the precision-recall curve with OOD as the positive class (high score = OOD).

    Average precision as ``sklearn.metrics.average_precision_score``. In [0, 1]; higher
    is better; chance is the OOD share of all points.
    """
    s_in, s_ood = _as_numpy(in_scores).ravel(), _as_numpy(ood_scores).ravel()
    if len(s_in) == 0 or len(s_ood) == 0:
        raise ValueError("aupr_out needs at least one in-distribution and one OOD score")
    return _average_precision(s_ood, s_in)


def aupr_in(in_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the precision-recall curve with in-distribution as positive (low score = in).

    Average precision of the negated score. In [0, 1]; higher is better; chance is the
    in-distribution share of all points.
    """
    s_in, s_ood = _as_numpy(in_scores).ravel(), _as_numpy(ood_scores).ravel()
    if len(s_in) == 0 or len(s_ood) == 0:
        raise ValueError("aupr_in needs at least one in-distribution and one OOD score")
    return _average_precision(-s_in, -s_ood)


# -- selective prediction -----------------------------------------------------------------


def risk_coverage(probs: ArrayLike, y: ArrayLike) -> dict[str, list[float]]:
    """Risk-coverage curve of selective prediction by the predictive's confidence.

    Examples are accepted in order of decreasing top probability; after accepting the
    ``n`` most confident, coverage is ``n / N`` and risk the error rate among them.
    Returns ``coverage`` and ``risk`` for ``n = 1 .. N``. A good uncertainty estimate has
    low risk at low coverage.
    """
    p, t = _as_numpy(probs), _as_numpy(y).astype(np.int64)
    if len(p) == 0:
        raise ValueError("risk_coverage needs at least one example")
    conf = p.max(-1)
    wrong = (p.argmax(-1) != t).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    n = np.arange(1, len(p) + 1, dtype=np.float64)
    return {
        "coverage": [float(c) for c in n / len(p)],
        "risk": [float(r) for r in np.cumsum(wrong[order]) / n],
    }


def aurc(probs: ArrayLike, y: ArrayLike) -> float:
    """Area under the risk-coverage curve: the mean of the risks at coverage ``1/N .. 1``.

    In [0, 1]; lower is better (errors rejected first). A predictor with error rate ``e``
    and a confidence that carries no information has ``AURC ~ e``.
    """
    return float(np.mean(risk_coverage(probs, y)["risk"]))


def thin_curve(xs: list[float], ys: list[float], n_points: int = ECDF_POINTS) -> dict[str, list]:
    """At most ``n_points`` points of a curve, evenly spaced in index, last point kept."""
    if len(xs) <= n_points:
        return {"x": list(xs), "y": list(ys)}
    idx = np.unique(np.linspace(0, len(xs) - 1, n_points).round().astype(np.int64))
    return {"x": [xs[i] for i in idx], "y": [ys[i] for i in idx]}
