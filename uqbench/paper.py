"""What Louizos & Welling (ICML 2017) report, as data: Table 2, sparsity, Section 4 claims.

Each qualitative claim of Section 4 carries a ``check``: a function of a results view
(:class:`uqbench.report.ResultsView`) that returns a :class:`Verdict` - "agrees",
"differs" or "not run" - with the numbers that decided it. The thresholds that turn
the paper's words into numbers ("near maximum entropy", "clearly wider") are named
constants below, so a reader can see and change them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from uqbench.report import ResultsView

#: The paper's six posteriors, in the column order of its Table 2.
PAPER_METHODS: tuple[str, ...] = ("l2", "dropout", "ensemble", "ffg", "fflu", "mnf")
#: The paper's column headers for them.
PAPER_COLUMNS: dict[str, str] = {
    "l2": "L2",
    "dropout": "Dropout",
    "ensemble": "D.Ensem.",
    "ffg": "FFG",
    "fflu": "FFLU",
    "mnf": "MNFG",
    "dropout-learned": "Dropout (learned p)",
}
#: Table 2: test error (%) with the LeNet architectures.
TABLE2: dict[str, dict[str, float]] = {
    "mnist": {"l2": 0.6, "dropout": 0.5, "ensemble": 0.7, "ffg": 0.9, "fflu": 0.9, "mnf": 0.7},
    "cifar5": {"l2": 24, "dropout": 16, "ensemble": 21, "ffg": 22, "fflu": 23, "mnf": 16},
}
#: Display names of Table 2's rows.
TABLE2_ROWS: dict[str, str] = {"mnist": "MNIST", "cifar5": "CIFAR 5"}
#: FFLU sparsity (% of weights with log sigma^2 - log mu^2 >= 5), per weight layer in order.
FFLU_SPARSITY_PCT: dict[str, list[float]] = {
    "mnist": [62.0, 95.2, 99.5, 93.3],
    "cifar5": [94.9, 99.8, 99.9, 92.7],
    "toy-cubic": [95.0, 44.0],
}

#: "Almost maximum entropy": at least this share of ln K.
NEAR_MAX_ENTROPY = 0.7
#: "Almost zero median entropy": below this share of ln K.
NEAR_ZERO_ENTROPY = 0.1
#: "Bands widen away from the data": mean std outside / inside the training range >= this.
WIDEN_FACTOR = 2.0


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one claim: status and the numbers behind it."""

    status: str  # "agrees" | "differs" | "not run"
    evidence: str


@dataclass(frozen=True)
class Claim:
    """One qualitative claim of the paper's Section 4 and how to check it."""

    id: str
    section: str
    #: The task whose runs decide it (for the data-provenance label).
    task: str
    text: str
    #: The paper's figure or table that shows it.
    figure: str
    #: Prefix of our figure file (``figures/<plot>...png``) or ``"table2"`` / ``"calibration"``.
    plot: str
    check: Callable[[ResultsView], Verdict]


def _not_run(what: str) -> Verdict:
    return Verdict("not run", f"needs {what}")


def _verdict(ok: bool, evidence: str) -> Verdict:
    return Verdict("agrees" if ok else "differs", evidence)


def _fmt(values: dict[str, float], v: ResultsView, digits: int = 3) -> str:
    return ", ".join(f"{v.name(m)} {x:.{digits}f}" for m, x in values.items())


def _per_method(
    v: ResultsView, task: str, path: tuple[str, ...], methods: tuple[str, ...] = PAPER_METHODS
) -> dict[str, float]:
    """Mean over seeds of ``metrics[path]`` for each of ``methods`` that ran on ``task``."""
    out = {}
    for m in v.methods(task):
        if m in methods:
            x = v.scalar(task, m, *path)
            if x is not None:
                out[m] = x
    return out


def _ood_stat(v: ResultsView, task: str, stat: str) -> tuple[str | None, dict[str, float]]:
    ood = v.ood_set(task)
    if ood is None:
        return None, {}
    return ood, _per_method(v, task, ("ood", ood, stat))


def _ecdf_area(v: ResultsView, task: str) -> tuple[str | None, dict[str, float]]:
    """Area under each method's OOD entropy ECDF over [0, ln K] (lower curve = smaller)."""
    ood = v.ood_set(task)
    out: dict[str, float] = {}
    if ood is None:
        return None, out
    for m in v.methods(task):
        if m not in PAPER_METHODS:
            continue
        grid = v.curve(task, m, "ood", ood, "entropy_ecdf", "grid")
        cdf = v.curve(task, m, "ood", ood, "entropy_ecdf", "cdf")
        if grid is not None and cdf is not None and len(grid) == len(cdf) > 1:
            out[m] = float(np.sum((cdf[1:] + cdf[:-1]) / 2 * np.diff(grid)))
    return ood, out


def _log_k(v: ResultsView, task: str) -> float:
    return math.log(v.n_classes(task) or 10)


# -- notMNIST (Figure 2) ---------------------------------------------------------------


def _notmnist_mnf_lowest(v: ResultsView) -> Verdict:
    ood, area = _ecdf_area(v, "mnist")
    if "mnf" not in area or len(area) < 2:
        return _not_run("MNIST runs of MNFG and at least one other method with an OOD set")
    best = min(area, key=area.get)
    return _verdict(
        best == "mnf",
        f"area under the {ood} entropy ECDF over [0, ln 10] (lower curve = smaller): "
        f"{_fmt(area, v)}; lowest: {v.name(best)}",
    )


def _notmnist_l2_most_overconfident(v: ResultsView) -> Verdict:
    ood, med = _ood_stat(v, "mnist", "median_entropy")
    if "l2" not in med or len(med) < 2:
        return _not_run("MNIST runs of L2 and at least one other method with an OOD set")
    lowest = min(med, key=med.get)
    near_zero = NEAR_ZERO_ENTROPY * _log_k(v, "mnist")
    return _verdict(
        lowest == "l2" and med["l2"] < near_zero,
        f"median {ood} entropy (nats): {_fmt(med, v)}; lowest: {v.name(lowest)}; "
        f"L2's {'is' if med['l2'] < near_zero else 'is not'} below {near_zero:.2f} "
        f"({NEAR_ZERO_ENTROPY:g} ln 10, 'almost zero')",
    )


def _notmnist_dropout_middle(v: ResultsView) -> Verdict:
    ood, med = _ood_stat(v, "mnist", "median_entropy")
    if not {"l2", "dropout", "mnf"} <= set(med):
        return _not_run("MNIST runs of L2, Dropout and MNFG")
    ok = med["l2"] < med["dropout"] < med["mnf"]
    return _verdict(
        ok,
        f"median {ood} entropy (nats): {_fmt({m: med[m] for m in ('l2', 'dropout', 'mnf')}, v)}"
        f" (agrees when L2 < Dropout < MNFG)",
    )


def _notmnist_fflu_overconfident(v: ResultsView) -> Verdict:
    ood, med = _ood_stat(v, "mnist", "median_entropy")
    if not {"fflu", "dropout", "mnf"} <= set(med):
        return _not_run("MNIST runs of FFLU, Dropout and MNFG")
    ok = med["fflu"] < med["mnf"] and med["fflu"] < med["dropout"]
    return _verdict(
        ok,
        f"median {ood} entropy (nats): "
        f"{_fmt({m: med[m] for m in ('fflu', 'dropout', 'mnf')}, v)} "
        f"(agrees when FFLU's is below both MNFG's and Dropout's)",
    )


def _notmnist_ensemble_vs_dropout(v: ResultsView) -> Verdict:
    ood, med = _ood_stat(v, "mnist", "median_entropy")
    if not {"ensemble", "dropout"} <= set(med):
        return _not_run("MNIST runs of Deep Ensembles and Dropout")
    return _verdict(
        med["ensemble"] <= med["dropout"],
        f"median {ood} entropy (nats): "
        f"{_fmt({m: med[m] for m in ('ensemble', 'dropout')}, v)} "
        f"(agrees when the ensemble's is not above Dropout's)",
    )


def _mnf_beats_mean_field(task: str, label: str) -> Callable[[ResultsView], Verdict]:
    """Check: MNF's test error on ``task`` is below both FFG's and FFLU's."""

    def check(v: ResultsView) -> Verdict:
        err = _per_method(v, task, ("error_pct",))
        if not {"mnf", "ffg", "fflu"} <= set(err):
            return _not_run(f"{label} runs of MNFG, FFG and FFLU")
        return _verdict(
            err["mnf"] < err["ffg"] and err["mnf"] < err["fflu"],
            f"test error (%): {_fmt({m: err[m] for m in ('mnf', 'ffg', 'fflu')}, v, 2)}",
        )

    return check


# -- CIFAR 5 hidden classes (Figure 3, Table 2) ----------------------------------------------


def _cifar_l2_most_overconfident(v: ResultsView) -> Verdict:
    ood, med = _ood_stat(v, "cifar5", "median_entropy")
    if "l2" not in med or len(med) < 2:
        return _not_run("CIFAR 5 runs of L2 and at least one other method")
    lowest = min(med, key=med.get)
    return _verdict(
        lowest == "l2",
        f"median {ood} entropy (nats): {_fmt(med, v)}; lowest: {v.name(lowest)}",
    )


def _cifar_dropout_mnf_best(v: ResultsView) -> Verdict:
    err = _per_method(v, "cifar5", ("error_pct",))
    if not {"mnf", "dropout"} <= set(err) or len(err) < 3:
        return _not_run("CIFAR 5 runs of MNFG, Dropout and at least one other method")
    best_two = sorted(err, key=err.get)[:2]
    return _verdict(
        set(best_two) == {"mnf", "dropout"},
        f"test error (%): {_fmt(err, v, 2)}; two lowest: {', '.join(v.name(m) for m in best_two)}",
    )


def _cifar_ensemble_less_accurate(v: ResultsView) -> Verdict:
    err = _per_method(v, "cifar5", ("error_pct",))
    if not {"ensemble", "dropout"} <= set(err):
        return _not_run("CIFAR 5 runs of Deep Ensembles and Dropout")
    return _verdict(
        err["ensemble"] > err["dropout"],
        f"test error (%): {_fmt({m: err[m] for m in ('ensemble', 'dropout')}, v, 2)}",
    )


# -- FGSM (Figures 4, 5) -------------------------------------------------------------


def _fgsm(v: ResultsView, task: str, m: str) -> tuple[np.ndarray, ...] | None:
    eps = v.curve(task, m, "fgsm", "eps")
    acc = v.curve(task, m, "fgsm", "accuracy")
    ent = v.curve(task, m, "fgsm", "mean_entropy")
    if eps is None or acc is None or ent is None or len(eps) < 2:
        return None
    return eps, acc, ent


def _fgsm_mnist_mnf(v: ResultsView) -> Verdict:
    curve = _fgsm(v, "mnist", "mnf")
    if curve is None:
        return _not_run("an MNIST run of MNFG with FGSM at two or more eps")
    eps, acc, ent = curve
    target = NEAR_MAX_ENTROPY * _log_k(v, "mnist")
    ok = acc[-1] < acc[0] and ent[-1] >= target and ent[-1] > ent[0]
    return _verdict(
        ok,
        f"MNFG accuracy {acc[0]:.3f} -> {acc[-1]:.3f} and mean entropy {ent[0]:.3f} -> "
        f"{ent[-1]:.3f} nats from eps {eps[0]:g} to {eps[-1]:g}; agrees when accuracy falls "
        f"and entropy rises to >= {target:.2f} ({NEAR_MAX_ENTROPY:g} ln 10)",
    )


def _fgsm_mnist_dropout(v: ResultsView) -> Verdict:
    curves = {
        m: c
        for m in v.methods("mnist")
        if m in PAPER_METHODS and (c := _fgsm(v, "mnist", m)) is not None
    }
    if not {"dropout", "mnf"} <= set(curves):
        return _not_run("MNIST runs of Dropout and MNFG with FGSM")
    adv_acc = {m: float(np.mean(c[1][1:])) for m, c in curves.items()}
    best = max(adv_acc, key=adv_acc.get)
    ent_last = {m: float(curves[m][2][-1]) for m in ("dropout", "mnf")}
    ok = best == "dropout" and ent_last["dropout"] < ent_last["mnf"]
    return _verdict(
        ok,
        f"mean accuracy over eps > 0: {_fmt(adv_acc, v)} (highest: {v.name(best)}); "
        f"mean entropy at the largest eps: {_fmt(ent_last, v)}",
    )


def _fgsm_cifar_overconfident(v: ResultsView) -> Verdict:
    curves = {
        m: c
        for m in v.methods("cifar5")
        if m in PAPER_METHODS and (c := _fgsm(v, "cifar5", m)) is not None
    }
    if not curves:
        return _not_run("CIFAR 5 runs with FGSM")
    ceiling = NEAR_MAX_ENTROPY * _log_k(v, "cifar5")
    ent_last = {m: float(c[2][-1]) for m, c in curves.items()}
    return _verdict(
        all(e < ceiling for e in ent_last.values()),
        f"mean entropy at the largest eps (nats): {_fmt(ent_last, v)}; agrees when every "
        f"method stays below {ceiling:.2f} ({NEAR_MAX_ENTROPY:g} ln 5)",
    )


# -- toy regression (Figure 6) --------------------------------------------------------------


def band_stats(v: ResultsView, task: str, m: str) -> tuple[float, float] | None:
    """Mean predictive std on grid points inside and outside the training inputs' range."""
    x = v.curve(task, m, "bands", "x")
    std = v.curve(task, m, "bands", "std")
    xt = v.curve(task, m, "train_points", "x")
    if x is None or std is None or xt is None or len(xt) == 0 or len(x) != len(std):
        return None
    inside = (x >= xt.min()) & (x <= xt.max())
    if not inside.any() or inside.all():
        return None
    return float(std[inside].mean()), float(std[~inside].mean())


def _toy_stats(v: ResultsView, task: str = "toy-cubic") -> dict[str, tuple[float, float]]:
    return {m: s for m in v.methods(task) if (s := band_stats(v, task, m)) is not None}


def _toy_mnf_widens(v: ResultsView) -> Verdict:
    stats = _toy_stats(v)
    if "mnf" not in stats:
        return _not_run("a toy-cubic run of MNFG")
    s_in, s_out = stats["mnf"]
    return _verdict(
        s_out >= WIDEN_FACTOR * s_in,
        f"MNFG mean predictive std inside the training range {s_in:.2f}, outside {s_out:.2f} "
        f"(ratio {s_out / s_in:.2f}; agrees when >= {WIDEN_FACTOR:g})",
    )


def _toy_dropout_diverges_less(v: ResultsView) -> Verdict:
    stats = _toy_stats(v)
    if not {"mnf", "dropout"} <= set(stats):
        return _not_run("toy-cubic runs of MNFG and Dropout")
    ratio = {m: stats[m][1] / stats[m][0] for m in ("dropout", "mnf")}
    return _verdict(
        ratio["dropout"] < ratio["mnf"],
        f"outside / inside mean std: {_fmt(ratio, v, 2)} (agrees when Dropout's is smaller)",
    )


def _toy_dropout_better_than_fflu(v: ResultsView) -> Verdict:
    ll = _per_method(v, "toy-cubic", ("loglik_outside",), ("dropout", "fflu"))
    if not {"dropout", "fflu"} <= set(ll):
        return _not_run("toy-cubic runs of Dropout and FFLU")
    return _verdict(
        ll["dropout"] > ll["fflu"],
        f"mean predictive log density outside the training range: {_fmt(ll, v, 2)}",
    )


#: The models of the paper's Figure 6 (the toy claims compare among these).
FIGURE6_METHODS: tuple[str, ...] = ("dropout", "dropout-learned", "fflu", "mnf")


def _toy_learned_dropout_overfits(v: ResultsView) -> Verdict:
    stats = {m: s for m, s in _toy_stats(v).items() if m in FIGURE6_METHODS}
    if "dropout-learned" not in stats or len(stats) < 2:
        return _not_run("toy-cubic runs of dropout-learned and at least one other method")
    outside = {m: s[1] for m, s in stats.items()}
    narrowest = min(outside, key=outside.get)
    ll = _per_method(v, "toy-cubic", ("loglik_outside",), tuple(stats))
    return _verdict(
        narrowest == "dropout-learned",
        f"mean predictive std outside the training range: {_fmt(outside, v, 2)} "
        f"(narrowest: {v.name(narrowest)}); log density outside: {_fmt(ll, v, 2)}",
    )


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "mnist-mnf-beats-mean-field",
        "4.1 MNIST",
        "mnist",
        "MNF improves upon mean field (FFG, FFLU) in test error.",
        "Table 2",
        "table2",
        _mnf_beats_mean_field("mnist", "MNIST"),
    ),
    Claim(
        "notmnist-mnf-lowest",
        "4.1 notMNIST",
        "mnist",
        "MNF's entropy ECDF on notMNIST lies lowest: a low-entropy prediction is overall "
        "less likely than with the other approaches.",
        "Figure 2",
        "ecdf-mnist",
        _notmnist_mnf_lowest,
    ),
    Claim(
        "notmnist-l2-most-overconfident",
        "4.1 notMNIST",
        "mnist",
        "The network trained with weight decay (L2) is the most overconfident, with an "
        "almost zero median entropy.",
        "Figure 2",
        "ecdf-mnist",
        _notmnist_l2_most_overconfident,
    ),
    Claim(
        "notmnist-dropout-middle",
        "4.1 notMNIST",
        "mnist",
        "Dropout is in the middle ground (between L2 and MNF).",
        "Figure 2",
        "ecdf-mnist",
        _notmnist_dropout_middle,
    ),
    Claim(
        "notmnist-fflu-overconfident",
        "4.1 notMNIST",
        "mnist",
        "FFLU (log-uniform prior) is overconfident too.",
        "Figure 2",
        "ecdf-mnist",
        _notmnist_fflu_overconfident,
    ),
    Claim(
        "notmnist-ensemble-not-better",
        "4.1 notMNIST",
        "mnist",
        "On the LeNet, Deep Ensembles do not give better uncertainty than Dropout.",
        "Figure 2",
        "ecdf-mnist",
        _notmnist_ensemble_vs_dropout,
    ),
    Claim(
        "cifar-l2-most-overconfident",
        "4.1 CIFAR 10",
        "cifar5",
        "On the hidden CIFAR classes, weight decay (L2) is the most overconfident.",
        "Figure 3",
        "ecdf-cifar5",
        _cifar_l2_most_overconfident,
    ),
    Claim(
        "cifar-dropout-mnf-best-accuracy",
        "4.1 CIFAR 10",
        "cifar5",
        "Dropout and MNF achieve the overall better accuracies on CIFAR 5.",
        "Table 2",
        "table2",
        _cifar_dropout_mnf_best,
    ),
    Claim(
        "cifar-ensemble-less-accurate",
        "4.1 CIFAR 10",
        "cifar5",
        "Deep Ensembles have lower accuracy than Dropout on the observed classes.",
        "Table 2",
        "table2",
        _cifar_ensemble_less_accurate,
    ),
    Claim(
        "cifar-mnf-beats-gaussian",
        "4.1 CIFAR 10",
        "cifar5",
        "MNF has much better accuracy than FFG and FFLU on the observed classes.",
        "Table 2",
        "table2",
        _mnf_beats_mean_field("cifar5", "CIFAR 5"),
    ),
    Claim(
        "fgsm-mnist-mnf-entropy-rises",
        "4.2 MNIST",
        "mnist",
        "Under FGSM on MNIST, MNF's accuracy drops while its entropy rises to almost the "
        "maximum: it knows that it does not know.",
        "Figure 4",
        "fgsm-mnist",
        _fgsm_mnist_mnf,
    ),
    Claim(
        "fgsm-mnist-dropout-overconfident",
        "4.2 MNIST",
        "mnist",
        "Dropout has the better accuracies on adversarial examples, at an overconfident "
        "price: its entropy stays low.",
        "Figure 4",
        "fgsm-mnist",
        _fgsm_mnist_dropout,
    ),
    Claim(
        "fgsm-cifar-all-overconfident",
        "4.2 CIFAR",
        "cifar5",
        "Under FGSM on CIFAR 5, all methods are overconfident.",
        "Figure 5",
        "fgsm-cifar5",
        _fgsm_cifar_overconfident,
    ),
    Claim(
        "toy-mnf-widens",
        "4.3",
        "toy-cubic",
        "MNF is more uncertain where no data was observed: its bands widen away from the "
        "training inputs.",
        "Figure 6",
        "toy-bands",
        _toy_mnf_widens,
    ),
    Claim(
        "toy-dropout-diverges-less",
        "4.3",
        "toy-cubic",
        "Dropout (p = 0.5) bands do not diverge as much as MNF's away from the data.",
        "Figure 6",
        "toy-bands",
        _toy_dropout_diverges_less,
    ),
    Claim(
        "toy-dropout-better-than-fflu",
        "4.3",
        "toy-cubic",
        "Dropout's uncertainties are better than FFLU's.",
        "Figure 6",
        "toy-bands",
        _toy_dropout_better_than_fflu,
    ),
    Claim(
        "toy-learned-dropout-overfits",
        "4.3",
        "toy-cubic",
        "Dropout with a learned rate gives the most overfitted (narrowest) uncertainties "
        "of the Figure 6 models (Dropout, learned Dropout, FFLU, MNFG).",
        "Figure 6",
        "toy-bands",
        _toy_learned_dropout_overfits,
    ),
)
