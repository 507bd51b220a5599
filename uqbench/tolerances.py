"""Derive regression-check tolerances from the spread of repeated runs.

Run the same suite several times with different seeds (``--seed-offset`` or the like), then::

    python -m uqbench.tolerances results/reference/smoke-tolerances.json R1.json R2.json R3.json

For each (method, task, metric) the tolerance is ``max(k * std, floor[kind])`` where ``std`` is
the sample standard deviation (ddof=1) across the repeats of the metric's seed-mean -- the very
statistic that :func:`uqbench.check.check_results` compares -- and ``floor`` keeps a metric
whose repeats happened to agree from getting a zero tolerance. The floors are also written as
the file's ``default``, used for a metric without a per-run entry.

With ``--alpha A`` (issue 16) k is no longer one number: for a (method, task) whose spread is
over n repeats, ``k = sqrt(2) * t_{n-1}(1 - A/2)``, the half-width, in units of the estimated
std, of the (1 - A) prediction interval of the difference between two single-seed runs (the
new run and the reference) when the std itself is estimated from n repeats: few repeats give
a wide k, honestly. With ``--pool``, a (method, task) with fewer than ``--min-repeats``
repeats uses ``max(own std, pooled std)``, the pooled one over the methods of its task (their
variances around their own means, dof summed; for the metrics of :data:`RELATIVE_SPREAD`,
whose spread scales with their level, the variance of ``value / mean``, scaled back by the
method's own mean) and k from the pooled dof. A metric whose
tolerance would exceed its ``USEFUL_MAX`` (the widest tolerance still worth checking) is
not given that tolerance: it goes to the file's ``unchecked`` list with the numbers, and
the check shows it but never fails on it. So does a metric only one repeat holds (no spread
measured), and every metric of a task in ``--unchecked-tasks`` (left to the tripwire and
``uqbench check --close``).

With ``--reference-mean`` the check's reference is not one run but the mean of the repeats
themselves (every repeat given to ``uqbench check --reference``): a new run of as many
seeds as one repeat (one, in CI) lies within ``k = sqrt(1 + 1/n) t_dof(1 - A/2)`` stds of
it (the prediction interval of a new value around the mean of the n the std was estimated
from), 0.77 times ``sqrt(2) t`` for n = 5.
The file then has schema ``uqbench.tolerances/2`` and records ``reference_runs``, the runs
per (method, task) the reference must hold.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from uqbench import metric_catalog as catalog
from uqbench.check import (
    TOLERANCES_SCHEMA,
    TOLERANCES_SCHEMA_MEAN,
    aggregate_run_metrics,
    group_runs,
    metric_kind,
    read_json,
    resolve_results_path,
    run_metric_paths,
    run_name,
    validate_results,
)
from uqbench.errors import ResultsError, UQBenchError

# Smallest tolerance of each metric kind (absolute, in the metric's units: error_pct in
# percentage points, FGSM accuracy as stored in the results, log-likelihoods in nats): the
# ``floor`` of each checked metric's declaration in uqbench.metric_catalog.
DEFAULT_FLOOR: dict[str, float] = catalog.floors()


# Widest tolerance still worth checking, per metric kind (same units as DEFAULT_FLOOR): a
# tolerance wider than this would let through the bugs the check is for (a doubled MNIST
# error, an OOD AUROC halfway to chance, a toy band that no longer covers the data), so a
# metric whose seed spread needs more is left unchecked instead (issue 16). Declared with each
# metric (``useful_max`` in uqbench.metric_catalog).
USEFUL_MAX: dict[str, float] = catalog.useful_maxes()


# Metrics whose seed spread scales with their level (MC dropout's mutual information is 20
# times the ensemble's, and so is its spread): pooled across methods as relative spread.
RELATIVE_SPREAD = frozenset(m.name for m in catalog.metrics(checked=True) if m.relative_spread)


def _left_to_tripwire(task: str) -> str:
    return (
        f"task {task} left to the tripwire: its single-seed values are too heavy-tailed over "
        "seeds for a std-based tolerance (--unchecked-tasks)"
    )


def k_for_repeats(n: int, alpha: float, reference_runs: int = 1) -> float:
    """``sqrt(1 + 1 / reference_runs) * t_{n-1}(1 - alpha/2)``: the multiple of a std
    estimated from ``n`` repeats that bounds, with probability ``1 - alpha``, the difference
    between a new single-seed run and the reference: one run (``sqrt(2)``), or the mean of
    ``reference_runs`` runs (the prediction interval of a new value around a mean)."""
    from scipy.stats import t

    if n < 2:
        raise ResultsError(f"a spread needs at least 2 repeats, got {n}")
    if reference_runs < 1:
        raise ResultsError(f"the reference needs at least 1 run, got {reference_runs}")
    return math.sqrt(1.0 + 1.0 / reference_runs) * float(t.ppf(1.0 - alpha / 2.0, n - 1))


def derive_tolerances(
    runs_of_repeats: list[dict],
    k: float = 4.0,
    floor: dict[str, float] | None = None,
    sources: list[str] | None = None,
    *,
    alpha: float | None = None,
    pool: bool = False,
    min_repeats: int = 5,
    useful: dict[str, float] | None = None,
    unchecked_tasks: tuple[str, ...] = (),
    reference_mean: bool = False,
) -> dict:
    """Tolerance file dict from several results dicts of one suite run with different seeds.

    ``floor`` maps a metric kind (``auroc``, ``error_pct``, ``fgsm.accuracy_mean``; see
    :func:`uqbench.check.metric_kind`) or a full metric path to its smallest tolerance
    (defaults to the declared floors, :func:`uqbench.metric_catalog.floors`; a kind absent
    from it has floor 0). ``sources`` names the repeats in ``derived_from``. A metric with
    exactly one non-null repeat is listed as unchecked (no spread measured, so no tolerance);
    one with none gets no entry (the check falls back to the default). Repeats may
    hold different (method, task) pairs: each pair's spread is over the repeats that hold it
    (``repeats`` in the result says how many).
    With ``alpha``, k depends on each pair's number of repeats (:func:`k_for_repeats`) and
    is written to the file's ``k``; with ``pool`` too, pairs with fewer than ``min_repeats``
    repeats use ``max(own std, pooled std over the task's methods)`` and the pooled dof.
    ``useful`` (kind or path -> widest useful tolerance; :data:`USEFUL_MAX` when ``alpha`` is
    given) moves a metric whose tolerance would be wider into ``unchecked``; every metric of
    ``unchecked_tasks`` goes there too (a task whose seed spread is too heavy-tailed for a
    std-based bound: it is left to the tripwire).
    ``reference_mean`` (with ``alpha``): the reference the check compares with is the mean of
    these repeats (every repeat given to ``uqbench check --reference``), not one of them:
    a new single-seed run differs from it by ``sqrt(1 + 1/n)`` stds, not ``sqrt(2)``, so
    the same repeats give tolerances ``sqrt((1 + 1/n) / 2)`` as wide (0.77 for 5 repeats).
    Raises ResultsError on fewer than two repeats, mixed suites, a seed shared between
    repeats, or a non-finite metric.
    """
    floor = dict(catalog.floors() if floor is None else floor)
    if useful is None:
        useful = dict(USEFUL_MAX) if alpha is not None else {}
    if alpha is not None and not 0 < alpha < 1:
        raise ResultsError(f"alpha must be in (0, 1), got {alpha!r}")
    if reference_mean and alpha is None:
        raise ResultsError("a reference that is the repeats' mean needs --alpha (k from n)")
    if k <= 0 or not math.isfinite(k):
        raise ResultsError(f"k must be a positive number, got {k!r}")
    if len(runs_of_repeats) < 2:
        raise ResultsError(
            f"need at least 2 repeated results to derive tolerances, got {len(runs_of_repeats)}"
        )
    names = sources or [f"repeat {i}" for i in range(len(runs_of_repeats))]
    groups = []
    for name, results in zip(names, runs_of_repeats, strict=True):
        validate_results(results, name)
        groups.append(group_runs(results, name))
    suites = {r.get("suite") for r in runs_of_repeats}
    if len(suites) != 1:
        raise ResultsError(f"repeats are of different suites: {sorted(map(str, suites))}")
    suite = suites.pop()

    # Repeats may cover different (method, task) pairs (the cheap tasks repeated more often):
    # each pair's spread is over the repeats that hold it.
    keys = list(dict.fromkeys(k for g in groups for k in g))
    # Identical seeds would measure only non-determinism, not the seed spread.
    seen: dict[tuple[str, str, int], str] = {}
    for name, g in zip(names, groups, strict=True):
        for (method, task), by_seed in g.items():
            for seed in by_seed:
                key = (method, task, seed)
                if key in seen:
                    raise ResultsError(
                        f"run {run_name(key)} is in both {seen[key]} and {name}: "
                        "repeats must use different seeds"
                    )
                seen[key] = name

    # Each (method, task)'s seed-mean of each metric, one value per repeat holding it.
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    repeats: dict[str, int] = {}  # how many repeats each (method, task)'s spread is over
    runs_in: dict[str, int] = {}  # and how many runs those repeats hold (the mean's runs)
    single: dict[tuple[str, str], list[str]] = {}  # metrics held by one repeat only
    for method, task in keys:
        paths: list[str] = []
        having = [g for g in groups if (method, task) in g]
        for g in having:
            for run in g[(method, task)].values():
                paths += [p for p in run_metric_paths(run["metrics"]) if p not in paths]
        aggs = [aggregate_run_metrics(list(g[(method, task)].values()), paths) for g in having]
        values[(method, task)] = {}
        for path in paths:
            vals = [a[path].value for a in aggs if a[path].value is not None]
            if any(not math.isfinite(v) for v in vals):
                raise ResultsError(f"metric {path} of {method}/{task} is not finite in a repeat")
            if len(vals) >= 2:
                values[(method, task)][path] = vals
            elif vals:  # no spread measured: the check's floor would be a guess
                single.setdefault((method, task), []).append(path)
        repeats[f"{method}/{task}"] = len(having)
        runs_in[f"{method}/{task}"] = sum(len(g[(method, task)]) for g in having)

    # Pooled variance per (task, metric) over the methods: sum of squared deviations from
    # each method's own mean over the summed dof (relative to that mean for RELATIVE_SPREAD).
    pooled: dict[tuple[str, str], tuple[float, int]] = {}
    for (_, task), by_path in values.items():
        for path, vals in by_path.items():
            mean = sum(vals) / len(vals)
            scale = abs(mean) if metric_kind(path) in RELATIVE_SPREAD else 1.0
            if scale == 0 or scale < floor.get(path, floor.get(metric_kind(path), 0.0)):
                # a level below the floor (L2's mutual information: float noise around 0)
                # says nothing about the relative spread of the others
                continue
            ss, dof = pooled.get((task, path), (0.0, 0))
            dev = sum(((v - mean) / scale) ** 2 for v in vals)
            pooled[(task, path)] = (ss + dev, dof + len(vals) - 1)

    per_run: dict[str, dict[str, float]] = {}
    unchecked: dict[str, dict[str, str]] = {}
    k_used: dict[str, float] = {}
    for (method, task), paths_once in single.items():
        for path in paths_once:
            unchecked.setdefault(f"{method}/{task}", {})[path] = (
                _left_to_tripwire(task)
                if task in unchecked_tasks
                else "one repeat: no seed spread measured, so no tolerance (the tripwire sees it)"
            )
    for (method, task), by_path in values.items():
        name = f"{method}/{task}"
        entry: dict[str, float] = {}
        for path, vals in by_path.items():
            std, n_eff = statistics.stdev(vals), len(vals)
            how = f"{len(vals)} repeats"
            if pool and len(vals) < min_repeats:
                ss, dof = pooled.get((task, path), (0.0, 0))
                scale = abs(sum(vals) / len(vals)) if metric_kind(path) in RELATIVE_SPREAD else 1
                if dof >= len(vals):  # other methods add to the estimate
                    std, n_eff = max(std, scale * math.sqrt(ss / dof)), dof + 1
                    how = f"{len(vals)} repeats, pooled over {task}'s methods ({dof} dof)"
            if task in unchecked_tasks:
                unchecked.setdefault(name, {})[path] = _left_to_tripwire(task)
                continue
            ref_runs = len(vals) if reference_mean else 1
            k_here = k if alpha is None else k_for_repeats(n_eff, alpha, ref_runs)
            low = floor.get(path, floor.get(metric_kind(path), 0.0))
            tol = max(k_here * std, low)
            top = useful.get(path, useful.get(metric_kind(path)))
            if top is not None and tol > top:
                unchecked.setdefault(name, {})[path] = (
                    f"too noisy: {k_here:.3g} x seed std {std:.3g} ({how}) = {tol:.3g} > "
                    f"{top:g}, the widest useful tolerance"
                )
                continue
            entry[path] = tol
            if alpha is not None:
                k_used[name] = max(k_used.get(name, 0.0), k_here)
        per_run[name] = entry

    rule = f"{k:g}" if alpha is None else f"sqrt(2) t_(n-1)(1 - {alpha:g}/2)"
    if reference_mean:
        rule = (
            f"sqrt(1 + 1/n) t_dof(1 - {alpha:g}/2) (dof: n - 1, or pooled), the reference "
            "being the repeats' mean,"
        )
    if pool:
        rule += f" (pooled over a task's methods below {min_repeats} repeats)"
    out = {
        "schema": TOLERANCES_SCHEMA_MEAN if reference_mean else TOLERANCES_SCHEMA,
        "suite": suite,
        "derived_from": (
            f"max({rule} * sample std (ddof=1) across {len(runs_of_repeats)} repeats of the "
            f"seed-mean, floor) from: {', '.join(names)}"
        ),
        "default": floor,
        "repeats": repeats,
        "per_run": per_run,
    }
    if alpha is not None:
        out["alpha"] = alpha
        out["k"] = k_used
    if reference_mean:
        out["reference"] = "mean of the repeats"
        out["reference_runs"] = runs_in
    if unchecked:
        out["unchecked"] = unchecked
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m uqbench.tolerances OUT.json RESULTS1.json RESULTS2.json ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m uqbench.tolerances",
        description="Derive check tolerances from repeated runs of one suite (different seeds).",
    )
    parser.add_argument("out", type=Path, help="tolerance file to write")
    parser.add_argument(
        "results", type=Path, nargs="+", help="results.json files (or their directories)"
    )
    parser.add_argument("--k", type=float, default=4.0, help="multiple of the std (default 4)")
    parser.add_argument(
        "--alpha",
        type=float,
        help="instead of --k: k = sqrt(2) t_(n-1)(1 - alpha/2) for n repeats; metrics whose "
        "tolerance exceeds USEFUL_MAX are listed as unchecked",
    )
    parser.add_argument(
        "--pool",
        action="store_true",
        help="below --min-repeats, use max(own std, std pooled over the task's methods)",
    )
    parser.add_argument("--min-repeats", type=int, default=5, help="see --pool (default 5)")
    parser.add_argument(
        "--unchecked-tasks",
        nargs="+",
        default=[],
        metavar="TASK",
        help="list every metric of these tasks as unchecked (left to the tripwire and "
        "`uqbench check --close`)",
    )
    parser.add_argument(
        "--tasks", nargs="+", help="only runs of these tasks (repeats may hold other runs too)"
    )
    parser.add_argument(
        "--reference-mean",
        action="store_true",
        help="with --alpha: the check's reference is the mean of the repeats (pass them all "
        "to `uqbench check --reference`), so k = sqrt(1 + 1/n) t_(n-1)(1 - alpha/2)",
    )
    args = parser.parse_args(argv)
    try:
        files = [resolve_results_path(p) for p in args.results]
        repeats = [read_json(f, "results file") for f in files]
        if args.tasks:
            for r in repeats:
                if isinstance(r, dict) and isinstance(r.get("runs"), list):
                    r["runs"] = [x for x in r["runs"] if x.get("task") in args.tasks]
        tol = derive_tolerances(
            repeats,
            k=args.k,
            sources=[str(f) for f in files],
            alpha=args.alpha,
            pool=args.pool,
            min_repeats=args.min_repeats,
            unchecked_tasks=tuple(args.unchecked_tasks),
            reference_mean=args.reference_mean,
        )
    except UQBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(tol, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} (suite {tol['suite']!r}): {tol['derived_from']}")
    default = tol["default"]
    for run, entry in tol["per_run"].items():
        for path, value in entry.items():
            low = default.get(path, default.get(metric_kind(path), 0.0))
            print(f"  {run:28s} {path:30s} {value:.4g}" + ("  (floor)" if value == low else ""))
    for run, entry in tol.get("unchecked", {}).items():
        for path, reason in entry.items():
            print(f"  {run:28s} {path:30s} unchecked: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
