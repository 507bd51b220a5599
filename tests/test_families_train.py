"""Every registered posterior family learns an easy problem and survives save/load.

Parametrised over ``uqbench.list_posteriors()``, so built-ins and any installed plug-in
are covered. The problem: two Gaussian blobs in 2-D, 6 standard deviations apart
(Bayes error about 0.1%), fitted by a small MLP with each family's own ``loss`` and
``configure_optimizer``; the Monte-Carlo predictive must classify held-out points.
"""

from __future__ import annotations

import pytest
import torch
from helpers import blob_spec

import uqbench
from uqbench import ModelSpec

N_TRAIN, N_TEST = 200, 400


def blobs(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Blobs of std 0.5 centred at -+(1.06, 1.06): each 3 std from the boundary x1 + x2 = 0."""
    y = torch.randint(2, (n,), generator=gen)
    centre = torch.tensor([[-1.0, -1.0], [1.0, 1.0]]) * 1.06
    return centre[y] + 0.5 * torch.randn(n, 2, generator=gen), y


@pytest.mark.parametrize("name", uqbench.list_posteriors())
def test_family_learns_separable_blobs(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = blobs(N_TRAIN, gen)
    x_test, y_test = blobs(N_TEST, gen)
    torch.manual_seed(0)
    model = uqbench.get_posterior(name)(blob_spec(N_TRAIN, hidden=32))
    opt = model.configure_optimizer(1e-2)
    model.train()
    for step in range(300):
        idx = torch.randperm(N_TRAIN, generator=gen)[:100]
        opt.zero_grad()
        loss, stats = model.loss(x[idx], y[idx])
        assert torch.isfinite(loss), (name, step, stats)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model.sample_outputs(x_test, 20)
    assert logits.dim() == 3 and logits.shape[1:] == (N_TEST, 2)
    probs = logits.softmax(-1).mean(0)
    accuracy = float((probs.argmax(-1) == y_test).float().mean())
    assert accuracy >= 0.95, (name, accuracy)


@pytest.mark.parametrize("name", uqbench.list_posteriors())
def test_save_load_round_trip(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    model = uqbench.get_posterior(name)(blob_spec(N_TRAIN, hidden=32))
    # A few steps so that no parameter is still at its initial value by accident.
    opt = model.configure_optimizer(1e-2)
    gen = torch.Generator().manual_seed(1)
    x, y = blobs(64, gen)
    for _ in range(3):
        opt.zero_grad()
        model.loss(x, y)[0].backward()
        opt.step()
    model.save(tmp_path / "model.pt")
    loaded = uqbench.load_posterior(tmp_path / "model.pt")
    assert type(loaded) is type(model)
    assert loaded.config == model.config and loaded.spec == model.spec

    mine, theirs = model.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key

    model.eval()
    loaded.eval()
    x_new = torch.randn(7, 2)
    with torch.no_grad():
        if model.deterministic:
            torch.testing.assert_close(
                model.sample_outputs(x_new, 2), loaded(x_new).expand(2, -1, -1)
            )
        # Same weights and the same random stream give the same posterior samples.
        torch.manual_seed(5)
        a = model.sample_outputs(x_new, 4)
        torch.manual_seed(5)
        b = loaded.sample_outputs(x_new, 4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["ffg", "fflu", "mnf"])
def test_variance_lr_moves_only_the_spread_parameters_at_their_own_rate(name: str) -> None:
    """With ``variance_lr`` = 0 the log-variances stay put while the means train; Adam's first
    step moves every parameter by its group's rate (|step| = lr for a nonzero gradient)."""
    gen = torch.Generator().manual_seed(2)
    x, y = blobs(64, gen)
    torch.manual_seed(2)
    model = uqbench.get_posterior(name)(blob_spec(N_TRAIN, hidden=32))
    spread = {id(p) for p in model.variance_parameters()}
    assert spread, "the Gaussian families have log-variance parameters"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = model.configure_optimizer(1e-2, variance_lr=0.0)
    opt.zero_grad()
    model.loss(x, y)[0].backward()
    opt.step()
    for n, p in model.named_parameters():
        moved = not torch.equal(p.detach(), before[n])
        if id(p) in spread:
            assert not moved, n
        elif p.grad is not None and bool(p.grad.abs().max() > 1e-6):
            assert moved, n

    torch.manual_seed(2)
    model = uqbench.get_posterior(name)(blob_spec(N_TRAIN, hidden=32))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = model.configure_optimizer(1e-3, variance_lr=5e-2)
    opt.zero_grad()
    model.loss(x, y)[0].backward()
    opt.step()
    for n, p in model.named_parameters():
        step = (p.detach() - before[n]).abs()
        rate = 5e-2 if n.endswith("logvar") else 1e-3
        nonzero = p.grad is not None and p.grad.abs() > 1e-6
        torch.testing.assert_close(
            step[nonzero], torch.full_like(step[nonzero], rate), rtol=1e-2, atol=0
        )


def test_an_mnf_file_saved_before_the_planar_flows_still_loads(tmp_path) -> None:
    """A model file without ``flow_1d`` (train version 1) was made with RealNVP on 1-D z."""
    one_d = ModelSpec(
        arch="mlp", in_shape=(1,), out_dim=1, kind="regression", n_data=20,
        arch_kwargs={"hidden": 8},
    )  # fmt: skip
    torch.manual_seed(3)
    model = uqbench.get_posterior("mnf")(one_d, flow_1d="realnvp")
    model.save(tmp_path / "old.pt")
    blob = torch.load(tmp_path / "old.pt", weights_only=True)
    del blob["config"]["flow_1d"]
    torch.save(blob, tmp_path / "old.pt")
    loaded = uqbench.load_posterior(tmp_path / "old.pt")
    x = torch.linspace(-1, 1, 5).unsqueeze(-1)
    torch.manual_seed(4)
    a = model.sample_outputs(x, 3)
    torch.manual_seed(4)
    assert torch.equal(loaded.sample_outputs(x, 3), a)


def test_variance_lr_for_a_family_whose_optimizer_takes_none_is_a_config_error() -> None:
    from uqbench.errors import ConfigError
    from uqbench.tasks.base import Split
    from uqbench.train import train

    model = uqbench.get_posterior("l2")(blob_spec(N_TRAIN, hidden=32))
    model.configure_optimizer = lambda lr: torch.optim.Adam(model.parameters(), lr=lr)
    x, y = blobs(20, torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="takes no variance_lr"):
        train(model, Split(x, y), epochs=1, batch_size=10, lr=1e-3, variance_lr=1e-2,
              seed=0, progress=False)  # fmt: skip


@pytest.mark.parametrize(("name", "said"), [("l2", True), ("ffg", False)])
def test_variance_lr_that_moves_no_parameter_is_said_in_the_log(name: str, said: bool) -> None:
    from uqbench.tasks.base import Split
    from uqbench.train import train

    model = uqbench.get_posterior(name)(blob_spec(N_TRAIN, hidden=32))
    x, y = blobs(20, torch.Generator().manual_seed(0))
    lines: list[str] = []
    train(model, Split(x, y), epochs=1, batch_size=10, lr=1e-3, variance_lr=1e-2, seed=0,
          progress=False, desc="run", log_message=lines.append)  # fmt: skip
    hits = [line for line in lines if "variance_lr 0.01 moves no parameter" in line]
    assert len(hits) == int(said)
