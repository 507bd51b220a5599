"""The layer contract of a posterior's modules, and the bugs a third party ran into.

bayesian-torch is not a test dependency: ``FlipoutLike`` mimics what its
``LinearFlipout`` does that matters here - ``self.kl = 0`` as a plain attribute, a
forward that returns ``(output, kl)``, and ``kl_loss()`` as a per-weight *mean* KL.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import uqbench
from uqbench import ModelSpec
from uqbench.errors import ConfigError, PluginError
from uqbench.tasks.base import Split
from uqbench.train import train


def spec(n_data: int = 64) -> ModelSpec:
    return ModelSpec("mlp", (3,), 2, "classification", n_data, {"hidden": 4})


def data(n: int = 64) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(n, 3, generator=g), torch.randint(2, (n,), generator=g))


def gauss_kl_sum(mu: Tensor, log_sigma: Tensor) -> float:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the weights, by hand (float64)."""
    mu, s2 = mu.double(), (2 * log_sigma.double()).exp()
    return float((0.5 * (s2 + mu**2 - 1) - log_sigma.double()).sum())


class FlipoutLike(nn.Module):
    """A dense Gaussian layer behaving like bayesian-torch's LinearFlipout."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.randn(d_out, d_in) * 0.3)
        self.log_sigma = nn.Parameter(torch.full((d_out, d_in), -2.0))
        self.kl = 0  # bayesian-torch keeps the last KL in a plain attribute

    def kl_loss(self) -> Tensor:
        s2 = (2 * self.log_sigma).exp()
        return (0.5 * (s2 + self.mu**2 - 1) - self.log_sigma).mean()  # a per-weight MEAN

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.mu + self.log_sigma.exp() * torch.randn_like(self.mu)
        return x @ w.t(), self.kl_loss()


class Adapted(nn.Module):
    """The adapter the README shows: output only, and the KL summed over the weights."""

    def __init__(self, layer: FlipoutLike) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.layer(x)
        return out

    def kl(self) -> Tensor:
        return self.layer.kl_loss() * self.layer.mu.numel()  # mean -> sum


class FlipoutFactory:
    def __init__(self, adapt: bool) -> None:
        self.adapt = adapt

    def linear(self, d_in: int, d_out: int, *, index: int, last: bool) -> nn.Module:
        layer = FlipoutLike(d_in, d_out)
        return Adapted(layer) if self.adapt else layer

    def conv2d(self, c_in: int, c_out: int, kernel_size: int, *, index: int) -> nn.Module:
        raise NotImplementedError


class FlipoutPosterior(uqbench.Posterior):
    defaults = {"adapt": True}

    def layer_factory(self) -> FlipoutFactory:
        return FlipoutFactory(self.config["adapt"])


def fit(model: uqbench.Posterior, epochs: int = 1):
    return train(model, data(), epochs=epochs, batch_size=32, lr=1e-2, seed=0, progress=False)


def test_third_party_layers_adapted_train_with_the_summed_kl() -> None:
    torch.manual_seed(0)
    model = FlipoutPosterior(spec())
    layers = [m for m in model.modules() if isinstance(m, FlipoutLike)]
    want = sum(gauss_kl_sum(m.mu.detach(), m.log_sigma.detach()) for m in layers)
    assert float(model.kl().detach()) == pytest.approx(want, rel=1e-5)
    log = fit(model, epochs=2)
    assert len(log.loss) == 2 and all(map(math.isfinite, log.loss))


def test_third_party_layers_as_is_get_one_clear_message() -> None:
    torch.manual_seed(0)
    model = FlipoutPosterior(spec(), adapt=False)
    with pytest.raises(PluginError, match=r"net\.0 \(FlipoutLike\).*kl_loss\(\)"):
        fit(model)


class TupleLayer(nn.Linear):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward(x), torch.zeros(())


class Layers(uqbench.PlainLayers):
    """Plain layers, with the one at ``index`` replaced by ``make(d_in, d_out)``."""

    def __init__(self, make, index: int = 1) -> None:
        self.make, self.index = make, index

    def linear(self, d_in: int, d_out: int, *, index: int, last: bool) -> nn.Module:
        if index == self.index:
            return self.make(d_in, d_out)
        return super().linear(d_in, d_out, index=index, last=last)


def posterior_with(make, index: int = 1) -> uqbench.Posterior:
    class P(uqbench.Posterior):
        def layer_factory(self):
            return Layers(make, index)

    torch.manual_seed(0)
    return P(spec())


def test_tuple_output_is_one_error_naming_the_module() -> None:
    model = posterior_with(TupleLayer)
    with pytest.raises(PluginError, match=r"net\.2 \(TupleLayer\): forward returned a tuple"):
        fit(model)


class KLLayer(nn.Linear):
    """A dense layer with kl() = value (a fixed tensor)."""

    def __init__(self, d_in: int, d_out: int, value: Tensor) -> None:
        super().__init__(d_in, d_out)
        self.value = value

    def kl(self) -> Tensor:
        return self.value + 0 * self.weight.sum()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (torch.tensor(float("nan")), "expected a finite number"),
        (torch.tensor(float("inf")), "expected a finite number"),
        (torch.ones(4), r"shape \[4\], expected a scalar"),
    ],
)
def test_bad_kl_is_one_error_naming_the_module(value: Tensor, problem: str) -> None:
    model = posterior_with(lambda i, o: KLLayer(i, o, value))
    with pytest.raises(
        PluginError, match=r"module net\.2 \(KLLayer\): kl\(\) returned .*" + problem
    ):
        fit(model)


# -- bug 1: a non-callable attribute named kl ---------------------------------------------


class KeepsKL(nn.Linear):
    """A layer like bayesian-torch's Conv2dFlipout: ``self.kl = 0`` is data, not a method."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__(d_in, d_out)
        self.kl = 0


def test_non_callable_kl_attribute_is_ignored() -> None:
    model = posterior_with(KeepsKL)
    assert float(model.kl()) == 0.0  # plain layers and a kl attribute: no KL at all
    log = fit(model)
    assert log.kl == [0.0] and math.isfinite(log.loss[0])


# -- bug 2: a wrapper's kl() delegating to the wrapped layer -----------------------------


class Prior(nn.Linear):
    def kl(self) -> Tensor:
        return 0.5 * self.weight.pow(2).sum()


class Wrapper(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.inner = Prior(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)

    def kl(self) -> Tensor:
        return self.inner.kl()


def test_wrapper_kl_is_counted_once() -> None:
    model = posterior_with(Wrapper)
    w = model.net[2].inner.weight.detach().double()
    assert float(model.kl().detach()) == pytest.approx(0.5 * float(w.pow(2).sum()), rel=1e-6)
    _, stats = model.loss(*next(iter([(data().x, data().y)])))
    assert float(stats["kl"]) == pytest.approx(0.5 * float(w.pow(2).sum()), rel=1e-6)
    # Nested kl() modules deeper down, under a module without kl(), are all found.
    outer = nn.Sequential(nn.Sequential(Prior(2, 2)), Wrapper(2, 2), KeepsKL(2, 2))
    names = [n for n, _ in uqbench.posterior.kl_modules(outer)]
    assert names == ["0.0", "1"]


# -- bug 3: load_posterior on a runner checkpoint -----------------------------------------


def test_load_posterior_on_a_file_that_is_no_model_says_so(tmp_path) -> None:
    # (A runner's training checkpoint loads: tests/test_failures.py.)
    torch.save([1, 2], tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="not a uqbench model file"):
        uqbench.load_posterior(tmp_path / "junk.pt")


# -- what evaluation gets back from a family ---------------------------------------------------
class Reshaped(uqbench.Posterior):
    """A plain MAP network whose ``sample_outputs`` can be bent out of the contract."""

    bend: str = "none"

    def layer_factory(self):
        return uqbench.PlainLayers()

    def sample_outputs(self, x: Tensor, n_samples: int, chunk_rows: int | None = None):
        out = self(x).unsqueeze(0).expand(n_samples, -1, -1)
        if self.bend == "swapped":
            return out.transpose(0, 1)  # [batch, S, out]
        if self.bend == "wide":
            return torch.cat([out, out[..., :1]], -1)  # one output too many
        if self.bend == "no-sample-axis":
            return out[0]
        if self.bend == "no-grad":
            return out.detach()
        if self.bend == "probabilities":
            return out.softmax(-1)
        if self.bend == "log-probabilities":
            return out.log_softmax(-1)
        if self.bend == "integers":
            return out.round().long()
        return out


@pytest.mark.parametrize(
    ("bend", "shown"),
    [("swapped", "[5, 4, 2]"), ("wide", "[4, 5, 3]"), ("no-sample-axis", "[5, 2]")],
)
def test_outputs_of_the_wrong_shape_are_refused_naming_the_family(bend, shown):
    from uqbench.evaluate import sample_outputs

    model = Reshaped(spec())
    model.bend = bend
    with pytest.raises(PluginError) as err:
        sample_outputs(model, torch.randn(5, 3), 4, n_out=2)
    msg = str(err.value)
    assert f"returned shape {shown}" in msg and "expected [S, 5, 2]" in msg
    assert "Reshaped" in msg


@pytest.mark.parametrize(
    ("bend", "message"),
    [
        (
            "probabilities",
            "returned what look like probabilities (each row in [0, 1], summing "
            "to 1); return logits (or log-probabilities) instead",
        ),
        (
            "integers",
            "returned torch.int64 values; logits (or a regression's means) are floating point",
        ),
    ],
)
def test_outputs_that_are_not_logits_are_refused_naming_the_family(bend, message):
    """Probabilities would be scored as logits (a softmax of a softmax: the NLL of a trained
    net 0.57 instead of 0.026 in the probe), integers fail deep inside log_softmax."""
    from uqbench.evaluate import sample_outputs

    model = Reshaped(spec())
    model.bend = bend
    with pytest.raises(PluginError) as err:
        sample_outputs(model, torch.randn(5, 3), 4, n_out=2, check_spread=True)
    assert message in str(err.value) and "Reshaped" in str(err.value)
    model.bend, model.deterministic = "log-probabilities", True  # these are logits
    out = sample_outputs(model, torch.randn(5, 3), 4, n_out=2, check_spread=True)
    assert out.exp().sum(-1).allclose(torch.ones(()))


def test_identical_samples_of_a_family_that_is_not_deterministic_warn():
    from uqbench.evaluate import sample_outputs

    model = Reshaped(spec())  # every sample the same network, yet not deterministic
    x = torch.randn(5, 3)
    with pytest.warns(UserWarning, match="samples are identical"):
        sample_outputs(model, x, 4, n_out=2, check_spread=True)
    model.deterministic = True
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sample_outputs(model, x, 4, n_out=2, check_spread=True).shape == (4, 5, 2)


def test_fgsm_names_outputs_without_a_gradient():
    from uqbench.attacks import fgsm

    model = Reshaped(spec())
    model.bend = "no-grad"
    x, y = torch.rand(5, 3), torch.randint(2, (5,))
    with pytest.raises(PluginError, match="no gradient to the input"):
        fgsm(model, x, y, 0.1, 2)


class LossBent(uqbench.Posterior):
    """A MAP network whose ``loss`` or ``kl`` can be bent out of the contract."""

    bend: str = "none"

    def layer_factory(self):
        return uqbench.PlainLayers()

    def loss(self, x: Tensor, y: Tensor):
        out = self(x)
        if self.bend == "per-example":
            nll = F.cross_entropy(out, y, reduction="none")
            return nll, {"nll": nll.mean().detach(), "kl": torch.zeros(())}
        nll = F.cross_entropy(out, y)
        if self.bend == "no-parts":
            return nll
        if self.bend == "no-nll":
            return nll, {"kl": torch.zeros(())}
        return nll, {"nll": nll.detach(), "kl": torch.zeros(())}


@pytest.mark.parametrize(
    ("bend", "said"),
    [
        ("per-example", "the loss is [16], not a scalar tensor"),
        ("no-parts", "loss returned Tensor"),
        ("no-nll", "the loss's parts are ['kl']"),
    ],
)
def test_a_loss_out_of_contract_is_named_at_the_first_step(bend, said):
    model = LossBent(spec())
    model.bend = bend
    with pytest.raises(PluginError) as err:
        train(model, data(), epochs=1, batch_size=16, lr=1e-3, seed=0, progress=False)
    assert said in str(err.value) and "LossBent" in str(err.value)


class FloatKL(nn.Linear):
    """A layer whose prior term lost its gradient (``.item()``)."""

    def kl(self):
        return 0.5 * float(self.weight.pow(2).sum().item())


class FloatKLLayers(uqbench.PlainLayers):
    def linear(self, in_features: int, out_features: int, *, index: int, last: bool):
        return FloatKL(in_features, out_features)


class FloatKLFamily(uqbench.Posterior):
    def layer_factory(self):
        return FloatKLLayers()


class FloatFamilyKL(uqbench.Posterior):
    """A family-wide ``kl()`` that returns a Python float."""

    def layer_factory(self):
        return uqbench.PlainLayers()

    def kl(self):
        return 0.5 * sum(float(p.detach().pow(2).sum()) for p in self.parameters())


@pytest.mark.parametrize("family", [FloatKLFamily, FloatFamilyKL])
def test_a_kl_without_a_gradient_is_named(family):
    with pytest.raises(PluginError, match=r"no gradient to the module's parameters") as err:
        train(family(spec()), data(), epochs=1, batch_size=16, lr=1e-3, seed=0, progress=False)
    assert "float" in str(err.value) or "kl()" in str(err.value)


def test_a_family_without_layers_says_so():
    class NoLayers(uqbench.Posterior):
        pass

    with pytest.raises(PluginError, match="defines neither layer_factory"):
        NoLayers(spec())
