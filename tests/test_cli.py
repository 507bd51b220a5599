"""The command line: listings, clear errors without tracebacks, report rebuilt from results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import smoke_argv

from uqbench.cli import main
from uqbench.results import load_results


def test_list_json_names_posteriors_tasks_and_suites(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert set(listing) == {"posteriors", "tasks", "ood_sets", "suites"}
    assert {"l2", "dropout", "ensemble", "ffg", "fflu", "mnf"} <= set(listing["posteriors"])
    assert {"mnist", "cifar5", "toy-cubic"} <= set(listing["tasks"])
    assert {"smoke", "quick", "paper"} <= set(listing["suites"])
    assert {"notmnist", "fashion-mnist", "cifar5-hidden"} <= set(listing["ood_sets"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--methods", "nope", "--dry-run"], "unknown method 'nope'"),
        (["run", "--tasks", "nope", "--dry-run"], "unknown task 'nope'"),
        (["run", "--suite", "nope"], "unknown suite 'nope'"),
        (
            ["run", "--suite", str(Path(__file__).parents[1] / "README.md")],
            "suite files end in .toml",
        ),
        (["run", "--epochs", "0", "--dry-run"], "epochs must be positive"),
        (["run", "--n-train", "0", "--dry-run"], "n_train must be positive"),
        (["run", "--set", "mnist.train.epochs=0", "--dry-run"], "epochs must be positive"),
        (["run", "--set", "mnist.train.epoch=1", "--dry-run"], "unknown key(s) epoch"),
        (["run", "--set", "mnist=1", "--dry-run"], "expected TASK.SECTION.KEY=VALUE"),
        (["run", "--set", "nope.train.epochs=1", "--dry-run"], "task 'nope' is not among"),
        (["run", "--set", "mnist.ood=nope", "--dry-run"], "unknown OOD set 'nope'"),
        (
            ["run", "--set", "toy-cubic.ood=notmnist", "--dry-run"],
            "OOD set 'notmnist' gives inputs of shape [1, 28, 28], but the task takes [1]",
        ),
        (["run", "--device", "cuda:0", "--methods", "l2"], "no CUDA GPU"),
        (["run", "--device", "cuda", "--dry-run"], "no CUDA GPU"),
        (["run", "--device", "gpu", "--dry-run"], "bad device 'gpu'"),
        (["run", "--device", "mps", "--dry-run"], "device 'mps' is not supported"),
        (["run", "--device", "meta", "--methods", "l2"], "device 'meta' is not supported"),
        (["run", "--compile", "default", "--executor", "ray"], "--compile needs --executor"),
        (
            ["run", "--executor", "ray", "--gpus-per-run", "-1", "--dry-run"],
            "--gpus-per-run must be 0 or more",
        ),
        (
            ["run", "--executor", "ray", "--device", "cuda", "--dry-run"],
            "needs --gpus-per-run above 0",
        ),
        (["run", "--dry-run", "--out", __file__], f"{__file__} is not a folder"),
        (["run", "--methods", "", "--dry-run"], "--methods was given no names"),
        (["run", "--methods", "l2", "--tasks", ",", "--dry-run"], "--tasks was given no names"),
        (
            ["run", "--executor", "ray", "--address", "bogus", "--dry-run"],
            "bad Ray address 'bogus': use auto or HOST:PORT",
        ),
        (["run", "--cpus-per-run", "2", "--dry-run"], "--cpus-per-run needs --executor"),
        (["run", "--gpus-per-run", "0.5", "--dry-run"], "--gpus-per-run need --executor ray"),
        (["report", "/nonexistent/results"], "no results file"),
        (["check", "/nonexistent", "--reference", "/nonexistent.json"], "no results file"),
        (
            [
                "check",
                str(Path(__file__).parents[1] / "results" / "quick"),
                "--reference",
                "/no.json",
            ],
            "no reference file",
        ),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_data_names_file_and_places(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("UQBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = ["--data-dir", str(tmp_path / "empty"), "--no-download"]
    code = main(smoke_argv("mnist", *data, "--out", str(tmp_path / "r")))
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
    capsys.readouterr()
    argv = ["run", "--suite", str(suite), "--out", str(out), "--seeds", "0", "1", "--dry-run"]
    assert main(argv) == 0  # the dry run says what a real one would skip
    assert "4 runs: 2 already done" in capsys.readouterr().err
    for f in ("report.md", "report.html"):
        (out / "tiny" / f).unlink()
    assert main(["report", str(out / "tiny")]) == 0
    assert (out / "tiny" / "report.md").exists() and (out / "tiny" / "report.html").exists()
    # A results file of another name: its report goes beside it.
    copy = tmp_path / "elsewhere" / "copy.json"
    copy.parent.mkdir()
    copy.write_bytes((out / "tiny" / "results.json").read_bytes())
    assert main(["report", str(copy), "--quiet"]) == 0
    assert (copy.parent / "report.md").exists()
    # ... but not over the report of a folder's own results.json.
    beside = out / "tiny" / "copy.json"
    beside.write_bytes(copy.read_bytes())
    assert main(["report", str(beside)]) == 2
    assert "holds its own results.json" in capsys.readouterr().err


def dry_run(argv: list[str], capsys) -> dict[str, dict]:
    """``uqbench run --dry-run`` -> ``{run key: resolved config}``."""
    assert main(["run", "--dry-run", *argv]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return {k: json.loads(v) for k, v in (ln.split(": ", 1) for ln in lines)}


def test_global_and_per_task_overrides(capsys):
    # --epochs applies to every task; --set TASK... to one, and wins over --epochs.
    runs = dry_run(
        [
            "--suite", "smoke", "--methods", "l2", "--tasks", "toy-cubic", "mnist",
            "--epochs", "1", "--set", "toy-cubic.train.epochs=1000",
            "--n-test", "50", "--n-ood", "40", "--fgsm-n", "7",
            "--set", "mnist.data.n_train=300", "--set", "mnist.ood=notmnist,fashion-mnist",
            "--set", "mnist.arch.hidden=64",
        ],
        capsys,
    )  # fmt: skip
    toy, mnist = runs["l2-toy-cubic-seed0"], runs["l2-mnist-seed0"]
    assert toy["train"]["epochs"] == 1000 and mnist["train"]["epochs"] == 1
    assert mnist["data"] == {"n_train": 300, "n_test": 50, "n_ood": 40}
    assert toy["data"]["n_test"] == 50 and toy["data"]["n_train"] is None
    assert mnist["eval"]["fgsm_n"] == 7 and mnist["eval"]["ood"] == ["notmnist", "fashion-mnist"]
    assert mnist["arch"] == {"hidden": 64} and toy["arch"] == {}
    # Without overrides: the suite's settings.
    plain = dry_run(["--suite", "smoke", "--methods", "l2", "--tasks", "mnist"], capsys)
    m = plain["l2-mnist-seed0"]
    assert m["train"]["epochs"] == 2 and m["data"]["n_train"] == 1000
    assert m["eval"]["fgsm_n"] == 100 and m["eval"]["ood"] == ["notmnist"]


def test_readme_suite_example_is_a_valid_suite(tmp_path, capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index('```toml\nname = "mine"') + len("```toml\n")
    suite = tmp_path / "mine.toml"
    suite.write_text(readme[start : readme.index("```", start)])
    runs = dry_run(["--suite", str(suite)], capsys)
    mnist = runs["mnf-mnist-seed0"]
    assert mnist["eval"]["ood"] == ["notmnist", "fashion-mnist"]
    # MNIST's own family setting (max_std) is the first layer under the suite's tables.
    assert mnist["posterior"] == {"max_std": 0.5, "flow_q": 1}
    assert mnist["eval"]["test_samples"] == 20
    assert runs["mnf-toy-cubic-seed1"]["posterior"] == {"flow_q": 4}
    assert "dropout-learned-mnist-seed0" in runs and "dropout-learned-toy-cubic-seed0" not in runs


def test_readme_quickstart_main_command_is_the_quick_suite(capsys):
    """The README's first Quickstart command parses and is the quick suite: 3 seeds of the
    six families on the three tasks, plus learned Dropout on the toy task."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme[readme.index("## Quickstart") :]
    block = block[block.index("```bash\n") + 8 : block.index("```", block.index("```bash\n") + 8)]
    main_line = block.splitlines()[0].split("#")[0]
    argv = main_line.split("tox -- uqbench ", 1)[1].split()
    assert argv[0] == "run"
    runs = dry_run(argv[1:], capsys)
    assert len(runs) == 3 * (6 * 3 + 1)
    assert {key.rsplit("-seed", 1)[1] for key in runs} == {"0", "1", "2"}
    assert "dropout-learned-toy-cubic-seed2" in runs


def test_a_failing_report_says_the_results_are_saved(tmp_path, tiny_task, capsys, monkeypatch):
    import uqbench.report

    def broken(results, out_dir, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(uqbench.report, "write_report", broken)
    suite = tmp_path / "tiny.toml"
    suite.write_text('name = "tiny"\nmethods = ["l2"]\ntasks = ["tiny-blobs"]\nseeds = [0]\n')
    out = tmp_path / "results"
    with pytest.raises(RuntimeError, match="boom"):
        main(["run", "--suite", str(suite), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert f"the results are saved in {out / 'tiny' / 'results.json'}" in err
    assert f"uqbench report {out / 'tiny'}" in err
    assert len(load_results(out / "tiny")["runs"]) == 1


def test_a_repeated_run_flag_adds_to_the_first(capsys):
    """``--seeds 0 --seeds 1`` runs both seeds, as ``--set`` accumulates (it used to keep
    only the last); the same for --methods and --tasks."""
    argv = ["run", "--suite", "smoke", "--dry-run", "--out", "/nonexistent-uqbench-dry"]
    assert main([*argv, "--methods", "l2", "--methods", "ffg", "--tasks", "toy-cubic",
                 "--seeds", "0", "--seeds", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    keys = {line.split(":")[0] for line in out.splitlines() if "-toy-cubic-seed" in line}
    assert keys == {f"{m}-toy-cubic-seed{s}" for m in ("l2", "ffg") for s in (0, 1)}


def _ci_reference_with(edit) -> dict:
    """The committed CI reference (a merged results file) after ``edit(runs)``."""
    path = Path(__file__).parents[1] / "results" / "reference" / "ci.json"
    results = json.loads(path.read_text())
    edit(results["runs"])
    return results


def _second_seed(runs: list, epochs: int | None = None, code_version: str | None = None) -> None:
    """Add seed 1 of ``runs[0]``'s method and task, made with other ``epochs`` or by other
    code."""
    import copy

    other = copy.deepcopy(runs[0])
    other["seed"] = 1
    if epochs is not None:
        other["config"]["train"]["epochs"] = epochs
    if code_version is not None:
        other["code_version"] = code_version
    runs.append(other)


def _other_data(runs: list) -> None:
    """Another method's run of ``runs[0]``'s task made from a changed copy of its first data
    file (as a run resumed after the data folder changed)."""
    other = next(r for r in runs[1:] if r["task"] == runs[0]["task"])
    assert other["method"] != runs[0]["method"]
    other["data"]["files"][0].update(md5="0" * 32, verified=False)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda runs: runs.append(dict(runs[0])), "appears more than once"),
        (_other_data, "were made from different copies of"),
        (lambda runs: runs[0]["metrics"].update(nll=float("nan")), "metric nll is nan"),
        (lambda runs: runs[0]["metrics"].update(error_pct="abc"), "is not a number"),
        (lambda runs: runs[0].update(status="failed"), "has status 'failed'"),
        (lambda runs: _second_seed(runs, epochs=1), "must differ by their seeds only"),
        (lambda runs: _second_seed(runs, code_version="t0.e0"), "the same code"),
        (lambda runs: runs[0]["metrics"].update(error_pct=-5.0), "outside the values it can"),
        (
            lambda runs: runs[0]["metrics"].update(nll=-0.5),
            "-0.5, outside the values it can take [0, inf]",
        ),
        (
            lambda runs: runs[0]["metrics"]["test_entropy"].update(median=float("nan")),
            "metric test_median_entropy is nan",
        ),
        (
            lambda runs: runs[0]["metrics"]["fgsm"].update(eps=0.1),
            "metric fgsm.budget_share is malformed",
        ),
    ],
)
def test_report_pairwise_and_check_refuse_results_that_cannot_be_compared(
    tmp_path, capsys, edit, message
):
    """A hand-edited results.json with a duplicated run, a non-finite, non-numeric or
    impossible metric, a failed run among the runs, or seeds of one method made with other
    settings or code used to be reported silently: the duplicate counted as a fourth seed,
    the bad value's seed dropped under a "3 seeds" heading, the other settings averaged in;
    ``check`` took an error of -5% as an improvement."""
    results = _ci_reference_with(edit)
    run = results["runs"][0]
    target = tmp_path / "results.json"
    target.write_text(json.dumps(results))
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "report.md").exists()
    from uqbench.pairwise import main as pairwise

    assert pairwise([str(tmp_path), run["task"], run["method"], "l2"]) == 2
    assert message in capsys.readouterr().err
    reference = Path(__file__).parents[1] / "results" / "reference" / "ci.json"
    assert main(["check", str(target), "--reference", str(reference)]) == 2
    assert message in capsys.readouterr().err


def test_check_refuses_results_made_from_other_data_than_the_reference(tmp_path, capsys):
    """A reference made from one copy of a data set (the committed one: CIFAR-10's JPEG
    stand-in) says nothing about results made from another (the real batches): both the
    tripwire and the statistical check refuse, naming the file, instead of reporting the
    data's difference as regressions. The same data with other paths is no difference."""
    reference = Path(__file__).parents[1] / "results" / "reference" / "ci.json"
    results = json.loads(reference.read_text())
    task = results["runs"][0]["task"]
    first = results["runs"][0]["data"]["files"][0]
    for r in results["runs"]:
        for f in r["data"]["files"]:
            f["path"] = "/elsewhere/" + f["file"]  # moved, same bytes: still comparable
    target = tmp_path / "results.json"
    target.write_text(json.dumps(results))
    assert main(["check", str(target), "--reference", str(reference), "--exact"]) == 0
    capsys.readouterr()
    for r in results["runs"]:  # every run of the task, consistently: comparable among them
        if r["task"] == task:
            for f in r["data"]["files"]:
                if f["file"] == first["file"]:
                    f.update(md5="0" * 32, verified=False)
    target.write_text(json.dumps(results))
    for extra in (["--exact"], []):
        assert main(["check", str(target), "--reference", str(reference), *extra]) == 2
        err = capsys.readouterr().err
        assert "made from other data than the reference" in err, err
        assert f"{task}: {first['dataset']} (" in err and f"md5 {'0' * 32}" in err, err


def test_the_tripwire_refuses_or_skips_results_of_another_machine_class(tmp_path, capsys):
    """Bit-for-bit equality holds only where the reference was made: the ci suite run on an
    Intel Xeon differed from the AMD EPYC reference in 4,899 of 12,093 values (all within the
    statistical check's tolerances). --exact refuses such results, naming the difference;
    with --if-same-machine (CI) it skips, saying why; the statistical check is unaffected."""
    reference = Path(__file__).parents[1] / "results" / "reference" / "ci.json"
    results = json.loads(reference.read_text())
    results["environment"]["cpu"] = "Intel(R) Xeon(R) Processor"
    target = tmp_path / "results.json"
    target.write_text(json.dumps(results))
    argv = ["check", str(target), "--reference", str(reference), "--exact"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cpu: 'Intel(R) Xeon(R) Processor' vs 'AMD EPYC'" in err and "statistical" in err
    assert main([*argv, "--if-same-machine"]) == 0
    assert (
        "tripwire SKIPPED (suite 'ci'): bit-for-bit equality holds only" in capsys.readouterr().out
    )
    assert main([*argv, "--if-same-machine", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"].startswith("bit-for-bit")
    assert main(["check", str(target), "--reference", str(reference), "--if-same-machine"]) == 2
    assert "--if-same-machine is the tripwire's" in capsys.readouterr().err
    partial = {**results, "runs": results["runs"][:1]}  # skipped, but not with runs missing
    target.write_text(json.dumps(partial))
    assert main([*argv, "--if-same-machine"]) == 2
    assert (
        f"results lack {len(results['runs']) - 1} run(s) of the reference"
        in capsys.readouterr().err
    )
    results["environment"]["cpu"] = "AMD EPYC"  # the same class: compared, and identical
    target.write_text(json.dumps(results))
    assert main([*argv, "--if-same-machine"]) == 0
    assert "tripwire PASSED" in capsys.readouterr().out


def test_verified_copies_stored_otherwise_stay_comparable(tmp_path, capsys):
    """One MNIST run made from the raw IDX files, the others (and the reference) from the
    ``.gz`` files: every file matches its published checksum, so the copies are the same and
    the results are merged and checked as before (the tripwire passes)."""
    from uqbench.check import validate_comparable
    from uqbench.data import checksums as ck
    from uqbench.errors import ResultsError

    reference = Path(__file__).parents[1] / "results" / "reference" / "ci.json"
    results = json.loads(reference.read_text())
    run = next(r for r in results["runs"] if r["task"] == "mnist")
    for f in run["data"]["files"]:
        if f["dataset"] == "mnist":
            assert f["verified"] and f["file"].endswith(".gz")
            stem = f["file"].removesuffix(".gz")
            f.update(file=stem, md5=ck.MNIST_MD5_RAW[stem], expected_md5=ck.MNIST_MD5_RAW[stem])
    validate_comparable(results)
    target = tmp_path / "results.json"
    target.write_text(json.dumps(results))
    assert main(["check", str(target), "--reference", str(reference), "--exact"]) == 0
    capsys.readouterr()
    f = next(f for f in run["data"]["files"] if f["dataset"] == "mnist")
    f.update(md5="0" * 32, verified=False)  # one file not upstream's: another copy
    with pytest.raises(ResultsError, match="were made from different copies of mnist"):
        validate_comparable(results)


def test_a_report_leaves_no_figure_of_an_earlier_report(tmp_path, capsys):
    """A report rebuilt in a folder that held another's (MNIST runs before, toy runs now)
    kept the old figures beside the new ones; the figures the earlier report.md showed and
    this one does not are now removed, and nothing else in ``figures/``."""
    target = tmp_path / "results.json"
    target.write_text(json.dumps(_ci_reference_with(lambda runs: None)))
    (tmp_path / "figures").mkdir()
    stale = tmp_path / "figures" / "ecdf-mnist-notmnist-old.png"
    stale.write_bytes(b"an earlier report's figure")
    own = tmp_path / "figures" / "my-own-plot.png"
    own.write_bytes(b"a user's file")
    (tmp_path / "report.md").write_text(f"![old](figures/{stale.name})\n")
    assert main(["report", str(target)]) == 0
    report = (tmp_path / "report.md").read_text()
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir() if p != own)
    assert figures and not stale.exists() and own.exists()
    assert all(f"figures/{name}" in report for name in figures)


def test_float32_rounding_at_a_bound_is_not_refused():
    """An unclipped FGSM step in float32 gives a budget share a little above 1
    (1.0000000859 measured); it is a measurement, not an impossible value."""
    from uqbench.check import validate_metrics
    from uqbench.errors import ResultsError

    validate_metrics({"fgsm": {"budget_share": 1.0000000859}}, "run")
    with pytest.raises(ResultsError, match="fgsm.budget_share is 1.01, outside"):
        validate_metrics({"fgsm": {"budget_share": 1.01}}, "run")
