"""The posterior registry: duplicate and unknown names, broken plug-ins, the built-ins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

import uqbench
from uqbench import Posterior, RegistryError, register_posterior

BUILT_INS = ["dropout", "dropout-learned", "ensemble", "ffg", "fflu", "l2", "mnf"]


def write_distribution(root: Path, dist: str, entry_points: str, modules: dict[str, str]) -> None:
    """An installed-looking distribution under ``root``: a dist-info plus module files."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


def test_built_ins_are_listed() -> None:
    names = uqbench.list_posteriors()
    assert set(BUILT_INS) <= set(names)
    assert names == sorted(names)
    for name in BUILT_INS:
        cls = uqbench.get_posterior(name)
        assert issubclass(cls, Posterior)
        assert cls.name == name
        assert cls.display_name
    shown = {n: uqbench.get_posterior(n).display_name for n in BUILT_INS}
    assert shown["l2"] == "L2"
    assert shown["dropout"] == "Dropout"
    assert shown["dropout-learned"] == "Dropout (learned p)"
    assert shown["ensemble"] == "D.Ensem."
    assert uqbench.get_posterior("ensemble").skip_fgsm_by_default
    assert uqbench.get_posterior("l2").deterministic


def test_duplicate_name_names_both_origins(clean_registry) -> None:
    @register_posterior("uqbench-test-dup")
    class First(Posterior):
        pass

    class Second(Posterior):
        pass

    register_posterior("uqbench-test-dup")(First)  # the same class again: a no-op
    with pytest.raises(RegistryError) as err:
        register_posterior("uqbench-test-dup")(Second)
    msg = str(err.value)
    assert "duplicate" in msg and "'uqbench-test-dup'" in msg
    assert f"{__name__}.{First.__qualname__}" in msg
    assert f"{__name__}.{Second.__qualname__}" in msg
    assert uqbench.get_posterior("uqbench-test-dup") is First


def test_duplicate_of_a_built_in_names_it(clean_registry) -> None:
    class MyL2(Posterior):
        pass

    with pytest.raises(RegistryError) as err:
        register_posterior("l2")(MyL2)
    assert "uqbench.baselines.l2.L2" in str(err.value)
    assert "MyL2" in str(err.value)
    assert uqbench.get_posterior("l2").__module__ == "uqbench.baselines.l2"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError) as err:
        uqbench.get_posterior("no-such-posterior")
    msg = str(err.value)
    assert "'no-such-posterior'" in msg
    for name in uqbench.list_posteriors():
        assert name in msg


def test_broken_plugin_names_itself(clean_registry, tmp_path, monkeypatch) -> None:
    write_distribution(
        tmp_path,
        "uqbench-test-broken",
        """
        [uqbench.posteriors]
        broken-demo = uqbench_test_broken
        """,
        {
            "uqbench_test_broken": """
            import a_module_that_does_not_exist_xyz  # noqa: F401
            """
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clean_registry.reset_discovery()
    with pytest.raises(RegistryError) as err:
        uqbench.list_posteriors()
    msg = str(err.value)
    assert "'broken-demo'" in msg
    assert "uqbench_test_broken" in msg
    assert "uqbench-test-broken" in msg  # the distribution that shipped it
    assert "a_module_that_does_not_exist_xyz" in msg


def test_plugin_registered_by_a_decorator_needs_no_entry_point_name_match(
    clean_registry, tmp_path, monkeypatch
) -> None:
    # The entry point names a module; its decorator picks the registry name.
    write_distribution(
        tmp_path,
        "uqbench-test-named",
        """
        [uqbench.posteriors]
        whatever = uqbench_test_named
        """,
        {
            "uqbench_test_named": """
            import uqbench

            @uqbench.register_posterior("uqbench-test-named")
            class Named(uqbench.Posterior):
                display_name = "Named"

                def layer_factory(self):
                    return uqbench.PlainLayers()
            """
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clean_registry.reset_discovery()
    names = uqbench.list_posteriors()
    assert "uqbench-test-named" in names
    assert "whatever" not in names
    cls = uqbench.get_posterior("uqbench-test-named")
    assert cls.__module__ == "uqbench_test_named"
    spec = uqbench.ModelSpec("mlp", (2,), 2, "classification", 10, {"hidden": 4})
    assert cls(spec).sample_outputs(torch.zeros(3, 2), 2).shape == (2, 3, 2)
