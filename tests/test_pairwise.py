"""``python -m uqbench.pairwise``: the paired differences it prints equal a paired t-interval
computed independently (scipy) from the committed runs' per-seed metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from uqbench import pairwise
from uqbench.errors import ResultsError
from uqbench.report.view import ResultsView

FOLDER = Path(__file__).resolve().parents[1] / "results" / "more-seeds" / "quick"


def test_paired_error_difference_matches_scipy(capsys: pytest.CaptureFixture[str]) -> None:
    runs = json.loads((FOLDER / "results.json").read_text())["runs"]
    err = {
        (r["method"], r["seed"]): r["metrics"]["error_pct"] for r in runs if r["task"] == "mnist"
    }
    d = np.array([err[("mnf", s)] - err[("ffg", s)] for s in range(5)])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert pairwise.main([str(FOLDER / "results.json"), "mnist", "mnf", "ffg", "error_pct"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    rows = {line.split("|")[1].strip(): line for line in lines}
    cells = [c.strip() for c in rows["error_pct"].split("|")]
    assert float(cells[2]) == pytest.approx(d.mean(), abs=1e-3)
    lo, hi = (float(x) for x in cells[3].strip("[]").split(","))
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-3)
    assert cells[4] == ("yes" if lo > 0 or hi < 0 else "no")


def test_missing_results_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pairwise.main([str(tmp_path), "mnist", "mnf", "ffg"]) == 2
    assert "results" in capsys.readouterr().err


def test_unknown_method_task_or_statistic_is_one_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert pairwise.main([str(FOLDER), "mnist", "mnf", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "'nosuch'" in err and "ffg" in err and "Traceback" not in err
    assert pairwise.main([str(FOLDER), "cifar", "mnf", "ffg"]) == 2
    assert "'cifar'" in capsys.readouterr().err
    assert pairwise.main([str(FOLDER), "mnist", "mnf", "ffg", "ood.notmnist.aurocc"]) == 2
    err = capsys.readouterr().err
    assert "aurocc" in err and "auroc" in err.split("declared:")[1]
    # A misspelled plain name is a path no run has: an error, not a row of "no value".
    assert pairwise.main([str(FOLDER), "mnist", "mnf", "ffg", "erorr_pct"]) == 2
    assert "'erorr_pct' has no value in any run of mnist" in capsys.readouterr().err


def test_test_noise_widens_by_the_shared_test_sets_variance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Independently: the test-set noise common to the seeds is the mean over pairs of seeds
    # s != t of cov(x_s, x_t) / n, x_s being each test example's MNF minus FFG error
    # indicator under seed s (closed form of the covariance of two resampled means).
    runs = {
        (r["method"], r["seed"]): r
        for r in json.loads((FOLDER / "results.json").read_text())["runs"]
        if r["task"] == "mnist"
    }
    wrong = {}
    for (m, s), r in runs.items():
        if m in ("mnf", "ffg"):
            with np.load(FOLDER / "runs" / r["predictions"]) as z:
                wrong[m, s] = 100.0 * (z["test.pred"] != z["test.y"])
    d = np.array([wrong["mnf", s].mean() - wrong["ffg", s].mean() for s in range(5)])
    x = np.array([wrong["mnf", s] - wrong["ffg", s] for s in range(5)])
    cov = np.cov(x, bias=True)
    shared = max(0.0, (cov.sum() - np.trace(cov)) / 20) / x.shape[1]
    half = stats.t.ppf(0.975, 4) * np.sqrt(d.var(ddof=1) / 5 + shared)
    argv = [str(FOLDER), "mnist", "mnf", "ffg", "error_pct", "--test-noise"]
    assert pairwise.main(argv) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| error_pct"))
    cells = [c.strip() for c in row.split("|")]
    lo, hi = (float(x) for x in cells[3].strip("[]").split(","))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.05)
    assert "test-set bootstrap" in cells[5]


def _row(out: str, name: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(f"| {name} "))
    return [c.strip() for c in line.split("|")]


def test_level_sets_the_intervals_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    runs = json.loads((FOLDER / "results.json").read_text())["runs"]
    nll = {(r["method"], r["seed"]): r["metrics"]["nll"] for r in runs if r["task"] == "mnist"}
    d = np.array([nll[("mnf", s)] - nll[("ffg", s)] for s in range(5)])
    level = 1 - 0.05 / 3
    half = stats.t.ppf(1 - (1 - level) / 2, 4) * d.std(ddof=1) / np.sqrt(5)
    argv = [str(FOLDER), "mnist", "mnf", "ffg", "nll", "--level", str(level)]
    assert pairwise.main(argv) == 0
    out = capsys.readouterr().out
    assert "98.33% interval" in out
    lo, hi = (float(x) for x in _row(out, "nll")[3].strip("[]").split(","))
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-3)
    assert pairwise.main([*argv[:-1], "1.5"]) == 2
    assert "--level must lie in (0, 1)" in capsys.readouterr().err


def _split(tmp_path: Path, seeds_b: set[int]) -> tuple[Path, Path]:
    """The committed 5-seed folder cut in two by seed, each half with its runs' outputs."""
    doc = json.loads((FOLDER / "results.json").read_text())
    halves = []
    for name, keep in (("a", lambda s: s not in seeds_b), ("b", lambda s: s in seeds_b)):
        folder = tmp_path / name
        (folder / "runs").mkdir(parents=True)
        runs = [r for r in doc["runs"] if keep(r["seed"])]
        for r in runs:
            if isinstance(r.get("predictions"), str):
                src = FOLDER / "runs" / r["predictions"]
                (folder / "runs" / r["predictions"]).write_bytes(src.read_bytes())
        (folder / "results.json").write_text(json.dumps({**doc, "runs": runs}))
        halves.append(folder)
    return halves[0], halves[1]


@pytest.mark.parametrize("noise", [[], ["--test-noise"]])
def test_with_another_folder_equals_one_folder_of_all_the_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], noise: list[str]
) -> None:
    # Seeds 3 and 4 run into another folder: joined by --with, the table is the one folder's,
    # including the test-set noise read from each run's outputs in its own folder.
    a, b = _split(tmp_path, {3, 4})
    # A stale file of seed 3's name in the first folder (another run's outputs) is not read.
    doc_b = json.loads((b / "results.json").read_text())
    for r in doc_b["runs"]:
        if r["task"] == "mnist" and isinstance(r.get("predictions"), str):
            decoy = (
                FOLDER
                / "runs"
                / r["predictions"].replace("seed3", "seed0").replace("seed4", "seed1")
            )
            (a / "runs" / r["predictions"]).write_bytes(decoy.read_bytes())
    names = ["error_pct", "nll", "ood.notmnist.ecdf_area"]
    assert pairwise.main([str(FOLDER), "mnist", "mnf", "ffg", *names, *noise]) == 0
    whole = capsys.readouterr().out
    assert pairwise.main([str(a), "mnist", "mnf", "ffg", *names, "--with", str(b), *noise]) == 0
    joined = capsys.readouterr().out
    assert joined == whole and "over 5 seeds" in joined
    if noise:
        assert "test-set bootstrap" in _row(joined, "error_pct")[5]
    assert pairwise.main([str(a), "mnist", "mnf", "ffg", *names, *noise]) == 0
    assert "over 3 seeds" in capsys.readouterr().out


def test_with_refuses_the_same_run_twice_or_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _split(tmp_path, {3, 4})
    assert pairwise.main([str(a), "mnist", "mnf", "ffg", "--with", str(a / "results.json")]) == 2
    assert f"{a / 'results.json'} is given twice" in capsys.readouterr().err
    doc = json.loads((b / "results.json").read_text())
    (b / "copy.json").write_text(json.dumps({**doc, "runs": doc["runs"][:1]}))
    assert pairwise.main([str(b), "mnist", "mnf", "ffg", "--with", str(b / "copy.json")]) == 2
    assert "is in both" in capsys.readouterr().err
    (b / "copy.json").write_text(json.dumps({**doc, "suite": "paper", "runs": []}))
    assert pairwise.main([str(b), "mnist", "mnf", "ffg", "--with", str(b / "copy.json")]) == 2
    assert "of different suites: ['paper', 'quick']" in capsys.readouterr().err
    doc = json.loads((b / "results.json").read_text())
    for r in doc["runs"]:
        r["config"]["train"]["epochs"] = 20
    (b / "results.json").write_text(json.dumps(doc))
    assert pairwise.main([str(a), "mnist", "mnf", "ffg", "--with", str(b)]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "epochs" in err and "Traceback" not in err
    a, b = _split(tmp_path / "versions", {3, 4})
    doc = json.loads((b / "results.json").read_text())
    for r in doc["runs"]:
        r["code_version"] = "t9.e9"
    (b / "results.json").write_text(json.dumps(doc))
    assert pairwise.main([str(a), "mnist", "mnf", "ffg", "--with", str(b)]) == 2
    err = capsys.readouterr().err
    assert "code version t9.e9" in err and "t2.e3" in err and "Traceback" not in err


def _names(out: str) -> list[str]:
    return [ln.split("|")[1].strip() for ln in out.splitlines()[2:] if ln.startswith("|")]


def test_default_statistics_follow_the_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert pairwise.main([str(FOLDER), "mnist", "mnf", "ffg"]) == 0
    assert _names(capsys.readouterr().out) == [
        "error_pct", "nll", "ece", "ood.notmnist.ecdf_area", "ood.notmnist.auroc"
    ]  # fmt: skip
    assert pairwise.main([str(FOLDER), "cifar5", "mnf", "ffg"]) == 0
    assert _names(capsys.readouterr().out) == [
        "error_pct", "nll", "ece", "ood.cifar5-hidden.ecdf_area", "ood.cifar5-hidden.auroc"
    ]  # fmt: skip
    assert pairwise.main([str(FOLDER), "toy-cubic", "mnf", "ffg"]) == 0
    assert _names(capsys.readouterr().out) == ["rmse", "loglik_inside", "loglik_outside"]


def test_the_regression_checks_summaries_are_statistics_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # fgsm.accuracy_mean, as `uqbench check` names it: the mean of a run's FGSM accuracy
    # curve over its eps grid, paired over seeds.
    runs = json.loads((FOLDER / "results.json").read_text())["runs"]
    acc = {
        (r["method"], r["seed"]): np.mean(r["metrics"]["fgsm"]["accuracy"])
        for r in runs
        if r["task"] == "mnist" and r["method"] in ("mnf", "ffg")
    }
    d = np.array([acc["mnf", s] - acc["ffg", s] for s in range(5)])
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert pairwise.main([str(FOLDER), "mnist", "mnf", "ffg", "fgsm.accuracy_mean"]) == 0
    cells = _row(capsys.readouterr().out, "fgsm.accuracy_mean")
    assert float(cells[2]) == pytest.approx(d.mean(), rel=1e-3)
    lo, hi = (float(x) for x in cells[3].strip("[]").split(","))
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-3)


def test_a_run_metric_under_an_ood_set_is_refused_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert pairwise.main([str(FOLDER), "mnist", "mnf", "ffg", "ood.notmnist.error_pct"]) == 2
    err = capsys.readouterr().err
    assert "'error_pct' is not a metric of an OOD set" in err and "ecdf_area" in err
    assert pairwise.main([str(FOLDER), "mnist", "mnf", "ffg", "fgsm.acc"]) == 2
    err = capsys.readouterr().err
    assert "fgsm.accuracy_mean" in err and "ood.fashion-mnist.ecdf_area" in err


def test_malformed_files_and_statistics_are_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "list.json").write_text("[]")
    argv = [str(FOLDER), "mnist", "mnf", "ffg", "--with", str(tmp_path / "list.json")]
    assert pairwise.main(argv) == 2
    err = capsys.readouterr().err
    assert "not a JSON object" in err and "Traceback" not in err
    # Runs with none of the default statistics: an error naming what they have.
    runs = [
        {"method": m, "task": "t", "seed": s, "metrics": {"score": float(s)}}
        for m in ("a", "b")
        for s in range(2)
    ]
    with pytest.raises(ResultsError, match="none of the default statistics.*name some of"):
        pairwise.paired_table(ResultsView({"runs": runs}), "t", "a", "b")
