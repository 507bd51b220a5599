"""Tests of the CI regression check (uqbench.check) and tolerance derivation (uqbench.tolerances).

Results dicts are synthetic, built here after schema.md (uqbench.results/1); expected means,
deltas and tolerances are computed by hand or with numpy, independently of the module.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from uqbench.check import (
    check_identical,
    check_results,
    format_check_table,
    format_report,
    load_tolerances,
    run_check,
    settings_differences,
)
from uqbench.cli import main as cli_main
from uqbench.errors import ResultsError
from uqbench.tolerances import derive_tolerances
from uqbench.tolerances import main as tolerances_main

METHODS = ("l2", "dropout", "ensemble")
EPS = [0.0, 0.1, 0.2, 0.3]


def _classification_metrics(method: str, seed: int) -> dict:
    base = {"l2": 1.0, "dropout": 0.8, "ensemble": 0.7}[method] + 0.05 * seed
    fgsm = None
    if method != "ensemble":  # FGSM is skipped for the ensemble, as in the real suite
        fgsm = {
            "eps": list(EPS),
            "accuracy": [0.99, 0.8 - 0.01 * seed, 0.5, 0.2],
            "mean_entropy": [0.1, 0.5, 0.9, 1.2],
        }
    ood = {
        name: {
            "auroc": auc,
            "fpr95": fpr,
            "median_entropy": 1.0,
            "mean_entropy": 1.1,
            "entropy_ecdf": {"grid": [0.0, 2.3], "cdf": [0.0, 1.0]},
        }
        for name, auc, fpr in (("notmnist", 0.9 + 0.01 * seed, 0.4), ("uniform", 0.95, 0.2))
    }
    return {
        "error_pct": base,
        "nll": 0.03 + 0.001 * seed,
        "brier": 0.015,
        "ece": 0.005,
        "reliability": {"bin_lower": [0.0], "bin_upper": [1.0], "confidence": [0.9],
                        "accuracy": [0.9], "count": [100]},
        "test_entropy": {"mean": 0.05, "median": 0.01},
        "ood": ood,
        "in_entropy_ecdf": {"grid": [0.0, 2.3], "cdf": [0.0, 1.0]},
        "fgsm": fgsm,
        "diagnostics": {},
    }  # fmt: skip


def _regression_metrics(method: str, seed: int) -> dict:
    return {
        "rmse": 3.0 + 0.1 * seed,
        "loglik_inside": -2.5,
        "loglik_outside": -4.0 - 0.2 * seed,
        "coverage_3std_inside": 0.99,
        "coverage_3std_outside": 0.9,
        "bands": {"x": [-6.0, 6.0], "mean": [0.0, 0.0], "std": [1.0, 1.0]},
        "train_points": {"x": [0.0], "y": [0.0]},
        "diagnostics": {},
    }


def make_results(suite: str = "smoke", seeds: tuple[int, ...] = (0, 1)) -> dict:
    """A merged results dict: METHODS x {mnist, toy-cubic} x seeds."""
    runs = []
    for method in METHODS:
        for task in ("mnist", "toy-cubic"):
            for seed in seeds:
                metrics = (
                    _classification_metrics(method, seed)
                    if task == "mnist"
                    else _regression_metrics(method, seed)
                )
                runs.append(
                    {
                        "method": method,
                        "display_name": method.upper(),
                        "task": task,
                        "seed": seed,
                        "train_seconds": 1.0,
                        "eval_seconds": 0.5,
                        "config": {},
                        "data": {"files": [], "verified": True, "notes": []},
                        "train_log": {"epoch": [], "loss": [], "nll": [], "kl": []},
                        "metrics": metrics,
                    }
                )
    return {
        "schema": "uqbench.results/1",
        "suite": suite,
        "command": f"uqbench run --suite {suite}",
        "environment": {"uqbench": "0.1.0", "device": "cpu", "git_commit": None},
        "runs": runs,
    }


TOL = {
    "schema": "uqbench.tolerances/1",
    "suite": "smoke",
    "derived_from": "hand-written for tests",
    "default": {
        "error_pct": 0.5,
        "nll": 0.02,
        "brier": 0.01,
        "ece": 0.01,
        "auroc": 0.02,
        "fpr95": 0.05,
        "fgsm.accuracy_mean": 0.02,
        "rmse": 0.2,
        "loglik_inside": 0.1,
        "loglik_outside": 0.3,
        "coverage_3std_inside": 0.02,
        "coverage_3std_outside": 0.05,
    },
    "per_run": {"dropout/mnist": {"error_pct": 0.3}},
}


def run_of(results: dict, method: str, task: str, seed: int) -> dict:
    (run,) = [
        r for r in results["runs"] if (r["method"], r["task"], r["seed"]) == (method, task, seed)
    ]
    return run


def row_of(report, method: str, task: str, metric: str):
    rows = [r for r in report.rows if (r.method, r.task, r.metric) == (method, task, metric)]
    assert len(rows) == 1, rows
    return rows[0]


def test_unchanged_results_pass_with_every_metric_compared():
    ref = make_results()
    report = check_results(copy.deepcopy(ref), ref, TOL)
    assert report.passed
    assert {r.status for r in report.rows} == {"ok"}
    # mnist: 4 scalars + 2 OOD sets x (auroc, fpr95) + fgsm (not for the ensemble, null in
    # both); toy-cubic: rmse + 2 logliks + 2 coverages.
    assert len(report.rows) == 3 * (4 + 4 + 1) - 1 + 3 * 5
    assert not any(r.metric == "fgsm.accuracy_mean" and r.method == "ensemble" for r in report.rows)
    # the seed-mean, by hand: dropout error 0.8 (seed 0) and 0.85 (seed 1)
    assert row_of(report, "dropout", "mnist", "error_pct").reference == pytest.approx(0.825)
    table = format_check_table(report)
    assert "(no metric moved)" in table
    assert "PASSED" in table.splitlines()[-1]


def test_error_rise_past_tolerance_fails_and_names_method_and_metric():
    ref = make_results()
    cur = copy.deepcopy(ref)
    # +0.7 on one of two seeds: the mean rises 0.35 > the per-run tolerance 0.3 of dropout/mnist
    run_of(cur, "dropout", "mnist", 0)["metrics"]["error_pct"] += 0.7
    report = check_results(cur, ref, TOL)
    assert not report.passed
    row = row_of(report, "dropout", "mnist", "error_pct")
    assert row.status == "regressed"
    assert row.delta == pytest.approx(0.35)
    assert row.tolerance == 0.3  # per-run entry beats the default 0.5
    assert [r for r in report.rows if r.status != "ok"] == [row]
    table = format_check_table(report)
    (line,) = [ln for ln in table.splitlines() if "REGRESSED" in ln]
    assert "dropout" in line and "mnist" in line and "error_pct" in line
    assert "FAILED" in table.splitlines()[-1]


def test_rise_within_tolerance_passes_but_is_shown():
    ref = make_results()
    cur = copy.deepcopy(ref)
    run_of(cur, "l2", "mnist", 1)["metrics"]["error_pct"] += 0.8  # mean +0.4 <= 0.5 default
    report = check_results(cur, ref, TOL)
    assert report.passed
    row = row_of(report, "l2", "mnist", "error_pct")
    assert (row.status, row.tolerance) == ("ok", 0.5)
    assert row.delta == pytest.approx(0.4)
    table = format_check_table(report)
    assert len(table.splitlines()) == 2 + 1 + 1  # header, rule, one row, summary


def test_improvement_passes_and_is_shown_as_improved():
    ref = make_results()
    cur = copy.deepcopy(ref)
    for seed in (0, 1):
        run_of(cur, "ensemble", "mnist", seed)["metrics"]["error_pct"] -= 0.6
    report = check_results(cur, ref, TOL)
    assert report.passed
    row = row_of(report, "ensemble", "mnist", "error_pct")
    assert row.status == "improved"
    assert row.delta == pytest.approx(-0.6)
    line = [ln for ln in format_check_table(report).splitlines() if "improved" in ln.split()]
    assert len(line) == 1 and "ensemble" in line[0]


def test_missing_run_is_refused_and_named():
    ref = make_results()
    cur = copy.deepcopy(ref)
    cur["runs"].remove(run_of(cur, "dropout", "toy-cubic", 1))
    with pytest.raises(ResultsError, match="dropout/toy-cubic/seed1"):
        check_results(cur, ref, TOL)


def test_extra_seed_in_results_is_ignored():
    ref = make_results(seeds=(0, 1))
    cur = make_results(seeds=(0, 1, 2))
    for run in cur["runs"]:
        if run["seed"] == 2:
            run["metrics"]["error_pct"] = 50.0  # would regress if it entered the mean
    assert check_results(cur, ref, TOL).passed


def test_wrong_schema_and_wrong_suite_are_refused():
    ref = make_results()
    cur = copy.deepcopy(ref)
    cur["schema"] = "uqbench.run/1"
    with pytest.raises(ResultsError, match="uqbench.run/1"):
        check_results(cur, ref, TOL)
    other = make_results(suite="paper")
    with pytest.raises(ResultsError, match="suite 'paper'"):
        check_results(other, ref, TOL)
    tol = dict(TOL, suite="paper")
    with pytest.raises(ResultsError, match="tolerances are for suite"):
        check_results(copy.deepcopy(ref), ref, tol)


def test_a_results_file_that_is_no_object_is_one_clear_line(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1] / "results"
    (tmp_path / "list.json").write_text("[]")
    argv = ["check", str(tmp_path / "list.json"), "--reference", str(root / "reference/ci.json")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "not a JSON object" in err and "Traceback" not in err


def test_another_suite_is_named_before_its_settings(capsys):
    # The quick suite's settings all differ from the ci suite's: the error says which suite
    # to run, not "other settings".
    root = Path(__file__).resolve().parents[1] / "results"
    argv = ["check", str(root / "quick"), "--reference", str(root / "reference" / "ci.json")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "results are of suite 'quick' but the reference is of suite 'ci'" in err
    assert "other settings" not in err


@pytest.mark.parametrize(
    ("path", "change", "status"),
    [
        ("auroc", -0.05, "regressed"),  # higher is better: a fall fails
        ("auroc", +0.05, "improved"),  # ... a rise passes
        ("auroc", -0.015, "ok"),
        ("fpr95", +0.08, "regressed"),  # lower is better: a rise fails
        ("fpr95", -0.08, "improved"),
    ],
)
def test_ood_metric_direction(path: str, change: float, status: str):
    ref = make_results()
    cur = copy.deepcopy(ref)
    for seed in (0, 1):
        run_of(cur, "l2", "mnist", seed)["metrics"]["ood"]["notmnist"][path] += change
    report = check_results(cur, ref, TOL)
    row = row_of(report, "l2", "mnist", f"ood.notmnist.{path}")
    assert row.status == status
    assert row.delta == pytest.approx(change)
    assert report.passed == (status != "regressed")


def test_loglik_and_rmse_direction():
    ref = make_results()
    cur = copy.deepcopy(ref)
    for seed in (0, 1):
        m = run_of(cur, "dropout", "toy-cubic", seed)["metrics"]
        m["loglik_outside"] -= 0.5  # fall beyond 0.3: worse
        m["loglik_inside"] += 0.5  # rise: better
        m["rmse"] -= 0.5  # fall: better
        m["coverage_3std_outside"] -= 0.1  # fall beyond 0.05: worse
    report = check_results(cur, ref, TOL)
    statuses = {
        r.metric: r.status for r in report.rows if r.method == "dropout" and "toy" in r.task
    }
    assert statuses == {
        "rmse": "improved",
        "loglik_inside": "improved",
        "loglik_outside": "regressed",
        "coverage_3std_inside": "ok",
        "coverage_3std_outside": "regressed",
    }


def test_fgsm_is_compared_as_mean_over_eps():
    ref = make_results()
    cur = copy.deepcopy(ref)
    # one eps of one seed drops by 0.2: mean over 4 eps and 2 seeds drops by 0.025 > 0.02
    run_of(cur, "l2", "mnist", 0)["metrics"]["fgsm"]["accuracy"][2] -= 0.2
    report = check_results(cur, ref, TOL)
    row = row_of(report, "l2", "mnist", "fgsm.accuracy_mean")
    expected_ref = np.mean([np.mean([0.99, 0.8, 0.5, 0.2]), np.mean([0.99, 0.79, 0.5, 0.2])])
    assert row.reference == pytest.approx(expected_ref)
    assert row.delta == pytest.approx(-0.025)
    assert row.status == "regressed"


def test_null_in_one_side_is_missing_and_other_eps_grid_too():
    ref = make_results()
    cur = copy.deepcopy(ref)
    run_of(cur, "l2", "mnist", 0)["metrics"]["fgsm"] = None  # null in one seed
    for seed in (0, 1):  # an FGSM result now where the reference has null
        run_of(cur, "ensemble", "mnist", seed)["metrics"]["fgsm"] = {
            "eps": list(EPS), "accuracy": [0.9] * 4, "mean_entropy": [0.1] * 4}  # fmt: skip
        del run_of(cur, "dropout", "mnist", seed)["metrics"]["ood"]["uniform"]
        run_of(cur, "dropout", "mnist", seed)["metrics"]["fgsm"]["eps"] = [0.0, 0.05, 0.1, 0.15]
    report = check_results(cur, ref, TOL)
    assert not report.passed
    missing = {(r.method, r.metric) for r in report.rows if r.status == "missing"}
    assert missing == {
        ("l2", "fgsm.accuracy_mean"),
        ("ensemble", "fgsm.accuracy_mean"),
        ("dropout", "ood.uniform.auroc"),
        ("dropout", "ood.uniform.fpr95"),
        ("dropout", "fgsm.accuracy_mean"),
    }
    table = format_check_table(report)
    assert sum("MISSING" in ln for ln in table.splitlines()) == 5
    assert "5 missing" in table.splitlines()[-1]


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_metric_is_bad_input_naming_run_and_metric(value):
    ref = make_results()
    cur = copy.deepcopy(ref)
    run_of(cur, "l2", "mnist", 0)["metrics"]["nll"] = value
    with pytest.raises(ResultsError, match=r"results: run l2/mnist/seed0: metric nll is"):
        check_results(cur, ref, TOL)
    run_of(cur, "l2", "mnist", 0)["metrics"]["nll"] = 0.1
    run_of(cur, "dropout", "mnist", 1)["metrics"]["ood"]["notmnist"]["auroc"] = value
    with pytest.raises(ResultsError, match="dropout/mnist/seed1: metric ood.notmnist.auroc"):
        check_results(cur, ref, TOL)
    with pytest.raises(ResultsError, match="reference: run dropout/mnist/seed1"):
        check_results(ref, cur, TOL)


def test_tolerance_lookup_order_and_absent_tolerance():
    ref = make_results()
    cur = copy.deepcopy(ref)
    tol = copy.deepcopy(TOL)
    tol["default"]["ood.uniform.auroc"] = 0.5  # full path beats the kind "auroc"
    report = check_results(cur, ref, tol)
    assert row_of(report, "l2", "mnist", "ood.uniform.auroc").tolerance == 0.5
    assert row_of(report, "l2", "mnist", "ood.notmnist.auroc").tolerance == 0.02
    del tol["default"]["brier"]
    with pytest.raises(ResultsError, match="no tolerance for metric 'brier'"):
        check_results(cur, ref, tol)
    bad = copy.deepcopy(TOL)
    bad["default"]["nll"] = -1
    with pytest.raises(ResultsError, match="nll"):
        check_results(cur, ref, bad)


def test_derive_tolerances_is_k_std_with_floor():
    repeats = [make_results(seeds=(2 * i, 2 * i + 1)) for i in range(3)]
    # make the repeats differ in error_pct of l2/mnist by hand-picked per-seed shifts
    shifts = [(0.0, 0.2), (0.6, -0.2), (1.0, 1.4)]
    for results, (s0, s1) in zip(repeats, shifts, strict=True):
        seeds = sorted({r["seed"] for r in results["runs"]})
        run_of(results, "l2", "mnist", seeds[0])["metrics"]["error_pct"] = 1.0 + s0
        run_of(results, "l2", "mnist", seeds[1])["metrics"]["error_pct"] = 1.0 + s1
    floor = {"error_pct": 0.1, "nll": 0.02, "ece": 0.01, "auroc": 0.01}
    tol = derive_tolerances(repeats, k=4.0, floor=floor)
    assert tol["schema"] == "uqbench.tolerances/1" and tol["suite"] == "smoke"
    means = [1.1, 1.2, 2.2]  # seed-means of the shifts above, by hand
    std = np.std(means, ddof=1)
    assert tol["per_run"]["l2/mnist"]["error_pct"] == pytest.approx(4.0 * std)
    assert 4.0 * std > 0.1
    # ece is equal in every repeat: std 0, so the floor
    assert tol["per_run"]["l2/mnist"]["ece"] == 0.01
    # no floor given for brier: 0
    assert tol["per_run"]["dropout/mnist"]["brier"] == 0.0
    # notmnist auroc = 0.9 + 0.01 * seed: seed-means 0.905, 0.925, 0.945 -> std 0.02, 4*std=0.08
    assert tol["per_run"]["dropout/mnist"]["ood.notmnist.auroc"] == pytest.approx(0.08)
    # ensemble FGSM is null everywhere: no entry
    assert "fgsm.accuracy_mean" not in tol["per_run"]["ensemble/mnist"]
    assert tol["default"] == floor
    # k scales the std part
    tol2 = derive_tolerances(repeats, k=2.0, floor=floor)
    assert tol2["per_run"]["l2/mnist"]["error_pct"] == pytest.approx(2.0 * std)


def test_derive_tolerances_refuses_shared_seeds_and_single_repeat():
    with pytest.raises(ResultsError, match="different seeds"):
        derive_tolerances([make_results(), make_results()])
    with pytest.raises(ResultsError, match="at least 2"):
        derive_tolerances([make_results()])
    with pytest.raises(ResultsError, match="different suites"):
        derive_tolerances([make_results(seeds=(0,)), make_results("paper", seeds=(1,))])


def _write(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_run_check_files_directories_and_default_tolerance_path(tmp_path: Path):
    ref = make_results()
    ref_file = _write(tmp_path / "reference" / "smoke.json", ref)
    cur = copy.deepcopy(ref)
    run_dir = tmp_path / "results" / "smoke"
    _write(run_dir / "results.json", cur)
    with pytest.raises(ResultsError, match="smoke-tolerances.json"):
        run_check(run_dir, ref_file, None)
    _write(tmp_path / "reference" / "smoke-tolerances.json", TOL)
    report = run_check(run_dir, ref_file, None)
    assert report.passed and "PASSED" in format_report(report)
    run_of(cur, "l2", "toy-cubic", 0)["metrics"]["rmse"] += 1.0
    _write(run_dir / "results.json", cur)
    report = run_check(run_dir / "results.json", ref_file, None)
    assert not report.passed and "rmse" in format_report(report)
    with pytest.raises(ResultsError, match="no results file"):
        run_check(tmp_path / "nowhere", ref_file, None)


def test_results_of_other_settings_are_bad_input_not_a_regression(tmp_path: Path):
    # Same suite and runs, but trained for other epochs: the metrics differ because the
    # settings do, which the check must say instead of "behaviour changed".
    ref = make_results()
    for r in ref["runs"]:
        r["config"] = {"train": {"epochs": 12, "lr": 0.001}, "eval": {"test_samples": 10}}
    cur = copy.deepcopy(ref)
    for r in cur["runs"]:
        r["config"]["train"]["epochs"] = 6
        r["config"]["eval"]["new_key"] = 1  # recorded by one side only: not a difference
    ref_file = _write(tmp_path / "ref.json", ref)
    cur_file = _write(tmp_path / "cur.json", cur)
    for exact in (True, False):
        with pytest.raises(ResultsError, match=r"train\.epochs: 6 vs 12 \(and \d+ more\)"):
            run_check(cur_file, ref_file, None, exact=exact)
    for r in cur["runs"]:
        r["config"]["train"]["epochs"] = 12
    assert settings_differences(cur, ref) == []
    assert run_check(_write(tmp_path / "cur.json", cur), ref_file, None, exact=True).passed


def test_tolerances_script_writes_a_loadable_file(tmp_path: Path, capsys):
    files = [
        _write(tmp_path / f"r{i}" / "results.json", make_results(seeds=(i,))) for i in range(3)
    ]
    out = tmp_path / "reference" / "smoke-tolerances.json"
    assert tolerances_main([str(out), *map(str, files)]) == 0
    assert str(out) in capsys.readouterr().out
    tol = load_tolerances(out)
    # rmse = 3.0 + 0.1 * seed over seeds 0, 1, 2: std 0.1, k=4 -> 0.4 (above the floor)
    assert tol["per_run"]["l2/toy-cubic"]["rmse"] == pytest.approx(0.4)
    # a check of repeat 0 against itself passes with the derived tolerances
    report = run_check(files[0], files[0], out)
    assert report.passed, format_report(report)


def test_a_reference_of_several_files_is_their_runs_and_must_match_its_tolerances(
    tmp_path: Path, capsys
):
    """Tolerances derived against the mean of the repeats hold against all of them: the check
    merges the files given to --reference and refuses a reference of fewer runs."""
    files = [
        _write(tmp_path / f"r{i}" / "results.json", make_results(seeds=(i,))) for i in range(3)
    ]
    out = tmp_path / "mean-tolerances.json"
    assert tolerances_main([str(out), *map(str, files), "--alpha", "0.01", "--reference-mean"]) == 0
    cur = _write(tmp_path / "cur.json", make_results(seeds=(7,)))
    report = run_check(cur, files, out, seeds="any")
    # rmse = 3.0 + 0.1 * seed: the reference is the mean of 3.0, 3.1, 3.2
    row = next(
        r for r in report.rows if r.method == "l2" and r.task == "toy-cubic" and r.metric == "rmse"
    )
    assert row.reference == pytest.approx(3.1) and row.current == pytest.approx(3.7)
    k = math.sqrt(1 + 1 / 3) * 9.925  # t_2(0.995), from a t table
    assert row.tolerance == pytest.approx(max(k * 0.1, 0.05), rel=1e-3)
    with pytest.raises(ResultsError, match="mean of the 3 runs of l2/mnist.*holds 1"):
        run_check(cur, files[0], out, seeds="any")
    with pytest.raises(ResultsError, match="mean of the 3 runs"):  # the API checks it too
        check_results(make_results(seeds=(7,)), make_results(seeds=(0,)), load_tolerances(out))
    with pytest.raises(ResultsError, match="is given twice"):
        run_check(cur, [files[0], files[0].parent], out, seeds="any")
    copied = files[0].with_name("copy.json")
    copied.write_bytes(files[0].read_bytes())
    with pytest.raises(ResultsError, match="is in both"):
        run_check(cur, [files[0], copied], out, seeds="any")
    with pytest.raises(ResultsError, match="needs its tolerance file named"):
        run_check(cur, files, None, seeds="any")
    other = make_results(seeds=(9,))
    for r in other["runs"]:
        r["config"] = {"train": {"epochs": 99}}
    odd = _write(tmp_path / "odd.json", other)
    first = make_results(seeds=(0,))
    for r in first["runs"]:
        r["config"] = {"train": {"epochs": 3}}
    with pytest.raises(ResultsError, match=r"other settings: .*epochs: 99 vs 3"):
        run_check(cur, [_write(tmp_path / "first.json", first), odd], out, seeds="any")
    refs = [a for f in files for a in ("--reference", str(f))]
    assert cli_main(["check", str(cur), *refs, "--tolerance", str(out), "--any-seeds"]) == 0
    assert f"{3 * 2 * len(METHODS)} reference runs compared" in capsys.readouterr().out
    # The one-file form, options before the results, works as before.
    assert cli_main(["check", "--reference", str(files[0]), str(files[0]), "--exact"]) == 0


def test_beyond_paper_metrics_are_checked_only_where_the_reference_has_them():
    ref = make_results()
    cur = copy.deepcopy(ref)
    # A reference without them (made before issue 18) passes against results with them.
    for run in cur["runs"]:
        if run["task"] == "mnist":
            run["metrics"]["aurc"] = 0.01
            run["metrics"]["ood"]["notmnist"]["aupr_out"] = 0.9
    assert check_results(cur, ref, TOL).passed
    # With them in the reference: AURC must not rise, AUPR-out must not fall.
    tol = copy.deepcopy(TOL)
    tol["default"].update({"aurc": 0.005, "aupr_out": 0.01})
    worse = copy.deepcopy(cur)
    run_of(worse, "l2", "mnist", 0)["metrics"]["aurc"] = 0.05
    run_of(worse, "dropout", "mnist", 1)["metrics"]["ood"]["notmnist"]["aupr_out"] = 0.8
    report = check_results(worse, cur, tol)
    regressed = {(r.method, r.metric) for r in report.rows if r.status == "regressed"}
    assert regressed == {("l2", "aurc"), ("dropout", "ood.notmnist.aupr_out")}


@pytest.mark.parametrize("seeds", ["same", "any"])
def test_a_run_that_failed_is_named_with_its_error(seeds):
    ref = make_results(seeds=(0,))
    cur = copy.deepcopy(ref)
    gone = next(r for r in cur["runs"] if r["method"] == "dropout")
    cur["runs"].remove(gone)
    error = "dropout-mnist-seed0: RuntimeError: out of memory"
    cur["failed"] = [{"method": "dropout", "task": gone["task"], "seed": 0, "error": error}]
    with pytest.raises(ResultsError, match=f"lack 1 .*dropout.*of these, failed: {error}"):
        check_results(cur, ref, TOL, seeds=seeds)
    if seeds == "same":
        with pytest.raises(ResultsError, match=f"of these, failed: {error}"):
            check_identical(cur, ref)
