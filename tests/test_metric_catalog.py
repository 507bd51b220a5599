"""The metric declarations: their paths lead to real values, the check applies the declared
direction, and one new declaration reaches the check, the tolerances and the report."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from helpers import MeanBrightness, StubTask, grey_levels_data

from uqbench import metric_catalog as catalog
from uqbench.check import check_results, load_tolerances, lookup_tolerance, run_metric_paths
from uqbench.evaluate import evaluate_classification
from uqbench.metric_catalog import MetricDef
from uqbench.report import write_report
from uqbench.tolerances import derive_tolerances

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"


def _at(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _shift_metrics() -> dict[str, Any]:
    """What evaluate_classification records with dataset shift on (the ci reference has none)."""
    shift = {"n": 20, "rotations": [0, 90], "corruptions": ["contrast"], "severities": [1]}
    return evaluate_classification(
        MeanBrightness(), StubTask(), grey_levels_data(), test_samples=2, fgsm=False,
        fgsm_samples=1, fgsm_n=None, progress=False, shift=shift,
    )  # fmt: skip


def _value(metrics: dict[str, Any], m: MetricDef) -> list[float]:
    """The metric's values in one run's metrics (one per OOD set for a per-set metric)."""
    if m.scope == "ood":
        found = [_at(entry, m.path) for entry in (metrics.get("ood") or {}).values()]
    elif m.scope == "fgsm":
        acc = _at(metrics, m.path)
        found = [sum(acc) / len(acc)] if isinstance(acc, list) and acc else []
    elif m.scope == "q_layers":
        layers = (_at(metrics, ("diagnostics", "q_layers")) or {}).values()
        per_layer = [q.get(m.path[-1]) for q in layers if isinstance(q, dict)]
        found = [sum(per_layer) / len(per_layer)] if per_layer and None not in per_layer else []
    else:
        found = [_at(metrics, m.path)]
    return [float(v) for v in found if isinstance(v, int | float) and not isinstance(v, bool)]


def test_every_declared_path_leads_to_a_recorded_number():
    runs = json.loads((REFERENCE / "ci.json").read_text())["runs"]
    sources = [r["metrics"] for r in runs] + [_shift_metrics()]
    for m in catalog.METRICS:
        values = [v for metrics in sources for v in _value(metrics, m)]
        assert values, f"no recorded value at the path of {m.name}"
        assert all(math.isfinite(v) for v in values)


def test_every_report_table_column_is_declared_and_tables_have_no_duplicates():
    for table in catalog.REPORT_TABLES:
        names = [m.name for m, _ in catalog.table_columns(table)]
        assert len(names) == len(set(names)), table
    with pytest.raises(KeyError, match="no metric 'nope' is declared"):
        catalog.metric("nope")
    with pytest.raises(ValueError, match="scope"):
        MetricDef("x", ("x",), "lower", "x", scope="per-eps")


def _run_of(results: dict, method: str, task: str) -> dict:
    return next(r for r in results["runs"] if (r["method"], r["task"]) == (method, task))


def _move(results: dict, metric: MetricDef, method: str, task: str, by: float) -> None:
    for run in results["runs"]:
        if run["method"] != method or run["task"] != task:
            continue
        metrics = run["metrics"]
        if metric.scope == "ood":
            for entry in metrics["ood"].values():
                entry[metric.path[-1]] += by
        elif metric.scope == "fgsm":
            metrics["fgsm"]["accuracy"] = [a + by for a in metrics["fgsm"]["accuracy"]]
        elif metric.scope == "q_layers":
            for q in metrics["diagnostics"]["q_layers"].values():
                q[metric.path[-1]] += by
        else:
            _at(metrics, metric.path[:-1])[metric.path[-1]] += by


@pytest.mark.parametrize("metric", catalog.metrics(checked=True), ids=lambda m: m.name)
def test_the_check_compares_each_checked_metric_in_its_declared_direction(metric: MetricDef):
    reference = json.loads((REFERENCE / "ci.json").read_text())
    tolerances = load_tolerances(REFERENCE / "ci-tolerances.json")
    if metric.name in ("rotated_accuracy_mean", "corrupted_accuracy_mean"):
        # the ci reference has no shift: give one run the metric, in both files
        run = next(r for r in reference["runs"] if "error_pct" in r["metrics"])
        run["metrics"][metric.name] = 0.5
    # Direction is the point here: check every metric, also those the ci tolerances leave
    # unchecked as too noisy (each then at its derived or floor tolerance).
    tolerances = {**tolerances, "unchecked": {}}
    method, task = next(
        (r["method"], r["task"]) for r in reference["runs"] if _value(r["metrics"], metric)
    )
    held = run_metric_paths(_run_of(reference, method, task)["metrics"])
    paths = [p for p in held if p == metric.name or p.endswith("." + metric.name)]
    by = 2 * max(lookup_tolerance(tolerances, method, task, p) for p in paths) + 0.01
    worse = -1.0 if metric.better == "higher" else 1.0
    # a metric with no better value is checked both ways: either move is a regression
    other = "improved" if metric.better else "regressed"
    for sign, status in ((worse, "regressed"), (-worse, other)):
        current = copy.deepcopy(reference)
        _move(current, metric, method, task, sign * by)
        rows = [
            r
            for r in check_results(current, reference, tolerances).rows
            if (r.method, r.task) == (method, task) and r.metric in paths
        ]
        assert rows and {r.status for r in rows} == {status}
        assert {r.direction for r in rows} == {metric.direction}


def test_a_new_declaration_reaches_the_check_the_tolerances_and_the_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    new = MetricDef("toy_score", ("toy_score",), "lower", "toy score", 2, floor=0.25)
    monkeypatch.setattr(catalog, "METRICS", (*catalog.METRICS, new))
    monkeypatch.setitem(catalog.REPORT_TABLES, "beyond", ("aurc", "toy_score"))

    def results(seed: int, value: float) -> dict[str, Any]:
        run = {
            "method": "l2",
            "task": "mnist",
            "seed": seed,
            "metrics": {"error_pct": 1.0, "aurc": 0.01, "toy_score": value},
        }
        return {"schema": "uqbench.results/2", "suite": "s", "runs": [run]}

    # tolerances: two repeats that agree get the declared floor, also as the default
    tol = derive_tolerances([results(0, 0.5), results(1, 0.5)])
    assert tol["per_run"]["l2/mnist"]["toy_score"] == 0.25
    assert tol["default"]["toy_score"] == 0.25
    # the check: lower is better, within the floor is ok, beyond it regressed
    for value, status in ((0.7, "ok"), (0.8, "regressed"), (0.2, "improved")):
        report = check_results(results(0, value), results(0, 0.5), tol)
        (row,) = [r for r in report.rows if r.metric == "toy_score"]
        assert (row.status, row.direction) == (status, "lower")
    # the report: a column headed as declared, with the declared decimals
    out = tmp_path / "report"
    out.mkdir()
    write_report(results(0, 0.123456), out)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| method | AURC | toy score |" in md
    assert "| L2 | 0.0100 | 0.12 |" in md
