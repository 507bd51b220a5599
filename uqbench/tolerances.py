"""Derive regression-check tolerances from the spread of repeated runs.

Run the same suite several times with different seeds (``--seed-offset`` or the like), then::

    python -m uqbench.tolerances results/reference/smoke-tolerances.json R1.json R2.json R3.json

For each (method, task, metric) the tolerance is ``max(k * std, floor[kind])`` where ``std`` is
the sample standard deviation (ddof=1) across the repeats of the metric's seed-mean -- the very
statistic that :func:`uqbench.check.check_results` compares -- and ``floor`` keeps a metric
whose repeats happened to agree from getting a zero tolerance. The floors are also written as
the file's ``default``, used for a metric without a per-run entry.
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


def derive_tolerances(
    runs_of_repeats: list[dict],
    k: float = 4.0,
    floor: dict[str, float] | None = None,
    sources: list[str] | None = None,
) -> dict:
    """Tolerance file dict from several results dicts of one suite run with different seeds.

    ``floor`` maps a metric kind (``auroc``, ``error_pct``, ``fgsm.accuracy_mean``; see
    :func:`uqbench.check.metric_kind`) or a full metric path to its smallest tolerance
    (defaults to the declared floors, :func:`uqbench.metric_catalog.floors`; a kind absent
    from it has floor 0). ``sources`` names the repeats in ``derived_from``. A metric with
    fewer than two non-null repeats gets no per-run entry (the default applies). Repeats may
    hold different (method, task) pairs: each pair's spread is over the repeats that hold it
    (``repeats`` in the result says how many).
    Raises ResultsError on fewer than two repeats, mixed suites, a seed shared between
    repeats, or a non-finite metric.
    """
    floor = dict(catalog.floors() if floor is None else floor)
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

    per_run: dict[str, dict[str, float]] = {}
    repeats: dict[str, int] = {}  # how many repeats each (method, task)'s spread is over
    for method, task in keys:
        paths: list[str] = []
        having = [g for g in groups if (method, task) in g]
        for g in having:
            for run in g[(method, task)].values():
                paths += [p for p in run_metric_paths(run["metrics"]) if p not in paths]
        aggs = [aggregate_run_metrics(list(g[(method, task)].values()), paths) for g in having]
        entry: dict[str, float] = {}
        for path in paths:
            values = [a[path].value for a in aggs if a[path].value is not None]
            if any(not math.isfinite(v) for v in values):
                raise ResultsError(f"metric {path} of {method}/{task} is not finite in a repeat")
            if len(values) < 2:
                continue
            low = floor.get(path, floor.get(metric_kind(path), 0.0))
            entry[path] = max(k * statistics.stdev(values), low)
        per_run[f"{method}/{task}"] = entry
        repeats[f"{method}/{task}"] = len(having)

    return {
        "schema": TOLERANCES_SCHEMA,
        "suite": suite,
        "derived_from": (
            f"max({k:g} * sample std (ddof=1) across {len(runs_of_repeats)} repeats of the "
            f"seed-mean, floor) from: {', '.join(names)}"
        ),
        "default": floor,
        "repeats": repeats,
        "per_run": per_run,
    }


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
        "--tasks", nargs="+", help="only runs of these tasks (repeats may hold other runs too)"
    )
    args = parser.parse_args(argv)
    try:
        files = [resolve_results_path(p) for p in args.results]
        repeats = [read_json(f, "results file") for f in files]
        if args.tasks:
            for r in repeats:
                if isinstance(r, dict) and isinstance(r.get("runs"), list):
                    r["runs"] = [x for x in r["runs"] if x.get("task") in args.tasks]
        tol = derive_tolerances(repeats, k=args.k, sources=[str(f) for f in files])
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
