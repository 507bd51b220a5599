"""The command line: listings, clear errors without tracebacks, report rebuilt from results."""

from __future__ import annotations

import json

import pytest

from uqbench.cli import main
from uqbench.results import load_results


def test_list_json_names_posteriors_tasks_and_suites(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert set(listing) == {"posteriors", "tasks", "suites"}
    assert {"l2", "dropout", "ensemble", "ffg", "fflu", "mnf"} <= set(listing["posteriors"])
    assert {"mnist", "cifar5", "toy-cubic"} <= set(listing["tasks"])
    assert {"smoke", "quick", "paper"} <= set(listing["suites"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--methods", "nope", "--dry-run"], "unknown method 'nope'"),
        (["run", "--tasks", "nope", "--dry-run"], "unknown task 'nope'"),
        (["run", "--suite", "nope"], "unknown suite 'nope'"),
        (["run", "--epochs", "0", "--dry-run"], "epochs must be positive"),
        (["run", "--device", "cuda:0", "--methods", "l2"], "no CUDA GPU"),
        (["report", "/nonexistent/results"], "no results file"),
        (["check", "/nonexistent", "--reference", "/nonexistent.json"], "no results file"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_data_names_file_and_places(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("UQBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    code = main(
        [
            "run",
            "--suite",
            "smoke",
            "--methods",
            "l2",
            "--tasks",
            "mnist",
            "--quiet",
            "--data-dir",
            str(tmp_path / "empty"),
            "--no-download",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "empty") in err


def test_run_then_report_rebuilds_from_results_alone(tmp_path, tiny_task, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        'name = "tiny"\nmethods = ["l2", "dropout"]\ntasks = ["tiny-blobs"]\nseeds = [0]\n'
        "[eval]\ntest_samples = 3\nfgsm_samples = 2\n"
    )
    out = tmp_path / "results"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--quiet"]) == 0
    res = load_results(out / "tiny")
    assert [r["method"] for r in res["runs"]] == ["l2", "dropout"]
    assert res["command"].startswith("uqbench")
    for f in ("report.md", "report.html"):
        (out / "tiny" / f).unlink()
    assert main(["report", str(out / "tiny")]) == 0
    assert (out / "tiny" / "report.md").exists() and (out / "tiny" / "report.html").exists()
