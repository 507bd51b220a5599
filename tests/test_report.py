"""The report from synthetic results: files, embedded figures, labels, claims, robustness."""

from __future__ import annotations

import base64
import math
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from uqbench.errors import ResultsError
from uqbench.report import write_report
from uqbench.report.style import CIFAR_UNVERIFIED

METHODS = ("l2", "dropout", "ensemble", "ffg", "fflu", "mnf")
DISPLAY = {
    "l2": "L2",
    "dropout": "Dropout",
    "ensemble": "D.Ensem.",
    "ffg": "FFG",
    "fflu": "FFLU",
    "mnf": "MNFG",
    "dropout-learned": "Dropout-learned",
}
#: Made-up mean OOD entropy as a share of ln K: L2 most, MNF least overconfident.
UNCERTAINTY = {
    "l2": 0.03,
    "dropout": 0.45,
    "ensemble": 0.35,
    "ffg": 0.5,
    "fflu": 0.2,
    "mnf": 0.8,
    "dropout-learned": 0.3,
}
#: Made-up test errors (%) per task.
ERRORS = {
    "mnist": {"l2": 0.7, "dropout": 0.55, "ensemble": 0.75, "ffg": 0.95, "fflu": 0.9, "mnf": 0.72},
    "cifar5": {
        "l2": 25.0,
        "dropout": 17.0,
        "ensemble": 22.0,
        "ffg": 23.0,
        "fflu": 24.0,
        "mnf": 16.5,
    },
}
#: Made-up toy band growth outside the training range.
WIDEN = {
    "mnf": 40.0,
    "dropout": 8.0,
    "fflu": 3.0,
    "dropout-learned": 0.5,
    "l2": 1.0,
    "ensemble": 5.0,
    "ffg": 6.0,
}


def _ecdf(h: np.ndarray, k: int) -> dict[str, list[float]]:
    grid = np.linspace(0, math.log(k), 101)
    return {"grid": grid.tolist(), "cdf": [float(np.mean(h <= g)) for g in grid]}


def _cls_metrics(
    method: str, task: str, k: int, ood: str, rng: np.random.Generator, fgsm: bool
) -> dict[str, Any]:
    u = UNCERTAINTY[method]
    h_ood = np.clip(math.log(k) * rng.beta(8 * u + 0.1, 8 * (1 - u) + 0.1, 400), 0, math.log(k))
    h_in = math.log(k) * rng.beta(0.3, 6, 400)
    edges = np.linspace(0, 1, 16)
    count = [0] * 10 + [5, 10, 20, 50, 900]
    conf = [None] * 10 + [0.7, 0.76, 0.83, 0.9, 0.99]
    acc = [None] * 10 + [0.6, 0.7, 0.8, 0.9, 0.995]
    eps = [0.0, 0.1, 0.2, 0.3]
    decay = {"dropout": 2.0}.get(method, 10.0)
    jitter = 0.01 * float(h_in[0])  # seed-to-seed noise of the FGSM curves (no new draws)
    result = {
        "error_pct": ERRORS[task][method] + rng.normal(0, 0.02),
        "nll": 0.03,
        "brier": 0.01,
        "ece": 0.004 + u / 100,
        "reliability": {
            "bin_lower": edges[:-1].tolist(),
            "bin_upper": edges[1:].tolist(),
            "confidence": conf,
            "accuracy": acc,
            "count": count,
        },
        "test_entropy": {"mean": float(h_in.mean()), "median": float(np.median(h_in))},
        "ood": {
            ood: {
                "auroc": 0.6 + 0.35 * u,
                "fpr95": 0.9 - 0.5 * u,
                "median_entropy": float(np.median(h_ood)),
                "mean_entropy": float(h_ood.mean()),
                "entropy_ecdf": _ecdf(h_ood, k),
            }
        },
        "in_entropy_ecdf": _ecdf(h_in, k),
        "fgsm": None
        if not fgsm
        else {
            "eps": eps,
            "accuracy": [(0.99 - jitter) * math.exp(-decay * e) for e in eps],
            "mean_entropy": [
                min(
                    math.log(k) - jitter,
                    0.05 + jitter + (u * math.log(k) if task == "mnist" else 0.4) * e / 0.3,
                )
                for e in eps
            ],
        },
        "diagnostics": {},
    }
    if method == "fflu":
        result["diagnostics"] = {
            "sparsity": {"conv1": 0.6, "conv2": 0.95, "fc1": 0.99, "fc2": 0.93}
        }
    return result


def _toy_metrics(method: str, rng: np.random.Generator) -> dict[str, Any]:
    x = np.linspace(-6, 6, 121)
    std = 3 + 0.3 * np.abs(x) + WIDEN[method] * np.clip(np.abs(x) - 4, 0, None) ** 2
    xt = rng.uniform(-4, 4, 20)
    return {
        "rmse": 5.0,
        "loglik_inside": -2.6,
        "loglik_outside": -3 - 20 / WIDEN[method],
        "coverage_3std_inside": 1.0,
        "coverage_3std_outside": 0.8,
        "bands": {"x": x.tolist(), "mean": (x**3).tolist(), "std": std.tolist()},
        "train_points": {"x": xt.tolist(), "y": (xt**3 + rng.normal(0, 3, 20)).tolist()},
        "diagnostics": {},
    }


def _run(method: str, task: str, seed: int, verified: bool) -> dict[str, Any]:
    rng = np.random.default_rng(zlib.crc32(f"{method}/{task}/{seed}".encode()))
    k = {"mnist": 10, "cifar5": 5}.get(task, 1)
    if task == "toy-cubic":
        metrics = _toy_metrics(method, rng)
    else:
        ood = "notmnist" if task == "mnist" else "cifar5-hidden"
        metrics = _cls_metrics(method, task, k, ood, rng, fgsm=method != "ensemble")
    f = {
        "dataset": task,
        "file": f"{task}.tar.gz",
        "path": f"/data/{task}.tar.gz",
        "md5": "d131a434dc45d9607613653576b49cad" if not verified else "0" * 32,
        "expected_md5": "c58f30108f718f92721af3b95e74349a",
        "verified": verified,
    }
    return {
        "method": method,
        "display_name": DISPLAY[method],
        "task": task,
        "seed": seed,
        "train_seconds": 10.0 + seed,
        "eval_seconds": 2.5,
        "config": {"spec": {"out_dim": k}},
        "data": {
            "files": [f],
            "verified": verified,
            "notes": [] if verified else [f"{task}: unverified JPEG stand-in"],
        },
        "train_log": {"epoch": [1], "loss": [0.1], "nll": [0.1], "kl": [0.0]},
        "metrics": metrics,
    }


def _results(
    tasks: tuple[str, ...] = ("mnist", "cifar5", "toy-cubic"),
    methods: tuple[str, ...] = METHODS,
    cifar_verified: bool = False,
) -> dict[str, Any]:
    runs = []
    for task in tasks:
        ms = (*methods, "dropout-learned") if task == "toy-cubic" else methods
        for m in ms:
            for seed in (0, 1, 2):
                verified = cifar_verified if task == "cifar5" else True
                runs.append(_run(m, task, seed, verified))
    return {
        "schema": "uqbench.results/1",
        "suite": "synthetic",
        "command": "uqbench run --suite x",
        "environment": {
            "uqbench": "0.1.0",
            "torch": "2.14.1",
            "device": "cpu",
            "device_name": "test CPU (2 cores)",
            "git_commit": None,
        },
        "runs": runs,
    }


def _verdict(md: str, claim_id: str) -> str:
    m = re.search(r"\[(agrees|differs|inconclusive|not run)\] `" + re.escape(claim_id) + "`", md)
    assert m, f"claim {claim_id} missing from report"
    return m.group(1)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict]:
    out = tmp_path_factory.mktemp("report")
    results = _results()
    results["discussion"] = {"toy-mnf-widens": "HUMAN-WRITTEN PARAGRAPH"}
    return out, write_report(results, out), results


def test_writes_markdown_html_and_figures(full_report) -> None:
    out, paths, _ = full_report
    assert out / "report.md" in paths and out / "report.html" in paths
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    for name in (
        "ecdf-mnist-notmnist.png",
        "ecdf-cifar5-cifar5-hidden.png",
        "fgsm-mnist.png",
        "fgsm-cifar5.png",
        "toy-bands-toy-cubic.png",
        "reliability-mnist.png",
        "reliability-cifar5.png",
    ):
        assert name in figs
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert {p.name for p in paths if p.suffix == ".png"} == set(figs)
    html = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(figs)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert 'src="figures/' not in html  # self-contained


def test_tables_and_provenance(full_report) -> None:
    out, _, results = full_report
    md = (out / "report.md").read_text()
    assert "uqbench run --suite x" in md and "test CPU (2 cores)" in md
    # Table 2 header: the paper's column order, then learned dropout.
    header = next(line for line in md.splitlines() if line.startswith("| task |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[1:7] == ["L2", "Dropout", "D.Ensem.", "FFG", "FFLU", "MNFG"]
    paper_row = next(line for line in md.splitlines() if line.startswith("| CIFAR 5 (paper)"))
    assert [c.strip() for c in paper_row.strip("|").split("|")][1:7] == [
        "24.0",
        "16.0",
        "21.0",
        "22.0",
        "23.0",
        "16.0",
    ]
    # Three seeds -> mean ± half-width of the t-interval; the resolved best is bold.
    mnist_row = next(line for line in md.splitlines() if line.startswith("| MNIST (ours)"))
    assert "±" in mnist_row and mnist_row.count("**") == 2
    cifar_row = next(line for line in md.splitlines() if line.startswith("| CIFAR 5 (ours)"))
    assert "±" in cifar_row
    assert "d131a434dc45d9607613653576b49cad" in md and "**NO**" in md
    # Per-run table: one line per run.
    n_runs = len(results["runs"])
    assert sum(1 for line in md.splitlines() if re.match(r"\| \S.* \| \d+ \| \d", line)) >= n_runs
    assert "FFLU sparsity" in md and "95.2" in md


def test_cifar_unverified_label_everywhere(full_report, tmp_path: Path) -> None:
    out, _, _ = full_report
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert CIFAR_UNVERIFIED in html
    assert "WARNING" in md
    # Every CIFAR caption (tables and figures) carries the label.
    captions = [line for line in md.splitlines() if line.startswith("*") and "CIFAR" in line]
    assert captions and all(CIFAR_UNVERIFIED in c for c in captions)
    # So does the caption of every table with a CIFAR row (convergence, MNF mechanism, ...).
    lines = md.splitlines()
    tables = 0
    for i, line in enumerate(lines):
        if line.startswith("|") and not lines[i + 1].startswith("|"):  # a table's last row
            j = i
            while lines[j].startswith("|"):
                j -= 1
            if any("CIFAR" in row for row in lines[j + 1 : i + 1]):
                tables += 1
                caption = next(x for x in lines[i + 1 :] if x.strip())
                assert CIFAR_UNVERIFIED in caption, lines[j + 1]
    assert tables >= 5
    # With verified CIFAR data there is no such label.
    clean = tmp_path / "clean"
    write_report(_results(tasks=("cifar5",), cifar_verified=True), clean)
    clean_md = (clean / "report.md").read_text()
    assert CIFAR_UNVERIFIED not in clean_md and "WARNING" not in clean_md


def test_claims_follow_the_data(full_report, tmp_path: Path) -> None:
    out, _, _ = full_report
    md = (out / "report.md").read_text()
    # The synthetic numbers were made to agree with these claims.
    for cid in (
        "notmnist-mnf-lowest",
        "notmnist-l2-most-overconfident",
        "notmnist-fflu-overconfident",
        "notmnist-dropout-middle",
        "cifar-l2-most-overconfident",
        "cifar-mnf-beats-gaussian",
        "cifar-dropout-mnf-best-accuracy",
        "fgsm-mnist-mnf-entropy-rises",
        "fgsm-mnist-dropout-overconfident",
        "fgsm-cifar-all-overconfident",
        "toy-mnf-widens",
        "toy-dropout-diverges-less",
        "toy-learned-dropout-overfits",
        "mnist-mnf-beats-mean-field",
    ):
        assert _verdict(md, cid) == "agrees", cid
    assert "HUMAN-WRITTEN PARAGRAPH" in md
    # Swap L2 and MNF's uncertainty: the notMNIST claims must flip to "differs".
    saved = dict(UNCERTAINTY)
    try:
        UNCERTAINTY["l2"], UNCERTAINTY["mnf"] = saved["mnf"], saved["l2"]
        write_report(_results(tasks=("mnist",)), tmp_path)
    finally:
        UNCERTAINTY.update(saved)
    swapped = (tmp_path / "report.md").read_text()
    assert _verdict(swapped, "notmnist-mnf-lowest") == "differs"
    assert _verdict(swapped, "notmnist-l2-most-overconfident") == "differs"
    assert _verdict(swapped, "toy-mnf-widens") == "not run"


def test_missing_tasks_and_methods_do_not_crash(tmp_path: Path) -> None:
    # MNIST only, two methods, no FGSM and no OOD sets: a smoke suite.
    res = _results(tasks=("mnist",), methods=("l2", "mnf"))
    for r in res["runs"]:
        r["metrics"]["fgsm"] = None
        r["metrics"]["ood"] = {}
    paths = write_report(res, tmp_path / "smoke")
    md = (tmp_path / "smoke" / "report.md").read_text()
    assert "[not run] `cifar-l2-most-overconfident`" in md
    assert "[not run] `fgsm-mnist-mnf-entropy-rises`" in md
    assert any(p.name == "reliability-mnist.png" for p in paths)
    # Toy only; and no runs at all.
    write_report(_results(tasks=("toy-cubic",)), tmp_path / "toy")
    assert (tmp_path / "toy" / "figures" / "toy-bands-toy-cubic.png").exists()
    paths = write_report({**_results(), "runs": []}, tmp_path / "empty")
    assert (tmp_path / "empty" / "report.html").exists() and len(paths) == 2


def test_rejects_wrong_schema(tmp_path: Path) -> None:
    with pytest.raises(ResultsError):
        write_report({"schema": "other/1", "runs": []}, tmp_path)
    with pytest.raises(ResultsError):
        write_report({"schema": "uqbench.results/1"}, tmp_path)
    # A run that does not say its seed cannot be paired with the others' (it read as seed 0).
    run = {k: v for k, v in _results()["runs"][0].items() if k != "seed"}
    with pytest.raises(ResultsError, match=r"runs\[0\] has no valid 'seed'"):
        write_report({**_results(), "runs": [run]}, tmp_path)
    with pytest.raises(ResultsError, match="'method', 'seed'"):
        write_report({**_results(), "runs": [{"task": "mnist", "seed": True}]}, tmp_path)


def test_discussion_file_notes_reach_their_claims(tmp_path):
    from uqbench.paper import CLAIMS

    results = {"schema": "uqbench.results/1", "suite": "s", "command": "c", "runs": []}
    claim = CLAIMS[0].id
    (tmp_path / "discussion.toml").write_text(f'{claim} = "shorter training explains it"\n')
    write_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "shorter training explains it" in md


def test_discussion_notes_carry_their_numbers_and_go_stale(tmp_path):
    results = _results(tasks=("mnist",))
    errors = {
        m: float(np.mean([r["metrics"]["error_pct"] for r in results["runs"] if r["method"] == m]))
        for m in ("mnf", "ffg")
    }
    note = (
        "[mnist-mnf-beats-mean-field]\n"
        'verdict = "agrees"\n'
        f'numbers = {{ "mnist/mnf/error_pct" = {errors["mnf"]:.4f}, '
        f'"mnist/ffg/error_pct" = {errors["ffg"]:.4f} }}\n'
        'text = "NOTE-WITH-NUMBERS"\n'
    )
    (tmp_path / "discussion.toml").write_text(note)
    write_report(results, tmp_path)
    line = next(x for x in (tmp_path / "report.md").read_text().splitlines() if "NOTE-WITH" in x)
    assert "STALE" not in line and _verdict(line, "mnist-mnf-beats-mean-field") == "agrees"
    # MNF's error moves: the note's number no longer matches.
    for r in results["runs"]:
        if r["method"] == "mnf":
            r["metrics"]["error_pct"] += 0.05
    write_report(results, tmp_path)
    line = next(x for x in (tmp_path / "report.md").read_text().splitlines() if "NOTE-WITH" in x)
    assert "STALE" in line and "mnist/mnf/error_pct was" in line
    # Its verdict flips too: MNF now worse than FFG.
    for r in results["runs"]:
        if r["method"] == "mnf":
            r["metrics"]["error_pct"] += 0.5
    write_report(results, tmp_path)
    line = next(x for x in (tmp_path / "report.md").read_text().splitlines() if "NOTE-WITH" in x)
    assert "written for 'agrees', now 'differs'" in line


def test_a_note_naming_an_undeclared_statistic_is_stale_not_a_crash(tmp_path):
    note = (
        "[mnist-mnf-beats-mean-field]\n"
        'numbers = { "mnist/mnf/ood.notmnist.aurocc" = 0.9 }\n'
        'text = "NOTE-WITH-TYPO"\n'
    )
    (tmp_path / "discussion.toml").write_text(note)
    write_report(_results(tasks=("mnist",)), tmp_path)
    line = next(x for x in (tmp_path / "report.md").read_text().splitlines() if "NOTE-WITH" in x)
    assert "STALE" in line and "'ood.notmnist.aurocc'" in line and "no metric 'aurocc'" in line


def test_unconverged_runs_are_marked_and_cannot_back_an_agrees(tmp_path):
    results = _results(tasks=("mnist",))
    for r in results["runs"]:
        if r["method"] == "mnf":  # still falling 20% per epoch
            r["train_log"] = {"epoch": [1, 2, 3], "loss": [1.5, 1.2, 1.0], "kl": [3.0, 2.0, 1.6]}
    write_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    row = next(x for x in md.splitlines() if x.startswith("| MNIST (ours)"))
    assert row.rstrip(" |").endswith("†")  # MNFG, the last column
    assert _verdict(md, "mnist-mnf-beats-mean-field") == "inconclusive"
    assert "not converged: MNFG" in md
    assert "| MNFG | MNIST | 0 | 3 | NO (loss +20.0%, KL +25.0%) |" in md


def test_mnf_mechanism_table_from_recorded_diagnostics(tmp_path):
    results = _results(tasks=("mnist",), methods=("ffg", "mnf"))
    write_report(results, tmp_path / "none")
    assert "Not recorded: these FFG / MNF runs" in (tmp_path / "none" / "report.md").read_text()
    for r in results["runs"]:
        layer = {"weight_std": 0.01, "kl_w": 100.0 + r["seed"], "kl": 100.0 + r["seed"]}
        if r["method"] == "mnf":
            layer.update(z_mean=1.0, z_spread=0.3, z_spread_rel=0.3, log_q=-5.0, log_r=2.0)
            layer["kl"] = layer["kl_w"] - 5.0 - 2.0
        r["metrics"]["diagnostics"] = {"q_layers": {"layer0": layer}}
    write_report(results, tmp_path / "q")
    md = (tmp_path / "q" / "report.md").read_text()
    # mean over seeds 0, 1, 2 of kl_w = 101; MNF's bound = 101 - 5 - 2 = 94
    assert (
        "| MNIST | MNFG | layer0 | 0.010 | 1.000 | 0.300 | 0.300 | -5.0 | 2.0 | 101.0 | 94.0 |"
        in md
    )
    assert "| MNIST | FFG | layer0 | 0.010 | — | — | — | — | — | 101.0 | 101.0 |" in md


def _with_beyond_paper_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """Add issue-18 keys (two OOD sets, AURC, shift) to the MNIST runs of ``results``."""
    for i, r in enumerate(r for r in results["runs"] if r["task"] == "mnist"):
        m = r["metrics"]
        first = next(iter(m["ood"].values()))
        m["ood"] = {"notmnist": dict(first), "fashion-mnist": dict(first)}
        for j, entry in enumerate(m["ood"].values()):
            entry.update(auroc_mutual_info=0.8 + 0.1 * j, auroc_expected_entropy=0.6,
                         aupr_in=0.7, aupr_out=0.9)  # fmt: skip
        m["aurc"] = 0.01 * (1 + i)
        m["risk_coverage"] = {"coverage": [0.5, 1.0], "risk": [0.0, 0.02]}
        m["shift_rotation"] = {"angle": [0.0, 90.0, 180.0]} | {
            k: [0.9, 0.5, 0.4] for k in ("accuracy", "nll", "ece", "brier", "mean_entropy")
        }
        per = {k: [0.9, 0.6] for k in ("accuracy", "nll", "ece", "brier", "mean_entropy")}
        m["shift_corruption"] = {
            "severity": [1, 5],
            "corruptions": {"contrast": per, "pixelate": per},
            "mean": per,
        }
        m["rotated_accuracy_mean"] = 0.6
        m["corrupted_accuracy_mean"] = 0.75
    return results


def test_beyond_paper_section(tmp_path: Path) -> None:
    results = _with_beyond_paper_metrics(_results(tasks=("mnist",), methods=("l2", "mnf")))
    results["schema"] = "uqbench.results/2"
    paths = write_report(results, tmp_path)
    names = {p.name for p in paths}
    for name in ("ecdf-mean-mnist.png", "risk-coverage-mnist.png", "rotation-mnist.png",
                 "corruption-mnist.png"):  # fmt: skip
        assert name in names
    md = (tmp_path / "report.md").read_text()
    assert "Beyond the paper" in md
    row = next(line for line in md.splitlines() if "**mean over sets**" in line)
    # AUROC MI of the two sets is 0.8 and 0.9: the mean row says 0.850; the caption names
    # the score of each column.
    assert "0.850" in row
    assert "AUROC MI uses mutual information (epistemic)" in md
    # the summary answers "which posterior for OOD detection" once per OOD set
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    for ood in ("notmnist", "fashion-mnist"):
        assert f"| OOD detection (AUROC, {ood}) | MNIST |" in summary
    # AURC of MNF: seeds 0, 1, 2 -> MNIST runs 3, 4, 5: (0.04 + 0.05 + 0.06) / 3.
    mnf_row = next(line for line in md.splitlines() if line.startswith("| MNFG | 0.0500"))
    assert "0.600" in mnf_row and "0.750" in mnf_row


def test_test_noise_flag_widens_every_interval_over_seeds_by_the_shared_test_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Three seeds of FFG, FFLU and MNF scored on one test set of n examples (saved outputs):
    # seed s of FFG errs on the first 20 + 5s examples, of FFLU on examples 5 .. 45 + 5s, of
    # MNF on examples 10 .. 70 + 10s.
    import json

    from scipy import stats

    from uqbench.cli import main

    n, k = 2000, 3
    y = np.zeros(n, dtype=np.int64)
    (tmp_path / "runs").mkdir()
    results = _results(tasks=("mnist",), methods=("ffg", "fflu", "mnf"))
    wrong = {"ffg": [range(20 + 5 * s) for s in range(k)]}
    wrong["fflu"] = [range(5, 45 + 5 * s) for s in range(k)]
    wrong["mnf"] = [range(10, 70 + 10 * s) for s in range(k)]
    for r in results["runs"]:
        pred = y.copy()
        pred[list(wrong[r["method"]][r["seed"]])] = 1
        name = f"{r['method']}-{r['seed']}.npz"
        ok = pred == y
        outputs = {
            "test.y": y,
            "test.pred": pred,
            "test.conf": np.full(n, 0.9),
            "test.logp_true": np.where(ok, math.log(0.9), math.log(0.05)),
            "test.entropy": np.full(n, 0.4),
            "test.brier": np.where(ok, 0.0125, 1.7),
        }
        np.savez_compressed(tmp_path / "runs" / name, **outputs)
        r["predictions"] = name
        r["metrics"]["error_pct"] = 100.0 * float(np.mean(pred != y))
    (tmp_path / "results.json").write_text(json.dumps(results))

    def table2_halves(md: str) -> list[float]:
        row = next(line for line in md.splitlines() if line.startswith("| MNIST (ours)"))
        return [float(c.split("±")[1].strip(" *†")) for c in row.split("|")[2:-1] if "±" in c]

    t2 = stats.t.ppf(0.975, k - 1)
    seeds_only, with_noise = [], []
    for m in ("ffg", "fflu", "mnf"):  # Table 2's order
        x = np.zeros((k, n))
        for s, idx in enumerate(wrong[m]):
            x[s, list(idx)] = 100.0
        e = x.mean(1)
        c = np.cov(x, bias=True)  # two seeds' resampled means covary by cov(x_s, x_t) / n
        shared = (c.sum() - np.trace(c)) / (k * (k - 1)) / n
        seeds_only.append(t2 * e.std(ddof=1) / math.sqrt(k))
        with_noise.append(t2 * math.sqrt(e.var(ddof=1) / k + shared))

    assert main(["report", str(tmp_path)]) == 0
    plain = (tmp_path / "report.md").read_text()
    assert table2_halves(plain) == pytest.approx(seeds_only, abs=0.006)
    assert "--test-noise" not in plain and "With the test set's noise too" in plain

    assert main(["report", str(tmp_path), "--test-noise"]) == 0
    noisy = (tmp_path / "report.md").read_text()
    assert table2_halves(noisy) == pytest.approx(with_noise, rel=0.05, abs=0.006)
    assert all(w > s + 0.1 for w, s in zip(with_noise, seeds_only, strict=True))
    assert "**Intervals with the test set's noise** (`uqbench report --test-noise`)" in noisy
    assert "(over seeds, with the test set's noise they share where it can be had)" in noisy
    assert "With the test set's noise too" not in noisy  # every verdict has it already
    # The summary's best (FFG, the lower error) and the claims read the same intervals.
    summary = next(ln for ln in noisy.splitlines() if ln.startswith("| accuracy (test error"))
    assert float(summary.split("|")[3].split("±")[1]) == table2_halves(noisy)[0]
    claim = next(ln for ln in noisy.splitlines() if "`mnist-mnf-beats-mean-field`" in ln)
    assert "t over 3 seeds + test-set bootstrap" in claim

    # A run without saved outputs: its method's interval stays over seeds alone, the other's
    # is still widened.
    results["runs"] = [
        {k: v for k, v in r.items() if k != "predictions"}
        if (r["method"], r["seed"]) == ("mnf", 0)
        else r
        for r in results["runs"]
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["report", str(tmp_path), "--test-noise"]) == 0
    mixed = (tmp_path / "report.md").read_text()
    want = [*with_noise[:2], seeds_only[2]]
    assert table2_halves(mixed) == pytest.approx(want, rel=0.05, abs=0.006)
    capsys.readouterr()


def test_toy_band_widths_are_each_runs_own_range_averaged_over_seeds(full_report) -> None:
    # Each seed draws its own training inputs, so "inside" is judged per run, then averaged:
    # the table and the toy-mnf-widens claim give the same numbers as this by-hand average.
    out, _, results = full_report
    md = (out / "report.md").read_text()
    section = md.split("### Toy cubic", 1)[1]
    header = next(ln for ln in section.splitlines() if ln.startswith("| method"))
    cols = [c.strip() for c in header.split("|")]
    i_in, i_out = cols.index("mean std in"), cols.index("mean std out")
    for method in ("mnf", "dropout"):
        per_run = []
        for r in results["runs"]:
            if r["task"] == "toy-cubic" and r["method"] == method:
                x, std = (np.asarray(r["metrics"]["bands"][k]) for k in ("x", "std"))
                xt = np.asarray(r["metrics"]["train_points"]["x"])
                inside = (x >= xt.min()) & (x <= xt.max())
                per_run.append((std[inside].mean(), std[~inside].mean()))
        want_in, want_out = np.mean(per_run, axis=0)
        row = next(ln for ln in section.splitlines() if ln.startswith(f"| {DISPLAY[method]} |"))
        cells = [c.strip() for c in row.split("|")]
        assert float(cells[i_in].split("±")[0]) == pytest.approx(want_in, abs=0.006)
        assert float(cells[i_out].split("±")[0]) == pytest.approx(want_out, abs=0.006)
        if method == "mnf":
            claim = md.split("`toy-mnf-widens`", 1)[1].split("\n", 1)[0]
            assert f"inside its training range {want_in:.2f}, outside {want_out:.2f}" in claim


def test_toy_figure_shows_each_seeds_own_training_points(tmp_path: Path) -> None:
    # Seeds draw different inputs: averaging them point by point invents data.
    from matplotlib.collections import PathCollection

    import uqbench.report.figures as figures
    from uqbench.report.style import ReportView

    results = _results(tasks=("toy-cubic",), methods=("mnf",))
    runs = [r for r in results["runs"] if r["method"] == "mnf"]
    saved = {}

    def keep(fig, path, view, task):
        saved["fig"] = fig
        return path

    original = figures.save_figure
    figures.save_figure = keep
    try:
        figures.toy_figure(ReportView(results), "toy-cubic", tmp_path / "toy.png")
    finally:
        figures.save_figure = original
    ax = saved["fig"].axes[0]
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    shown = np.asarray(points.get_offsets())
    given = np.concatenate(
        [np.c_[r["metrics"]["train_points"]["x"], r["metrics"]["train_points"]["y"]] for r in runs]
    )
    assert shown.shape == given.shape and np.allclose(shown, given)
    xs = [np.asarray(r["metrics"]["train_points"]["x"]) for r in runs]
    lo, hi = max(x.min() for x in xs), min(x.max() for x in xs)
    (span,) = ax.patches  # the shaded range every seed's inputs cover
    assert span.get_x() == pytest.approx(lo) and span.get_x() + span.get_width() == pytest.approx(
        hi
    )


def test_a_best_mark_names_the_methods_it_was_not_compared_with(tmp_path: Path) -> None:
    # The Deep Ensemble is not attacked by default: "every other" must not include it.
    results = _results(tasks=("mnist",))
    for run in results["runs"]:
        if run["method"] == "ensemble":
            run["metrics"].pop("fgsm", None)
    write_report(results, tmp_path)
    (row,) = [
        ln for ln in (tmp_path / "report.md").read_text().splitlines() if "| adversarial" in ln
    ]
    assert "**Dropout** (resolved against every other; no value for D.Ensem.)" in row


def test_report_progress_bars_go_to_stderr_only_when_asked(tmp_path, capsys) -> None:
    results = _results(tasks=("toy-cubic",))
    write_report(results, tmp_path / "quiet")
    quiet = capsys.readouterr()
    write_report(results, tmp_path / "shown", progress=True)
    shown = capsys.readouterr()
    assert quiet.err == "" and quiet.out == shown.out == ""
    assert "report: claims" in shown.err and "against the paper" in shown.err
    assert "provenance" in shown.err  # the last section
    md = (tmp_path / "quiet" / "report.md").read_text()
    assert md == (tmp_path / "shown" / "report.md").read_text()  # the bars change nothing
