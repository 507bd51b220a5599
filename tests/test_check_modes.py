"""The check's levels (tripwire, close, statistical) and its command line: verdicts, exit codes
0 pass / 1 regression / 2 bad input, ``--json``. Results are the synthetic ones of
test_check.py; expected values are worked out by hand."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from test_check import TOL, make_results, row_of, run_of

from uqbench.check import check_identical, check_results, format_check_table, format_exact
from uqbench.cli import main
from uqbench.errors import ResultsError


def _files(tmp_path: Path, cur: dict, ref: dict | None = None) -> list[str]:
    ref = make_results() if ref is None else ref
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    (tmp_path / "ref-tolerances.json").write_text(json.dumps(TOL))
    (tmp_path / "cur.json").write_text(json.dumps(cur))
    return ["check", str(tmp_path / "cur.json"), "--reference", str(tmp_path / "ref.json")]


def test_tripwire_names_every_value_that_moved_and_how_to_land_it():
    ref = make_results()
    assert check_identical(copy.deepcopy(ref), ref).passed
    cur = copy.deepcopy(ref)
    run_of(cur, "dropout", "mnist", 1)["metrics"]["nll"] += 1e-15  # far inside any tolerance
    run_of(cur, "l2", "toy-cubic", 0)["metrics"]["rmse"] = None
    report = check_identical(cur, ref)
    assert not report.passed
    moved = {(d.method, d.task, d.seed, d.metric) for d in report.diffs}
    assert moved == {("dropout", "mnist", 1, "nll"), ("l2", "toy-cubic", 0, "rmse")}
    text = format_exact(report)
    assert "dropout/mnist/seed1 (1 values)" in text
    assert "regenerated reference" in text.splitlines()[-1]
    # the statistical check lets the tiny move pass; the tripwire does not
    run_of(cur, "l2", "toy-cubic", 0)["metrics"]["rmse"] = 3.0
    assert check_results(cur, ref, TOL).passed


def test_tripwire_sees_values_the_statistical_check_ignores():
    ref = make_results()
    cur = copy.deepcopy(ref)
    run_of(cur, "l2", "mnist", 0)["metrics"]["fgsm"]["eps"][1] = 0.11  # not a checked metric
    (diff,) = check_identical(cur, ref).diffs
    assert diff.metric == "fgsm.eps[1]" and (diff.reference, diff.current) == (0.1, 0.11)


def test_empty_reference_and_ood_list_are_bad_input():
    ref = make_results()
    empty = {**copy.deepcopy(ref), "runs": []}
    for check in (lambda: check_results(ref, empty, TOL), lambda: check_identical(ref, empty)):
        with pytest.raises(ResultsError, match="reference holds no runs"):
            check()
    cur = copy.deepcopy(ref)
    run_of(cur, "l2", "mnist", 0)["metrics"]["ood"] = [{"auroc": 0.9}]
    with pytest.raises(ResultsError, match=r"l2/mnist/seed0: metrics.ood is a list"):
        check_results(cur, ref, TOL)


def test_any_seeds_compares_each_sides_own_mean():
    ref = make_results(seeds=(0, 1))
    new = make_results(seeds=(5, 6, 7))  # error_pct = base + 0.05 * seed
    with pytest.raises(ResultsError, match="lack"):
        check_results(new, ref, TOL)
    report = check_results(new, ref, TOL, seeds="any")
    row = row_of(report, "dropout", "mnist", "error_pct")
    # reference mean 0.8 + 0.05 * 0.5 = 0.825; new mean 0.8 + 0.05 * 6 = 1.1; tolerance 0.3
    assert row.reference == pytest.approx(0.825) and row.current == pytest.approx(1.1)
    assert row.status == "ok" and row.direction == "lower"
    with pytest.raises(ResultsError, match="lack 1 .method, task. pair"):
        check_results(
            {
                **new,
                "runs": [r for r in new["runs"] if r["method"] != "l2" or r["task"] != "mnist"],
            },
            ref,
            TOL,
            seeds="any",
        )


def test_two_sided_fails_an_improvement_beyond_tolerance():
    ref = make_results()
    cur = copy.deepcopy(ref)
    for seed in (0, 1):
        run_of(cur, "l2", "mnist", seed)["metrics"]["ood"]["notmnist"]["auroc"] += 0.05
    assert check_results(cur, ref, TOL).passed  # higher AUROC is better: "improved"
    report = check_results(cur, ref, TOL, two_sided=True)
    assert not report.passed
    assert row_of(report, "l2", "mnist", "ood.notmnist.auroc").status == "improved"


def test_cli_exit_codes_and_json(tmp_path: Path, capsys):
    ref = make_results()
    args = _files(tmp_path, copy.deepcopy(ref), ref)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "better" in out.splitlines()[0] and "PASSED" in out.splitlines()[-1]
    assert main(args + ["--exact"]) == 0

    cur = copy.deepcopy(ref)
    run_of(cur, "dropout", "mnist", 0)["metrics"]["error_pct"] += 0.7  # mean +0.35 > 0.3
    args = _files(tmp_path, cur, ref)
    capsys.readouterr()
    assert main(args + ["--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "tolerance" and doc["passed"] is False
    (bad,) = [r for r in doc["rows"] if r["status"] == "regressed"]
    assert (bad["method"], bad["task"], bad["metric"], bad["direction"]) == (
        "dropout",
        "mnist",
        "error_pct",
        "lower",
    )
    assert bad["tolerance"] == 0.3 and bad["reference"] == pytest.approx(0.825)
    assert main(args + ["--exact", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["diffs"][0]["metric"] == "error_pct"

    run_of(cur, "dropout", "mnist", 0)["metrics"]["error_pct"] = float("nan")
    args = _files(tmp_path, cur, ref)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metric error_pct is nan" in err[0]
    (tmp_path / "cur.json").write_text(json.dumps({**cur, "schema": "other/9"}))
    assert main(args) == 2
    assert "schema 'other/9'" in capsys.readouterr().err


def test_tolerances_from_repeats_that_cover_different_tasks():
    from uqbench.tolerances import derive_tolerances

    r0, r1, r2 = (make_results(seeds=(s,)) for s in (0, 1, 2))
    r1["runs"] = [r for r in r1["runs"] if r["task"] == "toy-cubic"]  # only the cheap task
    tol = derive_tolerances([r0, r1, r2], k=4)
    assert tol["repeats"]["l2/toy-cubic"] == 3 and tol["repeats"]["l2/mnist"] == 2
    # rmse = 3.0 + 0.1 * seed over seeds 0, 1, 2: std 0.1 -> 0.4
    assert tol["per_run"]["l2/toy-cubic"]["rmse"] == pytest.approx(0.4)
    # notMNIST AUROC = 0.9 + 0.01 * seed over seeds 0 and 2 only: std 0.01 * sqrt(2)
    auroc = tol["per_run"]["l2/mnist"]["ood.notmnist.auroc"]
    assert auroc == pytest.approx(4 * 0.01 * 2**0.5)


def _with_counts(results: dict, counts: dict) -> dict:
    for run in results["runs"]:
        run["data"] = {"class_counts": copy.deepcopy(counts)}
    return results


def test_class_counts_row_sees_a_subset_drawn_otherwise_whatever_the_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    counts = {"train": [5, 5], "test": [3, 3], "ood.notmnist": [2, 2, 2]}
    ref = _with_counts(make_results(seeds=(0, 1)), counts)
    new = _with_counts(make_results(seeds=(1, 2)), counts)  # metrics move by 0.05, within TOL
    report = check_results(new, ref, TOL, seeds="any")
    rows = [r for r in report.rows if r.metric == "data.class_counts"]
    assert len(rows) == len({(r["method"], r["task"]) for r in ref["runs"]})
    assert {r.status for r in rows} == {"ok"} and report.passed
    # the first files of the OOD set (one class only), in one seed of one pair
    run_of(new, "l2", "mnist", 2)["data"]["class_counts"]["ood.notmnist"] = [6, 0, 0]
    report = check_results(new, ref, TOL, seeds="any")
    (bad,) = [r for r in report.rows if r.status == "regressed"]
    assert (bad.method, bad.task, bad.metric) == ("l2", "mnist", "data.class_counts")
    assert "ood.notmnist" in bad.note and "[2, 2, 2]" in bad.note and "[6, 0, 0]" in bad.note
    assert not report.passed
    # the command line: exit 1, and a line naming what differs
    argv = [*_files(tmp_path, new, ref), "--any-seeds"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "-> l2/mnist data.class_counts: other inputs than the reference's in ood.notmnist" in out
    # a tolerance file may leave the row unchecked, as a metric
    tol = {**TOL, "unchecked": {"l2/mnist": {"data.class_counts": "drawn at random"}}}
    report = check_results(new, ref, tol, seeds="any")
    assert (
        report.passed and row_of(report, "l2", "mnist", "data.class_counts").status == "unchecked"
    )
    # a reference made before the counts were recorded (or a regression task) has no such row
    for run in ref["runs"]:
        del run["data"]
    rows = check_results(new, ref, TOL, seeds="any").rows
    assert not [r for r in rows if r.metric == "data.class_counts"]


def test_class_counts_of_a_split_drawn_at_random_are_compared_seed_by_seed_only():
    ref = _with_counts(make_results(seeds=(0, 1)), {"test": [3, 3], "train": [5, 5]})
    run_of(ref, "l2", "mnist", 1)["data"]["class_counts"]["train"] = [4, 6]  # varies by seed
    # other seeds: only the split whose counts agree over the reference's seeds is compared
    new = _with_counts(make_results(seeds=(1, 2)), {"test": [3, 3], "train": [7, 3]})
    row = row_of(check_results(new, ref, TOL, seeds="any"), "l2", "mnist", "data.class_counts")
    assert row.status == "ok" and "train differ between the reference's seeds" in row.note
    # the same seeds: each run against its own seed's counts, every split
    same = copy.deepcopy(ref)
    assert row_of(check_results(same, ref, TOL), "l2", "mnist", "data.class_counts").status == "ok"
    run_of(same, "l2", "mnist", 1)["data"]["class_counts"]["train"] = [5, 5]
    row = row_of(check_results(same, ref, TOL), "l2", "mnist", "data.class_counts")
    assert row.status == "regressed" and "[4, 6] in the reference, [5, 5] now" in row.note


def test_a_two_way_metric_fails_in_either_direction_and_says_so():
    ref = make_results()
    for run in ref["runs"]:
        if run["metrics"].get("fgsm"):
            run["metrics"]["fgsm"]["budget_share"] = 0.55
    tol = {**TOL, "default": {**TOL["default"], "fgsm.budget_share": 0.03}}
    for share, status, word in (
        (0.57, "ok", None),
        (1.0, "regressed", "above"),
        (0.4, "regressed", "below"),
    ):
        cur = copy.deepcopy(ref)
        run_of(cur, "l2", "mnist", 0)["metrics"]["fgsm"]["budget_share"] = share
        report = check_results(cur, ref, tol)
        row = row_of(report, "l2", "mnist", "fgsm.budget_share")
        assert (row.status, row.direction) == (status, "either")
        text = format_check_table(report)
        if word:
            assert f"is {word} " in text and "a move either way fails" in text


def test_the_tripwire_compares_the_data_each_run_saw(tmp_path: Path, capsys):
    """`--exact` passed results whose splits had other class counts (the statistical check
    failed them); where the reference records its runs' class counts, they are compared
    bit for bit too, and a reference without them compares metrics alone."""
    ref = make_results()
    for run in ref["runs"]:
        run["data"]["class_counts"] = {"train": [50, 50], "test": [20, 20]}
    cur = copy.deepcopy(ref)
    assert check_identical(cur, ref).passed
    run_of(cur, "l2", "mnist", 0)["data"]["class_counts"]["test"] = [21, 19]
    report = check_identical(cur, ref)
    assert [(d.method, d.metric, d.reference, d.current) for d in report.diffs] == [
        ("l2", "data.class_counts.test[0]", 20, 21),
        ("l2", "data.class_counts.test[1]", 20, 19),
    ]
    assert check_identical(cur, make_results()).passed  # the reference records none


def test_exact_refuses_the_statistical_checks_options(tmp_path: Path, capsys):
    """`--exact` silently ignored `--any-seeds`, `--two-sided` and `--tolerance`."""
    args = [*_files(tmp_path, make_results()), "--exact"]
    for extra in (["--any-seeds"], ["--two-sided"], ["--tolerance", str(tmp_path / "t.json")]):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert "--exact compares every value bit for bit" in err and "Traceback" not in err


# -- --close: the same seed's checked metrics within RTOL, on any machine class -----------
def test_close_check_holds_within_rtol_of_the_scale_and_names_what_moved_beyond():
    from uqbench.check import check_close

    ref = make_results()
    cur = copy.deepcopy(ref)
    toy = run_of(cur, "ensemble", "toy-cubic", 1)["metrics"]
    toy["loglik_outside"] *= 1 + 4e-3  # -4.2: inside 5e-3 relative
    toy["coverage_3std_outside"] -= 0.004  # 0.9 is below 1: 5e-3 absolute
    toy["bands"]["mean"] = [1.0, -1.0]  # not a checked metric: the tripwire's business
    report = check_close(cur, ref, 5e-3)
    assert report.passed and report.n_runs == 12
    # make_results' 6 toy runs hold 5 checked metrics each; its 6 mnist runs 9 (error, NLL,
    # Brier, ECE, AUROC and FPR95 of 2 OOD sets, FGSM's mean accuracy)
    assert report.n_values == 6 * 5 + 6 * 9
    toy["rmse"] = 3.1 * (1 + 6e-3)  # beyond 5e-3 relative of 3.1
    toy["coverage_3std_outside"] = 0.9 - 0.006  # beyond 5e-3 absolute
    run_of(cur, "l2", "mnist", 0)["metrics"]["nll"] = None  # null in one of the two
    report = check_close(cur, ref, 5e-3)
    moved = {(d.method, d.task, d.seed, d.metric) for d in report.diffs}
    assert moved == {
        ("ensemble", "toy-cubic", 1, "rmse"),
        ("ensemble", "toy-cubic", 1, "coverage_3std_outside"),
        ("l2", "mnist", 0, "nll"),
    }
    text = format_exact(report)
    assert text.splitlines()[-1].startswith(
        "close check FAILED: behaviour changed: 3 of 84 metric values of 2 of 12 runs differ "
        "from the same seeds' in the reference by more than 0.005 (relative; absolute for "
        "values below 1) (suite 'smoke')"
    )
    assert report.to_dict()["mode"] == "close" and report.to_dict()["rtol"] == 5e-3


def test_close_check_on_another_machine_and_only_the_tasks_asked(tmp_path: Path, capsys):
    ref = make_results()
    cur = copy.deepcopy(ref)
    ref["environment"]["cpu"] = "AMD EPYC 7B13"
    cur["environment"]["cpu"] = "Intel(R) Xeon(R) Processor"  # --exact refuses it; --close not
    run_of(cur, "l2", "mnist", 0)["metrics"]["error_pct"] += 1.0  # mnist: not asked
    files = _files(tmp_path, cur, ref)
    assert main([*files, "--exact", "--tasks", "toy-cubic"]) == 2
    assert "come from another: cpu" in capsys.readouterr().err
    args = [*files, "--close", "1e-3"]
    assert main([*args, "--tasks", "toy-cubic"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("close check PASSED: all 30 metric values of 6 runs are within 0.001")
    assert out.rstrip().endswith("(suite 'smoke', tasks toy-cubic)")
    assert main([*args, "--tasks", "mnist", "--tasks", "toy-cubic", "--json"]) == 1  # both
    report = json.loads(capsys.readouterr().out)
    assert (report["mode"], report["rtol"], report["tasks"]) == (
        "close",
        1e-3,
        ["mnist", "toy-cubic"],
    )
    assert [(d["method"], d["task"], d["metric"]) for d in report["diffs"]] == [
        ("l2", "mnist", "error_pct")
    ]
    assert main(args) == 1  # every task: mnist's error moved
    assert "l2/mnist/seed0 (1 values)" in capsys.readouterr().out
    assert main([*args, "--tasks", "toy", "mnist"]) == 2
    err = capsys.readouterr().err
    assert "--tasks toy: the reference has no runs of this task; its tasks: mnist, toy-cubic" in err
    for extra, says in (
        (["--exact"], "--close compares each run with the same seed's within RTOL"),
        (["--any-seeds"], "it takes no --exact, --any-seeds"),
        (["--close", "0"], "--close RTOL must lie between 0 and 1, got 0"),
        (["--close", "nan"], "--close RTOL must lie between 0 and 1, got nan"),
    ):
        assert main([*args, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err


def test_close_check_compares_the_eps_grid_and_the_class_counts():
    from uqbench.check import check_close

    ref = make_results()
    for run in ref["runs"]:
        if run["task"] == "mnist":
            run["data"]["class_counts"] = {"test": {"0": 10, "1": 10}}
    cur = copy.deepcopy(ref)
    run_of(cur, "l2", "mnist", 0)["metrics"]["fgsm"]["eps"] = [0.0, 0.05, 0.1, 0.15]
    run_of(cur, "dropout", "mnist", 1)["data"]["class_counts"] = {"test": {"0": 20}}
    moved = {(d.method, d.seed, d.metric) for d in check_close(cur, ref, 0.5).diffs}
    # a grid of the same length and mean accuracy: only the grid says it measures another thing
    assert moved == {
        ("l2", 0, "fgsm.accuracy_mean (eps grid)"),
        ("dropout", 1, "data.class_counts"),
    }


def test_tasks_restricts_the_statistical_check(tmp_path: Path, capsys):
    ref = make_results()
    cur = copy.deepcopy(ref)
    for seed in (0, 1):
        run_of(cur, "l2", "toy-cubic", seed)["metrics"]["rmse"] += 10.0  # far beyond tolerance
    files = _files(tmp_path, cur, ref)
    assert main([*files, "--changes-only"]) == 1
    regressed = [ln for ln in capsys.readouterr().out.splitlines() if "REGRESSED" in ln.upper()]
    assert any("toy-cubic" in ln and "rmse" in ln for ln in regressed)
    assert main([*files, "--tasks", "mnist", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tasks"] == ["mnist"] and report["n_runs"] == 6
    assert {row["task"] for row in report["rows"]} == {"mnist"}
