"""Issue 13: nothing mixed, nothing executed, nothing silently ignored.

Each test reproduces one failure mode found by probing the CLI (mixed results, reused
stale models, NaN saved as valid, ignored suite keys, code run by a crafted checkpoint,
concurrent runs, half-written files, tracebacks instead of one line) and checks the
behaviour that replaced it.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from helpers import TINY_SUITE, count_runs, smoke_argv, tiny_runner

import uqbench
from uqbench.cli import main
from uqbench.errors import ConfigError, OutputError, TrainingError
from uqbench.registry import POSTERIORS
from uqbench.runner import Runner, _exclusive, _write_json
from uqbench.suites import load_suite
from uqbench.tasks.base import Split
from uqbench.train import train

#: The tiny suite without FGSM.
assert "fgsm_samples = 2" in TINY_SUITE
SUITE = TINY_SUITE.replace("fgsm_samples = 2", 'fgsm = "none"')


def runner_for(tmp_path: Path, suite: str = SUITE, **kw) -> Runner:
    """The tiny runner, by default of this module's suite (no FGSM)."""
    return tiny_runner(tmp_path, suite, command="uqbench run", **kw)


def strict_json(path: Path):
    def refuse(token):
        raise AssertionError(f"{path} holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


# -- 1. results.json merges only runs that match what the command asks for ----------------
def test_runs_made_with_other_settings_are_left_out_and_named(tmp_path, tiny_task):
    runner_for(tmp_path).run()  # l2, ffg x seeds 0, 1 at the suite's 3 epochs
    res = runner_for(
        tmp_path, overrides={"methods": ["l2"], "seeds": [0], "train": {"epochs": 5}}
    ).run()
    assert [(r["method"], r["seed"], r["config"]["train"]["epochs"]) for r in res["runs"]] == [
        ("l2", 0, 5)
    ]
    left = {x["file"]: x["reason"] for x in res["left_out"]}
    assert set(left) == {
        "l2-tiny-blobs-seed1.json",
        "ffg-tiny-blobs-seed0.json",
        "ffg-tiny-blobs-seed1.json",
    }
    assert "train.epochs 3 instead of 5" in left["ffg-tiny-blobs-seed0.json"]
    on_disk = strict_json(tmp_path / "results" / "tiny" / "results.json")
    assert on_disk["left_out"] == res["left_out"]
    from uqbench.report import write_report

    write_report(res, tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    head = report[: report.index("## ")]  # before the first section: seen first
    assert "**Not in these tables:** 3 run file(s) of the results folder left out: " in head
    assert all(name in head for name in left)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"task": {"tiny-blobs": {"train": {"epochs": 5}}}}, "train.epochs 3 instead of 5"),
        ({"data": {"n_train": 60}}, "data.n_train None instead of 60"),
    ],
)
def test_a_tasks_own_and_data_overrides_also_decide_what_is_merged(
    tmp_path, tiny_task, overrides, reason
):
    """``--set TASK.train.epochs=5`` and ``--n-train`` change the runs as ``--epochs`` does:
    runs made without them are left out of the results, not ranked against these."""
    runner_for(tmp_path).run()
    res = runner_for(tmp_path, overrides={"methods": ["l2"], "seeds": [0], **overrides}).run()
    assert [(r["method"], r["seed"]) for r in res["runs"]] == [("l2", 0)]
    left = {x["file"]: x["reason"] for x in res["left_out"]}
    assert set(left) == {
        "l2-tiny-blobs-seed1.json",
        "ffg-tiny-blobs-seed0.json",
        "ffg-tiny-blobs-seed1.json",
    }
    assert reason in left["ffg-tiny-blobs-seed0.json"]


def test_runs_not_selected_but_matching_stay_in_the_results(tmp_path, tiny_task):
    runner_for(tmp_path).run()
    res = runner_for(tmp_path, overrides={"methods": ["l2"]}).run()
    assert len(res["runs"]) == 4 and res["left_out"] == []


def test_runs_of_a_family_the_suite_does_not_name_stay_in_later_results(tmp_path, tiny_task):
    """A plug-in added with --methods is not dropped by the next command without it."""
    runner_for(tmp_path, overrides={"methods": ["dropout"], "seeds": [0]}).run()
    res = runner_for(tmp_path, overrides={"methods": ["l2"]}).run()
    assert sorted((r["method"], r["seed"]) for r in res["runs"]) == [
        ("dropout", 0),
        ("l2", 0),
        ("l2", 1),
    ]
    assert res["left_out"] == []


def test_a_run_whose_file_name_parses_two_ways_stays(tmp_path, tiny_task, clean_registry):
    """``l2-x-tiny-blobs-seed0`` is family l2-x on tiny-blobs, or l2 on a task x-tiny-blobs:
    the run file says which, and the run stays in later results."""
    from conftest import TinyBlobs

    from uqbench.registry import TASKS

    state = TASKS.snapshot()
    POSTERIORS.add("l2-x", type("L2X", (POSTERIORS.get("l2"),), {}))
    TASKS.add("x-tiny-blobs", type("XTinyBlobs", (TinyBlobs,), {}))
    try:
        runner_for(tmp_path, overrides={"methods": ["l2-x"], "seeds": [0]}).run()
        res = runner_for(tmp_path, overrides={"methods": ["l2"]}).run()
    finally:
        TASKS.restore(state)
    assert sorted((r["method"], r["task"], r["seed"]) for r in res["runs"]) == [
        ("l2", "tiny-blobs", 0),
        ("l2", "tiny-blobs", 1),
        ("l2-x", "tiny-blobs", 0),
    ]
    assert res["left_out"] == []


def test_copied_and_duplicate_run_files_are_not_merged(tmp_path, tiny_task):
    other = SUITE.replace("test_samples = 4", "test_samples = 3")
    first = runner_for(tmp_path / "other", other)
    first.run()
    runner = runner_for(tmp_path)
    runner.run()
    runs = runner.runs_dir
    # a run file of another suite copied in, and a duplicate of a run under another name
    (runs / "l2-tiny-blobs-seed1.json").write_text(
        (first.runs_dir / "l2-tiny-blobs-seed1.json").read_text()
    )
    (runs / "l2-tiny-blobs-seed0 (copy).json").write_text(
        (runs / "l2-tiny-blobs-seed0.json").read_text()
    )
    from uqbench.runner import environment, merge_results

    res = merge_results(
        runner.out, "tiny", "c", environment(runner.device), expected=runner.expected_specs()
    )
    keys = [(r["method"], r["seed"]) for r in res["runs"]]
    assert sorted(keys) == [("ffg", 0), ("ffg", 1), ("l2", 0)]
    reasons = {x["file"]: x["reason"] for x in res["left_out"]}
    assert "eval.test_samples 3 instead of 4" in reasons["l2-tiny-blobs-seed1.json"]
    assert "copy" in reasons["l2-tiny-blobs-seed0 (copy).json"]


def test_truncated_run_file_of_an_unselected_run_does_not_break_the_merge(
    tmp_path, tiny_task, capsys
):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    out = tmp_path / "results"
    base = ["run", "--suite", str(suite), "--out", str(out), "--quiet", "--no-report"]
    assert main(base) == 0
    f = out / "tiny" / "runs" / "ffg-tiny-blobs-seed1.json"
    f.write_text(f.read_text()[:100])
    assert main([*base, "--methods", "l2"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ffg-tiny-blobs-seed1.json: not valid JSON" in err


def _edited_run(text: str, key: str, value: object) -> str:
    """A run file's text with ``metrics.<key>`` (or the top-level ``seed``) set to ``value``,
    written as Python's JSON writer does (a bare NaN included)."""
    record = json.loads(text)
    (record if key == "seed" else record["metrics"])[key] = value
    return json.dumps(record)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("nll", float("nan"), "holds NaN"),
        ("seed", "0", "is not a string, string and whole"),
        ("nll", "abc", "metric nll"),
    ],
)
def test_a_run_file_that_the_report_would_refuse_is_not_a_finished_run(
    tmp_path, tiny_task, capsys, key, value, reason
):
    """A run file edited to hold a bare NaN (which Python's JSON reader takes), a string
    seed or a string metric was reused as done and merged: the command then ended in a
    traceback (NaN) or a report error whose advice failed the same way, and so did every
    later command on the folder. Such a file is now left out with its reason, and its run
    made again."""
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    out = tmp_path / "results"
    base = ["run", "--suite", str(suite), "--out", str(out), "--methods", "l2"]
    assert main([*base, "--seeds", "0", "--quiet", "--no-report"]) == 0
    f = out / "tiny" / "runs" / "l2-tiny-blobs-seed0.json"
    bad = _edited_run(f.read_text(), key, value)
    f.write_text(bad)
    capsys.readouterr()
    assert main([*base, "--seeds", "1", "--quiet"]) == 0  # another run: the merge reads it
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and reason in captured.err
    results = json.loads((out / "tiny" / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [("l2", 1)]
    assert (out / "tiny" / "report.md").exists()
    assert main([*base, "--seeds", "0", "--quiet"]) == 0  # asked for again: made again
    assert json.loads(f.read_text())["seed"] == 0 and f.read_text() != bad
    (kept,) = (out / "tiny" / "runs" / "superseded").glob("l2-tiny-blobs-seed0.refused-*.json")
    assert kept.read_text() == bad  # nothing is lost, not even a file edited by hand


# -- 2. code version: the code that ran, and checkpoints keyed on it ----------------------
def test_a_code_change_retrains_instead_of_reusing_the_old_model(tmp_path, tiny_task, monkeypatch):
    runner = runner_for(tmp_path)
    runner.run()
    before = json.loads((runner.runs_dir / "l2-tiny-blobs-seed0.json").read_text())
    assert before["code_version"].startswith("t") and Path(before["checkpoint"]).exists()
    assert before["source_version"].startswith("src-")

    monkeypatch.setattr("uqbench.runner.code_version", lambda *classes: "t9.e9")
    monkeypatch.setattr("uqbench.runner.train_version", lambda *classes: "t9")
    trained: list[str] = []
    original = train

    def counting_train(model, data, **kw):
        trained.append(kw["desc"])
        return original(model, data, **kw)

    monkeypatch.setattr("uqbench.runner.train", counting_train)
    calls = count_runs(monkeypatch)
    runner_for(tmp_path).run()
    after = json.loads((runner.runs_dir / "l2-tiny-blobs-seed0.json").read_text())
    assert len(calls) == 4  # every run redone ...
    assert after["code_version"] == "t9.e9"
    assert after["checkpoint"] != before["checkpoint"]  # ... with a fresh model
    assert not Path(after["checkpoint"]).with_suffix(".pt.bad").exists()


def test_the_recorded_commit_is_uqbenchs_own_not_the_current_directorys(tmp_path, monkeypatch):
    from uqbench.provenance import code_version, source_commit

    monkeypatch.delenv("UQBENCH_GIT_COMMIT", raising=False)
    own, version = source_commit(), code_version()
    other = tmp_path / "other-repo"
    other.mkdir()
    git = ["git", "-C", str(other), "-c", "user.name=t", "-c", "user.email=t@t"]
    try:
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    other_head = subprocess.run(
        ["git", "-C", str(other), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(other)
    assert source_commit() == own and own != other_head
    assert code_version() == version
    monkeypatch.chdir(tmp_path)  # outside any repository: the same
    assert source_commit() == own and code_version() == version


def test_code_version_covers_a_plug_ins_source(tmp_path, monkeypatch):
    from uqbench.provenance import code_version

    mod = tmp_path / "uqbench_probe_plugin.py"
    mod.write_text("class P:\n    x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    cls = importlib.import_module("uqbench_probe_plugin").P
    assert code_version(cls) != code_version()
    assert code_version(cls).startswith(code_version() + "-")


def test_code_version_covers_every_file_of_a_plug_in_package(tmp_path, monkeypatch):
    """An edit to a helper module of the plug-in (not the file defining the family) counts,
    and so does one to another plug-in's family it derives from."""
    import importlib

    from uqbench import provenance

    pkg = tmp_path / "uqbench_probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text("SCALE = 0.5\n")
    (pkg / "family.py").write_text("from .layers import SCALE\n\nclass Base:\n    s = SCALE\n")
    (tmp_path / "uqbench_probe_child.py").write_text(
        "from uqbench_probe_pkg.family import Base\n\nclass Child(Base):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    child = importlib.import_module("uqbench_probe_child").Child

    def version() -> str:
        provenance._file_digest.cache_clear()
        provenance._plugin_scope.cache_clear()
        return provenance.code_version(child)

    before = version()
    (pkg / "layers.py").write_text("SCALE = 50.0\n")
    assert version() != before
    after_helper = version()
    (tmp_path / "uqbench_probe_child.py").write_text(
        "from uqbench_probe_pkg.family import Base\n\nclass Child(Base):\n    x = 1\n"
    )
    assert version() != after_helper
    for name in ("uqbench_probe_child", "uqbench_probe_pkg.family", "uqbench_probe_pkg"):
        __import__("sys").modules.pop(name, None)


PROBE_OOD = """
import torch
from uqbench.ood import OODData, OODSet

class ProbeFar(OODSet):
    in_shapes = ((2,),)

    def load(self, source, *, in_shape, n, seed, stream):
        g = torch.Generator().manual_seed(seed)
        return OODData(torch.randn(n or 50, 2, generator=g) * SCALE + torch.tensor([0.0, 8.0]))
"""


def test_an_edited_plug_in_ood_set_redoes_the_evaluation_not_the_training(
    tmp_path, tiny_task, monkeypatch
):
    """A run's code_version covers the plug-in OOD sets it is evaluated on: editing one
    redoes the run, while its checkpoint (train_version) is reused."""
    import importlib

    from uqbench import provenance
    from uqbench.registry import OOD_SETS

    mod = tmp_path / "uqbench_probe_ood.py"
    mod.write_text("SCALE = 1.0\n" + PROBE_OOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    state = OOD_SETS.snapshot()
    OOD_SETS.add("probe-far", importlib.import_module("uqbench_probe_ood").ProbeFar)
    suite = (
        SUITE.replace('methods = ["l2", "ffg"]', 'methods = ["l2"]').replace(
            "seeds = [0, 1]", "seeds = [0]"
        )
        + '[task.tiny-blobs]\nood = ["probe-far"]\n'
    )
    try:
        runner = runner_for(tmp_path, suite)
        results = runner.run()
        (spec,) = runner.specs
        record = results["runs"][0]
        assert set(record["metrics"]["ood"]) == {"far", "probe-far"}
        assert record["plugins"] == [
            {"class": "conftest:TinyBlobs", "distribution": None, "version": None},
            {"class": "uqbench_probe_ood:ProbeFar", "distribution": None, "version": None},
        ]
        from uqbench.report import write_report

        write_report(results, runner.out)
        report = (runner.out / "report.md").read_text()
        assert "| uqbench_probe_ood:ProbeFar | — | — | l2/tiny-blobs |" in report
        before_train = provenance.train_version(*spec.train_classes())
        mod.write_text("SCALE = 3.0\n" + PROBE_OOD)
        provenance._file_digest.cache_clear()
        provenance._plugin_scope.cache_clear()
        assert provenance.code_version(*spec.code_classes()) != record["code_version"]
        assert provenance.train_version(*spec.train_classes()) == before_train
        assert not runner_for(tmp_path, suite)._is_done(spec)
    finally:
        OOD_SETS.restore(state)
        __import__("sys").modules.pop("uqbench_probe_ood", None)
        provenance._file_digest.cache_clear()
        provenance._plugin_scope.cache_clear()


def test_a_plug_in_posterior_names_its_distribution_and_version(
    tmp_path, clean_registry, monkeypatch
):
    """``plugins`` names the installed distribution behind a plug-in family; uqbench's own
    families name none."""
    from uqbench.provenance import plugin_sources

    (tmp_path / "uqbench_probe_family.py").write_text(
        "from uqbench.baselines.ffg import FFGPosterior\n\nclass Wide(FFGPosterior):\n    pass\n"
    )
    info = tmp_path / "uqbench_probe_family-2.5.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: uqbench-probe-family\nVersion: 2.5.1\n"
    )
    (info / "RECORD").write_text("uqbench_probe_family.py,,\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    wide = importlib.import_module("uqbench_probe_family").Wide
    assert plugin_sources(wide) == [
        {
            "class": "uqbench_probe_family:Wide",
            "distribution": "uqbench-probe-family",
            "version": "2.5.1",
        }
    ]
    assert plugin_sources(POSTERIORS.get("ffg"), POSTERIORS.get("mnf")) == []


# -- 3. non-finite numbers: found at the step, recorded as a failure, the suite goes on ------
def tiny_data(n: int = 200) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(n, 2, generator=g), torch.randint(0, 2, (n,), generator=g))


def tiny_model(name: str = "l2"):
    from uqbench.architectures import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec("mlp", (2,), 2, "classification", 200, {"hidden": 8})
    return uqbench.get_posterior(name)(spec)


def test_a_nan_loss_is_named_with_epoch_and_step():
    model = tiny_model()
    original, n = model.loss, {"steps": 0}

    def loss(x, y):
        n["steps"] += 1
        out, stats = original(x, y)
        return (out * float("nan"), stats) if n["steps"] == 7 else (out, stats)

    model.loss = loss
    with pytest.raises(TrainingError, match=r"t1: training diverged at epoch 2, step 3 of 4"):
        train(
            model, tiny_data(), epochs=3, batch_size=50, lr=1e-2, seed=0, progress=False, desc="t1"
        )


def test_a_blow_up_in_the_last_step_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr("uqbench.train.CHECKPOINT_EVERY_S", 0.0)
    model = tiny_model()
    original = model.configure_optimizer

    def configure(lr):
        opt = original(lr)
        step, n = opt.step, {"k": 0}

        def blowing_step(*a, **kw):
            n["k"] += 1
            out = step(*a, **kw)
            if n["k"] == 8:  # the very last step: its loss was finite
                with torch.no_grad():
                    next(model.parameters()).fill_(float("inf"))
            return out

        opt.step = blowing_step
        return opt

    model.configure_optimizer = configure
    ckpt = tmp_path / "c.pt"
    with pytest.raises(TrainingError, match="epoch 2, step 4 of 4: the parameters"):
        train(
            model,
            tiny_data(),
            epochs=2,
            batch_size=50,
            lr=1e-2,
            seed=0,
            progress=False,
            checkpoint=ckpt,
        )
    state = torch.load(ckpt, weights_only=True)  # the last checkpoint is before the blow-up
    assert (state["epoch"], state["step"]) == (1, 3)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


class NanLoss(uqbench.get_posterior("l2")):
    """Diverges: a NaN loss from its third training step."""

    def loss(self, x, y):
        self.steps = getattr(self, "steps", 0) + 1
        loss, stats = super().loss(x, y)
        return (loss * float("nan") if self.steps >= 3 else loss), stats


class NanOutputs(uqbench.get_posterior("l2")):
    """Trains fine, predicts NaN."""

    def sample_outputs(self, x, n_samples, chunk_rows=None):
        return super().sample_outputs(x, n_samples, chunk_rows) * float("nan")


def test_failed_runs_are_recorded_and_the_suite_goes_on_then_exits_1(
    tmp_path, tiny_task, clean_registry, capsys
):
    POSTERIORS.add("nan-loss", NanLoss)
    POSTERIORS.add("nan-outputs", NanOutputs)
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE.replace('["l2", "ffg"]', '["nan-loss", "l2", "nan-outputs"]'))
    out = tmp_path / "results"
    code = main(["run", "--suite", str(suite), "--out", str(out), "--quiet", "--seeds", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "2 run(s) FAILED" in err
    assert "nan-loss-tiny-blobs-seed0: training diverged at epoch 1, step 3 of 4" in err
    assert "nan-outputs-tiny-blobs-seed0: evaluation gave non-finite metrics" in err
    res = strict_json(out / "tiny" / "results.json")  # valid JSON: no bare NaN
    assert [r["method"] for r in res["runs"]] == ["l2"]
    assert {f["method"] for f in res["failed"]} == {"nan-loss", "nan-outputs"}
    rec = strict_json(out / "tiny" / "runs" / "nan-loss-tiny-blobs-seed0.json")
    assert rec["status"] == "failed" and "metrics" not in rec
    report = (out / "tiny" / "report.md").read_text()
    head = report[: report.index("## ")]  # named before the first section
    assert "**Not in these tables:** 2 run(s) FAILED: nan-loss-tiny-blobs-seed0, " in head
    # A later command into the same folder that runs only l2 (done) succeeds, and names the
    # folder's earlier failures without taking them for its own.
    code = main(["run", "--suite", str(suite), "--out", str(out), "--quiet", "--seeds", "0",
                 "--methods", "l2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "2 run(s) of other commands in this folder failed earlier (run them to retry)" in err
    assert "FAILED" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_lr_nan_and_inf_are_rejected(value, tmp_path, capsys):
    assert main(["run", "--suite", "smoke", f"--lr={value}", "--dry-run"]) == 2
    assert "lr must be" in capsys.readouterr().err
    suite = tmp_path / "s.toml"
    suite.write_text(
        f'methods = ["l2"]\ntasks = ["mnist"]\nseeds = [0]\n'
        f"[task.mnist]\ntrain = {{ lr = {value} }}\n"
    )
    with pytest.raises(ConfigError, match="lr must be"):
        load_suite(suite)


# -- 4. every suite key checked, wrong types one line, names stay inside --out -------------
BASE = 'methods = ["l2"]\ntasks = ["toy-cubic"]\nseeds = [0]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "[task.toy-cubc]\ntrain = { epochs = 3 }\n", "unknown task 'toy-cubc'"),
        (BASE + "[method.l3]\n", "unknown method 'l3'"),
        (BASE + "[task.toy-cubic]\narch = { hiden = 3 }\n", "has no key(s) hiden"),
        (BASE + '[task.mnist]\narch = { channels = "x" }\n', "channels must be a list of two"),
        (BASE + '[method.ensemble]\nmembers = "two"\n', "members must be int"),
        (BASE + '[method.ffg]\nlogvar_init = "big"\n', "logvar_init must be float"),
        (BASE + "[task.toy-cubic.method.l4]\n", "unknown method 'l4'"),
        (BASE + '[task.toy-cubic]\nextra_methods = ["nope"]\n', "unknown method 'nope'"),
        (BASE.replace("[0]", "[-1]"), "seeds must be integers from 0"),
        (BASE.replace("[0]", "[0, 1, 0]"), "seed 0 is listed twice"),
        ('name = "../../x"\n' + BASE, "plain folder name"),
        ('name = "/tmp/abs"\n' + BASE, "plain folder name"),
        ("task = 3\n" + BASE, "expected tables of tasks"),
    ],
)
def test_bad_suite_files_are_one_line_naming_file_and_key(text, message, tmp_path, capsys):
    suite = tmp_path / "bad.toml"
    suite.write_text(text)
    assert main(["run", "--suite", str(suite), "--dry-run", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(suite) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_negative_seed_on_the_command_line_is_one_line(capsys):
    assert main(["run", "--suite", "smoke", "--seeds", "-1", "--dry-run"]) == 2
    assert "seeds must be integers from 0" in capsys.readouterr().err
    assert main(["run", "--suite", "smoke", "--seeds", "0", "0", "--dry-run"]) == 2
    assert "command line: seed 0 is listed twice" in capsys.readouterr().err


# -- 5. checkpoints: weights only; a bad one is named, set aside and retrained ------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _first_checkpoint(tmp_path: Path) -> tuple[Runner, Path, dict]:
    runner = runner_for(tmp_path, overrides={"methods": ["ffg"], "seeds": [0]})
    runner.run()
    record = json.loads((runner.runs_dir / "ffg-tiny-blobs-seed0.json").read_text())
    return runner, Path(record["checkpoint"]), record


@pytest.mark.parametrize("kind", ["crafted", "truncated", "other-model"])
def test_bad_checkpoint_is_named_set_aside_and_retrained(kind, tmp_path, tiny_task):
    runner, ckpt, first = _first_checkpoint(tmp_path)
    marker = tmp_path / "code-ran"
    if kind == "crafted":
        ckpt.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    elif kind == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    else:
        torch.save({"model": {"w": torch.zeros(3)}, "epoch": 1}, ckpt)
    (runner.runs_dir / "ffg-tiny-blobs-seed0.json").unlink()
    messages: list[str] = []
    again = runner_for(tmp_path, overrides={"methods": ["ffg"], "seeds": [0]})
    again.log = messages.append
    again.run()
    assert not marker.exists()  # nothing in the file was executed
    assert ckpt.with_name(ckpt.name + ".bad").exists() and ckpt.exists()
    assert any(str(ckpt) in m and "cannot be used" in m for m in messages)
    assert not any("weights_only=False" in m for m in messages)  # torch's unsafe advice
    second = json.loads((runner.runs_dir / "ffg-tiny-blobs-seed0.json").read_text())
    assert second["metrics"] == first["metrics"]  # retrained from the start, same seed
    if kind == "crafted":  # a second bad checkpoint does not overwrite the first's copy
        ckpt.write_bytes(pickle.dumps({"model": _Payload(marker)}))
        (runner.runs_dir / "ffg-tiny-blobs-seed0.json").unlink()
        runner_for(tmp_path, overrides={"methods": ["ffg"], "seeds": [0]}).run()
        assert ckpt.with_name(ckpt.name + ".bad1").exists()
        assert ckpt.with_name(ckpt.name + ".bad").exists() and not marker.exists()


def test_a_checkpoint_trained_on_other_data_is_set_aside(tmp_path, tiny_task, monkeypatch):
    """Same settings, other data (a data set replaced by another copy, the CIFAR stand-in by
    the real files): the trained model is not reused, nor labelled with the new files."""
    from conftest import TinyBlobs

    runner, ckpt, first = _first_checkpoint(tmp_path)
    assert torch.load(ckpt, weights_only=True)["data"]  # the training data's fingerprint
    original = TinyBlobs.load

    def flipped(self, source, **kw):
        data = original(self, source, **kw)
        data.train.y = 1 - data.train.y
        return data

    monkeypatch.setattr(TinyBlobs, "load", flipped)
    messages: list[str] = []
    again = runner_for(tmp_path / "other", overrides={"methods": ["ffg"], "seeds": [0]})
    again.log = messages.append
    again.run()
    assert ckpt.with_name(ckpt.name + ".bad").exists() and ckpt.exists()
    assert any("it was trained on other data than this run's" in m for m in messages)
    second = json.loads((again.runs_dir / "ffg-tiny-blobs-seed0.json").read_text())
    assert second["metrics"]["error_pct"] > 50 > first["metrics"]["error_pct"]  # retrained
    monkeypatch.setattr(TinyBlobs, "load", original)
    messages.clear()
    third = runner_for(tmp_path / "third", overrides={"methods": ["ffg"], "seeds": [0]})
    third.log = messages.append
    third.run()  # the flipped model's checkpoint, set aside in its turn
    assert ckpt.with_name(ckpt.name + ".bad1").exists()
    record = json.loads((third.runs_dir / "ffg-tiny-blobs-seed0.json").read_text())
    assert record["metrics"] == first["metrics"]


def test_load_posterior_refuses_a_crafted_file_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps({"posterior": _Payload(marker)}))
    with pytest.raises(ConfigError, match="not a readable uqbench model file"):
        uqbench.load_posterior(bad)
    assert not marker.exists()


def test_the_runners_checkpoint_is_recorded_and_loads_with_one_call(tmp_path, tiny_task):
    runner, ckpt, record = _first_checkpoint(tmp_path)
    model = uqbench.load_posterior(record["checkpoint"])
    data = runner.task_data(runner.specs[0])
    torch.manual_seed(5)
    a = model.sample_outputs(data.test.x, 3)
    assert model.config == record["config"]["resolved_posterior"]
    # the same weights as the model the runner evaluated: compare with a re-read state
    state = torch.load(ckpt, weights_only=True)["model"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])
    assert a.shape == (3, len(data.test), 2)


# -- checkpoints every CHECKPOINT_EVERY_S, also mid-epoch; exact resume --------------------
def test_interrupted_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
    import uqbench.train as train_mod

    kw = dict(epochs=3, batch_size=20, lr=1e-2, seed=0, progress=False)  # 10 steps per epoch
    reference = tiny_model("ffg")
    ref_log = train(reference, tiny_data(), **kw)

    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", 0.0)
    ckpt = tmp_path / "c.pt"
    model = tiny_model("ffg")
    original, n = model.loss, {"steps": 0}

    def dying(x, y):
        n["steps"] += 1
        if n["steps"] == 15:  # the middle of the second epoch
            raise KeyboardInterrupt
        return original(x, y)

    model.loss = dying
    with pytest.raises(KeyboardInterrupt):
        train(model, tiny_data(), checkpoint=ckpt, **kw)
    saved = torch.load(ckpt, weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 4)  # mid-epoch, not at its start

    resumed = tiny_model("ffg")
    torch.manual_seed(123)  # the checkpoint, not the caller, decides the RNG state
    done, orig2 = {"steps": 0}, resumed.loss

    def counting(x, y):
        done["steps"] += 1
        return orig2(x, y)

    resumed.loss = counting
    said: list[str] = []
    log = train(resumed, tiny_data(), checkpoint=ckpt, log_message=said.append, **kw)
    assert done["steps"] == 30 - 14  # only the steps not yet done
    assert said == [f"    train: resuming from {ckpt} at step 14 of 30 (epoch 2)"]
    train(tiny_model("ffg"), tiny_data(), checkpoint=ckpt, log_message=said.append, **kw)
    assert said[1] == f"    train: trained model found in {ckpt}, not retrained"
    assert (log.epoch, log.loss, log.nll, log.kl) == (
        ref_log.epoch,
        ref_log.loss,
        ref_log.nll,
        ref_log.kl,
    )
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_runner_interrupted_mid_epoch_gives_the_metrics_of_an_uninterrupted_run(
    tmp_path, tiny_task, monkeypatch
):
    import uqbench.train as train_mod

    suite = SUITE + "[task.tiny-blobs]\ntrain = { epochs = 2, batch_size = 20 }\n"
    plain = runner_for(tmp_path / "a", suite, overrides={"methods": ["ffg"], "seeds": [0]}).run()

    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache-b"))
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", 0.0)
    cls = uqbench.get_posterior("ffg")
    original, n = cls.loss, {"steps": 0}

    def dying(self, x, y):
        n["steps"] += 1
        if n["steps"] == 13:
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(cls, "loss", dying)
    b = runner_for(tmp_path / "b", suite, overrides={"methods": ["ffg"], "seeds": [0]})
    with pytest.raises(KeyboardInterrupt):
        b.run()
    monkeypatch.setattr(cls, "loss", original)
    resumed = runner_for(tmp_path / "b", suite, overrides={"methods": ["ffg"], "seeds": [0]}).run()
    assert resumed["runs"][0]["metrics"] == plain["runs"][0]["metrics"]
    assert resumed["runs"][0]["train_log"]["loss"] == plain["runs"][0]["train_log"]["loss"]


# -- 6. concurrent runs on the same --out ---------------------------------------------------
def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(tmp_path, tiny_task, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    out = tmp_path / "results"
    (out / "tiny").mkdir(parents=True)
    with _exclusive(out / "tiny"):
        assert main(["run", "--suite", str(suite), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "being written by another uqbench run (pid" in err and "Traceback" not in err
    assert not list((out / "tiny").glob("runs/*.json"))  # nothing trained
    with pytest.raises(OutputError):
        with _exclusive(out / "tiny"):
            with _exclusive(out / "tiny"):
                pass


def test_concurrent_writers_of_one_file_never_collide_on_temp_names(tmp_path):
    target = tmp_path / "r.json"
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(40):
                _write_json(target, {"writer": i, "j": j, "pad": "x" * 5000})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and json.loads(target.read_text())["j"] == 39
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


# -- 7. the smaller ones ---------------------------------------------------------------------
def test_report_is_replaced_atomically(tmp_path, monkeypatch):
    from uqbench.report import write_report

    results = {"schema": "uqbench.results/2", "suite": "s", "command": "c", "runs": []}
    write_report(results, tmp_path)
    good = (tmp_path / "report.html").read_text()
    original = Path.write_text

    def disk_full(self, text, *a, **kw):
        original(self, text[: len(text) // 3], *a, **kw)
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError):
        write_report({**results, "command": "other"}, tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "report.html").read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "report.html", "report.md"]


@pytest.mark.parametrize("where", ["out", "cache"])
def test_unwritable_out_or_cache_is_one_line_before_training(
    where, tmp_path, tiny_task, monkeypatch, capsys
):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker if where == "out" else tmp_path / "results"
    if where == "cache":
        monkeypatch.setenv("UQBENCH_CACHE_DIR", str(blocker / "cache"))
    calls = count_runs(monkeypatch)
    assert main(["run", "--suite", str(suite), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "cannot write the" in err and str(blocker) in err
    assert calls == []


def test_ctrl_c_before_training_is_one_line(monkeypatch, capsys):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("uqbench.suites.load_suite", interrupted)
    assert main(["run", "--suite", "smoke", "--dry-run"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_sigint_in_the_first_seconds_of_the_command_is_one_line(tmp_path):
    """A real Ctrl-C, 1.5 s in: importing torch, loading, or training: never a traceback."""
    import os
    import signal
    import sys
    import time

    env = {**os.environ, "UQBENCH_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from uqbench.cli import main; sys.exit(main())",
            *smoke_argv("toy-cubic", "--epochs", "100000", "--out", str(tmp_path / "out")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A shell without job control starts background jobs with SIGINT ignored, and the
        # child would inherit that (`.ci/run &` made this test hang): Ctrl-C as at a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err


def test_ctrl_c_during_the_torch_import_waits_for_the_import_then_interrupts(tmp_path):
    """A SIGINT arriving inside torch's import is held until the import has finished.

    A stand-in ``torch`` (first on the path) signals its own process half-way through its
    import; the import must still run to its end, and the interrupt come after it.
    """
    import os
    import signal
    import sys

    (tmp_path / "torch.py").write_text(
        "import os, signal\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print('import finished', flush=True)\n"
    )
    code = (
        "from uqbench.cli import import_torch_holding_ctrl_c\n"
        "try:\n"
        "    import_torch_holding_ctrl_c()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupt after import')\n"
    )
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert out.stdout.splitlines() == ["import finished", "interrupt after import"], out.stderr


def test_a_run_with_other_settings_keeps_the_finished_one_it_replaces(tmp_path, tiny_task):
    """A quick test with changed settings in a folder of real results loses nothing."""
    runner_for(tmp_path).run()
    runs = tmp_path / "results" / "tiny" / "runs"
    before = (runs / "l2-tiny-blobs-seed0.json").read_text()
    old = json.loads(before)
    quick = runner_for(
        tmp_path, overrides={"methods": ["l2"], "seeds": [0], "train": {"epochs": 1}}
    )
    (pending,) = quick.todo()
    assert quick.superseded(pending)["run_hash"] == old["run_hash"]
    quick.run()
    kept = runs / "superseded" / f"l2-tiny-blobs-seed0.{old['run_hash'][:12]}.json"
    assert kept.read_text() == before
    assert kept.with_suffix(".npz").is_file() == bool(old.get("predictions"))
    new = json.loads((runs / "l2-tiny-blobs-seed0.json").read_text())
    assert new["run_hash"] != old["run_hash"]


def test_a_run_made_by_another_code_version_is_kept_when_it_is_made_again(tmp_path, tiny_task):
    """An evaluation-version bump redoes a finished run; the old record is moved aside, not
    overwritten (it was lost before)."""
    runner_for(tmp_path).run()
    runs = tmp_path / "results" / "tiny" / "runs"
    path = runs / "l2-tiny-blobs-seed0.json"
    old = json.loads(path.read_text())
    path.write_text(json.dumps({**old, "code_version": "t1.e1"}))
    runner = runner_for(tmp_path, overrides={"methods": ["l2"], "seeds": [0]})
    assert [s.key for s in runner.todo()] == ["l2-tiny-blobs-seed0"]
    runner.run()
    kept = runs / "superseded" / f"l2-tiny-blobs-seed0.{old['run_hash'][:12]}.t1.e1.json"
    assert json.loads(kept.read_text())["code_version"] == "t1.e1"
    assert json.loads(path.read_text())["code_version"] == old["code_version"]


def test_a_run_made_from_data_that_changed_since_is_made_again(tmp_path, tiny_task, monkeypatch):
    """A finished run stands only while the data files it records are the copy found now: a
    data folder whose copy changed (CIFAR-10's JPEG stand-in replaced by the real batches)
    used to leave the old runs in place, to be averaged with new ones. A run the command did
    not select is left out of the merge, naming the command that remakes it. Data that cannot
    be read here leave finished runs standing (merging and reporting need none)."""
    import dataclasses
    import hashlib

    from conftest import TinyBlobs

    from uqbench.check import validate_comparable

    blob = tmp_path / "blobs.bin"
    blob.write_bytes(b"first copy")
    plain = TinyBlobs.load

    downloads: list[bool] = []

    def load(self, source, **kw):
        downloads.append(source.download)
        data = plain(self, source, **kw)
        md5 = hashlib.md5(blob.read_bytes()).hexdigest()  # FileNotFoundError when gone
        data.files = [{"dataset": "blobs", "file": "blobs.bin", "md5": md5, "verified": False}]
        return data

    monkeypatch.setattr(TinyBlobs, "load", load)
    first = runner_for(tmp_path).run()
    keys = sorted(f"{r['method']}-tiny-blobs-seed{r['seed']}" for r in first["runs"])
    assert len(keys) == 4
    allowed = runner_for(tmp_path)
    allowed.source = dataclasses.replace(allowed.source, download=True)
    downloads.clear()
    assert allowed.todo() == [] and downloads == [False]  # the check never downloads
    blob.unlink()
    logged: list[str] = []
    assert runner_for(tmp_path, log=logged.append).todo() == []
    assert sum("its data cannot be read here" in m for m in logged) == 1  # once, not per run

    blob.write_bytes(b"second copy")
    new_md5 = hashlib.md5(b"second copy").hexdigest()
    only_l2 = runner_for(tmp_path, overrides={"methods": ["l2"]})
    assert sorted(s.key for s in only_l2.todo()) == [k for k in keys if k.startswith("l2")]
    res = only_l2.run()
    assert {(r["method"], r["data"]["files"][0]["md5"]) for r in res["runs"]} == {("l2", new_md5)}
    left = {x["file"]: x["reason"] for x in res["left_out"]}
    assert set(left) == {f"{k}.json" for k in keys if k.startswith("ffg")}
    assert "made from another copy of blobs" in left["ffg-tiny-blobs-seed0.json"]
    assert (
        "this command with `--methods ffg --tasks tiny-blobs --seeds 0`"
        in left["ffg-tiny-blobs-seed0.json"]
    )
    validate_comparable(res)  # what was merged is one copy's

    again = runner_for(tmp_path).run()
    assert {r["data"]["files"][0]["md5"] for r in again["runs"]} == {new_md5}
    assert len(again["runs"]) == 4 and again["left_out"] == []
    runs = tmp_path / "results" / "tiny" / "runs"
    kept = sorted(p.name.split(".")[0] for p in (runs / "superseded").glob("*.json"))
    assert kept == keys


def test_copies_of_a_data_set_are_the_same_when_contents_match_or_both_verify() -> None:
    """A copy is named by its content, not by how it is stored: the JPEG stand-in's tarball
    and its extracted folder are one copy; the real tarball and the real folder are one
    (both verified); the stand-in and the real data are two; one unverified file makes a
    copy unverified; a record claiming verified with another md5 than it was checked against
    is not."""
    from uqbench.check import data_identity, data_mismatch
    from uqbench.data import checksums as ck

    def copy(records, dataset="cifar10"):
        return data_identity(
            [
                {"dataset": dataset, "file": f, "md5": m, "expected_md5": e, "verified": m == e}
                for f, m, e in records
            ]
        )

    real_tar = copy([("cifar-10-python.tar.gz", ck.CIFAR_TARBALL_MD5, ck.CIFAR_TARBALL_MD5)])
    real_folder = copy([(m, h, h) for m, h in ck.CIFAR_MEMBER_MD5.items()])
    stand_tar = copy(
        [("cifar-10-python.tar.gz", ck.CIFAR_STANDIN_TARBALL_MD5, ck.CIFAR_TARBALL_MD5)]
    )
    stand_folder = copy(  # extracted, batches.meta left out as a folder may
        [
            (m, h, ck.CIFAR_MEMBER_MD5[m])
            for m, h in ck.CIFAR_STANDIN_MEMBER_MD5.items()
            if m != "batches.meta"
        ]
    )
    repacked = copy(  # a tarball repacked around the stand-in's members
        [
            (f"cifar-10-batches-py/{m}", h, ck.CIFAR_MEMBER_MD5[m])
            for m, h in ck.CIFAR_STANDIN_MEMBER_MD5.items()
        ]
    )
    assert data_mismatch(real_tar, real_folder) is None
    assert data_mismatch(stand_tar, stand_folder) is None
    assert data_mismatch(stand_tar, repacked) is None
    differ = data_mismatch(stand_tar, real_tar)
    assert differ is not None and differ.startswith("cifar10 (") and "unverified; against" in differ
    assert data_mismatch(stand_folder, real_folder) is not None
    one_bad = copy(
        [(m, h if m != "test_batch" else "0" * 32, h) for m, h in ck.CIFAR_MEMBER_MD5.items()]
    )
    assert one_bad["cifar10"][1] is False and data_mismatch(one_bad, real_tar) is not None
    claims = data_identity(
        [
            {
                "dataset": "cifar10",
                "file": "x",
                "md5": "0" * 32,
                "expected_md5": "1" * 32,
                "verified": True,
            }
        ]
    )
    assert claims["cifar10"][1] is False and data_mismatch(claims, real_tar) is not None
    for dataset, a, b in (
        ("notmnist", "notMNIST_small.tar.gz", "notMNIST_small"),
        ("fashion-mnist", "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"),
    ):  # their md5s are of the content: tarball or folder, .gz or not
        assert (
            data_mismatch(copy([(a, "ab", "cd")], dataset), copy([(b, "ab", "cd")], dataset))
            is None
        )
        assert data_mismatch(copy([(a, "ab", "cd")], dataset), copy([(b, "ac", "cd")], dataset))
    assert data_mismatch(stand_tar, {"mnist": real_tar["cifar10"]}) is None  # nothing shared
    bad = [{"dataset": "x"}, {"file": "f", "md5": "m"}, "not a record"]  # a plug-in's records
    assert data_identity(bad) == {}


def test_a_run_whose_saved_outputs_are_missing_is_evaluated_again(tmp_path, tiny_task):
    runner_for(tmp_path).run()
    runs = tmp_path / "results" / "tiny" / "runs"
    record = json.loads((runs / "l2-tiny-blobs-seed0.json").read_text())
    assert record.get("predictions")
    npz = runs / record["predictions"]
    npz.write_bytes(npz.read_bytes()[:300])  # truncated: not a readable archive
    runner = runner_for(tmp_path)
    assert [s.key for s in runner.todo()] == ["l2-tiny-blobs-seed0"]
    from uqbench.report import write_report

    results = json.loads((tmp_path / "results" / "tiny" / "results.json").read_text())
    out = tmp_path / "results" / "tiny"
    write_report(results, out)  # the report reads the outputs beside it
    md = (out / "report.md").read_text()
    assert (
        "Saved per-example outputs missing or unreadable** for 1 run(s): l2-tiny-blobs-seed0" in md
    )
    runner.run()
    from uqbench.results import readable_archive

    assert readable_archive(npz)
    kept = list((runs / "superseded").glob("l2-tiny-blobs-seed0.*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text()) == record


def test_outputs_damaged_inside_the_archive_are_unreadable_not_a_crash(tmp_path, tiny_task):
    runner_for(tmp_path).run()
    runs = tmp_path / "results" / "tiny" / "runs"
    record = json.loads((runs / "l2-tiny-blobs-seed0.json").read_text())
    npz = runs / record["predictions"]
    data = bytearray(npz.read_bytes())
    data[200:400] = bytes(200)  # inside the compressed data; the archive's index intact
    npz.write_bytes(bytes(data))
    from uqbench.report import ResultsView

    view = ResultsView(json.loads((runs.parent / "results.json").read_text()), runs.parent)
    assert view.outputs(record) is None  # zlib.error, not a traceback
    assert "l2-tiny-blobs-seed0" in view.unreadable_outputs()
    assert "l2-tiny-blobs-seed0" in [s.key for s in runner_for(tmp_path).todo()]


def test_runs_of_seeds_the_suite_does_not_name_stay_in_later_results(tmp_path, tiny_task):
    """The more-seeds workflow: seeds added with --seeds survive a later plain command."""
    runner_for(tmp_path, overrides={"seeds": [0, 1, 2]}).run()
    res = runner_for(tmp_path, overrides={"methods": ["l2"], "seeds": [0]}).run()
    assert sorted((r["method"], r["seed"]) for r in res["runs"]) == [
        (m, s) for m in ("ffg", "l2") for s in (0, 1, 2)
    ]
    assert res["left_out"] == []


def test_binary_suite_and_results_files_are_one_line_errors(tmp_path, capsys):
    blob = bytes(range(256)) * 4
    suite = tmp_path / "bin.toml"
    suite.write_bytes(blob)
    assert main(["run", "--suite", str(suite), "--dry-run"]) == 2
    res = tmp_path / "r" / "results.json"
    res.parent.mkdir()
    res.write_bytes(blob)
    assert main(["report", str(res.parent)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "not a text file" in err and "not a text (UTF-8 JSON) file" in err


def test_a_method_or_task_named_twice_is_refused(tmp_path, tiny_task):
    with pytest.raises(ConfigError, match="method.s. named twice: l2"):
        runner_for(tmp_path, overrides={"methods": ["l2", "l2"]})
    with pytest.raises(ConfigError, match="task.s. named twice: tiny-blobs"):
        runner_for(tmp_path, overrides={"tasks": ["tiny-blobs", "tiny-blobs"]})


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ("[method.ensemble]\nmembers = 0", "members must be >= 1, got 0"),
        ("[method.dropout]\np = 1.5", "p must be in [0, 1), got 1.5"),
        ("[method.ffg]\nmax_std = -1.0", "max_std must be positive"),
    ],
)
def test_a_family_value_it_refuses_stops_the_command_before_any_run(
    tmp_path, tiny_task, capsys, table, said
):
    suite = tmp_path / "bad.toml"
    suite.write_text(
        SUITE.replace('methods = ["l2", "ffg"]', 'methods = ["ensemble", "dropout", "ffg"]')
        + table
        + "\n"
    )
    out = tmp_path / "out"
    for dry in ([], ["--dry-run"]):
        assert main(["run", "--suite", str(suite), "--out", str(out), "--quiet", *dry]) == 2
        err = capsys.readouterr().err
        assert str(suite) in err and said in err and "Traceback" not in err
    assert not (out / "tiny" / "runs").exists() or not list((out / "tiny" / "runs").iterdir())


def test_dry_run_refuses_what_a_real_run_refuses(tmp_path, tiny_task, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    base = ["run", "--suite", str(suite), "--out", str(tmp_path / "o"), "--dry-run"]
    assert main([*base, "--executor", "processes", "--jobs", "0"]) == 2
    assert main([*base, "--executor", "processes", "--cpus-per-run", "0"]) == 2
    err = capsys.readouterr().err
    assert "--jobs must be a positive whole number, got 0" in err
    assert "--cpus-per-run must be a positive whole number, got 0" in err


def test_a_reader_that_goes_away_does_not_stop_the_runs(tmp_path):
    """``uqbench run ... | head -1``: the log's broken pipe used to abort the command after
    its first run (exit 0, runs missing)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "UQBENCH_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "uqbench.cli", "run", "--suite", "smoke", "--tasks",
           "toy-cubic", "--methods", "l2", "ffg", "--seeds", "0", "--out", str(tmp_path),
           "--quiet", "--no-report"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()  # the first line, then the reader leaves
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    runs = sorted(p.name for p in (tmp_path / "smoke" / "runs").glob("*.json"))
    assert runs == ["ffg-toy-cubic-seed0.json", "l2-toy-cubic-seed0.json"]


def test_a_reader_of_both_streams_that_goes_away_does_not_stop_the_runs(tmp_path):
    """``uqbench run --executor processes ... 2>&1 | head -1``: the progress bar on stderr
    meets the same broken pipe as the log; it used to end the command at once, exit 0, with
    no run made."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "UQBENCH_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "uqbench.cli", "run", "--suite", "smoke", "--tasks",
           "toy-cubic", "--methods", "l2", "ffg", "--seeds", "0", "--out", str(tmp_path),
           "--no-report", "--executor", "processes", "--jobs", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0
    runs = sorted(p.name for p in (tmp_path / "smoke" / "runs").glob("*.json"))
    assert runs == ["ffg-toy-cubic-seed0.json", "l2-toy-cubic-seed0.json"]


def test_a_subset_larger_than_the_data_is_refused(tmp_path, capsys):
    """`--n-train 99999999` trained on all of MNIST's 60,000 images while the run recorded
    99999999 (and had another run hash than the same data asked for by its true size)."""
    base = ["run", "--suite", "smoke", "--tasks", "mnist", "--methods", "l2", "--seeds", "0"]
    base += ["--out", str(tmp_path / "o")]
    for flag, key in (("--n-train", "n_train"), ("--n-test", "n_test")):
        assert main([*base, flag, "99999999"]) == 2
        err = capsys.readouterr().err
        assert f"{key} 99999999 is more than the" in err and "Traceback" not in err
    assert not list((tmp_path / "o").rglob("*.json"))
