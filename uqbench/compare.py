"""Which metric differences between posteriors are resolved: intervals over seeds or test examples.

A :class:`Stat` is one number per run (read from its recorded metrics) that can also be
recomputed from the run's saved per-example outputs under bootstrap weights. On a
:class:`uqbench.report.view.ResultsView`:

* :func:`interval` gives a method's mean with its interval at ``view.level`` (95% unless a
  claim's multiplicity correction asks more; t over seeds; with one seed, a bootstrap over
  test examples when outputs were saved; else none);
* :func:`compare` gives the difference of two methods with its interval (paired t over the
  seeds both ran; when each ran one seed, the same, a paired bootstrap over test examples);
* :func:`best` names the best method of a column only when it beats every other resolved.

With ``view.test_noise`` (:meth:`ResultsView.with_test_noise`), the intervals over seeds are
widened by the test set's noise (:func:`uqbench.stats.t_with_test_noise`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from uqbench import metric_catalog as catalog
from uqbench import stats as S

if TYPE_CHECKING:  # pragma: no cover
    from uqbench.report.view import ResultsView

Outputs = Mapping[str, np.ndarray]
Weights = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Stat:
    """A per-run number: ``value`` from a run's metrics, ``weighted`` from its saved outputs.

    ``groups`` names the groups of examples ``weighted`` resamples ("test", "ood:<set>",
    "fgsm", "inside", "outside"); ``lower_better`` is None when neither direction is better;
    ``bounds``: the values it can take (a method's interval is clipped to them).
    ``linear``: for a statistic that is a mean over one group's examples, that group and the
    per-example values (``weighted(o, w) == w_mean(values, w[group])``; None where the
    outputs do not give it): the test-set noise then has a closed form (:func:`_linear_rows`).
    """

    name: str
    value: Callable[[dict[str, Any]], float | None]
    weighted: Callable[[Outputs, Weights], float | None] | None = None
    groups: tuple[str, ...] = ()
    lower_better: bool | None = None
    bounds: tuple[float | None, float | None] = (None, None)
    linear: Callable[[Outputs], tuple[str, np.ndarray] | None] | None = None


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _path(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def get(metrics: dict[str, Any]) -> float | None:
        d: Any = metrics
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return _num(d)

    return get


def _correct(o: Outputs) -> np.ndarray:
    return (o["test.pred"] == o["test.y"]).astype(float)


def _test_mean(values: Callable[[Outputs], np.ndarray]) -> dict[str, Any]:
    """``weighted`` and ``linear`` of :class:`Stat` for the mean of per-example ``values`` of
    the test examples."""

    def weighted(o: Outputs, w: Weights) -> float | None:
        return S.w_mean(values(o), w["test"])

    return {"weighted": weighted, "linear": lambda o: ("test", values(o))}


def _declared(
    name: str,
    weighted: Callable[[Outputs, Weights], float | None] | None = None,
    linear: Callable[[Outputs], tuple[str, np.ndarray] | None] | None = None,
) -> Stat:
    """The Stat of the test-set metric ``name`` as declared in :mod:`uqbench.metric_catalog`
    (its path and direction), recomputed under bootstrap weights by ``weighted``."""
    m = catalog.metric(name)
    groups = ("test",) if weighted else ()
    return Stat(name, _path(*m.path), weighted, groups, m.lower_better, m.bounds, linear)


STATS: dict[str, Stat] = {
    "error_pct": _declared("error_pct", **_test_mean(lambda o: 100 * (1 - _correct(o)))),
    "nll": _declared("nll", **_test_mean(lambda o: -np.asarray(o["test.logp_true"], float))),
    "brier": _declared("brier", **_test_mean(lambda o: np.asarray(o["test.brier"], float))),
    "ece": _declared(
        "ece", lambda o, w: S.w_ece(np.asarray(o["test.conf"], float), _correct(o), w["test"])
    ),
    "test_median_entropy": _declared(
        "test_median_entropy",
        S.Prepared(lambda o: _w_quantile_of(np.asarray(o["test.entropy"], float), "test", 0.5)),
    ),
}


def _w_quantile_of(x: np.ndarray, group: str, q: float) -> S.OfWeights:
    """The weighted ``q`` quantile of ``x`` as a function of the weights, ``x`` sorted once."""
    order = np.argsort(x, kind="stable")
    return lambda w: S.w_quantile(x, w[group], q, order)


def _ecdf_area_value(ood: str, h_max: float) -> Callable[[dict[str, Any]], float | None]:
    """Trapezoid area under the recorded ECDF curve over its grid [0, ln K]."""

    def get(metrics: dict[str, Any]) -> float | None:
        e = ((metrics.get("ood") or {}).get(ood) or {}).get("entropy_ecdf") or {}
        g, c = e.get("grid"), e.get("cdf")
        if not isinstance(g, list) or not isinstance(c, list) or len(g) != len(c) or len(g) < 2:
            return None
        g, c = np.asarray(g, float), np.asarray(c, float)
        return float(np.sum((c[1:] + c[:-1]) / 2 * np.diff(g)))

    return get


def ood_stat(ood: str, what: str, h_max: float = math.log(10)) -> Stat:
    """A statistic of the OOD set ``ood``: auroc, fpr95, fpr95_in, median_entropy,
    mean_entropy or ecdf_area (area under the entropy ECDF over [0, ``h_max``])."""
    key, g = f"ood.{ood}.entropy", f"ood:{ood}"
    # The groups each statistic resamples: the test examples only where it reads them.
    groups = ("test", g) if what in ("auroc", "fpr95", "fpr95_in") else (g,)

    def h(o: Outputs) -> np.ndarray:
        return np.asarray(o[key], float)

    def hin(o: Outputs) -> np.ndarray:
        return np.asarray(o["test.entropy"], float)

    # Each is prepared once per run's outputs (the conversions and sorting) and then
    # evaluated under many bootstrap weights (uqbench.stats.Prepared).
    def fpr95(o: Outputs) -> S.OfWeights:
        # metrics.fpr95's threshold: the largest entropy that still flags >= 95% of the OOD
        # weight, i.e. the 95% quantile of -h (not the 5% quantile of h, one point lower).
        neg, x_in = _w_quantile_of(-h(o), g, 0.95), hin(o)

        def of_w(w: Weights) -> float | None:
            thr = neg(w)
            return None if thr is None else S.w_mean((x_in >= -thr).astype(float), w["test"])

        return of_w

    def fpr95_in(o: Outputs) -> S.OfWeights:
        q_in, x = _w_quantile_of(hin(o), "test", 0.95), h(o)

        def of_w(w: Weights) -> float | None:
            thr = q_in(w)
            return None if thr is None else S.w_mean((x <= thr).astype(float), w[g])

        return of_w

    def auroc(o: Outputs) -> S.OfWeights:
        x_in, x = hin(o), h(o)
        ranks = S.auroc_ranks(x_in, x)
        return lambda w: S.w_auroc(x_in, w["test"], x, w[g], ranks)

    weighted: dict[str, Callable[..., Any]] = {
        "auroc": S.Prepared(auroc),
        "fpr95": S.Prepared(fpr95),
        "fpr95_in": S.Prepared(fpr95_in),
        "median_entropy": S.Prepared(lambda o: _w_quantile_of(h(o), g, 0.5)),
        "mean_entropy": lambda o, w: S.w_mean(h(o), w[g]),
    }
    name = f"ood.{ood}.{what}"
    if what == "ecdf_area":  # a statistic of the recorded curve, not a declared metric

        def area(o: Outputs, w: Weights) -> float | None:
            return S.ecdf_area(h(o), w[g], h_max)

        # The area is h_max - E[min(h, h_max)]: a mean over the set's examples.
        def per_example(o: Outputs) -> tuple[str, np.ndarray]:
            return g, h_max - np.clip(h(o), 0.0, h_max)

        value = _ecdf_area_value(ood, h_max)
        return Stat(name, value, area, groups, True, (0.0, h_max), per_example)
    m = catalog.metric(what)
    if m.scope != "ood":
        declared = [d.name for d in catalog.metrics("ood")]
        raise KeyError(
            f"{what!r} is not a metric of an OOD set; declared: {', '.join(declared)}, ecdf_area"
        )
    value = _path("ood", ood, *m.path)
    linear = (lambda o: (g, h(o))) if what == "mean_entropy" else None
    return Stat(name, value, weighted.get(what), groups, m.lower_better, m.bounds, linear)


def _fgsm_value(what: str) -> Callable[[dict[str, Any]], float | None]:
    def get(metrics: dict[str, Any]) -> float | None:
        f = metrics.get("fgsm") or {}
        acc, ent = f.get("accuracy"), f.get("mean_entropy")
        if not isinstance(acc, list) or not isinstance(ent, list) or len(acc) < 2:
            return None
        if what == "adv_accuracy":
            adv = [_num(a) for a in acc[1:]]
            return None if None in adv else float(np.mean(adv))
        return _num(ent[-1] if what == "last_entropy" else acc[-1])

    return get


def fgsm_stat(what: str) -> Stat:
    """FGSM: ``adv_accuracy`` (mean accuracy over eps > 0), ``last_entropy`` (mean entropy
    at the largest eps) or ``last_accuracy``."""

    def weighted(o: Outputs, w: Weights) -> float | None:
        if "fgsm.correct" not in o or o["fgsm.correct"].shape[0] < 2:
            return None
        c, e = o["fgsm.correct"].astype(float), o["fgsm.entropy"].astype(float)
        if what == "adv_accuracy":
            vals = [S.w_mean(row, w["fgsm"]) for row in c[1:]]
            return None if None in vals else float(np.mean(vals))
        return S.w_mean(e[-1] if what == "last_entropy" else c[-1], w["fgsm"])

    def linear(o: Outputs) -> tuple[str, np.ndarray] | None:
        # The mean over eps > 0 of means with the same weights is the mean of each point's
        # mean over eps > 0.
        if "fgsm.correct" not in o or o["fgsm.correct"].shape[0] < 2:
            return None
        c, e = o["fgsm.correct"].astype(float), o["fgsm.entropy"].astype(float)
        if what == "adv_accuracy":
            return "fgsm", c[1:].mean(0)
        return "fgsm", e[-1] if what == "last_entropy" else c[-1]

    lower = {"adv_accuracy": False, "last_accuracy": False, "last_entropy": None}[what]
    bounds = (0.0, None) if what == "last_entropy" else (0.0, 1.0)
    return Stat(f"fgsm.{what}", _fgsm_value(what), weighted, ("fgsm",), lower, bounds, linear)


def regression_stat(what: str) -> Stat:
    """Toy regression: ``loglik_<set>``, ``coverage_3std_<set>`` (set: inside / outside)."""
    kind, where = what.rsplit("_", 1)

    def values(o: Outputs) -> np.ndarray:
        y, m, v = (np.asarray(o[f"{where}.{k}"], float) for k in ("y", "mean", "var"))
        if kind == "loglik":
            return -0.5 * (np.log(2 * math.pi * v) + (y - m) ** 2 / v)
        return (np.abs(y - m) <= 3 * np.sqrt(v)).astype(float)

    def weighted(o: Outputs, w: Weights) -> float | None:
        return S.w_mean(values(o), w[where])

    m = catalog.metric(what)
    linear = lambda o: (where, values(o))  # noqa: E731
    return Stat(what, _path(what), weighted, (where,), m.lower_better, m.bounds, linear)


def metric_stat(name: str, ood: str | None = None, h_max: float = math.log(10)) -> Stat:
    """The Stat of declared metric ``name`` (of the OOD set ``ood`` for a per-set metric), with
    its bootstrap recomputation where one is known here, else from recorded values only."""
    m = catalog.metric(name)
    if m.scope == "ood":
        if ood is None:
            raise ValueError(f"metric {name} is per OOD set: name the set")
        return ood_stat(ood, name, h_max)
    if name in STATS:
        return STATS[name]
    if name.startswith(("loglik_", "coverage_3std_")):
        return regression_stat(name)
    return Stat(name, _path(*m.path), None, (), m.lower_better, m.bounds)


# -- on a results view --------------------------------------------------------------------------


def _group_arrays(group: str) -> tuple[str, str | None]:
    """The saved outputs array holding one entry per example of ``group`` (a statistic's
    group of examples), and the one holding their positions in their data set (None: never
    saved). FGSM's points are test examples: their positions are ``test.index[fgsm.index]``."""
    if group == "test":
        return "test.y", "test.index"
    if group.startswith("ood:"):
        return f"ood.{group[4:]}.entropy", f"ood.{group[4:]}.index"
    if group == "fgsm":
        return "fgsm.index", "test.index"
    return f"{group}.y", None


def _sizes(stat: Stat, outputs: Outputs) -> dict[str, int] | None:
    sizes = {}
    for g in stat.groups:
        key = _group_arrays(g)[0]
        if key not in outputs:
            return None
        sizes[g] = len(outputs[key])
    return sizes


def _positions(group: str, out: Outputs) -> np.ndarray | None:
    """Where each example of ``group`` lies in its data set, as the run saved it, or None."""
    key = _group_arrays(group)[1]
    if key is None or key not in out:
        return None
    pos = np.asarray(out[key], dtype=np.int64)
    if group == "fgsm":
        pos = pos[np.asarray(out["fgsm.index"], dtype=np.int64)]
    return pos


def _by_seed(view: ResultsView, task: str, method: str, stat: Stat) -> dict[int, float]:
    out = {}
    for r in view.runs_for(task, method):
        x = stat.value(r.get("metrics") or {})
        if x is not None:
            out[int(r["seed"])] = x
    return out


def _run(view: ResultsView, task: str, method: str, seed: int) -> dict[str, Any] | None:
    for r in view.runs_for(task, method):
        if int(r["seed"]) == seed:
            return r
    return None


def _replicates(
    view: ResultsView, run: dict[str, Any], stat: Stat, plan: tuple[Any, S.Pooled] | None = None
) -> np.ndarray | None:
    """``stat`` of ``run`` under each bootstrap resample of its examples (cached; None
    without saved outputs). Runs with as many examples per group get the same resamples;
    with a ``plan`` (its cache key, and the run's :class:`uqbench.stats.Pooled`, from
    :func:`_pairing`), runs get the same count for an example wherever they scored it."""
    out = view.outputs(run)
    sizes = _sizes(stat, out) if out is not None and stat.weighted else None
    if not sizes or any(n == 0 for n in sizes.values()):
        return None
    key = (
        "replicates",
        run.get("predictions"),
        stat.name,
        tuple(sorted(sizes.items())),
        None if plan is None else plan[0],
    )
    if key not in view.cache:
        try:
            view.cache[key] = S.bootstrap_values(
                stat.weighted,
                out,
                sizes,
                n_boot=S.N_BOOT_VAR,
                pooled=None if plan is None else plan[1],
            )
        except KeyError:  # outputs of a task that saves fewer per-example arrays
            view.cache[key] = None
    return view.cache[key]


def _pairing(
    stat: Stat, outs: list[Outputs]
) -> tuple[list[tuple[Any, S.Pooled] | None], list[str]] | str:
    """How runs' examples are paired in :func:`_test_variance`, group by group: by identity
    where every run saved the examples' positions (:func:`_positions`), else by order.

    Returns one plan per run for :func:`_replicates` (all None when every group is paired
    by order: the plain bootstrap) and the groups paired by order; or why the runs cannot
    be paired (a group paired by order holds different numbers of examples, positions
    that do not match their examples).
    """
    sizes = [_sizes(stat, out) or {} for out in outs]
    by_id: dict[str, list[np.ndarray]] = {}
    by_order: list[str] = []
    for g in stat.groups:
        found = [_positions(g, out) for out in outs]
        if all(pos is not None for pos in found):
            for pos, sz in zip(found, sizes, strict=True):
                if pos.ndim != 1 or len(pos) != sz.get(g) or (len(pos) and pos.min() < 0):
                    return f"saved positions of the {g} examples do not match them"
            by_id[g] = found  # type: ignore[assignment]
        elif len({sz.get(g) for sz in sizes}) != 1:
            return "the runs hold different numbers of examples"
        else:
            by_order.append(g)
    if not by_id:
        return [None] * len(outs), by_order
    # Each pool's members: the union of the positions any run saved (FGSM's points are in
    # the test pool); a group paired by order is a pool of its own of that many members.
    members: dict[str, np.ndarray] = {}
    for g, found in by_id.items():
        pool = "test" if g == "fgsm" else g
        members[pool] = np.unique(
            np.concatenate([members.get(pool, np.zeros(0, np.int64)), *found])
        )
    pool_sizes = {p: len(m) for p, m in members.items()}
    pool_sizes.update({f"order:{g}": sizes[0][g] for g in by_order})
    key = tuple(
        (p, n, hashlib.sha1(members[p].tobytes()).hexdigest() if p in members else "")
        for p, n in sorted(pool_sizes.items())
    )
    plans: list[tuple[Any, S.Pooled] | None] = []
    for i in range(len(outs)):
        where: dict[str, tuple[str, np.ndarray]] = {}
        for g, found in by_id.items():
            pool = "test" if g == "fgsm" else g
            where[g] = (pool, np.searchsorted(members[pool], found[i]))
        for g in by_order:
            where[g] = (f"order:{g}", np.arange(sizes[0][g]))
        plans.append((key, S.Pooled(pool_sizes, where)))
    return plans, by_order


def _bootstrap(
    stat: Stat, a: Outputs, b: Outputs | None, sizes: dict[str, int], level: float
) -> S.Interval | None:
    """:func:`uqbench.stats.bootstrap` of ``stat`` (of ``a - b`` with ``b``); None where
    the outputs lack an array the statistic reads (a task that saves fewer)."""
    try:
        return S.bootstrap(stat.weighted, a, b, sizes, level=level)
    except KeyError:
        return None


def _test_variance(
    view: ResultsView, task: str, seeds: list[int], a: str, b: str | None, stat: Stat
) -> tuple[float, str] | str:
    """The test-set noise of ``stat``'s mean over ``seeds`` (of ``a - b`` when ``b`` is
    given) that the seeds' spread cannot show, with a note for its ``how``; or why it
    cannot be had.

    Each seed's value (difference) is recomputed on bootstrap resamples of the test
    examples, the same resample for every seed and both methods. Its variance over
    resamples holds a part particular to the seed (the examples on which that seed's models
    happen to differ), which the seeds' spread already shows, and a part common to all
    seeds (examples every seed's models find hard or easy), which it cannot, as every seed
    is scored on the one test set. The common part is the covariance of two seeds'
    replicates: its mean over pairs of seeds, at least 0. Where each seed draws its own
    test set (the toy task) there is no common part and it is ~0. For a mean over examples
    (``stat.linear``) that covariance is computed in closed form (:func:`_linear_rows`),
    not from :data:`uqbench.stats.N_BOOT_VAR` replicates.

    Where each seed draws its own subset of one pool (CIFAR-5: 2,000 of 5,000 test images,
    ~40% shared by two seeds), the positions the runs saved of their examples in their data
    set (``test.index``, ``ood.<set>.index``) pair them image by image, through a Poisson
    bootstrap over the pool's images (:class:`uqbench.stats.Pooled`, :func:`_pairing`). A
    group of examples without saved positions is paired by order, which is right where
    every seed scores the same examples in the same order (a whole test set) and finds ~0
    where seeds score different subsets (runs made before positions were saved; ``python -m
    uqbench.migrate`` adds them); the note names such groups when others were paired by
    position.
    """
    if stat.weighted is None:
        return "not recomputable from per-example outputs"
    runs = []
    for s in seeds:
        for m, sign in ((a, 1.0), (b, -1.0)):
            if m is None:
                continue
            run = _run(view, task, m, s)
            out = None if run is None else view.outputs(run)
            if out is None:
                if run is not None and isinstance(run.get("predictions"), str):
                    return f"{m} seed {s}'s saved per-example outputs are missing or unreadable"
                return f"{m} seed {s} saved no per-example outputs"
            sizes = _sizes(stat, out)
            if not sizes or any(n == 0 for n in sizes.values()):
                return f"{m} seed {s}'s outputs lack this statistic's examples"
            runs.append((s, m, sign, run))
    outs = [view.outputs(run) for *_, run in runs]
    pairing = _pairing(stat, outs)
    if isinstance(pairing, str):
        return pairing
    plans, by_order = pairing
    mixed = by_order and plans[0] is not None
    note = f"; {', '.join(by_order)} paired by order (no saved positions)" if mixed else ""
    if stat.linear is not None:
        rows = _linear_rows(stat, [(s, sign) for s, _, sign, _ in runs], outs, plans)
        if rows is not None:
            return max(0.0, _mean_cross(rows @ rows.T)), f"; its covariance in closed form{note}"
    by_seed: dict[int, Any] = {}
    for (s, m, sign, run), plan in zip(runs, plans, strict=True):
        reps = _replicates(view, run, stat, plan)
        if reps is None:
            return f"{m} seed {s}'s outputs lack this statistic's examples"
        by_seed[s] = by_seed.get(s, 0.0) + sign * reps
    r = np.vstack(list(by_seed.values()))
    r = r[:, np.all(np.isfinite(r), axis=0)]
    if r.shape[1] < S.N_BOOT_VAR // 2:
        return "too few bootstrap replicates defined"
    return max(0.0, _mean_cross(np.cov(r, ddof=1))), note


def _mean_cross(cov: np.ndarray) -> float:
    """Mean of the off-diagonal entries of a k x k covariance matrix (k >= 2)."""
    k = len(cov)
    return float((cov.sum() - np.trace(cov)) / (k * (k - 1)))


def _linear_rows(
    stat: Stat,
    seeds: list[tuple[int, float]],
    outs: list[Outputs],
    plans: list[tuple[Any, S.Pooled] | None],
) -> np.ndarray | None:
    """Each seed's value (difference) as a linear function of the bootstrap's weights: one
    row per seed, one column per resampled unit (a pool member, or an example paired by
    order), or None where ``stat.linear`` gives no finite values.

    A mean ``sum_i w_i v_i / sum_i w_i`` over a run's ``n`` examples is, to first order in
    the weights, ``mean(v) + sum_i (w_i - 1)(v_i - mean(v)) / n``. Under the Poisson bootstrap
    (independent unit-variance counts per member) two seeds' values then covary by the dot
    product of their rows; under the multinomial one (every group paired by order) the same,
    exactly, the rows' entries summing to 0. That is the covariance :func:`_test_variance`
    otherwise estimates from :data:`uqbench.stats.N_BOOT_VAR` replicates, without their Monte
    Carlo error.
    """
    rows: dict[int, np.ndarray] = {}
    for (seed, sign), out, plan in zip(seeds, outs, plans, strict=True):
        got = stat.linear(out)  # type: ignore[misc]
        if got is None:
            return None
        group, v = got[0], np.asarray(got[1], float)
        if not len(v) or not np.all(np.isfinite(v)):
            return None
        if plan is None:
            units, pos = len(v), np.arange(len(v))
        else:
            pool, pos = plan[1].positions[group]
            units = plan[1].sizes[pool]
        row = np.zeros(units)
        np.add.at(row, pos, sign * (v - v.mean()) / len(v))
        rows[seed] = rows[seed] + row if seed in rows else row
    return np.vstack(list(rows.values()))


def unpaired_tasks(view: ResultsView) -> list[str]:
    """Classification tasks some of whose runs saved per-example outputs without the
    examples' positions (``test.index``): :func:`_test_variance` pairs those by order."""
    tasks = []
    for task in view.tasks():
        outs = [view.outputs(r) for m in view.methods(task) for r in view.runs_for(task, m)]
        if any(o is not None and "test.y" in o and "test.index" not in o for o in outs):
            tasks.append(task)
    return tasks


def _with_test_noise(
    view: ResultsView, task: str, seeds: list[int], a: str, b: str | None, stat: Stat,
    values: list[float], seeds_only: S.Interval,
) -> S.Interval:  # fmt: skip
    """``seeds_only`` widened by the test-set noise common to the seeds
    (:func:`_test_variance`) when ``view.test_noise`` asks for it; else, or when the noise
    cannot be had, ``seeds_only``, saying why.

    Seeds that agree exactly get no interval either way: their spread, which carries the
    test-set noise particular to each seed, was not measured (a quantized metric), so the
    shared part alone would be too narrow. Where neither source varies, a zero-width
    ``seeds_only`` keeps its width of 0.
    """
    if not view.test_noise or seeds_only.lo is None:
        return seeds_only
    got = _test_variance(view, task, seeds, a, b, stat)
    if isinstance(got, str):
        how = f"{seeds_only.how}; seeds only: {got}"
        return S.Interval(seeds_only.value, seeds_only.lo, seeds_only.hi, seeds_only.n, how)
    var, note = got
    both = S.t_with_test_noise(values, var, view.level)
    if both.lo is None:
        return seeds_only
    return S.Interval(both.value, both.lo, both.hi, both.n, both.how + note)


def interval(view: ResultsView, task: str, method: str, stat: Stat) -> S.Interval | None:
    """Mean of ``stat`` over ``method``'s seeds with its interval at ``view.level`` (None:
    never ran); with ``view.test_noise``, widened by the test set's noise."""
    key = ("interval", task, method, stat.name, view.level, view.test_noise)
    if key in view.cache:
        return view.cache[key]
    vals = _by_seed(view, task, method, stat)
    result: S.Interval | None = None
    if len(vals) >= 2:
        values = list(vals.values())
        result = _with_test_noise(
            view, task, list(vals), method, None, stat, values, S.t_interval(values, view.level)
        )
    elif len(vals) == 1:
        ((seed, x),) = vals.items()
        result = S.Interval(x, None, None, 1, "one seed, no saved per-example outputs")
        run = _run(view, task, method, seed)
        out = view.outputs(run) if run else None
        sizes = _sizes(stat, out) if out is not None and stat.weighted else None
        if sizes:
            b = _bootstrap(stat, out, None, sizes, view.level)
            if b is not None:
                result = S.Interval(x, b.lo, b.hi, 1, "bootstrap over test examples, one seed")
    if result is not None:
        result = S.clipped(result, *stat.bounds)
    view.cache[key] = result
    return result


def compare(view: ResultsView, task: str, a: str, b: str, stat: Stat) -> S.Interval | None:
    """``stat(a) - stat(b)`` on ``task`` with its interval (``view.level``); None when either
    never ran.

    Paired t over the seeds both ran (two or more); with ``view.test_noise``, widened by
    the test set's noise (:func:`uqbench.stats.t_with_test_noise`). When each method ran
    one seed, the same one, a paired bootstrap over test examples if both runs saved
    outputs. A single common seed of methods that ran more gets no interval: a bootstrap
    over one seed's test examples would leave out the seed-to-seed noise the other seeds
    show.
    """
    key = ("compare", task, a, b, stat.name, view.level, view.test_noise)
    if key in view.cache:
        return view.cache[key]
    va, vb = _by_seed(view, task, a, stat), _by_seed(view, task, b, stat)
    common = sorted(set(va) & set(vb))
    result: S.Interval | None = None
    if len(common) >= 2:
        xa, xb = [va[s] for s in common], [vb[s] for s in common]
        diffs = [x - y for x, y in zip(xa, xb, strict=True)]
        result = _with_test_noise(
            view, task, common, a, b, stat, diffs, S.paired_t(xa, xb, view.level)
        )
    elif common and max(len(va), len(vb)) > 1:
        s = common[0]
        how = f"one seed in common ({len(va)} and {len(vb)} seeds): no interval"
        result = S.Interval(va[s] - vb[s], None, None, 1, how)
    elif common:
        s = common[0]
        diff = va[s] - vb[s]
        result = S.Interval(diff, None, None, 1, "one seed, no saved per-example outputs")
        ra, rb = _run(view, task, a, s), _run(view, task, b, s)
        oa = view.outputs(ra) if ra else None
        ob = view.outputs(rb) if rb else None
        if oa is not None and ob is not None and stat.weighted is not None:
            sizes = _sizes(stat, oa)
            if sizes and sizes == _sizes(stat, ob):
                bt = _bootstrap(stat, oa, ob, sizes, view.level)
                if bt is not None:
                    result = S.Interval(diff, bt.lo, bt.hi, 1, bt.how + ", one seed")
    elif va and vb:  # no common seed: unpaired, no interval
        diff = float(np.mean(list(va.values())) - np.mean(list(vb.values())))
        result = S.Interval(diff, None, None, 0, "no seed in common: not paired")
    view.cache[key] = result
    return result


def order(view: ResultsView, task: str, low: str, high: str, stat: Stat) -> int:
    """+1 when ``stat(low) < stat(high)`` is resolved, -1 when the opposite is, else 0."""
    c = compare(view, task, low, high, stat)
    return 0 if c is None else -c.sign


def best(view: ResultsView, task: str, methods: list[str], stat: Stat) -> tuple[str | None, bool]:
    """The method with the best mean for ``stat`` and whether it beats every other resolved."""
    if stat.lower_better is None:
        return None, False
    means = {}
    for m in methods:
        iv = interval(view, task, m, stat)
        if iv is not None:
            means[m] = iv.value
    if len(means) < 2:
        return None, False
    sign = 1 if stat.lower_better else -1
    top = min(means, key=lambda m: sign * means[m])
    resolved = all(
        order(view, task, top, m, stat) == sign
        if stat.lower_better
        else order(view, task, m, top, stat) == 1
        for m in means
        if m != top
    )
    return top, resolved
