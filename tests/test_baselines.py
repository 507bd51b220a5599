"""Behaviour and math of the non-Gaussian baselines: L2, Dropout, learned Dropout, Ensembles.

Each check compares against an independent computation: sums of squares written out,
binomial confidence intervals, plain ``torch.nn.functional`` forward passes, and an
enumeration of all Bernoulli masks for the REINFORCE estimator.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from uqbench.baselines.dropout import Dropout, MCDropout
from uqbench.baselines.dropout_learned import (
    DropoutLearned,
    LearnedDropout,
    bernoulli_entropy,
    score_function_surrogate,
)
from uqbench.baselines.ensemble import Ensemble, fgsm_step
from uqbench.baselines.l2 import L2

from uqbench import ModelSpec
from uqbench.errors import ConfigError
from uqbench.layers import PriorConv2d, PriorLinear

SMALL_LENET = {"channels": (3, 4), "hidden": 16}


def lenet_spec(**kw) -> ModelSpec:
    base = dict(
        arch="lenet5",
        in_shape=(1, 28, 28),
        out_dim=10,
        kind="classification",
        n_data=500,
        arch_kwargs=SMALL_LENET,
        input_range=(0.0, 1.0),
    )
    return ModelSpec(**{**base, **kw})


def mlp_spec(hidden: int = 8, **kw) -> ModelSpec:
    base = dict(
        arch="mlp",
        in_shape=(2,),
        out_dim=3,
        kind="classification",
        n_data=100,
        arch_kwargs={"hidden": hidden},
        input_range=(0.0, 1.0),
    )
    return ModelSpec(**{**base, **kw})


def weight_layers(net: nn.Module) -> list[nn.Module]:
    """The nn.Linear / nn.Conv2d modules of a network, input side first."""
    return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def sum_sq(t: torch.Tensor) -> float:
    return float((t.detach().double() ** 2).sum())


# -- L2 -------------------------------------------------------------------------------


def test_l2_kl_is_half_sum_of_squared_weights() -> None:
    torch.manual_seed(0)
    model = L2(lenet_spec())
    expected = 0.5 * sum(
        sum_sq(p) for name, p in model.named_parameters() if name.endswith("weight")
    )
    assert float(model.kl().detach()) == pytest.approx(expected, rel=1e-5)
    # Biases carry no prior: changing them leaves the penalty alone.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(1.0)
    assert float(model.kl().detach()) == pytest.approx(expected, rel=1e-5)


def test_l2_loss_is_mean_nll_plus_prior_over_n() -> None:
    torch.manual_seed(0)
    model = L2(lenet_spec())
    x, y = torch.rand(6, 1, 28, 28), torch.randint(10, (6,))
    loss, stats = model.loss(x, y)
    # Forward pass written out with functional ops on the same parameters.
    c1, c2, d1, d2 = weight_layers(model.net)
    h = F.max_pool2d(F.relu(F.conv2d(x, c1.weight, c1.bias)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, c2.weight, c2.bias)), 2).flatten(1)
    logits = F.linear(F.relu(F.linear(h, d1.weight, d1.bias)), d2.weight, d2.bias)
    nll = -torch.log_softmax(logits, -1)[torch.arange(6), y].mean()
    penalty = 0.5 * sum(sum_sq(m.weight) for m in (c1, c2, d1, d2))
    assert loss.item() == pytest.approx(nll.item() + penalty / 500, rel=1e-5)
    assert float(stats["kl"]) == pytest.approx(penalty, rel=1e-5)


def test_l2_is_deterministic_and_differentiable_in_x() -> None:
    torch.manual_seed(0)
    model = L2(lenet_spec()).eval()
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    out = model.sample_outputs(x, 5)
    assert out.shape == (5, 4, 10)
    assert torch.equal(out[0], out[4])
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.abs().sum() > 0


# -- Dropout --------------------------------------------------------------------------


def test_dropout_masks_every_layer_but_the_first() -> None:
    model = Dropout(lenet_spec())
    layers = [m for m in model.net if isinstance(m, (MCDropout, PriorConv2d, PriorLinear))]
    assert isinstance(layers[0], PriorConv2d)
    assert all(isinstance(m, MCDropout) and m.p == 0.5 for m in layers[1:])
    assert len(layers) == 4


def test_dropout_first_layer_input_is_not_dropped() -> None:
    # Toy case (paper footnote 9): the 1-D input must reach the hidden layer intact.
    torch.manual_seed(0)
    spec = ModelSpec("mlp", (1,), 1, "regression", 20, {"hidden": 50}, noise_std=3.0)
    model = Dropout(spec).eval()
    seen = []
    model.net[0].register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    x = torch.linspace(-4, 4, 7).unsqueeze(1)
    a, b = model(x), model(x)
    assert torch.equal(seen[0], seen[1])
    assert not torch.equal(a, b)


def test_dropout_is_stochastic_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = Dropout(lenet_spec()).eval()
    x = torch.rand(4, 1, 28, 28)
    s = model.sample_outputs(x, 3)
    assert not torch.equal(s[0], s[1])
    assert not torch.equal(model(x), model(x))


def test_dropout_mask_rate_matches_p() -> None:
    torch.manual_seed(0)
    p, n_ex, n_units = 0.3, 4000, 25
    layer = MCDropout(nn.Linear(n_units, n_units), p)
    with torch.no_grad():
        layer.layer.weight.copy_(torch.eye(n_units))
        layer.layer.bias.zero_()
    mask = layer(torch.ones(n_ex, n_units))  # identity weights: the output is the mask
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    n = mask.numel()
    dropped = float((mask == 0).sum())
    sd = math.sqrt(n * p * (1 - p))
    assert abs(dropped - n * p) < 4.5 * sd
    # One mask per example: rows are not copies of one mask.
    same_as_first = (mask == mask[0]).all(1).float().mean()
    assert same_as_first < 0.01


def test_dropout_mean_output_uses_unscaled_masks() -> None:
    # W = diag(z) M without 1/pi rescaling: E[out] = M (pi * x) + b.
    torch.manual_seed(0)
    p = 0.5
    layer = MCDropout(nn.Linear(6, 2), p)
    x = torch.randn(1, 6).expand(20000, 6)
    out = layer(x).detach()
    expected = F.linear(x[:1] * (1 - p), layer.layer.weight, layer.layer.bias).detach()
    se = out.std(0) / math.sqrt(out.shape[0])
    assert ((out.mean(0) - expected[0]).abs() < 5 * se).all()


def test_dropout_p0_is_the_deterministic_network() -> None:
    torch.manual_seed(0)
    model = Dropout(mlp_spec(), p=0.0).eval()
    x = torch.randn(10, 2)
    l0, l1 = weight_layers(model.net)
    expected = F.linear(F.relu(F.linear(x, l0.weight, l0.bias)), l1.weight, l1.bias)
    s = model.sample_outputs(x, 4)
    for i in range(4):
        torch.testing.assert_close(s[i], expected)


def test_dropout_kl_scales_masked_layers_by_keep_prob() -> None:
    torch.manual_seed(0)
    p = 0.3
    model = Dropout(lenet_spec(), p=p)
    w = [m.weight for m in weight_layers(model.net)]
    expected = 0.5 * sum_sq(w[0]) + (1 - p) / 2 * sum(sum_sq(t) for t in w[1:])
    assert float(model.kl().detach()) == pytest.approx(expected, rel=1e-5)


def test_dropout_rejects_bad_rate() -> None:
    with pytest.raises(ConfigError, match="p"):
        Dropout(mlp_spec(), p=1.0)


# -- Deep Ensembles -------------------------------------------------------------------


def test_ensemble_member_count() -> None:
    assert Ensemble(mlp_spec()).members == 5
    assert Ensemble(mlp_spec(), members=2).members == 2


@pytest.mark.parametrize(("spec", "members"), [(lenet_spec(), 3), (mlp_spec(), 4)])
def test_ensemble_outputs_equal_each_member_alone(spec: ModelSpec, members: int) -> None:
    torch.manual_seed(0)
    model = Ensemble(spec, members=members).eval()
    x = torch.rand(7, *spec.in_shape)
    out = model.sample_outputs(x, 100)
    assert out.shape == (model.members, 7, spec.out_dim)
    for m in range(model.members):
        torch.testing.assert_close(out[m], model.member(m)(x), rtol=1e-5, atol=1e-5)
    # Members differ (independent initialisations).
    assert not torch.allclose(out[0], out[1])
    # Chunked evaluation gives the same numbers.
    torch.testing.assert_close(model.sample_outputs(x, 1, chunk_rows=2), out)
    # A forward pass draws one member per example.
    one = model(x)
    for b in range(7):
        assert any(torch.allclose(one[b], out[m, b]) for m in range(model.members))


def test_ensemble_kl_sums_member_weight_decay() -> None:
    torch.manual_seed(0)
    model = Ensemble(lenet_spec(), members=2)
    expected = sum(
        0.5 * sum_sq(layer.weight) for m in range(2) for layer in weight_layers(model.member(m))
    )
    assert float(model.kl().detach()) == pytest.approx(expected, rel=1e-5)


def test_fgsm_step_moves_by_exactly_eps_within_unit_box() -> None:
    torch.manual_seed(0)
    x = torch.rand(500)
    grad = torch.randn(500)
    eps = 0.1
    x_adv = fgsm_step(x, grad, eps)
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    inside = (x + eps * grad.sign() >= 0) & (x + eps * grad.sign() <= 1)
    assert inside.sum() > 300
    torch.testing.assert_close((x_adv - x)[inside], eps * grad.sign()[inside])
    assert ((x_adv[~inside] == 0) | (x_adv[~inside] == 1)).all()


def _member_loss(net: nn.Module, x, y, eps: float, n: int) -> tuple[torch.Tensor, ...]:
    """One member's adversarial-training loss computed on its own, its x_adv and grad."""
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(xg), y), xg)
    x_adv = (x + eps * g.sign()).clamp(0, 1)
    decay = 0.5 * sum(layer.weight.pow(2).sum() for layer in weight_layers(net))
    loss = F.cross_entropy(net(x), y) + F.cross_entropy(net(x_adv), y) + decay / n
    return loss, x_adv, g


def test_ensemble_adversarial_loss_and_gradients_equal_independent_members() -> None:
    torch.manual_seed(0)
    eps = 0.25
    spec = lenet_spec()
    model = Ensemble(spec, members=3, adv_eps=eps)
    x, y = torch.rand(5, 1, 28, 28), torch.randint(10, (5,))

    x_adv = model.adversarial_inputs(x, y)
    assert x_adv.shape == (5, 3, 1, 28, 28)
    loss, stats = model.loss(x, y)
    loss.backward()

    total = 0.0
    for m in range(3):
        net = model.member(m)
        loss_m, x_adv_m, g = _member_loss(net, x, y, eps, spec.n_data)
        torch.testing.assert_close(x_adv[:, m], x_adv_m)
        # Inputs move by exactly eps wherever the gradient is non-zero and the clamp to
        # [0, 1] does not bind.
        free = (x_adv_m > 0) & (x_adv_m < 1) & (g != 0)
        assert free.float().mean() > 0.3
        torch.testing.assert_close((x_adv_m - x).abs()[free], torch.full_like(x[free], eps))
        loss_m.backward()
        total += loss_m.item()
        # The summed objective gives each member exactly its own gradient.
        ens_layers = [mod for mod in model.net.modules() if hasattr(mod, "members")]
        for src, dst in zip(ens_layers, weight_layers(net), strict=True):
            torch.testing.assert_close(src.weight.grad[m], dst.weight.grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(src.bias.grad[m], dst.bias.grad, rtol=1e-4, atol=1e-6)
    assert loss.item() == pytest.approx(total, rel=1e-5)
    assert float(stats["nll_adv"]) > float(stats["nll"])


def test_ensemble_without_eps_trains_on_clean_inputs_only() -> None:
    torch.manual_seed(0)
    spec = mlp_spec()
    model = Ensemble(spec, members=2)
    x, y = torch.randn(9, 2), torch.randint(3, (9,))
    loss, stats = model.loss(x, y)
    expected = 0.0
    for m in range(2):
        net = model.member(m)
        decay = 0.5 * sum(sum_sq(layer.weight) for layer in weight_layers(net))
        expected += F.cross_entropy(net(x), y).item() + decay / spec.n_data
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert float(stats["nll_adv"]) == 0.0


def test_ensemble_regression_inputs_are_not_clamped() -> None:
    torch.manual_seed(0)
    spec = ModelSpec("mlp", (1,), 1, "regression", 20, {"hidden": 8}, noise_std=3.0)
    model = Ensemble(spec, members=2, adv_eps=0.5)
    x = torch.linspace(-4, 4, 8).unsqueeze(1)
    y = x.pow(3)
    x_adv = model.adversarial_inputs(x, y)
    torch.testing.assert_close((x_adv - x.unsqueeze(1)).abs(), torch.full_like(x_adv, 0.5))
    loss, _ = model.loss(x, y)
    assert torch.isfinite(loss)


def test_ensemble_clamps_to_the_specs_input_range() -> None:
    torch.manual_seed(0)
    model = Ensemble(mlp_spec(input_range=(-1.0, 1.0)), members=2, adv_eps=0.5)
    x = torch.tensor([[0.9, -0.9], [0.2, 0.1], [-0.8, 0.95]])
    x_adv = model.adversarial_inputs(x, torch.tensor([0, 1, 2]))
    assert x_adv.min() >= -1.0 and x_adv.max() <= 1.0
    # Far from the bounds the move is +-eps; near them it stops at the bound.
    full = torch.isclose((x_adv - x.unsqueeze(1)).abs(), torch.tensor(0.5))
    assert (full | (x_adv.abs() == 1.0)).all()
    assert (x_adv.abs() == 1.0).any() and full.any()
    with pytest.raises(ConfigError, match="input_range"):
        mlp_spec(input_range=(1.0, 0.0))


def test_ensemble_sample_outputs_differentiable_in_x() -> None:
    torch.manual_seed(0)
    model = Ensemble(lenet_spec(), members=2).eval()
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    (g,) = torch.autograd.grad(model.sample_outputs(x, 10).logsumexp(-1).sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0


# -- Dropout with learned keep probability --------------------------------------------


def test_reinforce_estimator_matches_enumerated_gradient() -> None:
    """d E_q[f(z)] / d logit for 3 Bernoulli(sigmoid(logit)) units, f a lookup table."""
    torch.manual_seed(0)
    table = torch.tensor([0.3, -1.2, 2.0, 0.7, -0.4, 1.5, -2.2, 0.9])  # f(z), z as 3 bits
    layer = LearnedDropout(nn.Linear(3, 1), p=0.35, index=1)
    theta = layer.logit.item()

    # Exact gradient: enumerate the 8 masks, differentiate the expectation.
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    pi = torch.sigmoid(th)
    expectation = 0.0
    for bits in itertools.product([0, 1], repeat=3):
        prob = torch.prod(torch.stack([pi if b else 1 - pi for b in bits]))
        expectation = expectation + prob * float(table[bits[0] * 4 + bits[1] * 2 + bits[2]])
    (exact,) = torch.autograd.grad(expectation, th)

    n = 200_000
    mask, log_q = layer.sample_mask(torch.ones(n, 3))
    assert float(mask.mean()) == pytest.approx(0.65, abs=4.5 * math.sqrt(0.65 * 0.35 / (3 * n)))
    f = table[(mask[:, 0] * 4 + mask[:, 1] * 2 + mask[:, 2]).long()]
    for baseline in (0.0, float(f.mean()), 3.0):  # any constant baseline is unbiased
        layer.zero_grad()
        score_function_surrogate(f, baseline, log_q).backward(retain_graph=True)
        est = float(layer.logit.grad)
        # Per-sample estimator: (f - b) * d log q / d logit = (f - b) * (sum z - 3 pi).
        per = (f - baseline) * (mask.sum(1) - 3 * torch.sigmoid(torch.tensor(theta)))
        assert est == pytest.approx(float(per.mean()), rel=1e-4, abs=1e-6)
        se = float(per.std()) / math.sqrt(n)
        assert abs(est - float(exact)) < 4.5 * se, (baseline, est, float(exact), se)
    # The surrogate has value zero: it only shapes the gradient.
    assert score_function_surrogate(f, 0.0, log_q).item() == 0.0


def test_learned_dropout_kl_formula() -> None:
    torch.manual_seed(0)
    model = DropoutLearned(lenet_spec(), p=0.2)
    layers = model.dropout_layers()
    assert [layer.index for layer in layers] == [1, 2, 3]
    assert [layer.n_units for layer in layers] == [3, 4 * 4 * 4, 16]  # channels, units, units
    pi = 0.8
    h = -pi * math.log(pi) - (1 - pi) * math.log(1 - pi)
    w = [m.weight for m in weight_layers(model.net)]
    expected = 0.5 * sum_sq(w[0]) + sum(
        pi / 2 * sum_sq(t) - k * h for t, k in zip(w[1:], [3, 64, 16], strict=True)
    )
    assert float(model.kl().detach()) == pytest.approx(expected, rel=1e-5)
    assert float(bernoulli_entropy(torch.tensor(40.0))) == pytest.approx(0.0, abs=1e-12)
    off = DropoutLearned(lenet_spec(), p=0.2, entropy=False)
    w = [m.weight for m in weight_layers(off.net)]
    expected = 0.5 * sum_sq(w[0]) + sum(pi / 2 * sum_sq(t) for t in w[1:])
    assert float(off.kl().detach()) == pytest.approx(expected, rel=1e-5)
    assert model.diagnostics() == {
        "keep_prob": {f"layer{i}": pytest.approx(0.8) for i in (1, 2, 3)}
    }


def test_learned_dropout_conv_masks_are_per_channel_and_per_example() -> None:
    torch.manual_seed(0)
    layer = LearnedDropout(nn.Conv2d(8, 2, 3), p=0.5, index=1)
    mask, log_q = layer.sample_mask(torch.ones(300, 8, 5, 5))
    assert mask.shape == (300, 8, 1, 1)
    assert log_q.shape == (300,)
    torch.testing.assert_close(log_q, torch.full((300,), 8 * math.log(0.5)))
    assert (mask.flatten(1) == mask[0].flatten()).all(1).float().mean() < 0.05


def test_learned_dropout_loss_gradient_matches_enumeration() -> None:
    """The logit gradient of loss() estimates -d/dlogit [E_q log p(y|x,z,M) - KL/N]."""
    torch.manual_seed(0)
    n_data = 50
    spec = ModelSpec("mlp", (1,), 1, "regression", n_data, {"hidden": 3}, noise_std=1.5)
    model = DropoutLearned(spec, p=0.4)
    (layer,) = model.dropout_layers()
    l0, l1 = weight_layers(model.net)
    x, y = torch.tensor([[0.7]]), torch.tensor([[1.3]])

    # Exact expected log-likelihood, enumerating the hidden layer's 8 masks.
    th = layer.logit.detach().double().requires_grad_(True)
    pi = torch.sigmoid(th)
    h = F.relu(F.linear(x, l0.weight, l0.bias)).detach().double()[0]
    ell = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=3):
        z = torch.tensor(bits, dtype=torch.float64)
        prob = torch.prod(torch.where(z > 0, pi, 1 - pi))
        out = (h * z) @ l1.weight.detach().double()[0] + l1.bias.detach().double()[0]
        loglik = -0.5 * ((1.3 - out) / 1.5) ** 2 - math.log(1.5) - 0.5 * math.log(2 * math.pi)
        ell = ell + prob * loglik
    ent = -pi * torch.log(pi) - (1 - pi) * torch.log(1 - pi)
    kl_theta = pi / 2 * sum_sq(l1.weight) - 3 * ent  # the logit-dependent part of the KL
    (exact,) = torch.autograd.grad(-(ell - kl_theta / n_data), th)

    # loss() on a batch of copies of the example: each copy draws its own mask.
    with torch.no_grad():
        model.baseline.fill_(-1.0)
        model.baseline_ready.fill_(True)
    grads = []
    for _ in range(40):
        model.zero_grad()
        loss, stats = model.loss(x.expand(2000, 1), y.expand(2000, 1))
        # The value is the plain objective; the surrogate term adds nothing to it.
        assert loss.item() == pytest.approx(
            float(stats["nll"]) + float(stats["kl"]) / n_data, rel=1e-5
        )
        loss.backward()
        grads.append(float(layer.logit.grad))
        model.baseline.fill_(-1.0)  # keep the baseline fixed across calls
    g = torch.tensor(grads, dtype=torch.float64)
    se = float(g.std()) / math.sqrt(len(grads))
    assert abs(float(g.mean()) - float(exact)) < 4.5 * se + 1e-6, (g.mean(), exact, se)


def test_learned_dropout_baseline_tracks_signal() -> None:
    torch.manual_seed(0)
    model = DropoutLearned(mlp_spec(), baseline_decay=0.5)
    x, y = torch.randn(64, 2), torch.randint(3, (64,))
    assert not bool(model.baseline_ready)
    _, stats = model.loss(x, y)
    # First call: the baseline starts at the batch's mean log-likelihood.
    assert float(stats["baseline"]) == pytest.approx(-float(stats["nll"]), rel=1e-6)
    assert float(model.baseline) == pytest.approx(-float(stats["nll"]), rel=1e-6)
    _, stats2 = model.loss(x, y)
    assert float(stats2["baseline"]) == pytest.approx(-float(stats["nll"]), rel=1e-6)
    assert float(model.baseline) == pytest.approx(
        0.5 * -float(stats["nll"]) + 0.5 * -float(stats2["nll"]), rel=1e-6
    )
    assert "keep_prob/layer1" in stats


def test_learned_dropout_keep_prob_moves_with_training() -> None:
    # Without the entropy term and with a strong prior (N = 1), the penalty
    # pi / 2 ||M||^2 dominates and pushes the keep probability down.
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    y = (x[:, 0] > 0).long()
    spec = mlp_spec(hidden=16, out_dim=2, n_data=1)
    model = DropoutLearned(spec, entropy=False)
    opt = model.configure_optimizer(0.05)
    for _ in range(60):
        opt.zero_grad()
        model.loss(x, y)[0].backward()
        opt.step()
    assert model.diagnostics()["keep_prob"]["layer1"] < 0.4
