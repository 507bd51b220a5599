"""A third party adds a posterior through the ``uqbench.posteriors`` entry-point group.

Nothing in uqbench is edited: each test puts an installed-looking distribution (a
``*.dist-info`` with ``entry_points.txt``, plus the module) on ``sys.path``, makes the
registry rediscover entry points, and uses the new family through the public API. The
last tests cover ``tests/plugin_example``, the README's "Adding a posterior" package.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

import uqbench
from uqbench import ModelSpec

EXAMPLE = Path(__file__).parent / "plugin_example"
EXAMPLE_MODULE = "uqbench_gaussian_dropout"

DEMO_PLUGIN = """
    import torch
    import uqbench


    @uqbench.register_posterior("demo-plugin")
    class DemoPlugin(uqbench.Posterior):
        \"\"\"MAP with a N(0, 1) prior, written against the public API only.\"\"\"

        display_name = "Demo"
        defaults = {"scale": 1.0}
        deterministic = True

        def layer_factory(self):
            return uqbench.PlainLayers()

        def kl(self):
            return 0.5 * self.config["scale"] * sum(p.pow(2).sum() for p in self.parameters())
"""

DEMO_PLAIN = """
    import uqbench


    class DemoPlain(uqbench.Posterior):  # no decorator: the entry point's name is used
        display_name = "Demo plain"
        deterministic = True

        def layer_factory(self):
            return uqbench.PlainLayers()
"""


def install_fake(root: Path, dist: str, entry_points: str) -> None:
    """Write the ``*.dist-info`` that ``pip install`` would leave for ``dist``."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points).lstrip())


def tiny_spec() -> ModelSpec:
    return ModelSpec("mlp", (2,), 2, "classification", 64, {"hidden": 8})


def train_steps(model: uqbench.Posterior, steps: int = 5) -> tuple[float, float]:
    """Loss on a fixed batch before and after ``steps`` Adam steps."""
    torch.manual_seed(0)
    x = torch.randn(64, *model.spec.in_shape)
    y = torch.randint(model.spec.out_dim, (64,))
    opt = model.configure_optimizer(1e-2)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        loss, stats = model.loss(x, y)
        assert torch.isfinite(loss) and {"nll", "kl"} <= set(stats)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    return first, model.loss(x, y)[0].item()


def test_decorated_plugin_module(clean_registry, tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "uqbench_demo_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(DEMO_PLUGIN))
    install_fake(
        tmp_path,
        "uqbench-demo-plugin",
        """
        [uqbench.posteriors]
        demo-plugin = uqbench_demo_plugin
        """,
    )
    assert "demo-plugin" not in uqbench.list_posteriors()
    monkeypatch.syspath_prepend(str(tmp_path))
    clean_registry.reset_discovery()

    assert "demo-plugin" in uqbench.list_posteriors()
    cls = uqbench.get_posterior("demo-plugin")
    assert cls.__module__ == "uqbench_demo_plugin" and cls.display_name == "Demo"
    model = cls(tiny_spec(), scale=2.0)
    before, after = train_steps(model)
    assert after < before
    # Its kl() hook enters the loss as kl / N.
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    loss, stats = model.loss(x, y)
    sq = sum(float(p.detach().pow(2).sum()) for p in model.parameters())
    assert float(stats["kl"]) == pytest.approx(sq, rel=1e-5)
    assert loss.item() == pytest.approx(float(stats["nll"]) + sq / 64, rel=1e-5)
    # Saved models of a plug-in family load back through the registry.
    model.save(tmp_path / "demo.pt")
    loaded = uqbench.load_posterior(tmp_path / "demo.pt")
    assert type(loaded) is cls and loaded.config["scale"] == 2.0
    torch.testing.assert_close(loaded.sample_outputs(x, 2), model.sample_outputs(x, 2))


def test_entry_point_naming_a_plain_class(clean_registry, tmp_path, monkeypatch) -> None:
    (tmp_path / "uqbench_demo_plain.py").write_text(textwrap.dedent(DEMO_PLAIN))
    install_fake(
        tmp_path,
        "uqbench-demo-plain",
        """
        [uqbench.posteriors]
        demo-plain = uqbench_demo_plain:DemoPlain
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clean_registry.reset_discovery()

    assert "demo-plain" in uqbench.list_posteriors()
    cls = uqbench.get_posterior("demo-plain")
    assert cls.__name__ == "DemoPlain" and cls.name == "demo-plain"
    before, after = train_steps(cls(tiny_spec()))
    assert after < before


def test_registry_is_restored_after_plugin_tests() -> None:
    names = uqbench.list_posteriors()
    assert "demo-plugin" not in names and "demo-plain" not in names


# -- tests/plugin_example: the README's example package ------------------------------


def import_example():
    """Import the example plug-in's module straight from its file (no pip install)."""
    spec = importlib.util.spec_from_file_location(EXAMPLE_MODULE, EXAMPLE / f"{EXAMPLE_MODULE}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[EXAMPLE_MODULE] = module
    spec.loader.exec_module(module)
    return module


def test_example_package_declares_its_entry_point() -> None:
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"]["uqbench.posteriors"]
    assert eps == {"gaussian-dropout": EXAMPLE_MODULE}
    assert meta["tool"]["setuptools"]["py-modules"] == [EXAMPLE_MODULE]


def test_example_registers_builds_lenet5_and_trains(clean_registry) -> None:
    module = import_example()
    assert "gaussian-dropout" in uqbench.list_posteriors()
    cls = uqbench.get_posterior("gaussian-dropout")
    assert cls is module.GaussianDropout
    spec = ModelSpec("lenet5", (1, 28, 28), 10, "classification", 1000)
    model = cls(spec)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    denses = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [20, 50]
    assert [d.out_features for d in denses] == [500, 10]

    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(10, (8,))
    opt = model.configure_optimizer(1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss, stats = model.loss(x, y)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    # A N(0, 1) prior on every weight: kl() sums 0.5 * ||W||^2.
    sq = sum(float(m.weight.detach().pow(2).sum()) for m in convs + denses)
    assert float(model.kl().detach()) == pytest.approx(0.5 * sq, rel=1e-5)
    model.eval()
    s = model.sample_outputs(x, 3)
    assert s.shape == (3, 8, 10) and not torch.equal(s[0], s[1])


def test_example_noise_has_dropout_variance(clean_registry) -> None:
    # N(1, p / (1 - p)) multiplicative noise: with p = 0.2 the variance is 0.25.
    module = import_example()
    layer = nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(4))
        layer.bias.zero_()
    torch.manual_seed(0)
    noise = module.NoisyInput(layer, 0.2 / 0.8)(torch.ones(50_000, 4)).detach()
    n = noise.numel()
    assert float(noise.mean()) == pytest.approx(1.0, abs=4.5 * math.sqrt(0.25 / n))
    assert float(noise.var()) == pytest.approx(0.25, rel=0.03)


def test_example_is_found_through_its_entry_point(clean_registry, tmp_path, monkeypatch) -> None:
    # What `pip install tests/plugin_example` leaves behind: its dist-info, module on path.
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    lines = [f"{k} = {v}" for k, v in meta["project"]["entry-points"]["uqbench.posteriors"].items()]
    install_fake(tmp_path, meta["project"]["name"], "[uqbench.posteriors]\n" + "\n".join(lines))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    clean_registry.reset_discovery()
    assert "gaussian-dropout" in uqbench.list_posteriors()
    cls = uqbench.get_posterior("gaussian-dropout")
    assert cls.__module__ == EXAMPLE_MODULE
    before, after = train_steps(cls(tiny_spec()), 3)  # stochastic: only check it runs
    assert math.isfinite(before) and math.isfinite(after)
