"""Issue 16: tolerances that hold over new seeds, metrics too noisy to check, and the metrics
added because planted bugs were invisible (epistemic share of the predictive, MNF's q(z)).

Expected numbers are computed by hand, or from tabulated Student-t quantiles, never by the
module under test.
"""

from __future__ import annotations

import copy
import math
import statistics

import numpy as np
import pytest

from uqbench.check import check_results, format_check_table, validate_tolerances
from uqbench.errors import ResultsError
from uqbench.mutation import main as mutation_main
from uqbench.tolerances import derive_tolerances, k_for_repeats


def _run(method: str, task: str, seed: int, **metrics) -> dict:
    return {"method": method, "task": task, "seed": seed, "metrics": metrics}


def _results(runs: list[dict]) -> dict:
    return {"schema": "uqbench.results/2", "suite": "ci", "runs": runs}


def _tol(per_run: dict, unchecked: dict | None = None) -> dict:
    tol = {"schema": "uqbench.tolerances/1", "suite": "ci", "default": {}, "per_run": per_run}
    if unchecked is not None:
        tol["unchecked"] = unchecked
    return tol


@pytest.mark.parametrize(
    ("n", "alpha", "t_quantile"),
    [
        (10, 0.001, 4.781),  # t_9(0.9995), from a t table
        (5, 0.001, 8.610),  # t_4(0.9995)
        (3, 0.05, 4.303),  # t_2(0.975)
    ],
)
def test_k_is_the_prediction_bound_of_a_difference_of_two_runs(n, alpha, t_quantile):
    assert k_for_repeats(n, alpha) == pytest.approx(math.sqrt(2) * t_quantile, abs=2e-3)


def test_k_against_the_mean_of_the_repeats_is_the_prediction_bound_of_a_new_value():
    # From the t table: sqrt(1 + 1/5) t_4(0.9995), and the one-run case is sqrt(2) t.
    assert k_for_repeats(5, 0.001, reference_runs=5) == pytest.approx(
        math.sqrt(1.2) * 8.610, abs=2e-3
    )
    assert k_for_repeats(5, 0.001, reference_runs=1) == k_for_repeats(5, 0.001)
    # Monte Carlo: a new draw lies outside mean +- k s of n draws (s from those n) with
    # probability alpha.
    rng = np.random.default_rng(0)
    n, alpha, sims = 5, 0.1, 200_000
    x = rng.normal(size=(sims, n))
    new = rng.normal(size=sims)
    k = k_for_repeats(n, alpha, reference_runs=n)
    outside = np.abs(new - x.mean(1)) > k * x.std(1, ddof=1)
    assert outside.mean() == pytest.approx(alpha, abs=0.003)
    with pytest.raises(ResultsError, match="at least 1 run"):
        k_for_repeats(5, 0.001, reference_runs=0)


def test_tolerances_against_the_repeats_mean_are_narrower_by_sqrt_of_0_6_for_5():
    vals = [0.91, 0.94, 0.90, 0.95, 0.93]
    repeats = [
        _results([_run("ffg", "mnist", s, **{"ood": {"x": {"auroc": vals[s]}}})]) for s in range(5)
    ]
    one = derive_tolerances(repeats, floor={}, alpha=0.001, useful={})
    mean = derive_tolerances(repeats, floor={}, alpha=0.001, useful={}, reference_mean=True)
    path = "ood.x.auroc"
    assert one["per_run"]["ffg/mnist"][path] == pytest.approx(
        math.sqrt(2) * 8.610 * statistics.stdev(vals), rel=1e-3
    )
    assert mean["per_run"]["ffg/mnist"][path] == pytest.approx(
        math.sqrt(1.2) * 8.610 * statistics.stdev(vals), rel=1e-3
    )
    assert mean["reference"] == "mean of the repeats" and "reference" not in one
    # A uqbench that predates the mean would hold it against one run: a new schema version.
    assert (one["schema"], mean["schema"]) == ("uqbench.tolerances/1", "uqbench.tolerances/2")
    validate_tolerances(mean)
    with pytest.raises(ResultsError, match="schema 'uqbench.tolerances/1' with reference"):
        validate_tolerances({**mean, "schema": "uqbench.tolerances/1"})
    assert "1 + 1/n" in mean["derived_from"]
    assert mean["reference_runs"] == {"ffg/mnist": 5}
    with pytest.raises(ResultsError, match="needs --alpha"):
        derive_tolerances(repeats, reference_mean=True)


def test_pooled_tolerance_against_the_mean_by_hand():
    # Two methods of one task, 3 repeats each, pooled (below 10 repeats): the std is
    # max(own, pooled) with the pooled dof (2 + 2 = 4), the 1 + 1/n the method's own 3 runs.
    a, b = [0.90, 0.92, 0.94], [0.80, 0.86, 0.74]
    repeats = [
        _results(
            [
                _run("ffg", "mnist", s, **{"ood": {"x": {"auroc": a[s]}}}),
                _run("mnf", "mnist", s, **{"ood": {"x": {"auroc": b[s]}}}),
            ]
        )
        for s in range(3)
    ]
    tol = derive_tolerances(
        repeats, floor={}, alpha=0.001, useful={}, pool=True, min_repeats=10, reference_mean=True
    )
    ss = sum((v - sum(a) / 3) ** 2 for v in a) + sum((v - sum(b) / 3) ** 2 for v in b)
    pooled = math.sqrt(ss / 4)
    k = math.sqrt(1 + 1 / 3) * 8.610  # t_4(0.9995), from a t table
    got = {m: tol["per_run"][f"{m}/mnist"]["ood.x.auroc"] for m in ("ffg", "mnf")}
    assert got["ffg"] == pytest.approx(k * max(statistics.stdev(a), pooled), rel=1e-3)
    assert got["mnf"] == pytest.approx(k * max(statistics.stdev(b), pooled), rel=1e-3)
    assert statistics.stdev(a) < pooled < statistics.stdev(b)  # both branches of the max


def test_alpha_tolerance_is_k_of_n_times_std_and_noisy_metrics_are_unchecked():
    # 10 repeats of two (method, task) pairs: a quiet metric and a noisy one.
    quiet = [-3.0, -3.1, -2.9, -3.05, -2.95, -3.0, -3.1, -2.9, -3.02, -2.98]
    noisy = [0.1, 0.4, 0.2, 0.35, 0.05, 0.3, 0.15, 0.25, 0.45, 0.12]
    repeats = [
        _results(
            [_run("mnf", "toy-cubic", s, loglik_inside=quiet[s], coverage_3std_outside=noisy[s])]
        )
        for s in range(10)
    ]
    tol = derive_tolerances(repeats, floor={}, alpha=0.001, useful={"coverage_3std_outside": 0.1})
    k = math.sqrt(2) * 4.781
    assert tol["per_run"]["mnf/toy-cubic"]["loglik_inside"] == pytest.approx(
        k * statistics.stdev(quiet), rel=1e-3
    )
    assert "coverage_3std_outside" not in tol["per_run"]["mnf/toy-cubic"]
    reason = tol["unchecked"]["mnf/toy-cubic"]["coverage_3std_outside"]
    assert "too noisy" in reason and "10 repeats" in reason
    assert tol["k"]["mnf/toy-cubic"] == pytest.approx(k, abs=3e-3)
    validate_tolerances(tol)


def test_pooling_uses_the_larger_of_own_and_pooled_std_with_the_pooled_dof():
    # Two methods on one task, 2 repeats each: own std from 1 dof, pooled from 2 dof.
    # AUROC is pooled as is; error_pct relative to each method's mean (its spread scales).
    def run(m, s, auroc, err):
        return _run(m, "mnist", s, error_pct=err, ood={"notmnist": {"auroc": auroc}})

    repeats = [
        _results([run("a", 0, 0.90, 3.0), run("b", 0, 0.80, 2.0)]),
        _results([run("a", 1, 0.92, 3.2), run("b", 1, 0.86, 2.6)]),
    ]
    tol = derive_tolerances(repeats, floor={}, alpha=0.05, pool=True, useful={})
    k3 = math.sqrt(2) * 4.303  # pooled dof 2 -> t_2(0.975)
    auroc = "ood.notmnist.auroc"
    # Squared deviations from each method's mean: a: 2 * 0.01^2, b: 2 * 0.03^2; dof 1 + 1.
    pooled = math.sqrt((2 * 0.01**2 + 2 * 0.03**2) / 2)
    assert tol["per_run"]["a/mnist"][auroc] == pytest.approx(k3 * pooled, rel=1e-3)
    # b's own std (0.0424) is above the pooled one (0.0316): the larger one is used.
    own_b = statistics.stdev([0.80, 0.86])
    assert tol["per_run"]["b/mnist"][auroc] == pytest.approx(k3 * own_b, rel=1e-3)
    # error_pct: relative deviations 0.1 / 3.1 and 0.3 / 2.3, scaled back by a's mean 3.1.
    cv = math.sqrt((2 * (0.1 / 3.1) ** 2 + 2 * (0.3 / 2.3) ** 2) / 2)
    assert tol["per_run"]["a/mnist"]["error_pct"] == pytest.approx(k3 * 3.1 * cv, rel=1e-3)
    own_b = statistics.stdev([2.0, 2.6])  # 0.424 > 2.3 * cv = 0.309
    assert tol["per_run"]["b/mnist"]["error_pct"] == pytest.approx(k3 * own_b, rel=1e-3)


def test_relative_pooling_ignores_a_method_whose_level_is_below_the_floor():
    # L2's mutual information is float noise around 0: its huge relative spread must not
    # widen dropout's tolerance. Pooled over dropout alone (1 dof) = its own std.
    repeats = [
        _results([_run("l2", "mnist", s, test_mutual_info_mean=mi), _run("d", "mnist", s,
                  test_mutual_info_mean=dmi)])
        for s, (mi, dmi) in enumerate([(2.6e-8, 0.093), (1e-9, 0.087)])
    ]  # fmt: skip
    floor = {"test_mutual_info_mean": 0.002}
    tol = derive_tolerances(repeats, floor=floor, alpha=0.05, pool=True, useful={})
    k2 = math.sqrt(2) * 12.706  # t_1(0.975): only dropout's dof
    assert tol["per_run"]["d/mnist"]["test_mutual_info_mean"] == pytest.approx(
        k2 * statistics.stdev([0.093, 0.087]), rel=1e-3
    )


def test_unchecked_tasks_list_every_metric_of_the_task():
    repeats = [
        _results(
            [
                _run("l2", "toy-cubic", s, loglik_inside=-3.0 - s / 10),
                _run("l2", "mnist", s, nll=0.1),
            ]
        )
        for s in range(3)
    ]
    tol = derive_tolerances(repeats, alpha=0.001, unchecked_tasks=("toy-cubic",))
    assert "loglik_inside" in tol["unchecked"]["l2/toy-cubic"]
    assert tol["per_run"]["l2/toy-cubic"] == {} and "nll" in tol["per_run"]["l2/mnist"]


def test_unchecked_metric_is_shown_but_never_fails_the_check():
    ref = _results([_run("mnf", "toy-cubic", 0, loglik_inside=-3.0, coverage_3std_outside=0.2)])
    cur = _results([_run("mnf", "toy-cubic", 5, loglik_inside=-3.1, coverage_3std_outside=0.6)])
    tol = _tol(
        {"mnf/toy-cubic": {"loglik_inside": 0.5}},
        {"mnf/toy-cubic": {"coverage_3std_outside": "too noisy: 0.54 > 0.1"}},
    )
    report = check_results(cur, ref, tol, seeds="any", two_sided=True)
    assert report.passed
    row = next(r for r in report.rows if r.metric == "coverage_3std_outside")
    assert row.status == "unchecked" and row.delta == pytest.approx(0.4)
    assert "unchecked (too noisy" in format_check_table(report)
    # Without the entry (and no tolerance) the same metric is an error, not a silent pass.
    with pytest.raises(ResultsError, match="no tolerance for metric 'coverage_3std_outside'"):
        check_results(cur, ref, _tol({"mnf/toy-cubic": {"loglik_inside": 0.5}}), seeds="any")


def test_bad_unchecked_table_is_refused():
    with pytest.raises(ResultsError, match="'unchecked' must map"):
        validate_tolerances(_tol({}, {"mnf/toy-cubic": ["coverage_3std_outside"]}))


def test_collapsed_mutual_information_is_a_regression():
    ref = _results([_run("ensemble", "mnist", 0, test_mutual_info_mean=0.004)])
    cur = _results([_run("ensemble", "mnist", 100, test_mutual_info_mean=0.0)])
    tol = _tol({"ensemble/mnist": {"test_mutual_info_mean": 0.002}})
    report = check_results(cur, ref, tol, seeds="any")
    (row,) = report.rows
    assert row.direction == "higher" and row.status == "regressed"
    assert row.delta == pytest.approx(-0.004)


def test_q_layers_metric_is_the_mean_over_layers_of_the_diagnostic():
    def diag(*spreads: float) -> dict:
        layers = {f"layer{i}": {"z_spread_rel": v, "kl": 1.0} for i, v in enumerate(spreads)}
        return {"q_layers": layers}

    ref = _results([_run("mnf", "mnist", 0, diagnostics=diag(0.3, 0.5))])
    cur = _results([_run("mnf", "mnist", 100, diagnostics=diag(0.0, 0.0))])
    tol = _tol({"mnf/mnist": {"q_layers.z_spread_rel": 0.1}})
    (row,) = check_results(cur, ref, tol, seeds="any").rows
    assert row.metric == "q_layers.z_spread_rel"
    assert row.reference == pytest.approx(0.4) and row.current == 0.0
    assert row.status == "regressed"
    # FFG's q_layers have no z: no such metric, nothing to compare.
    ffg = _results([_run("ffg", "mnist", 0, diagnostics={"q_layers": {"layer0": {"kl": 1.0}}})])
    assert check_results(copy.deepcopy(ffg), ffg, _tol({})).rows == []


def test_allow_missed_names_must_be_mutants(capsys, tmp_path):
    assert mutation_main(["--out", str(tmp_path), "--allow-missed", "no-such-bug"]) == 2
    assert "unknown mutant(s) no-such-bug" in capsys.readouterr().err


def test_a_metric_of_one_repeat_is_unchecked_not_left_at_the_floor():
    # MNIST has two repeats of nll; the toy and MNIST's shift metric only one: no spread
    # measured, so neither may fall back to the floor (a new seed would move them past it).
    repeats = [
        _results(
            [
                _run("l2", "mnist", 0, nll=0.10, rotated_accuracy_mean=0.7),
                _run("l2", "toy-cubic", 0, loglik_inside=-3.0),
            ]
        ),
        _results([_run("l2", "mnist", 1, nll=0.12)]),
    ]
    tol = derive_tolerances(repeats, k=4.0, unchecked_tasks=("toy-cubic",))
    assert tol["per_run"]["l2/mnist"]["nll"] == pytest.approx(4 * statistics.stdev([0.10, 0.12]))
    assert "rotated_accuracy_mean" not in tol["per_run"]["l2/mnist"]
    assert "one repeat" in tol["unchecked"]["l2/mnist"]["rotated_accuracy_mean"]
    assert "tripwire" in tol["unchecked"]["l2/toy-cubic"]["loglik_inside"]
    assert tol["per_run"]["l2/toy-cubic"] == {}
    validate_tolerances(tol, "derived")
