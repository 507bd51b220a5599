"""Training through torch.compile (`uqbench run --compile`): equal to eager within float
tolerance, and a clean fallback to eager where it cannot run."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_runner, toy_mlp

from uqbench.compiling import CompiledLoss
from uqbench.errors import ConfigError
from uqbench.tasks.base import Split
from uqbench.train import train

STEPS = 4


def toy_data() -> Split:
    """The toy regression's shape: 20 points, x ~ U[-4, 4], y = x^3 + N(0, 9)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, generator=g) * 8 - 4
    return Split(x, x[:, 0] ** 3 + 3 * torch.randn(20, generator=g))


def train_toy(method: str, mode: str | None, messages: list[str] | None = None, **kw):
    """``STEPS`` full-batch steps of ``method`` on the toy; the model and its log."""
    model = toy_mlp(method, **kw)
    loss_fn = None
    if mode is not None:
        log = messages.append if messages is not None else None
        loss_fn = CompiledLoss(model, mode, torch.device("cpu"), log)
    torch.manual_seed(1)
    log = train(
        model, toy_data(), epochs=STEPS, batch_size=20, lr=1e-2, seed=0, progress=False,
        loss_fn=loss_fn,
    )  # fmt: skip
    return model, log


def test_off_is_the_eager_loss() -> None:
    _, eager = train_toy("ffg", None)
    _, off = train_toy("ffg", "off")
    assert off.loss == eager.loss and off.train_steps == eager.train_steps == "eager"


@pytest.mark.parametrize("why", ["cuda graphs on cpu", "no torch.compile", "compiler fails"])
def test_fallback_is_one_line_and_eager_results(why: str, monkeypatch) -> None:
    """Where the mode cannot run, training goes on eagerly with exactly the eager draws
    (a failed compile's random draws are rewound): bit-identical to eager training."""
    mode = "reduce-overhead" if why == "cuda graphs on cpu" else "default"
    if why == "no torch.compile":
        monkeypatch.delattr(torch, "compile")
    elif why == "compiler fails":

        def broken(fn, **kwargs):
            def call(*args):
                torch.randn(1000)  # draws, then fails, as a compile may
                raise RuntimeError("backend exploded\nlong traceback ...")

            return call

        monkeypatch.setattr(torch, "compile", broken)
    ref_model, ref = train_toy("mnf", None)
    messages: list[str] = []
    model, got = train_toy("mnf", mode, messages)
    assert got.loss == ref.loss
    for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(messages) == 1 and "training eagerly" in messages[0]
    assert "\n" not in messages[0]
    assert got.train_steps.startswith(f"eager (compile:{mode} failed: ")
    expected = {
        "cuda graphs on cpu": "need a CUDA device",
        "no torch.compile": "has no torch.compile",
        "compiler fails": "RuntimeError: backend exploded",
    }[why]
    assert expected in got.train_steps and "\n" not in got.train_steps


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="compile mode must be one of"):
        CompiledLoss(toy_mlp("ffg"), "max-autotune")


@pytest.mark.slow
def test_compiled_training_equals_eager_within_float_tolerance() -> None:
    """torch.compile of the toy MLP's loss (FFG: local reparametrisation noise every step):
    same per-step losses and final parameters as eager within 1e-5 relative, because
    the compiled graph draws its noise from torch's generator like eager."""
    torch._dynamo.reset()
    ref_model, ref = train_toy("ffg", None)
    messages: list[str] = []
    model, got = train_toy("ffg", "default", messages)
    torch._dynamo.reset()
    assert messages == [] and got.train_steps == "compile:default"
    assert got.loss == pytest.approx(ref.loss, rel=1e-5)
    for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


ONE_RUN = """
name = "tiny"
methods = ["ffg"]
tasks = ["tiny-blobs"]
seeds = [0]
[eval]
test_samples = 4
fgsm_samples = 2
"""


def test_the_run_record_says_how_steps_ran(tiny_task, tmp_path, monkeypatch) -> None:
    """`--compile reduce-overhead` on CPU: the run trains eagerly after one line and its
    record says so; its hash is an eager run's (an execution detail, like the device)."""
    lines: list[str] = []
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache-a"))
    runner = tiny_runner(tmp_path / "a", ONE_RUN, compile_mode="reduce-overhead")
    runner.log = lines.append
    runner.run()
    (record,) = json.loads((runner.out / "results.json").read_text())["runs"]
    assert record["train_steps"].startswith("eager (compile:reduce-overhead failed: ")
    assert sum("training eagerly" in line for line in lines) == 1
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache-b"))
    eager = tiny_runner(tmp_path / "b", ONE_RUN)
    eager.run()
    (plain,) = json.loads((eager.out / "results.json").read_text())["runs"]
    assert plain["train_steps"] == "eager" and plain["run_hash"] == record["run_hash"]
    assert (
        plain["metrics"] == record["metrics"]
        and plain["train_log"]["loss"] == (record["train_log"]["loss"])
    )
    # The model in a cache is reused whichever way it was trained; the record says how.
    runner = tiny_runner(tmp_path / "c", ONE_RUN)
    runner.run()
    (cached,) = json.loads((runner.out / "results.json").read_text())["runs"]
    assert cached["train_steps"] == "eager" and cached["checkpoint"] == plain["checkpoint"]


def test_a_resumed_training_records_each_sessions_steps(tmp_path) -> None:
    """Steps of a checkpoint's earlier sessions stay recorded after a resume; a finished
    checkpoint reused as is keeps what it recorded."""
    ckpt = tmp_path / "run.pt"
    kw = dict(batch_size=20, lr=1e-2, seed=0, progress=False, checkpoint=ckpt)
    log = train(toy_mlp("ffg"), toy_data(), epochs=2, **kw)
    assert log.train_steps == "eager"
    model = toy_mlp("ffg")
    loss_fn = CompiledLoss(model, "reduce-overhead", torch.device("cpu"))
    log = train(model, toy_data(), epochs=4, loss_fn=loss_fn, **kw)
    assert log.epoch == [1, 2, 3, 4]
    assert log.train_steps.startswith("eager, then eager (compile:reduce-overhead failed: ")
    again = train(toy_mlp("ffg"), toy_data(), epochs=4, **kw)  # nothing left to train
    assert again.train_steps == log.train_steps and "train_steps" not in again.to_dict()


def test_a_failure_after_compiled_steps_says_both(monkeypatch) -> None:
    """A compile that works for a step, then fails (a recompile for a new batch shape, say):
    the steps after it are eager and the record names both."""

    def flaky(fn, **kwargs):
        calls = []

        def call(*args):
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("recompile failed")
            return fn(*args)

        return call

    monkeypatch.setattr(torch, "compile", flaky)
    _, ref = train_toy("ffg", None)
    _, got = train_toy("ffg", "default")
    assert got.loss == ref.loss  # the wrapped call is the eager function here
    assert got.train_steps == (
        "compile:default, then eager (compile:default failed: RuntimeError: recompile failed)"
    )
