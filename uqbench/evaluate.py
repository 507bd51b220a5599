"""Evaluation of a trained posterior on a task: the ``metrics`` part of a run (schema.md).

The runner calls :func:`evaluate_classification` or :func:`evaluate_regression` once per
run, with the model already in eval mode. Both only use the :class:`Posterior`
interface (``sample_outputs``, ``predict_regression``, ``diagnostics``) and never toggle
train/eval modes: MC dropout samples regardless of mode by its own design.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from uqbench import metrics as M
from uqbench import shift as S
from uqbench.architectures import CLASSIFICATION
from uqbench.attacks import fgsm as fgsm_attack
from uqbench.data.subset import stratified_subset
from uqbench.errors import DataError, PluginError
from uqbench.posterior import family
from uqbench.settings import EvalSettings
from uqbench.tasks.base import Split, Task, TaskData

#: Most (sample x example) rows kept alive for one FGSM gradient (bounds the memory of
#: the autograd graph: a batch has at most ``FGSM_ROWS // fgsm_samples`` examples).
FGSM_ROWS = 2048


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _n_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size) if n else 0


def sample_outputs(
    model: Any, x: Tensor, n_samples: int, n_out: int | None = None, check_spread: bool = False
) -> Tensor:
    """``model.sample_outputs(x, n_samples)``, checked: ``[S, batch, n_out]`` with S >= 1
    (``n_out=None``: any number of outputs).

    A wrong shape would otherwise be averaged over the wrong axis and give plausible but
    wrong metrics; it raises :class:`PluginError` naming the family. With
    ``check_spread``, S samples that are all the same from a family that is not
    ``deterministic`` warn: sampling that depends on train/eval mode (``nn.Dropout``)
    while evaluation runs in eval mode; outputs that look like probabilities (rows in
    [0, 1] summing to 1), which the metrics would take for logits, raise.
    """
    out = model.sample_outputs(x, n_samples)
    width = "K" if n_out is None else n_out
    want = f"[S, {len(x)}, {width}] (S >= 1 samples, the batch, the task's outputs)"
    if not isinstance(out, Tensor):
        raise PluginError(
            f"{family(model)}: sample_outputs returned {type(out).__name__}, expected a "
            f"tensor of shape {want}"
        )
    if (
        out.dim() != 3
        or out.shape[0] < 1
        or out.shape[1] != len(x)
        or (n_out is not None and out.shape[2] != n_out)
    ):
        raise PluginError(
            f"{family(model)}: sample_outputs returned shape {list(out.shape)}, expected {want}"
        )
    if not out.is_floating_point():
        raise PluginError(
            f"{family(model)}: sample_outputs returned {out.dtype} values; logits (or a "
            "regression's means) are floating point"
        )
    if (
        check_spread
        and out.shape[2] >= 2
        and len(x) > 0
        and bool(((out >= 0) & (out <= 1)).all())
        and bool(torch.allclose(out.sum(-1), torch.ones((), dtype=out.dtype), atol=1e-4))
    ):  # the metrics take a softmax of these: probabilities would be scored as logits
        raise PluginError(
            f"{family(model)}: sample_outputs returned what look like probabilities (each row "
            "in [0, 1], summing to 1); return logits (or log-probabilities) instead"
        )
    if (
        check_spread
        and not getattr(model, "deterministic", False)
        and out.shape[0] > 1
        and len(x) > 0
        and bool((out == out[:1]).all())
    ):
        warnings.warn(
            f"{family(model)}: its {out.shape[0]} samples are identical, as a point estimate's "
            "would be; evaluation runs in eval mode, so sampling must not depend on it (e.g. "
            "nn.Dropout samples only in train mode). A deterministic family says "
            "deterministic = True",
            stacklevel=2,
        )
    return out


@torch.no_grad()
def _predict(
    model: Any,
    x: Tensor,
    n_samples: int,
    batch_size: int,
    device: torch.device,
    bar: Any,
    n_out: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Log MC predictive ``[N, K]`` and expected entropy ``mean_s H[p_s]`` ``[N]`` of ``x``.

    Both on CPU, computed in batches; batches stay on ``device`` until the end: one host
    copy, not one per batch. The expected entropy is the aleatoric part of the
    predictive entropy (see :func:`uqbench.metrics.entropy_decomposition`).
    """
    out, expected = [], []
    for i, sl in enumerate(_batches(len(x), batch_size)):
        logits = sample_outputs(model, x[sl].to(device), n_samples, n_out, check_spread=i == 0)
        out.append(M.predictive_log_probs(logits).float())
        expected.append(M.expected_entropy(logits))
        bar.update(1)
    if not out:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.float64)
    return torch.cat(out, 0).cpu(), torch.cat(expected, 0).cpu()


def evaluate_run(
    model: Any,
    task: Task,
    data: TaskData,
    settings: EvalSettings,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    keep: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The metrics of one run under its typed evaluation ``settings``: what the runner
    calls, for a task of either kind."""
    if task.kind == CLASSIFICATION:
        return evaluate_classification(
            model,
            task,
            data,
            test_samples=settings.test_samples,
            fgsm=settings.fgsm_for(model, task),
            fgsm_samples=settings.fgsm_samples,
            fgsm_n=settings.fgsm_n,
            batch_size=settings.batch_size,
            device=device,
            progress=progress,
            keep=keep,
            shift=settings.shift() if task.takes_shift() else None,
        )
    return evaluate_regression(
        model,
        task,
        data,
        test_samples=settings.test_samples,
        device=device,
        progress=progress,
        keep=keep,
    )


def evaluate_classification(
    model: Any,
    task: Task,
    data: TaskData,
    *,
    test_samples: int,
    fgsm: bool,
    fgsm_samples: int,
    fgsm_n: int | None,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: bool = True,
    fgsm_seed: int = 0,
    keep: dict[str, np.ndarray] | None = None,
    shift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Classification METRICS of schema.md for a trained model.

    The MC predictive (``test_samples`` samples) on the test set gives error, NLL,
    Brier, ECE with its reliability diagram, and test entropies; on each OOD set it
    gives entropies, AUROC and FPR95 (OOD positive, entropy as score) and the entropy
    ECDF. With ``fgsm``, the attack of :func:`uqbench.attacks.fgsm` at each
    ``task.fgsm_eps`` on a stratified, seeded subset of ``fgsm_n`` test points (``None``
    = all), using ``fgsm_samples`` samples for the gradient and for the accuracy
    (a fraction in [0, 1]) and mean entropy of the attacked predictive.

    A ``keep`` dict receives the per-example outputs (see :func:`per_example_classification`)
    from which ``uqbench report`` computes bootstrap intervals.

    Beyond the paper: the split of the test and OOD entropies into expected entropy
    (aleatoric) and mutual information (epistemic), OOD AUROC with each as the score,
    AUPR-in/-out (total entropy as score), and the risk-coverage curve with its AURC.
    ``shift`` (settings ``n``, ``rotations``, ``corruptions``, ``severities``, ``seed``;
    see :func:`evaluate_shift`) adds metrics on rotated and corrupted test sets; it runs
    last, so that the global RNG stream of the other metrics is unchanged by it.
    """
    device = torch.device(device)
    k = int(task.n_outputs)
    test: Split = data.test
    fgsm_idx = stratified_subset(test.y, fgsm_n, fgsm_seed) if fgsm else torch.arange(0)
    fgsm_bs = max(1, min(batch_size, FGSM_ROWS // max(fgsm_samples, 1)))
    eps_list = [float(e) for e in task.fgsm_eps] if fgsm else []

    total = _n_batches(len(test), batch_size)
    total += sum(_n_batches(len(x), batch_size) for x in data.ood.values())
    total += len(eps_list) * _n_batches(len(fgsm_idx), fgsm_bs)
    shift_sets = shift_set_count(shift)
    shift_idx = stratified_subset(test.y, (shift or {}).get("n"), (shift or {}).get("seed", 0))
    total += shift_sets * _n_batches(len(shift_idx), batch_size)
    bar = tqdm(total=total, desc=f"eval {task.name}", leave=False, disable=not progress)
    try:
        log_p, hexp_in = _predict(model, test.x, test_samples, batch_size, device, bar, k)
        probs = log_p.exp()
        y = test.y.cpu().long()
        h_in = M.entropy(probs)
        result: dict[str, Any] = {
            "error_pct": M.error_pct(probs, y),
            "nll": M.nll(log_p, y),
            "brier": M.brier(probs, y),
            "ece": M.ece(probs, y),
            "reliability": M.reliability(probs, y),
            "test_entropy": {"mean": float(h_in.mean()), "median": M.median_entropy(h_in)},
            "ood": {},
            "in_entropy_ecdf": M.entropy_ecdf(h_in, k),
        }
        for name, x_ood in data.ood.items():
            if len(x_ood) == 0:
                continue
            lp_ood, hexp_ood = _predict(model, x_ood, test_samples, batch_size, device, bar, k)
            h_ood = M.entropy(lp_ood.exp())
            result["ood"][name] = {
                "auroc": M.auroc(h_in, h_ood),
                "fpr95": M.fpr95(h_in, h_ood),
                "fpr95_in": M.fpr95_in(h_in, h_ood),
                "median_entropy": M.median_entropy(h_ood),
                "mean_entropy": float(h_ood.mean()),
                "entropy_ecdf": M.entropy_ecdf(h_ood, k),
                **_ood_extras(h_in, hexp_in, h_ood, hexp_ood),
            }
            if keep is not None:
                keep[f"ood.{name}.entropy"] = h_ood.numpy().astype(np.float32)
                if name in data.ood_index:
                    keep[f"ood.{name}.index"] = _positions(data.ood_index[name])
        if keep is not None:
            keep.update(per_example_classification(log_p, y))
            if test.index is not None:
                keep["test.index"] = _positions(test.index)
        result["fgsm"] = (
            _fgsm_curve(
                model, task, test, fgsm_idx, eps_list, fgsm_samples, fgsm_bs, device, bar, keep
            )
            if fgsm
            else None
        )
        mi_in = (h_in - hexp_in).clamp_min(0)
        result["test_expected_entropy_mean"] = float(hexp_in.mean())
        result["test_mutual_info_mean"] = float(mi_in.mean())
        result["aurc"] = M.aurc(probs, y)
        rc = M.risk_coverage(probs, y)
        thin = M.thin_curve(rc["coverage"], rc["risk"])
        result["risk_coverage"] = {"coverage": thin["x"], "risk": thin["y"]}
        if shift_sets:
            result.update(
                evaluate_shift(
                    model, test, shift_idx, shift or {}, test_samples, batch_size, device, bar
                )
            )
    finally:
        bar.close()
    diagnostics = getattr(model, "diagnostics", None)
    result["diagnostics"] = diagnostics() if callable(diagnostics) else {}
    return result


def _ood_extras(h_in: Tensor, hexp_in: Tensor, h_ood: Tensor, hexp_ood: Tensor) -> dict:
    """OOD metrics beyond the paper: epistemic/aleatoric scores and AUPR.

    ``auroc`` (total entropy as score) stays the paper's; ``auroc_mutual_info`` and
    ``auroc_expected_entropy`` use the epistemic and aleatoric parts as the score;
    ``aupr_in``/``aupr_out`` use total entropy, with in-distribution / OOD positive.
    """
    mi_in, mi_ood = (h_in - hexp_in).clamp_min(0), (h_ood - hexp_ood).clamp_min(0)
    return {
        "auroc_mutual_info": M.auroc(mi_in, mi_ood),
        "auroc_expected_entropy": M.auroc(hexp_in, hexp_ood),
        "aupr_in": M.aupr_in(h_in, h_ood),
        "aupr_out": M.aupr_out(h_in, h_ood),
        "mean_mutual_info": float(mi_ood.mean()),
        "mean_expected_entropy": float(hexp_ood.mean()),
    }


#: Metrics of each shifted test set, in the order of the results' lists.
SHIFT_METRICS = ("accuracy", "nll", "ece", "brier", "mean_entropy")


def shift_set_count(shift: dict[str, Any] | None) -> int:
    """Number of shifted test sets that ``shift`` settings ask for (0 = no shift metrics)."""
    if not shift:
        return 0
    n_sev = len(shift.get("severities") or S.SEVERITIES)
    return len(shift.get("rotations") or []) + len(shift.get("corruptions") or []) * n_sev


def _shift_metrics(log_p: Tensor, y: Tensor) -> dict[str, float]:
    probs = log_p.exp()
    return {
        "accuracy": 1.0 - M.error_pct(probs, y) / 100.0,
        "nll": M.nll(log_p, y),
        "ece": M.ece(probs, y),
        "brier": M.brier(probs, y),
        "mean_entropy": float(M.entropy(probs).mean()),
    }


def evaluate_shift(
    model: Any,
    test: Split,
    idx: Tensor,
    shift: dict[str, Any],
    n_samples: int,
    batch_size: int,
    device: torch.device,
    bar: Any,
) -> dict[str, Any]:
    """Metrics (:data:`SHIFT_METRICS`) of the predictive on shifted copies of ``test[idx]``.

    ``shift["rotations"]`` (degrees) gives ``shift_rotation`` with one value per angle;
    ``shift["corruptions"]`` (names in :data:`uqbench.shift.CORRUPTIONS`) at
    ``shift["severities"]`` (default 1..5) gives ``shift_corruption`` with one list per
    corruption and the mean over corruptions per severity. The flat scalars
    ``rotated_accuracy_mean`` and ``corrupted_accuracy_mean`` average accuracy over
    angles, and over corruptions and severities.
    """
    x, y = test.x[idx].cpu(), test.y[idx].cpu().long()
    seed = int(shift.get("seed", 0))
    out: dict[str, Any] = {"shift_n": len(idx)}

    def run(xs: Tensor) -> dict[str, float]:
        log_p, _ = _predict(model, xs, n_samples, batch_size, device, bar)
        return _shift_metrics(log_p, y)

    angles = [float(a) for a in shift.get("rotations") or []]
    if angles:
        per = [run(S.rotate(x, a)) for a in angles]
        out["shift_rotation"] = {"angle": angles, **{m: [r[m] for r in per] for m in SHIFT_METRICS}}
        out["rotated_accuracy_mean"] = float(np.mean(out["shift_rotation"]["accuracy"]))
    names = list(shift.get("corruptions") or [])
    if names:
        sevs = [int(s) for s in shift.get("severities") or S.SEVERITIES]
        per_c = {}
        for name in names:
            per = [run(S.corrupt(x, name, s, seed)) for s in sevs]
            per_c[name] = {m: [r[m] for r in per] for m in SHIFT_METRICS}
        mean = {
            m: [float(np.mean([per_c[c][m][i] for c in names])) for i in range(len(sevs))]
            for m in SHIFT_METRICS
        }
        out["shift_corruption"] = {"severity": sevs, "corruptions": per_c, "mean": mean}
        out["corrupted_accuracy_mean"] = float(np.mean(mean["accuracy"]))
    return out


def _fgsm_curve(
    model: Any,
    task: Task,
    test: Split,
    idx: Tensor,
    eps_list: list[float],
    n_samples: int,
    batch_size: int,
    device: torch.device,
    bar: Any,
    keep: dict[str, np.ndarray] | None = None,
) -> dict[str, list[float]]:
    """Accuracy and mean predictive entropy of FGSM examples at each eps, and the
    perturbation the attack applied.

    ``perturbation`` is, per eps, the mean absolute change of an input value
    (``mean |x_adv - x|``); ``budget_share`` is its sum over the grid divided by the sum of
    the eps values (None when they sum to 0): the share of the L-inf budget the attack
    spends. It is below 1 because clipping to the input range takes the step back wherever a
    pixel already sits at the end it points to; without clipping it is 1 (less only where an
    input's gradient is exactly 0, whose sign moves nothing).
    ``keep`` receives ``fgsm.correct`` and ``fgsm.entropy`` (``[n_eps, n]``) and ``fgsm.index``.
    """
    x_all, y_all = test.x[idx], test.y[idx]
    accs, ents, perturbation = [], [], []
    correct_rows, entropy_rows = [], []
    for eps in eps_list:
        correct_parts, entropy_parts = [], []
        hits = torch.zeros((), dtype=torch.float64, device=device)
        h_sum = torch.zeros((), dtype=torch.float64, device=device)
        moved = torch.zeros((), dtype=torch.float64, device=device)
        for sl in _batches(len(idx), batch_size):
            xb, yb = x_all[sl].to(device), y_all[sl].to(device)
            x_adv = fgsm_attack(model, xb, yb, eps, n_samples, tuple(task.input_range))
            moved += (x_adv - xb).abs().double().sum()
            with torch.no_grad():
                probs = M.predictive_probs(sample_outputs(model, x_adv, n_samples))
            hits += (probs.argmax(-1) == yb).sum()
            h_sum += M.entropy(probs).double().sum()
            if keep is not None:
                correct_parts.append((probs.argmax(-1) == yb).cpu())
                entropy_parts.append(M.entropy(probs).float().cpu())
            bar.update(1)
        if keep is not None:
            correct_rows.append(torch.cat(correct_parts).numpy() if correct_parts else [])
            entropy_rows.append(torch.cat(entropy_parts).numpy() if entropy_parts else [])
        n = max(len(idx), 1)
        accs.append(float(hits) / n)
        ents.append(float(h_sum) / n)
        perturbation.append(float(moved) / max(int(np.prod(x_all.shape[1:])) * len(idx), 1))
    if keep is not None:
        keep["fgsm.eps"] = np.asarray(eps_list, dtype=np.float64)
        keep["fgsm.index"] = idx.cpu().numpy().astype(np.int64)
        keep["fgsm.correct"] = np.asarray(correct_rows, dtype=bool).reshape(len(eps_list), -1)
        keep["fgsm.entropy"] = np.asarray(entropy_rows, dtype=np.float32).reshape(len(eps_list), -1)
    budget = sum(eps_list)
    return {
        "eps": eps_list,
        "accuracy": accs,
        "mean_entropy": ents,
        "perturbation": perturbation,
        "budget_share": sum(perturbation) / budget if budget > 0 else None,
    }


def per_example_classification(log_p: Tensor, y: Tensor) -> dict[str, np.ndarray]:
    """What each test example contributes to the metrics, from the log MC predictive.

    ``test.y`` (label), ``test.pred`` (argmax), ``test.logp_true`` (log p of the label),
    ``test.conf`` (top probability), ``test.entropy`` and ``test.brier`` (squared error
    of the probability vector): error, NLL, Brier, ECE and every entropy statistic are
    means or quantiles of these.
    """
    probs = log_p.exp()
    y = y.long().cpu()
    onehot = torch.nn.functional.one_hot(y, probs.shape[-1]).to(probs.dtype)
    return {
        "test.y": y.numpy().astype(np.int64),
        "test.pred": probs.argmax(-1).numpy().astype(np.int64),
        "test.logp_true": log_p.gather(-1, y[:, None])[:, 0].numpy().astype(np.float32),
        "test.conf": probs.max(-1).values.numpy().astype(np.float32),
        "test.entropy": M.entropy(probs).numpy().astype(np.float32),
        "test.brier": (probs - onehot).pow(2).sum(-1).numpy().astype(np.float32),
    }


def _positions(index: Tensor) -> np.ndarray:
    """Where each example lies in its data set's files (``Split.index``), as saved."""
    return index.cpu().numpy().astype(np.int64)


def _column(t: Tensor) -> Tensor:
    """Inputs as ``[N, 1]`` floats (regression sets may come as ``[N]``)."""
    t = t.float()
    return t.reshape(-1, 1) if t.dim() == 1 else t


@torch.no_grad()
def _predict_regression(
    model: Any, x: Tensor, n_samples: int, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    means, variances = [], []
    for sl in _batches(len(x), batch_size):
        m, v = model.predict_regression(_column(x[sl]).to(device), n_samples)
        n = sl.stop - sl.start
        if not all(isinstance(t, Tensor) and t.numel() == n for t in (m, v)):
            got = [list(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (m, v)]
            raise PluginError(
                f"{family(model)}: predict_regression returned {got}, expected the predictive "
                f"mean and variance of the {n} inputs (two tensors of {n} values)"
            )
        means.append(m.reshape(-1).double().cpu())
        variances.append(v.reshape(-1).double().cpu())
    if not means:
        return np.zeros(0), np.zeros(0)
    return torch.cat(means).numpy(), torch.cat(variances).numpy()


def evaluate_regression(
    model: Any,
    task: Task,
    data: TaskData,
    *,
    test_samples: int,
    device: torch.device | str = "cpu",
    batch_size: int = 1000,
    progress: bool = True,
    keep: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Regression METRICS of schema.md (toy-cubic).

    ``data.extra`` holds ``test_inside`` and ``test_outside`` (held-out :class:`Split` s
    inside / outside the training range) and, for a 1-D input, ``grid`` (plotting inputs).
    ``model.predict_regression(x, n)`` gives the predictive mean and variance, the
    variance including the fixed likelihood noise. Reports the mean Gaussian predictive
    log density and the share of targets within mean +- 3 std per held-out set, RMSE
    over all held-out points, and (1-D input) the bands (mean, std) on the grid. A ``keep`` dict
    receives ``<set>.y``, ``<set>.mean`` and ``<set>.var`` per held-out set.
    """
    device = torch.device(device)
    extra = data.extra
    one_d = data.train.x[0].numel() == 1  # bands and training points: a 1-D input only
    missing = [k for k in ("grid", "test_inside", "test_outside")[not one_d :] if k not in extra]
    if missing:
        raise DataError(
            f"task {task.name!r}: regression data lacks extra[{', '.join(map(repr, missing))}]"
        )
    sets: dict[str, Split] = {"inside": extra["test_inside"], "outside": extra["test_outside"]}
    result: dict[str, Any] = {}
    ys, means = [], []
    for name, split in tqdm(
        sets.items(), desc=f"eval {task.name}", leave=False, disable=not progress
    ):
        m, v = _predict_regression(model, split.x, test_samples, batch_size, device)
        y = split.y.reshape(-1).double().cpu().numpy()
        if keep is not None:
            keep.update({f"{name}.y": y, f"{name}.mean": m, f"{name}.var": v})
        if len(y):
            result[f"loglik_{name}"] = M.mean_log_likelihood(y, m, v)
            result[f"coverage_3std_{name}"] = M.coverage(y, m, v, k=3.0)
        else:
            result[f"loglik_{name}"] = None
            result[f"coverage_3std_{name}"] = None
        ys.append(y)
        means.append(m)
    y_all, m_all = np.concatenate(ys), np.concatenate(means)
    result = {"rmse": M.rmse(y_all, m_all) if len(y_all) else None, **result}
    if one_d:
        grid = _column(torch.as_tensor(extra["grid"]))
        g_mean, g_var = _predict_regression(model, grid, test_samples, batch_size, device)
        result["bands"] = {
            "x": grid.reshape(-1).tolist(),
            "mean": g_mean.tolist(),
            "std": np.sqrt(g_var).tolist(),
        }
        result["train_points"] = {
            "x": data.train.x.reshape(-1).double().tolist(),
            "y": data.train.y.reshape(-1).double().tolist(),
        }
    diagnostics = getattr(model, "diagnostics", None)
    result["diagnostics"] = diagnostics() if callable(diagnostics) else {}
    return result
