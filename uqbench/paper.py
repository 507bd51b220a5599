"""What Louizos & Welling (ICML 2017) report, as data: Table 2, sparsity, Section 4 claims.

Each qualitative claim of Section 4 carries a ``check``: a function of a results view
(:class:`uqbench.report.view.ResultsView`) that returns a :class:`Verdict` - "agrees",
"differs", "inconclusive" or "not run" - with the numbers that decided it. Every ordering
a claim states is decided by a 95% interval of the difference (:mod:`uqbench.compare`):
"agrees" only when all of them are resolved for the claim and every run involved
converged, "differs" when one is resolved against it, also with Holm's correction over the
claim's conditions (:meth:`Claim.verdict`), else "inconclusive". The thresholds that turn
the paper's words into numbers ("near maximum entropy", "clearly wider") are named
constants below, so a reader can see and change them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from uqbench import compare as C
from uqbench import metric_catalog as catalog
from uqbench.errors import ConfigError
from uqbench.stats import Interval

if TYPE_CHECKING:  # pragma: no cover
    from uqbench.report.view import ResultsView

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
#: Order of methods in tables and in a claim's evidence: the paper's columns, then learned
#: dropout (its Section 4.3); other methods follow alphabetically.
METHOD_ORDER: tuple[str, ...] = (*PAPER_METHODS, "dropout-learned")
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


#: "Similar" error rates: the 95% interval of the difference lies within this share of the
#: pair's mean error (and "different" when it lies wholly outside).
SIMILAR_ERROR_REL = 0.2
#: "Similar uncertainty": the 95% interval of the difference of median OOD entropies lies
#: within +- this many nats.
SIMILAR_ENTROPY_NATS = 0.1


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one claim: status and the numbers behind it."""

    status: str  # "agrees" | "differs" | "inconclusive" | "not run"
    evidence: str
    #: How many resolved-or-not conditions the claim rests on (0: not decided by conditions).
    conditions: int = 0


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

    def verdict(self, v: ResultsView) -> Verdict:
        """:attr:`check`'s verdict, with "differs" corrected for the claim's many conditions.

        "Agrees" needs every condition resolved for the claim, so it needs no correction.
        "Differs" needs only one resolved against it, so with ``k`` conditions it would come
        up by chance up to ``k`` times as often as one 95% interval allows: it stands only
        when a condition is still resolved against the claim with every interval at
        ``1 - 0.05 / k``. Holm's step-down rejects at least one of ``k`` hypotheses exactly
        when that Bonferroni step does, so this is Holm's correction for the verdict. A check
        must therefore list every ordering and threshold it tests as its own condition.
        """
        first = self.check(v)
        k = first.conditions
        if first.status != "differs" or k <= 1:
            return first
        base = v.level
        level = 1 - (1 - base) / k
        with v.at_level(level):
            again = self.check(v)
        if again.status == "differs":
            note = f"; resolved against the claim with Holm's correction over its {k} conditions"
            return Verdict("differs", first.evidence + note, k)
        note = (
            f"; resolved against the claim at {100 * base:g}%, but not with Holm's correction "
            f"over its {k} conditions (intervals at {100 * level:.2f}%)"
        )
        return Verdict("inconclusive", first.evidence + note, k)


def method_name(v: ResultsView, method: str) -> str:
    """The method's name in tables: the paper's column header, else its display name."""
    return PAPER_COLUMNS.get(method) or v.display_name(method)


def _not_run(what: str) -> Verdict:
    return Verdict("not run", f"needs {what}")


_UNRESOLVED = "; not resolved at 95%"


def _decide(
    v: ResultsView, task: str, conditions: list[int], methods: Iterable[str], evidence: str
) -> Verdict:
    """Verdict from resolved conditions (+1 holds, -1 the opposite holds, 0 unresolved).

    "differs" when any condition is resolved against the claim (:meth:`Claim.verdict`
    then corrects that for the number of conditions); "agrees" only when every condition
    is resolved for it and every run involved converged; else "inconclusive".
    """
    k = len(conditions)
    if any(c < 0 for c in conditions):
        return Verdict("differs", evidence, k)
    if conditions and all(c > 0 for c in conditions):
        stale = [method_name(v, m) for m in dict.fromkeys(methods) if v.unconverged(task, m)]
        if stale:
            return Verdict(
                "inconclusive",
                evidence + f"; resolved, but not converged: {', '.join(stale)}",
                k,
            )
        return Verdict("agrees", evidence, k)
    return Verdict("inconclusive", evidence + _UNRESOLVED, k)


def _iv(iv: Interval | None, digits: int = 3) -> str:
    if iv is None:
        return "—"
    text = f"{iv.value:.{digits}f}"
    if iv.lo is not None and iv.hi is not None:
        text += f" [{iv.lo:.{digits}f}, {iv.hi:.{digits}f}]"
    return text


def _values(
    v: ResultsView, task: str, stat: C.Stat, methods: Iterable[str], digits: int = 3
) -> str:
    """``name value [95% interval]`` for each method that ran."""
    out = []
    for m in methods:
        iv = C.interval(v, task, m, stat)
        if iv is not None:
            out.append(f"{method_name(v, m)} {_iv(iv, digits)}")
    return ", ".join(out)


def _diffs(
    v: ResultsView, task: str, pairs: list[tuple[str, str]], stat: C.Stat, digits: int
) -> str:
    """``A - B = d [lo, hi]`` per pair, with how the interval was made (once)."""
    parts, hows = [], []
    for a, b in pairs:
        c = C.compare(v, task, a, b, stat)
        if c is not None:
            parts.append(f"{method_name(v, a)} − {method_name(v, b)} = {_iv(c, digits)}")
            hows.append(c.how)
    how = "; ".join(dict.fromkeys(hows))
    return ", ".join(parts) + (f" ({how})" if how else "")


def _ran(v: ResultsView, task: str, stat: C.Stat, methods: Iterable[str]) -> list[str]:
    """Those of ``methods`` with a value of ``stat`` on ``task``, in :data:`METHOD_ORDER`."""
    ran = [m for m in v.methods(task) if m in methods and C.interval(v, task, m, stat)]
    first = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(ran, key=lambda m: first.get(m, len(first)))


def _below(
    v: ResultsView,
    task: str,
    stat: C.Stat,
    pairs: list[tuple[str, str]],
    ran: list[str],
    what: str,
    d: int = 3,
    *,
    note: str = "",
    shown: list[tuple[str, str]] | None = None,
    tail: str = "",
    extra: tuple[int, ...] = (),
) -> Verdict:
    """Claim "``a``'s ``stat`` is below ``b``'s" for each ``(a, b)`` of ``pairs``, on the runs
    ``ran``; ``extra`` adds conditions of the same claim decided elsewhere (a threshold).

    The evidence reads ``<what>: <the value of each run><note>; <differences><tail>``, the
    differences taken as ``shown`` orders them (default: as ``pairs``).
    """
    return _decide(
        v,
        task,
        [C.order(v, task, a, b, stat) for a, b in pairs] + list(extra),
        ran,
        f"{what}: {_values(v, task, stat, ran, d)}{note}; "
        + _diffs(v, task, pairs if shown is None else shown, stat, d)
        + tail,
    )


def _lowest(
    v: ResultsView, task: str, who: str, stat: C.Stat, methods: Iterable[str], what: str, d: int = 3
) -> Verdict | None:
    """Claim "``who`` has the lowest ``stat`` among ``methods``" (None: too few ran)."""
    ran = _ran(v, task, stat, methods)
    if who not in ran or len(ran) < 2:
        return None
    return _below(v, task, stat, [(who, m) for m in ran if m != who], ran, what, d)


def _ood(v: ResultsView, task: str, what: str) -> tuple[str | None, C.Stat | None]:
    ood = v.ood_set(task)
    if ood is None:
        return None, None
    return ood, C.ood_stat(ood, what, _log_k(v, task))


_SIDE = {1: "below", -1: "above", 0: "unresolved"}


def _log_k(v: ResultsView, task: str) -> float:
    return math.log(v.n_classes(task) or 10)


def _similar(c: Interval | None, margin: float) -> int:
    """+1 when the interval lies within +-margin, -1 when wholly outside it, else 0."""
    if c is None or c.lo is None or c.hi is None:
        return 0
    if -margin < c.lo and c.hi < margin:
        return 1
    return -1 if c.lo > margin or c.hi < -margin else 0


# -- notMNIST (Figure 2) ---------------------------------------------------------------


def _notmnist_mnf_lowest(v: ResultsView) -> Verdict:
    ood, stat = _ood(v, "mnist", "ecdf_area")
    r = stat and _lowest(
        v,
        "mnist",
        "mnf",
        stat,
        PAPER_METHODS,
        f"area under the {ood} entropy ECDF over [0, ln 10] (lower curve = smaller)",
    )
    return r or _not_run("MNIST runs of MNFG and at least one other method with an OOD set")


def _notmnist_l2_most_overconfident(v: ResultsView) -> Verdict:
    ood, stat = _ood(v, "mnist", "median_entropy")
    ran = _ran(v, "mnist", stat, PAPER_METHODS) if stat else []
    if "l2" not in ran or len(ran) < 2:
        return _not_run("MNIST runs of L2 and at least one other method with an OOD set")
    near_zero = NEAR_ZERO_ENTROPY * _log_k(v, "mnist")
    l2 = C.interval(v, "mnist", "l2", stat)
    below = -l2.relative_to(near_zero) if l2 else 0
    # One condition per ordering and one for the threshold: Holm's correction counts them.
    return _below(
        v,
        "mnist",
        stat,
        [("l2", m) for m in ran if m != "l2"],
        ran,
        f"median {ood} entropy (nats)",
        tail=f"; L2's median against 'almost zero' = {near_zero:.2f} "
        f"({NEAR_ZERO_ENTROPY:g} ln 10): {_SIDE[below]}",
        extra=(below,),
    )


def _notmnist_dropout_middle(v: ResultsView) -> Verdict:
    ood, stat = _ood(v, "mnist", "median_entropy")
    ran = _ran(v, "mnist", stat, ("l2", "dropout", "mnf")) if stat else []
    if len(ran) < 3:
        return _not_run("MNIST runs of L2, Dropout and MNFG")
    return _below(
        v,
        "mnist",
        stat,
        [("l2", "dropout"), ("dropout", "mnf")],
        ran,
        f"median {ood} entropy (nats)",
        note=" (agrees when L2 < Dropout < MNFG)",
    )


def _notmnist_fflu_overconfident(v: ResultsView) -> Verdict:
    ood, stat = _ood(v, "mnist", "median_entropy")
    ran = _ran(v, "mnist", stat, ("fflu", "dropout", "mnf")) if stat else []
    if len(ran) < 3:
        return _not_run("MNIST runs of FFLU, Dropout and MNFG")
    return _below(
        v,
        "mnist",
        stat,
        [("fflu", "mnf"), ("fflu", "dropout")],
        ran,
        f"median {ood} entropy (nats)",
        note=" (agrees when FFLU's is below both MNFG's and Dropout's)",
    )


def _notmnist_ensemble_vs_dropout(v: ResultsView) -> Verdict:
    ood, stat = _ood(v, "mnist", "median_entropy")
    ran = _ran(v, "mnist", stat, ("ensemble", "dropout")) if stat else []
    if len(ran) < 2:
        return _not_run("MNIST runs of Deep Ensembles and Dropout")
    c = C.compare(v, "mnist", "ensemble", "dropout", stat)
    # "not better": the ensemble's median is not resolved above Dropout's by the margin
    cond = 0
    if c is not None and c.lo is not None and c.hi is not None:
        cond = 1 if c.hi < SIMILAR_ENTROPY_NATS else (-1 if c.lo > SIMILAR_ENTROPY_NATS else 0)
    return _decide(
        v,
        "mnist",
        [cond],
        ran,
        f"median {ood} entropy (nats): {_values(v, 'mnist', stat, ran)}; "
        + _diffs(v, "mnist", [("ensemble", "dropout")], stat, 3)
        + " (agrees when the ensemble's is resolved not above Dropout's + "
        f"{SIMILAR_ENTROPY_NATS:g})",
    )


def _mnf_beats_mean_field(task: str, label: str) -> Callable[[ResultsView], Verdict]:
    """Check: MNF's test error on ``task`` is below both FFG's and FFLU's."""

    def check(v: ResultsView) -> Verdict:
        stat = C.STATS["error_pct"]
        ran = _ran(v, task, stat, ("mnf", "ffg", "fflu"))
        if len(ran) < 3:
            return _not_run(f"{label} runs of MNFG, FFG and FFLU")
        pairs = [("mnf", "ffg"), ("mnf", "fflu")]
        return _below(v, task, stat, pairs, ran, "test error (%)", 2)

    return check


def _similar_error(task: str, a: str, b: str, label: str) -> Callable[[ResultsView], Verdict]:
    """Check: the test errors of ``a`` and ``b`` on ``task`` are similar."""

    def check(v: ResultsView) -> Verdict:
        stat = C.STATS["error_pct"]
        ran = _ran(v, task, stat, (a, b))
        if len(ran) < 2:
            return _not_run(
                f"{label} runs of {PAPER_COLUMNS.get(a, a)} and {PAPER_COLUMNS.get(b, b)}"
            )
        ia, ib = C.interval(v, task, a, stat), C.interval(v, task, b, stat)
        margin = SIMILAR_ERROR_REL * (ia.value + ib.value) / 2
        c = C.compare(v, task, a, b, stat)
        return _decide(
            v,
            task,
            [_similar(c, margin)],
            ran,
            f"test error (%): {_values(v, task, stat, ran, 2)}; "
            + _diffs(v, task, [(a, b)], stat, 2)
            + f"; similar = interval within ±{margin:.2f} "
            f"({SIMILAR_ERROR_REL:g} of the mean error)",
        )

    return check


def _similar_ood_entropy(
    task: str, a: str, b_set: tuple[str, ...], label: str
) -> Callable[[ResultsView], Verdict]:
    """Check: ``a``'s median OOD entropy is similar to that of each of ``b_set``."""

    def check(v: ResultsView) -> Verdict:
        ood, stat = _ood(v, task, "median_entropy")
        ran = _ran(v, task, stat, (a, *b_set)) if stat else []
        if a not in ran or len(ran) < 2:
            return _not_run(
                f"{label} runs of {PAPER_COLUMNS.get(a, a)} and "
                + " / ".join(PAPER_COLUMNS.get(b, b) for b in b_set)
            )
        pairs = [(b, a) for b in ran if b != a]
        conds = [_similar(C.compare(v, task, x, y, stat), SIMILAR_ENTROPY_NATS) for x, y in pairs]
        return _decide(
            v,
            task,
            conds,
            ran,
            f"median {ood} entropy (nats): {_values(v, task, stat, ran)}; "
            + _diffs(v, task, pairs, stat, 3)
            + f"; similar = interval within ±{SIMILAR_ENTROPY_NATS:g} nats",
        )

    return check


# -- CIFAR 5 hidden classes (Figure 3, Table 2) ----------------------------------------------


def _cifar_l2_most_overconfident(v: ResultsView) -> Verdict:
    ood, stat = _ood(v, "cifar5", "median_entropy")
    r = stat and _lowest(v, "cifar5", "l2", stat, PAPER_METHODS, f"median {ood} entropy (nats)")
    return r or _not_run("CIFAR 5 runs of L2 and at least one other method")


def _cifar_dropout_mnf_best(v: ResultsView) -> Verdict:
    stat = C.STATS["error_pct"]
    ran = _ran(v, "cifar5", stat, PAPER_METHODS)
    if not {"mnf", "dropout"} <= set(ran) or len(ran) < 3:
        return _not_run("CIFAR 5 runs of MNFG, Dropout and at least one other method")
    pairs = [(a, m) for a in ("dropout", "mnf") for m in ran if m not in ("dropout", "mnf")]
    return _below(
        v,
        "cifar5",
        stat,
        pairs,
        ran,
        "test error (%)",
        2,
        note="; agrees when Dropout and MNFG are each resolved below every other method",
    )


def _cifar_ensemble_less_accurate(v: ResultsView) -> Verdict:
    stat = C.STATS["error_pct"]
    ran = _ran(v, "cifar5", stat, ("ensemble", "dropout"))
    if len(ran) < 2:
        return _not_run("CIFAR 5 runs of Deep Ensembles and Dropout")
    return _below(
        v,
        "cifar5",
        stat,
        [("dropout", "ensemble")],
        ran,
        "test error (%)",
        2,
        shown=[("ensemble", "dropout")],
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
    last = C.interval(v, "mnist", "mnf", C.fgsm_stat("last_entropy"))
    last_acc = C.interval(v, "mnist", "mnf", C.fgsm_stat("last_accuracy"))
    conds = [
        last.relative_to(target) if last else 0,
        -last_acc.relative_to(float(acc[0])) if last_acc else 0,
    ]
    return _decide(
        v,
        "mnist",
        conds,
        ("mnf",),
        f"MNFG accuracy {acc[0]:.3f} -> {_iv(last_acc)} and mean entropy {ent[0]:.3f} -> "
        f"{_iv(last)} nats from eps {eps[0]:g} to {eps[-1]:g}; agrees when accuracy falls "
        f"and entropy rises to >= {target:.2f} ({NEAR_MAX_ENTROPY:g} ln 10), both resolved",
    )


def _fgsm_mnist_dropout(v: ResultsView) -> Verdict:
    acc, ent = C.fgsm_stat("adv_accuracy"), C.fgsm_stat("last_entropy")
    ran = _ran(v, "mnist", acc, PAPER_METHODS)
    if not {"dropout", "mnf"} <= set(ran):
        return _not_run("MNIST runs of Dropout and MNFG with FGSM")
    others = [m for m in ran if m != "dropout"]
    conds = [C.order(v, "mnist", m, "dropout", acc) for m in others]
    conds.append(C.order(v, "mnist", "dropout", "mnf", ent))
    return _decide(
        v,
        "mnist",
        conds,
        ran,
        f"mean accuracy over eps > 0: {_values(v, 'mnist', acc, ran)}; "
        + _diffs(v, "mnist", [("dropout", m) for m in others], acc, 3)
        + f"; mean entropy at the largest eps: {_values(v, 'mnist', ent, ('dropout', 'mnf'))}; "
        + _diffs(v, "mnist", [("dropout", "mnf")], ent, 3),
    )


def _fgsm_cifar_overconfident(v: ResultsView) -> Verdict:
    ent = C.fgsm_stat("last_entropy")
    ran = _ran(v, "cifar5", ent, PAPER_METHODS)
    if not ran:
        return _not_run("CIFAR 5 runs with FGSM")
    ceiling = NEAR_MAX_ENTROPY * _log_k(v, "cifar5")
    conds = [-C.interval(v, "cifar5", m, ent).relative_to(ceiling) for m in ran]
    return _decide(
        v,
        "cifar5",
        conds,
        ran,
        f"mean entropy at the largest eps (nats): {_values(v, 'cifar5', ent, ran)}; agrees "
        f"when every method is resolved below {ceiling:.2f} ({NEAR_MAX_ENTROPY:g} ln 5)",
    )


# -- toy regression (Figure 6) --------------------------------------------------------------


def _run_band(metrics: dict, what: str) -> float | None:
    """One run's mean band std inside / outside its training range, or their ratio.

    Per run, as each seed draws its own training inputs: averaging the seeds' curves first
    would judge every band against a range no run had.
    """
    b, t = metrics.get("bands") or {}, metrics.get("train_points") or {}
    try:
        x, std, xt = (np.asarray(a, float) for a in (b["x"], b["std"], t["x"]))
    except (KeyError, TypeError, ValueError):
        return None
    if len(xt) == 0 or len(x) != len(std):
        return None
    inside = (x >= xt.min()) & (x <= xt.max())
    if not inside.any() or inside.all():
        return None
    s_in, s_out = float(std[inside].mean()), float(std[~inside].mean())
    ratio = s_out / s_in if s_in > 0 else math.nan
    x = {"inside": s_in, "outside": s_out, "ratio": ratio}[what]
    return x if math.isfinite(x) else None


def band_stat(what: str) -> C.Stat:
    """Toy bands: mean std ``inside`` / ``outside`` the training range, or their ``ratio``.

    Computed on the plotting grid (no test examples), so its interval comes from seeds only.
    """
    return C.Stat(f"band.{what}", lambda m: _run_band(m, what), bounds=(0.0, None))


def stat_named(name: str, h_max: float = math.log(10)) -> C.Stat:
    """The statistic a discussion note names: ``error_pct``, ``nll``, ``ece``, ``brier``,
    ``test_median_entropy``, ``ood.<set>.<auroc|fpr95|fpr95_in|median_entropy|mean_entropy|
    ecdf_area>``, ``fgsm.<adv_accuracy|last_entropy|last_accuracy>``,
    ``loglik_<inside|outside>``, ``coverage_3std_<inside|outside>``,
    ``band.<inside|outside|ratio>``, the regression check's ``fgsm.accuracy_mean`` and
    ``q_layers.<...>``, or any other dotted path into a run's metrics.

    A name of that form whose metric is not declared (``ood.notmnist.aurocc``) is a
    ConfigError naming the declared ones.
    """
    try:
        return _stat_named(name, h_max)
    except KeyError as exc:
        raise ConfigError(f"statistic {name!r}: {exc.args[0]}") from None


def _stat_named(name: str, h_max: float) -> C.Stat:
    if name in C.STATS:
        return C.STATS[name]
    head, _, rest = name.partition(".")
    if head == "ood" and "." in rest:
        ood, what = rest.rsplit(".", 1)
        return C.ood_stat(ood, what, h_max)
    if head == "fgsm" and rest in ("adv_accuracy", "last_entropy", "last_accuracy"):
        return C.fgsm_stat(rest)
    if head == "band" and rest in ("inside", "outside", "ratio"):
        return band_stat(rest)
    if name.startswith(("loglik_", "coverage_3std_")):
        return C.regression_stat(name)
    if name in CHECK_SUMMARIES:  # the regression check's summaries, as it computes them
        from uqbench.check import extract_metric

        m = catalog.metric(name)
        return C.Stat(
            name,
            lambda metrics: C._num(extract_metric(metrics, name)[0]),
            lower_better=m.lower_better,
            bounds=m.bounds,
        )
    return C.Stat(name, C._path(*name.split(".")))


#: Metrics of the regression check that summarise a run's metrics (a mean over the FGSM eps
#: grid or over layers) rather than sit at a path in them.
CHECK_SUMMARIES = frozenset(m.name for m in catalog.metrics() if m.scope in ("fgsm", "q_layers"))


#: The models of the paper's Figure 6 (the toy claims compare among these).
FIGURE6_METHODS: tuple[str, ...] = ("dropout", "dropout-learned", "fflu", "mnf")


def _toy_mnf_widens(v: ResultsView) -> Verdict:
    if not v.runs_for("toy-cubic", "mnf"):
        return _not_run("a toy-cubic run of MNFG")
    iv = C.interval(v, "toy-cubic", "mnf", band_stat("ratio"))
    inside = C.interval(v, "toy-cubic", "mnf", band_stat("inside"))
    outside = C.interval(v, "toy-cubic", "mnf", band_stat("outside"))
    if iv is None or inside is None or outside is None:  # runs without recorded bands
        return _not_run("MNFG's toy-cubic predictive bands")
    return _decide(
        v,
        "toy-cubic",
        [iv.relative_to(WIDEN_FACTOR)],
        ("mnf",),
        f"MNFG mean predictive std inside its training range {inside.value:.2f}, outside "
        f"{outside.value:.2f} (ratio {_iv(iv, 2)}; each the mean over seeds of the run's own; "
        f"agrees when resolved >= {WIDEN_FACTOR:g}; {iv.how})",
    )


def _toy_dropout_diverges_less(v: ResultsView) -> Verdict:
    ratio = band_stat("ratio")
    ran = _ran(v, "toy-cubic", ratio, ("mnf", "dropout"))
    if len(ran) < 2:
        return _not_run("toy-cubic runs of MNFG and Dropout")
    return _below(
        v,
        "toy-cubic",
        ratio,
        [("dropout", "mnf")],
        ran,
        "outside / inside mean std",
        2,
        tail=" (agrees when Dropout's is resolved smaller)",
    )


def _toy_dropout_better_than_fflu(v: ResultsView) -> Verdict:
    ll = C.regression_stat("loglik_outside")
    ran = _ran(v, "toy-cubic", ll, ("dropout", "fflu"))
    if len(ran) < 2:
        return _not_run("toy-cubic runs of Dropout and FFLU")
    return _below(
        v,
        "toy-cubic",
        ll,
        [("fflu", "dropout")],
        ran,
        "mean predictive log density outside the training range",
        2,
        shown=[("dropout", "fflu")],
    )


def _toy_learned_dropout_overfits(v: ResultsView) -> Verdict:
    out = band_stat("outside")
    r = _lowest(
        v,
        "toy-cubic",
        "dropout-learned",
        out,
        FIGURE6_METHODS,
        "mean predictive std outside the training range",
        2,
    )
    return r or _not_run("toy-cubic runs of dropout-learned and at least one other method")


def _toy_mnf_closer_to_truth(v: ResultsView) -> Verdict:
    """MNF's predictive is the most realistic of Figure 6's: highest held-out log density
    outside the training range (where the true posterior predictive widens)."""
    ll = C.regression_stat("loglik_outside")
    cov = C.regression_stat("coverage_3std_outside")
    ran = _ran(v, "toy-cubic", ll, FIGURE6_METHODS)
    if "mnf" not in ran or len(ran) < 2:
        return _not_run("toy-cubic runs of MNFG and at least one other Figure 6 model")
    others = [m for m in ran if m != "mnf"]
    return _below(
        v,
        "toy-cubic",
        ll,
        [(m, "mnf") for m in others],
        ran,
        "mean predictive log density outside the training range",
        2,
        shown=[("mnf", m) for m in others],
        tail=f"; share of held-out points outside within ± 3 std: "
        f"{_values(v, 'toy-cubic', cov, ran, 3)} (0.997 when calibrated)",
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
        "mnist-mnf-similar-to-ensemble",
        "4.1 MNIST",
        "mnist",
        "With MNF posteriors the error reaches accuracies similar to Deep Ensembles'.",
        "Table 2",
        "table2",
        _similar_error("mnist", "mnf", "ensemble", "MNIST"),
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
        "cifar-ensemble-dropout-similar-uncertainty",
        "4.1 CIFAR 10",
        "cifar5",
        "Deep Ensembles and Dropout have similar uncertainties on the hidden classes.",
        "Figure 3",
        "ecdf-cifar5",
        _similar_ood_entropy("cifar5", "dropout", ("ensemble",), "CIFAR 5"),
    ),
    Claim(
        "cifar-gaussian-similar-to-loguniform",
        "4.1 CIFAR 10",
        "cifar5",
        "The networks with Gaussian priors (FFG, MNFG) have uncertainty similar to the "
        "network with the log-uniform prior (FFLU) on the hidden classes.",
        "Figure 3",
        "ecdf-cifar5",
        _similar_ood_entropy("cifar5", "fflu", ("ffg", "mnf"), "CIFAR 5"),
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
        "toy-mnf-closer-to-true-posterior",
        "4.3",
        "toy-cubic",
        "MNF's predictive distribution is more realistic, closer to the true posterior: "
        "read here as the highest held-out log density outside the training range among "
        "the Figure 6 models.",
        "Figure 6",
        "toy-bands",
        _toy_mnf_closer_to_truth,
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
