"""Typed settings: one declaration (uqbench.settings) read by suites, the CLI and the runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uqbench.cli import main
from uqbench.errors import ConfigError
from uqbench.settings import DataSettings, EvalSettings, TrainSettings
from uqbench.suites import load_suite


def _dry_run(argv: list[str], capsys) -> dict[str, dict]:
    assert main(["run", "--dry-run", *argv]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return {k: json.loads(v) for k, v in (ln.split(": ", 1) for ln in lines)}


def test_every_flag_sets_its_declared_field(capsys) -> None:
    argv = ["--suite", "smoke", "--methods", "l2", "--tasks", "mnist"]
    values = {int: 7, float: 0.25}
    expected: dict[str, dict] = {}
    for settings in (TrainSettings, DataSettings, EvalSettings):
        for flag, name, kind, meta in settings.flags():
            value = meta["choices"][-1] if meta["choices"] else values[kind]
            argv += [flag, str(value)]
            expected.setdefault(settings.section, {})[name] = value
    (config,) = _dry_run(argv, capsys).values()
    for section, fields in expected.items():
        for name, value in fields.items():
            assert config[section][name] == value, (section, name)
    assert expected["eval"]["fgsm"] == "none"  # a choice, not a number


def test_unset_eval_settings_are_the_declared_defaults_without_the_when_set_ones(
    tmp_path: Path, capsys
) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text('methods = ["l2"]\ntasks = ["mnist"]\nseeds = [0]\n')
    (config,) = _dry_run(["--suite", str(suite)], capsys).values()
    ev = {k: v for k, v in config["eval"].items() if k != "ood"}
    assert ev == {
        "test_samples": 100, "fgsm": "default", "fgsm_samples": 100, "fgsm_n": None,
        "batch_size": 500,
    }  # fmt: skip
    assert EvalSettings.from_dict(config["eval"]).shift()["rotations"] == []


@pytest.mark.parametrize(
    ("table", "msg"),
    [
        ('[eval]\nfgsm = "some"', "fgsm must be 'default', 'all' or 'none'"),
        ("[eval]\ntest_sample = 3", "unknown key"),
        ("[eval]\nfgsm_n = 0", "fgsm_n must be positive"),
        ('[task.mnist]\ntrain = { lr = "fast" }', "lr must be float"),
        ("[task.mnist]\ndata = { n_train = 1.5 }", "n_train must be int"),
        ('[eval]\ncorruptions = ["fog"]', "corruption names"),
    ],
)
def test_suite_values_are_checked_against_the_declaration(
    tmp_path: Path, table: str, msg: str
) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(f'methods = ["l2"]\ntasks = ["mnist"]\nseeds = [0]\n{table}\n')
    with pytest.raises(ConfigError, match=msg):
        load_suite(suite)


def test_fgsm_mode_and_task_decide_who_is_attacked() -> None:
    class Model:
        skip_fgsm_by_default = True

    class Task:
        fgsm_eps = (0.0, 0.1)

    class NoFgsmTask:
        fgsm_eps = ()

    assert not EvalSettings(fgsm="default").fgsm_for(Model(), Task())
    assert EvalSettings(fgsm="all").fgsm_for(Model(), Task())
    assert not EvalSettings(fgsm="all").fgsm_for(Model(), NoFgsmTask())


@pytest.mark.parametrize(
    ("defaults", "error"),
    [
        ({"epochs": 2}, None),
        ({"epochs": 2, "momentum": 0.9}, "task 'tiny-blobs': its train_defaults: unknown key"),
        ({"lr": "fast"}, "task 'tiny-blobs': its train_defaults: lr must be float, got 'fast'"),
    ],
)
def test_a_tasks_train_defaults_name_only_what_it_changes(
    tmp_path, tiny_task, monkeypatch, defaults, error
) -> None:
    from conftest import TinyBlobs

    monkeypatch.setattr(TinyBlobs, "train_defaults", defaults)
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nmethods = ["l2"]\ntasks = ["tiny-blobs"]\nseeds = [0]\n')
    if error is None:
        (run,) = load_suite(suite).runs()
        assert run.config()["train"] == {**TrainSettings.defaults(), "epochs": 2}
    else:
        with pytest.raises(ConfigError, match=error):
            load_suite(suite).runs()


def test_a_tasks_ood_sets_given_as_a_string_is_refused(tmp_path, tiny_task, monkeypatch) -> None:
    from conftest import TinyBlobs

    monkeypatch.setattr(TinyBlobs, "ood_sets", ("far-blobs"))  # a string, not a tuple
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nmethods = ["l2"]\ntasks = ["tiny-blobs"]\nseeds = [0]\n')
    with pytest.raises(ConfigError) as err:
        load_suite(suite).runs()
    assert str(err.value) == (
        "task 'tiny-blobs': its ood_sets must be a tuple of OOD set names, got 'far-blobs' "
        "(a tuple of one name is written ('name',))"
    )
