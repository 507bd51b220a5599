"""The runner writes each run at once, resumes after an interruption, and is repeatable."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY_SUITE, count_runs, tiny_runner

from uqbench import get_posterior
from uqbench.errors import ConfigError
from uqbench.runner import Runner
from uqbench.suites import load_suite
from uqbench.tasks.base import Split
from uqbench.train import train


def test_interrupted_suite_resumes_without_redoing_finished_runs(tmp_path, tiny_task, monkeypatch):
    runner = tiny_runner(tmp_path)
    calls = count_runs(monkeypatch, interrupt_at=3)  # Ctrl-C during the third run
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    done = sorted(p.stem for p in runner.runs_dir.glob("*.json"))
    assert done == sorted(calls[:2])

    calls.clear()
    results = tiny_runner(tmp_path).run()
    assert len(calls) == 2 and not set(calls) & set(done)  # only the unfinished runs
    assert {(r["method"], r["seed"]) for r in results["runs"]} == {
        ("l2", 0),
        ("l2", 1),
        ("ffg", 0),
        ("ffg", 1),
    }
    assert json.loads((runner.out / "results.json").read_text())["schema"] == "uqbench.results/6"

    calls.clear()
    tiny_runner(tmp_path).run()
    assert calls == []  # everything cached


def test_changed_settings_rerun_only_the_affected_runs(tmp_path, tiny_task):
    tiny_runner(tmp_path).run()
    runner = tiny_runner(tmp_path, overrides={"methods": ["l2"], "eval": {"test_samples": 3}})
    todo = [s for s in runner.specs if not runner._is_done(s)]
    assert {s.key for s in todo} == {"l2-tiny-blobs-seed0", "l2-tiny-blobs-seed1"}


def test_interrupted_training_resumes_to_the_same_model(tmp_path):
    from uqbench.architectures import ModelSpec

    spec = ModelSpec("mlp", (2,), 2, "classification", 200, {"hidden": 8})
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(200, 2, generator=g), torch.randint(0, 2, (200,), generator=g))
    cls = get_posterior("ffg")

    def fresh():
        torch.manual_seed(0)
        return cls(spec)

    kw = dict(epochs=4, batch_size=50, lr=1e-2, seed=0, progress=False)
    reference = fresh()
    train(reference, data, **kw)

    ckpt = tmp_path / "ckpt.pt"
    model = fresh()
    steps = {"n": 0}
    original_loss = model.loss

    def dying_loss(x, y):
        steps["n"] += 1
        if steps["n"] == 10:  # in the third epoch, after two checkpoints
            raise KeyboardInterrupt
        return original_loss(x, y)

    model.loss = dying_loss
    import uqbench.train as train_mod

    old = train_mod.CHECKPOINT_EVERY_S
    train_mod.CHECKPOINT_EVERY_S = 0.0
    try:
        with pytest.raises(KeyboardInterrupt):
            train(model, data, checkpoint=ckpt, **kw)
        resumed = fresh()
        log = train(resumed, data, checkpoint=ckpt, **kw)
    finally:
        train_mod.CHECKPOINT_EVERY_S = old
    assert log.epoch == [1, 2, 3, 4]
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_same_seed_gives_identical_metrics(tmp_path, tiny_task, monkeypatch):
    a = tiny_runner(tmp_path / "a").run()
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "other-cache"))
    b = tiny_runner(tmp_path / "b").run()
    assert [r["metrics"] for r in a["runs"]] == [r["metrics"] for r in b["runs"]]


def test_unknown_method_and_bad_values_are_named(tmp_path, tiny_task):
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(TINY_SUITE)
    suite = load_suite(suite_file)
    with pytest.raises(ConfigError, match="unknown method 'nope'.*known: .*l2"):
        suite.runs({"methods": ["nope"]})
    with pytest.raises(ConfigError, match="epochs must be positive"):
        suite.runs({"train": {"epochs": 0}})
    suite_file.write_text(TINY_SUITE + "\n[task.tiny-blobs]\ntrain = { epochz = 3 }\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_suite(suite_file)
    suite_file.write_text(TINY_SUITE + "\n[method.ffg]\nnot_a_key = 1\n")
    with pytest.raises(ConfigError, match="not_a_key"):
        load_suite(suite_file).runs()


def test_builtin_suites_parse_and_resolve():
    from uqbench.suites import list_suites

    assert {"smoke", "quick", "paper"} <= set(list_suites())
    for name in list_suites():
        runs = load_suite(name).runs()
        assert runs, name


def test_refused_data_stops_the_suite_before_any_training(tmp_path, tiny_task, monkeypatch):
    from uqbench.errors import DataError
    from uqbench.registry import TASKS

    def refuse(self, source, **kw):
        raise DataError("refused: checksum mismatch")

    class Broken(TASKS.get("tiny-blobs")):
        load = refuse

    TASKS.add("broken", Broken)
    runner = tiny_runner(tmp_path, overrides={"tasks": ["tiny-blobs", "broken"]})
    trained: list[str] = []
    monkeypatch.setattr(Runner, "run_one", lambda self, spec, env: trained.append(spec.key))
    with pytest.raises(DataError, match="checksum"):
        runner.run()
    assert trained == []


def test_runs_made_by_another_version_of_the_code_are_redone(tmp_path, tiny_task, monkeypatch):
    runner = tiny_runner(tmp_path)
    runner.run()
    first = runner.runs_dir / "l2-tiny-blobs-seed0.json"
    record = json.loads(first.read_text())
    record["code_version"] = "src-" + "0" * 16  # what another commit's sources would give
    first.write_text(json.dumps(record))
    calls = count_runs(monkeypatch)
    tiny_runner(tmp_path).run()
    assert calls == ["l2-tiny-blobs-seed0"]


def test_a_copy_without_git_names_its_commit_through_the_environment(
    tmp_path, tiny_task, monkeypatch
):
    monkeypatch.setenv("UQBENCH_GIT_COMMIT", "a" * 40)
    monkeypatch.chdir(tmp_path)  # no git repository here
    runner = tiny_runner(tmp_path)
    runner.run()
    record = json.loads((runner.runs_dir / "l2-tiny-blobs-seed0.json").read_text())
    assert record["git_commit"] == "a" * 40
