"""The training-throughput benchmark (uqbench.benchmarks.gpu_throughput), on CPU, tiny settings.

What is checked is that each route is the training it claims to be (the vectorized step of k
stacked models equals k separate trainings; a sampling family's stacked models draw their own
noise) and that the benchmark runs end to end, reporting a route that cannot run instead of
raising. No speed is asserted: speed targets live in the benchmark's own output.
``torch.compile`` takes minutes on a loaded 2-core CPU, so the real compile test runs only with
UQBENCH_TEST_COMPILE=1 (a failing compile is tested without compiling).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from helpers import TINY_LENET
from uqbench.baselines.l2 import L2
from uqbench.benchmarks import gpu_throughput as gt

import uqbench

SPEC = TINY_LENET
TINY = ["--device", "cpu", "--steps", "3", "--warmup", "1", "--repeats", "1", "--threads", "1"]
ROW_KEYS = {
    "family", "mode", "status", "note", "models", "steps_per_s", "model_steps_per_s",
    "runs_per_hour", "compile_s", "peak_mem_mb_per_model", "seconds", "ops_per_step",
    "kernel_ops_per_step",
}  # fmt: skip
TOP_KEYS = {
    "benchmark", "format_version", "command", "device", "settings", "load_avg_before",
    "load_avg_after", "results", "summary", "skipped", "peak_rss_mb", "seconds",
}  # fmt: skip


def batches(k: int, n: int, steps: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(k, n, 1, 28, 28, generator=g), torch.randint(0, 10, (k, n), generator=g))
        for _ in range(steps)
    ]


def test_vectorized_l2_is_k_separate_trainings() -> None:
    """k stacked l2 models after 3 Adam steps == k copies trained one by one (same inits,
    same per-model batches), and every loss on the way matches."""
    torch.manual_seed(0)
    k, lr = 3, 1e-2
    models = [L2(SPEC) for _ in range(k)]  # independent initialisations
    separate = [copy.deepcopy(m) for m in models]
    start = [copy.deepcopy(m) for m in models]
    stacked = gt.StackedModels(models, lr=lr)
    opts = [m.configure_optimizer(lr) for m in separate]
    for x, y in batches(k, 8, steps=3, seed=1):
        losses = stacked.step(x, y)
        for i, (m, opt) in enumerate(zip(separate, opts, strict=True)):
            opt.zero_grad(set_to_none=True)
            loss = m.loss(x[i], y[i])[0]
            loss.backward()
            opt.step()
            torch.testing.assert_close(losses[i], loss.detach(), rtol=1e-5, atol=1e-6)
    for i in range(k):
        got = stacked.parameters_of(i)
        for name, p in separate[i].named_parameters():
            torch.testing.assert_close(got[name], p.detach(), rtol=1e-5, atol=1e-6)
            # the steps moved it (the comparison is not of untouched initialisations)
            assert not torch.equal(p, dict(start[i].named_parameters())[name])
    w = [stacked.parameters_of(i)["net.0.weight"] for i in range(k)]
    assert not torch.allclose(w[0], w[1])  # k different models, not k copies of one


def test_vectorized_sampling_family_draws_noise_per_model() -> None:
    """FFG models started identical and fed the same batches part ways (each model its own
    weight noise); l2 models in the same setting stay identical up to float rounding (the
    control: a batched kernel may round one slice of the stack differently, 2e-8 relative seen
    on one thread, so bit-equality is not what the vectorization promises)."""
    k = 3
    x, y = batches(1, 8, steps=1, seed=2)[0]
    x, y = x.expand(k, *x.shape[1:]), y.expand(k, *y.shape[1:])
    torch.manual_seed(0)
    for family, config in (("ffg", {"max_std": 0.5}), ("l2", {})):
        one = uqbench.get_posterior(family)(SPEC, **config)
        stacked = gt.StackedModels([copy.deepcopy(one) for _ in range(k)], lr=1e-2)
        losses = [stacked.step(x, y) for _ in range(2)][-1]
        params = [stacked.parameters_of(i) for i in range(k)]
        assert all(torch.isfinite(t).all() for p in params for t in p.values())
        for i in range(1, k):
            rel = max(
                ((params[0][n] - params[i][n]).abs().max() / params[0][n].abs().max()).item()
                for n in params[0]
            )
            close_loss = torch.allclose(losses[0], losses[i], rtol=1e-5, atol=0)
            if family == "l2":
                assert rel < 1e-5 and close_loss, (family, i, rel)
            else:  # far beyond rounding: 0.75-1.5 relative seen
                assert rel > 1e-2 and not close_loss, (family, i, rel)


def check_row(row: dict, steps_per_run: int = 60000) -> None:
    assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
    assert row["status"] == "ok", row["status"]
    assert row["steps_per_s"] > 0 and row["models"] >= 1
    if row["mode"] != "packed":
        assert row["model_steps_per_s"] == pytest.approx(row["steps_per_s"] * row["models"])
    assert row["runs_per_hour"] == pytest.approx(row["model_steps_per_s"] * 3600 / steps_per_run)


def test_main_end_to_end_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gt"
    argv = [*TINY, "--methods", "l2", "ffg", "--modes", "eager", "vectorized", "grouped"]
    assert gt.main([*argv, "--k", "2", "--out", str(out)]) == 0
    result = json.loads((out / "gpu_throughput.json").read_text())
    assert TOP_KEYS <= set(result), TOP_KEYS - set(result)
    assert result["device"]["device"] == "cpu" and result["device"]["device_name"]
    assert result["device"]["torch_threads"] == 1
    cells = [(r["family"], r["mode"]) for r in result["results"]]
    assert cells == [
        ("l2", "eager"), ("ffg", "eager"), ("l2", "vectorized"), ("ffg", "vectorized"),
        ("l2", "grouped"),
    ]  # fmt: skip
    for row in result["results"]:
        check_row(row)
        assert row["models"] == (1 if row["mode"] == "eager" else 2)
        assert row["peak_mem_mb_per_model"] is None  # CPU: no GPU memory to report
    md = (out / "gpu_throughput.md").read_text()
    assert "| l2 | grouped | 2 |" in md and "--modes eager vectorized grouped" in md
    # What only a GPU run fills in renders too (no GPU here to produce it).
    result["device"].update(nvidia_smi="NVIDIA H100, 81559 MiB, 550.0", cuda_mps_daemon=False)
    result["results"][0].update(peak_mem_mb_per_model=123.4, compile_s=45.6)
    md = gt.render_md(result)
    assert "nvidia-smi: NVIDIA H100" in md and "CUDA MPS daemon: False" in md
    assert "| 45.6 | 123 |" in md


def test_packed_processes_run_together(tmp_path: Path) -> None:
    out = tmp_path / "gt"
    argv = [*TINY, "--methods", "l2", "--modes", "packed", "--packed", "8", "--out", str(out)]
    assert gt.main(argv) == 0
    (row,) = json.loads((out / "gpu_throughput.json").read_text())["results"]
    check_row(row)
    cores = gt.available_cores()
    assert row["models"] == min(8, cores) == len(row["per_process_steps_per_s"])
    # The aggregate counts every process's steps over the common wall time.
    assert 0 < row["model_steps_per_s"] <= sum(row["per_process_steps_per_s"]) * 1.0001
    assert "1 torch thread per process" in row["note"]
    if cores < 8:
        assert f"capped at {cores} cores" in row["note"]


def test_uqbench_perf_gpu_modes_runs_this_benchmark(tmp_path: Path) -> None:
    from uqbench.cli import main

    out = tmp_path / "gt"
    assert main(["perf", "--gpu-modes", "eager", "--methods", "l2", *TINY, "--out", str(out)]) == 0
    result = json.loads((out / "gpu_throughput.json").read_text())
    assert result["settings"]["modes"] == ["eager"]
    assert [(r["family"], r["mode"]) for r in result["results"]] == [("l2", "eager")]


class Branchy(L2):
    """l2 with Python control flow on a tensor's value, which vmap cannot batch."""

    def loss(self, x, y):
        loss, stats = super().loss(x, y)
        if loss > 0:
            loss = loss * 1.0
        return loss, stats


def test_a_mode_that_cannot_run_is_reported_not_raised(tmp_path, clean_registry, monkeypatch):
    clean_registry.add("branchy", Branchy)

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", no_compiler)
    out = tmp_path / "gt"
    argv = [*TINY, "--methods", "branchy", "--modes", "vectorized", "compiled", "graphed", "eager"]
    assert gt.main([*argv, "--k", "2", "--out", str(out)]) == 0
    rows = {r["mode"]: r for r in json.loads((out / "gpu_throughput.json").read_text())["results"]}
    assert rows["vectorized"]["status"].startswith("unsupported: ")
    assert "control flow" in rows["vectorized"]["status"]
    assert rows["compiled"]["status"] == "unsupported: RuntimeError: no C++ compiler found"
    assert rows["graphed"]["status"].startswith("unsupported: ")  # CPU: no CUDA graphs
    check_row(rows["eager"])  # the others still ran
    md = (out / "gpu_throughput.md").read_text()
    assert "| branchy | vectorized | | | | | | | | | unsupported: " in md


def test_unknown_family_is_one_line_error(tmp_path, capsys) -> None:
    assert gt.main([*TINY, "--methods", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "gpu_throughput.json").exists()


@pytest.mark.skipif(
    not os.environ.get("UQBENCH_TEST_COMPILE"),
    reason="torch.compile takes minutes on a loaded 2-core CPU; set UQBENCH_TEST_COMPILE=1",
)
def test_compiled_mode_compiles_and_times(tmp_path: Path) -> None:
    out = tmp_path / "gt"
    assert gt.main([*TINY, "--methods", "l2", "--modes", "compiled", "--out", str(out)]) == 0
    (row,) = json.loads((out / "gpu_throughput.json").read_text())["results"]
    check_row(row)
    assert row["compile_s"] > 0


def test_vmap_guard_of_the_layers_does_not_break_a_compiled_graph() -> None:
    """The layers' check for a torch.func transform must not split torch.compile's graph of
    a Bayesian family's loss (dynamo traces it; no compiler runs)."""
    torch.manual_seed(0)
    model = uqbench.get_posterior("mnf")(SPEC, max_std=0.5)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda x, y: model.loss(x, y)[0])(x, y)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0, explained.break_reasons
