"""benchmarks/suite_cost.py: the step count it multiplies by, the evaluation it strips of
issue 18's additions, and a report whose totals are the sums of its rows."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers import TINY_SUITE
from uqbench.benchmarks import suite_cost

from uqbench import get_posterior
from uqbench.registry import TASKS
from uqbench.suites import RunSpec, load_suite
from uqbench.tasks.base import TaskData
from uqbench.train import train


def test_run_steps_is_what_train_loops_over(tiny_task: str, tmp_path: Path) -> None:
    """The estimate's step count equals the number of losses a real training computes."""
    (tmp_path / "s.toml").write_text(TINY_SUITE)
    run = next(iter(load_suite(tmp_path / "s.toml").runs()))
    data = _blobs(run)
    model = get_posterior(run.method)(TASKS.get(run.task)().model_spec(data, run.arch))
    calls = 0
    real_loss = model.loss

    def counting_loss(x: torch.Tensor, y: torch.Tensor):
        nonlocal calls
        calls += 1
        return real_loss(x, y)

    model.loss = counting_loss  # type: ignore[method-assign]
    train(model, data.train, seed=0, progress=False, **run.train)
    assert suite_cost.run_steps(run, data) == calls == 3 * 4  # 3 epochs of 200 rows / 50


def test_paper_only_keeps_the_first_ood_set_and_no_shift(tiny_task: str, tmp_path: Path) -> None:
    suite = TINY_SUITE.replace(
        "[eval]", '[eval]\nshift_n = 20\nrotations = [0, 90]\ncorruptions = ["contrast"]'
    )
    (tmp_path / "s.toml").write_text(suite)
    run = next(iter(load_suite(tmp_path / "s.toml").runs()))
    data = _blobs(run)
    data.ood["second"] = data.ood["far"] + 1.0
    settings, kept = suite_cost.paper_only(run, data)
    assert list(kept.ood) == ["far"]
    assert settings.shift()["rotations"] == [] and settings.shift()["corruptions"] == []
    assert settings.test_samples == run.eval["test_samples"]  # the rest untouched
    assert kept.test is data.test


def test_report_totals_are_the_sums_of_its_rows(tiny_task: str, tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(TINY_SUITE)
    out = tmp_path / "perf"
    argv = [str(tmp_path / "s.toml"), "--steps", "1", "--warmup", "1", "--additions"]
    assert suite_cost.main([*argv, "--out", str(out)]) == 0
    result = json.loads((out / "suite-cost-tiny.json").read_text())
    rows = result["runs"]
    assert [r["run"] for r in rows] == ["l2-tiny-blobs-seed0", "ffg-tiny-blobs-seed0"]
    for r in rows:
        assert r["train_steps"] == 12
        assert abs(r["train_s"] - r["step_ms"] / 1000 * 12) < 1e-9
        assert r["eval_s"] > 0 and r["eval_without_additions_s"] > 0
    t = result["totals"]
    assert abs(t["total_s"] - (t["load_s"] + t["train_s"] + t["eval_s"])) < 1e-9
    assert abs(t["train_s"] - sum(r["train_s"] for r in rows)) < 1e-9
    assert abs(t["per_task_s"]["tiny-blobs"] - sum(r["total_s"] for r in rows)) < 1e-9
    report = (out / "suite-cost-tiny.md").read_text()
    assert all(r["run"] in report for r in rows)


def _blobs(run: RunSpec) -> TaskData:
    return TASKS.get(run.task)().load(None, seed=run.seed)


def test_list_schedule_hands_runs_in_order_to_the_first_free_worker() -> None:
    assert suite_cost.list_schedule([3, 1, 1, 1], 2) == 3  # the short ones share one worker
    assert suite_cost.list_schedule([1, 1, 3], 2) == 4  # the long one waits for a free one
    assert suite_cost.list_schedule([1, 1, 3], 1) == 5


def test_jobs_measure_in_worker_processes(tmp_path: Path) -> None:
    """With --jobs the runs are measured in spawned workers (a registered task: the workers
    do not see this process's test registrations) and the wall time is scheduled."""
    suite = 'name = "toyjobs"\nmethods = ["l2", "ffg"]\ntasks = ["toy-cubic"]\nseeds = [0]\n'
    suite += "[task.toy-cubic]\ntrain = { epochs = 10 }\n"
    (tmp_path / "s.toml").write_text(suite)
    argv = [str(tmp_path / "s.toml"), "--steps", "1", "--warmup", "1", "--jobs", "2"]
    assert suite_cost.main([*argv, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "suite-cost-toyjobs-jobs2.json").read_text())
    assert result["jobs"] == 2 and [r["run"] for r in result["runs"]] == [
        "l2-toy-cubic-seed0",
        "ffg-toy-cubic-seed0",
    ]
    t = result["totals"]
    totals = [r["total_s"] for r in result["runs"]]
    assert abs(t["wall_s"] - (t["load_s"] + max(totals))) < 1e-9
