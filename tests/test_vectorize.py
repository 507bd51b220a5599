"""Seeds trained together as one vectorized model (uqbench.vectorize) against separate runs.

The reference is always the plain training loop (``uqbench.train.train``) run once per seed,
as ``uqbench run`` runs it without ``--vectorize-seeds``: the group must reproduce each
seed's losses, weights and predictions up to float rounding (its stacked convolutions and
matrix products sum in another order), resume from an interruption, and leave a family it
cannot take to the separate runs after one line saying why.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY_SUITE, tiny_runner, toy_spec

import uqbench
import uqbench.train as train_mod
from uqbench.architectures import ModelSpec
from uqbench.layers import noise_source, standard_normal_like, uniform_like
from uqbench.tasks.base import Split
from uqbench.train import train
from uqbench.vectorize import SeedGroup, VectorizeError

SEEDS = [0, 1, 2]
#: Relative tolerance of per-epoch losses; absolute one of weights after a few Adam steps.
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


def lenet_case() -> tuple[ModelSpec, Split]:
    """A narrow LeNet-5 on 48 MNIST-shaped images in [0, 1] with 10 classes."""
    spec = ModelSpec(
        arch="lenet5",
        in_shape=(1, 28, 28),
        out_dim=10,
        kind="classification",
        n_data=48,
        arch_kwargs={"channels": [3, 4], "hidden": 8},
    )
    g = torch.Generator().manual_seed(5)
    return spec, Split(
        torch.rand(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g)
    )


def toy_case() -> tuple[ModelSpec, Split]:
    """The toy regression's shape (1-16-1, noise std 3) on 20 points of y = x^3 + noise."""
    spec = toy_spec(hidden=16)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(20, 1, generator=g) * 8 - 4
    return spec, Split(x, x**3 + 3 * torch.randn(20, 1, generator=g))


KW = dict(epochs=2, batch_size=16, lr=1e-3)  # 3 steps per epoch, the last one short
#: Family settings of the tests (Deep Ensembles: 2 members, FGSM training on).
CONFIG = {"ensemble": {"members": 2, "adv_eps": 0.1}}


def separate(method: str, spec: ModelSpec, data: Split, seed: int, **kw):
    """Seed ``seed``'s run alone, as the runner makes it: seeded build, then train."""
    torch.manual_seed(seed)
    model = uqbench.get_posterior(method)(spec, **CONFIG.get(method, {}))
    return model, train(model, data, seed=seed, progress=False, **{**KW, **kw})


def group(method: str, spec: ModelSpec, data: Split, seeds=SEEDS, checkpoints=None) -> SeedGroup:
    """The seeds' models built as their separate runs build them, stacked."""
    models, states = [], []
    for s in seeds:
        torch.manual_seed(s)
        models.append(uqbench.get_posterior(method)(spec, **CONFIG.get(method, {})))
        states.append((torch.get_rng_state(), None))
    return SeedGroup(
        models, [data] * len(seeds), seeds=seeds, rng_states=states, checkpoints=checkpoints
    )


def assert_same_training(sep_model, sep_log, vec_model, vec_log) -> None:
    for part in ("loss", "nll", "kl"):
        torch.testing.assert_close(
            torch.tensor(getattr(vec_log, part)),
            torch.tensor(getattr(sep_log, part)),
            rtol=LOSS_RTOL,
            atol=1e-6,
        )
    assert vec_log.epoch == sep_log.epoch
    ref = sep_model.state_dict()
    for name, value in vec_model.state_dict().items():
        if value.dtype == torch.bool:
            assert torch.equal(value, ref[name]), name
            continue
        torch.testing.assert_close(value, ref[name], rtol=0, atol=WEIGHT_ATOL, msg=name)


@pytest.mark.parametrize(
    "method,case",
    [
        ("l2", lenet_case),
        ("dropout", lenet_case),
        ("ffg", lenet_case),
        ("fflu", lenet_case),
        ("mnf", lenet_case),
        ("mnf", toy_case),  # the planar flows of a 1-D z
        ("dropout", toy_case),
        ("dropout-learned", lenet_case),  # REINFORCE: its baseline buffer moves in the loss
        ("dropout-learned", toy_case),
        ("ensemble", lenet_case),  # FGSM's input gradient through torch.func.vjp
    ],
)
def test_seeds_trained_together_equal_separate_runs(method, case):
    spec, data = case()
    seps = [separate(method, spec, data, s) for s in SEEDS]
    grp = group(method, spec, data)
    logs = grp.train(**KW)
    for (sep_model, sep_log), vec_model, vec_log in zip(seps, grp.models, logs, strict=True):
        assert_same_training(sep_model, sep_log, vec_model, vec_log)
        # and the trained models predict alike from the same evaluation seed
        torch.manual_seed(10_000)
        a = sep_model.sample_outputs(data.x[:8], 3)
        torch.manual_seed(10_000)
        b = vec_model.sample_outputs(data.x[:8], 3)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    # different seeds really are different trainings (not k copies of one)
    assert logs[0].loss != logs[1].loss


def test_variance_lr_gives_the_separate_runs_parameter_groups():
    spec, data = lenet_case()
    seps = [separate("ffg", spec, data, s, variance_lr=1e-2) for s in SEEDS[:2]]
    grp = group("ffg", spec, data, seeds=SEEDS[:2])
    logs = grp.train(**KW, variance_lr=1e-2)
    for (m, log), vm, vlog in zip(seps, grp.models, logs, strict=True):
        assert_same_training(m, log, vm, vlog)


def test_each_seed_may_train_on_its_own_split():
    """Seed-dependent subsets (the runner's stratified n_train) are stacked per replica."""
    spec, data = toy_case()
    other = Split(data.x.flip(0) * 0.5, data.y.flip(0))
    sep = [separate("ffg", spec, d, s) for d, s in ((data, 0), (other, 1))]
    models, states = [], []
    for s in (0, 1):
        torch.manual_seed(s)
        models.append(uqbench.get_posterior("ffg")(spec))
        states.append((torch.get_rng_state(), None))
    grp = SeedGroup(models, [data, other], seeds=[0, 1], rng_states=states)
    for (m, log), vm, vlog in zip(sep, grp.models, grp.train(**KW), strict=True):
        assert_same_training(m, log, vm, vlog)


def test_without_a_noise_source_the_draws_are_torchs_global_rng():
    t = torch.empty(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(3)
    a, u = standard_normal_like(t), uniform_like(t)
    torch.manual_seed(3)
    b = torch.randn(4, 5, 5, 3).permute(0, 3, 1, 2)  # channels-last: filled in NHWC order
    assert torch.equal(a, b)
    assert torch.equal(u, torch.rand(4, 5, 5, 3).permute(0, 3, 1, 2))  # as rand_like fills it

    class Ones:
        def normal_like(self, t):
            return torch.ones_like(t)

    with noise_source(Ones()):
        assert torch.equal(standard_normal_like(t), torch.ones_like(t))
    torch.manual_seed(3)
    assert torch.equal(standard_normal_like(t), b)  # restored on leaving the block


def test_an_interrupted_group_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    spec, data = lenet_case()
    kw = dict(epochs=3, batch_size=16, lr=1e-3)
    whole = group("mnf", spec, data, seeds=[0, 1])
    whole_logs = whole.train(**kw)

    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", 0.0)
    ckpts = [tmp_path / "s0.pt", tmp_path / "s1.pt"]
    cls = uqbench.get_posterior("mnf")
    original, n = cls.loss, {"steps": 0}

    def dying(self, x, y):
        n["steps"] += 1
        if n["steps"] == 6:  # 1 layout probe + 3 steps of epoch 1 + 1: mid-epoch 2
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(cls, "loss", dying)
    with pytest.raises(KeyboardInterrupt):
        group("mnf", spec, data, seeds=[0, 1], checkpoints=ckpts).train(**kw)
    monkeypatch.setattr(cls, "loss", original)
    saved = [torch.load(p, weights_only=True) for p in ckpts]
    assert [(s["epoch"], s["step"], s["vectorized_seeds"]) for s in saved] == [(1, 1, [0, 1])] * 2

    torch.manual_seed(123)  # the checkpoints, not the caller, decide every RNG state
    resumed = group("mnf", spec, data, seeds=[0, 1], checkpoints=ckpts)
    logs = resumed.train(**kw)
    assert resumed.vectorized_seeds == [0, 1]
    for a, b, ma, mb in zip(whole_logs, logs, whole.models, resumed.models, strict=True):
        assert (a.loss, a.nll, a.kl) == (b.loss, b.nll, b.kl)
        for va, vb in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True):
            assert torch.equal(va, vb)


def test_a_seeds_checkpoint_of_a_group_resumes_as_its_separate_run(tmp_path, monkeypatch):
    """Checkpoints keep the separate run's format: without the group, a seed goes on alone."""
    spec, data = lenet_case()
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", 0.0)
    ckpts = [tmp_path / "s0.pt", tmp_path / "s1.pt"]
    cls = uqbench.get_posterior("ffg")
    original, n = cls.loss, {"steps": 0}

    def dying(self, x, y):
        n["steps"] += 1
        if n["steps"] == 3:
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(cls, "loss", dying)
    with pytest.raises(KeyboardInterrupt):
        group("ffg", spec, data, seeds=[0, 1], checkpoints=ckpts).train(**KW)
    monkeypatch.setattr(cls, "loss", original)
    ref_model, ref_log = separate("ffg", spec, data, 1)
    torch.manual_seed(1)
    model = cls(spec)
    log = train(model, data, seed=1, checkpoint=ckpts[1], progress=False, **KW)
    assert_same_training(ref_model, ref_log, model, log)


def test_checkpoints_at_different_points_are_refused_in_one_line(tmp_path, monkeypatch):
    spec, data = toy_case()
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", 0.0)
    ckpt0 = tmp_path / "s0.pt"
    torch.manual_seed(0)
    train(uqbench.get_posterior("l2")(spec), data, seed=0, checkpoint=ckpt0, progress=False, **KW)
    with pytest.raises(VectorizeError, match="only some of the seeds have a checkpoint"):
        group("l2", spec, data, seeds=[0, 1], checkpoints=[ckpt0, tmp_path / "s1.pt"]).train(**KW)


# -- the runner's --vectorize-seeds -----------------------------------------------------------
SUITE = TINY_SUITE.replace('methods = ["l2", "ffg"]', 'methods = ["l2", "ffg", "ensemble", "own"]')


def test_runner_vectorized_runs_match_separate_runs_and_say_so(
    tmp_path, tiny_task, monkeypatch, clean_registry
):
    class Own(uqbench.get_posterior("l2")):
        """A plug-in family that has not opted in (L2's opt-in would be inherited)."""

        vectorize_seeds = False

    clean_registry.add("own", Own)
    plain = tiny_runner(tmp_path / "a", SUITE).run()
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache-b"))  # no model to reuse
    lines: list[str] = []
    runner = tiny_runner(tmp_path / "b", SUITE, vectorize_seeds=True)
    runner.log = lines.append
    vec = runner.run()
    assert not vec["failed"] and len(vec["runs"]) == len(plain["runs"]) == 8
    # the family that has not opted in: one line, then its seeds run separately
    said = [line for line in lines if "separately" in line]
    assert len(said) == 1 and "own-tiny-blobs" in said[0] and "has not opted in" in said[0]
    by_key = {(r["method"], r["seed"]): r for r in plain["runs"]}
    for r in vec["runs"]:
        p = by_key[(r["method"], r["seed"])]
        assert r["run_hash"] == p["run_hash"] and r["code_version"] == p["code_version"]
        if r["method"] == "own":
            assert "vectorized_seeds" not in r
            assert r["metrics"] == p["metrics"]  # trained exactly as before
            continue
        assert r["vectorized_seeds"] == [0, 1]
        torch.testing.assert_close(
            torch.tensor(r["train_log"]["loss"]),
            torch.tensor(p["train_log"]["loss"]),
            rtol=1e-5,
            atol=1e-6,
        )
        for key in ("error_pct", "nll", "brier", "ece"):
            assert r["metrics"][key] == pytest.approx(p["metrics"][key], rel=1e-4, abs=1e-6)
    # a second call finds every run done; the run files stay the separate runs' schema
    again = tiny_runner(tmp_path / "b", SUITE, vectorize_seeds=True).run()
    assert len(again["runs"]) == 8
    record = json.loads((tmp_path / "b/results/tiny/runs/l2-tiny-blobs-seed1.json").read_text())
    assert record["schema"] == by_key[("l2", 1)]["schema"]


def test_a_group_whose_step_fails_falls_back_to_separate_runs(
    tmp_path, tiny_task, clean_registry, monkeypatch
):
    """A family that opts in but draws noise past the hooks is stopped by vmap's randomness
    check: one line, then the usual separate runs (with exactly their usual results)."""
    L2 = uqbench.get_posterior("l2")

    class Noisy(L2):
        vectorize_seeds = True

        def loss(self, x, y):
            return super().loss(x + 1e-3 * torch.randn_like(x), y)

    clean_registry.add("noisy-l2", Noisy)
    suite = TINY_SUITE.replace('methods = ["l2", "ffg"]', 'methods = ["noisy-l2"]')
    plain = tiny_runner(tmp_path / "a", suite).run()
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache-b"))
    lines: list[str] = []
    runner = tiny_runner(tmp_path / "b", suite, vectorize_seeds=True)
    runner.log = lines.append
    vec = runner.run()
    said = [line for line in lines if "cannot be trained as one" in line]
    assert len(said) == 1 and "\n" not in said[0] and "separately" in said[0]
    assert [r["metrics"] for r in vec["runs"]] == [r["metrics"] for r in plain["runs"]]
    assert all("vectorized_seeds" not in r for r in vec["runs"])


# -- the benchmark's exact route -----------------------------------------------------------
def test_throughput_benchmark_times_the_per_seed_route(tmp_path, clean_registry):
    """``--modes seeds`` times SeedGroup's step; a family that has not opted in is reported
    as unsupported with the reason, and the benchmark goes on."""
    from uqbench.benchmarks import gpu_throughput as gt

    class Own(uqbench.get_posterior("l2")):
        """A plug-in family that has not opted in (L2's opt-in would be inherited)."""

        vectorize_seeds = False

    clean_registry.add("own", Own)

    out = tmp_path / "gt"
    argv = ["--device", "cpu", "--steps", "2", "--warmup", "1", "--repeats", "1", "--threads", "1"]
    argv += ["--methods", "ffg", "own", "--modes", "seeds", "--k", "2", "--out", str(out)]
    assert gt.main(argv) == 0
    rows = {
        r["family"]: r for r in json.loads((out / "gpu_throughput.json").read_text())["results"]
    }
    assert rows["ffg"]["status"] == "ok" and rows["ffg"]["models"] == 2
    assert rows["ffg"]["model_steps_per_s"] == pytest.approx(2 * rows["ffg"]["steps_per_s"])
    assert "own batch and noise generator" in rows["ffg"]["note"]
    assert rows["own"]["status"].startswith("unsupported: ")
    assert "has not opted in" in rows["own"]["status"]


def test_seed_group_step_is_the_separate_runs_step():
    """The step the benchmark times is the training step: one step of a 2-seed group equals
    each seed's own first step on its batch."""
    spec, data = lenet_case()
    grp = group("mnf", spec, data, seeds=[0, 1])
    grp.probe_layouts(16)
    x = torch.stack([data.x[:16], data.x[16:32]])
    y = torch.stack([data.y[:16], data.y[16:32]])
    losses = grp.step(grp.optimizer(1e-3), x, y, grp.noise_generators())
    for i, s in enumerate((0, 1)):
        torch.manual_seed(s)
        model = uqbench.get_posterior("mnf")(spec)
        loss = model.loss(x[i], y[i])[0]
        torch.testing.assert_close(losses[i], loss.detach(), rtol=1e-5, atol=1e-5)
