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


def test_a_name_that_cannot_be_a_file_name_is_refused(clean_registry) -> None:
    class Slashed(Posterior):
        pass

    for bad in ("my/slash", "../up", "", "with space", "-dash"):
        with pytest.raises(RegistryError, match="file names"):
            register_posterior(bad)(Slashed)


def test_a_class_that_is_no_posterior_is_refused_at_registration(clean_registry) -> None:
    class Oops:
        pass

    with pytest.raises(RegistryError, match="not a subclass of uqbench.posterior.Posterior"):
        register_posterior("uqbench-test-oops")(Oops)
    assert "uqbench-test-oops" not in uqbench.list_posteriors()


def test_a_failed_discovery_fails_again_instead_of_leaving_the_registry_short(
    clean_registry, tmp_path, monkeypatch
) -> None:
    # "aaa" sorts before every built-in name: the old registry stopped there for good.
    write_distribution(
        tmp_path,
        "uqbench-test-early",
        """
        [uqbench.posteriors]
        aaa-broken = uqbench_test_early
        """,
        {"uqbench_test_early": "import a_module_that_does_not_exist_xyz  # noqa: F401\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clean_registry.reset_discovery()
    for _ in range(2):
        with pytest.raises(RegistryError, match="'aaa-broken'"):
            uqbench.list_posteriors()
        with pytest.raises(RegistryError, match="'aaa-broken'"):
            uqbench.get_posterior("l2")


@pytest.mark.parametrize(
    ("entry_point", "module"),
    [
        # a module entry point that sorts first and registers a built-in's name
        (
            "aaa-l2 = uqbench_test_clash",
            """
            import uqbench

            @uqbench.register_posterior("l2")
            class MyL2(uqbench.Posterior):
                pass
            """,
        ),
        # a class entry point named like a built-in (it used to be skipped silently)
        (
            "l2 = uqbench_test_clash:MyL2",
            """
            import uqbench

            class MyL2(uqbench.Posterior):
                pass
            """,
        ),
    ],
)
def test_a_plugin_reusing_a_built_in_name_is_the_one_named(
    clean_registry, tmp_path, monkeypatch, entry_point, module
) -> None:
    write_distribution(
        tmp_path,
        "uqbench-test-clash",
        f"""
        [uqbench.posteriors]
        {entry_point}
        """,
        {"uqbench_test_clash": module},
    )
    for prepend in (True, False):  # before or after uqbench's own distribution on sys.path
        with monkeypatch.context() as m:
            if prepend:
                m.syspath_prepend(str(tmp_path))
            else:
                m.setattr("sys.path", [*__import__("sys").path, str(tmp_path)])
            clean_registry.reset_discovery()
            with pytest.raises(RegistryError) as err:
                uqbench.list_posteriors()
        msg = str(err.value)
        assert "uqbench-test-clash" in msg and "duplicate posterior name 'l2'" in msg
        assert msg.startswith(f"posterior plug-in '{entry_point.split(' ')[0]}'")
        sys_modules = __import__("sys").modules
        sys_modules.pop("uqbench_test_clash", None)


def test_built_ins_load_first_from_an_empty_registry(clean_registry, tmp_path, monkeypatch):
    """The load order itself: from an empty registry, with a clashing plug-in whose entry
    point sorts first and whose distribution lies first on sys.path, uqbench's own ``l2``
    still registers first, so the plug-in is the one named."""
    import sys

    write_distribution(
        tmp_path,
        "aaa-uqbench-clash",
        """
        [uqbench.posteriors]
        aaa = uqbench_test_first
        """,
        {
            "uqbench_test_first": """
            import uqbench

            @uqbench.register_posterior("l2")
            class First(uqbench.Posterior):
                pass
            """
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # Forget the built-in l2 entirely: its module registers again when it is imported.
    monkeypatch.delitem(sys.modules, "uqbench.baselines.l2")
    monkeypatch.delattr(sys.modules["uqbench.baselines"], "l2")
    monkeypatch.setattr(clean_registry, "_entries", {})
    monkeypatch.setattr(clean_registry, "_origin", {})
    clean_registry.reset_discovery()
    with pytest.raises(RegistryError) as err:
        uqbench.list_posteriors()
    msg = str(err.value)
    assert msg.startswith("posterior plug-in 'aaa' (uqbench_test_first, from aaa-uqbench-clash)")
    assert "already registered by uqbench.baselines.l2" in msg
    sys.modules.pop("uqbench_test_first", None)


def test_a_class_entry_point_may_use_the_registry_while_it_is_imported(
    clean_registry, tmp_path, monkeypatch
) -> None:
    # A family derived from a built-in through the public API, shipped as a class entry point.
    write_distribution(
        tmp_path,
        "uqbench-test-derived",
        """
        [uqbench.posteriors]
        uqbench-test-derived = uqbench_test_derived:Derived
        """,
        {
            "uqbench_test_derived": """
            import uqbench

            FFG = uqbench.get_posterior("ffg")

            class Derived(FFG):
                display_name = "Derived"
            """
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clean_registry.reset_discovery()
    assert "uqbench-test-derived" in uqbench.list_posteriors()
    assert issubclass(uqbench.get_posterior("uqbench-test-derived"), uqbench.get_posterior("ffg"))


@pytest.mark.parametrize(
    "decorator", [uqbench.register_posterior, uqbench.register_task, uqbench.register_ood_set]
)
def test_a_decorator_without_its_name_says_so(decorator) -> None:
    # `@uqbench.register_task` without ("name") would replace the class by the inner
    # decorator and register nothing; it is refused where it is written.
    class Forgot:
        pass

    with pytest.raises(RegistryError) as err:
        decorator(Forgot)
    assert f'@uqbench.{decorator.__name__}("name") above class' in str(err.value)
    assert "Forgot" in str(err.value)
    with pytest.raises(RegistryError, match="got 'bad name'"):
        decorator("bad name")  # a bad name is refused before any class is seen


def _listing_error(registry, path: Path, monkeypatch) -> str:
    """The RegistryError's message when the plug-ins installed under ``path`` are listed."""
    monkeypatch.syspath_prepend(str(path))
    registry.reset_discovery()
    with pytest.raises(RegistryError) as err:
        uqbench.list_posteriors()
    return str(err.value)


def test_an_entry_point_module_that_registers_nothing_names_itself(
    clean_registry, tmp_path, monkeypatch
) -> None:
    write_distribution(
        tmp_path,
        "uqbench-test-forgot",
        """
        [uqbench.posteriors]
        forgot = uqbench_test_forgot
        """,
        {
            "uqbench_test_forgot": """
            import uqbench

            class Forgot(uqbench.Posterior):  # no decorator
                def layer_factory(self):
                    return uqbench.PlainLayers()
            """
        },
    )
    msg = _listing_error(clean_registry, tmp_path, monkeypatch)
    assert msg.startswith("posterior plug-in 'forgot' (uqbench_test_forgot, from uqbench-test-")
    assert "registered no posterior" in msg
    assert "@uqbench.register_posterior('forgot')" in msg


def test_a_class_entry_point_must_use_the_name_its_decorator_gave(
    clean_registry, tmp_path, monkeypatch
) -> None:
    # Two names for one class would train it twice in a suite, under both.
    write_distribution(
        tmp_path,
        "uqbench-test-two-names",
        """
        [uqbench.posteriors]
        ep-name = uqbench_test_two_names:Named
        """,
        {
            "uqbench_test_two_names": """
            import uqbench

            @uqbench.register_posterior("decorated-name")
            class Named(uqbench.Posterior):
                def layer_factory(self):
                    return uqbench.PlainLayers()
            """
        },
    )
    msg = _listing_error(clean_registry, tmp_path, monkeypatch)
    assert "'ep-name'" in msg and "'decorated-name'" in msg
    assert "use one name for both" in msg


@pytest.mark.parametrize(
    ("decorator", "base"),
    [
        (uqbench.register_task, "uqbench.tasks.base.Task"),
        (uqbench.register_ood_set, "uqbench.ood.OODSet"),
    ],
)
def test_tasks_and_ood_sets_must_subclass_their_base(decorator, base) -> None:
    class NotOne:
        pass

    with pytest.raises(RegistryError) as err:
        decorator("uqbench-test-not-one")(NotOne)
    assert f"is not a subclass of {base}" in str(err.value)


def test_an_entry_point_naming_a_package_that_registers_in_a_submodule(
    clean_registry, tmp_path, monkeypatch
) -> None:
    """``mypkg = "mypkg"``, whose ``__init__`` imports the module that registers: fine."""
    write_distribution(
        tmp_path,
        "uqbench-test-pkg",
        """
        [uqbench.posteriors]
        uqbench-test-pkg = uqbench_test_pkg
        """,
        {},
    )
    pkg = tmp_path / "uqbench_test_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .fam import Fam  # noqa: F401\n")
    (pkg / "fam.py").write_text(
        "import uqbench\n\n"
        '@uqbench.register_posterior("uqbench-test-pkg-fam")\n'
        "class Fam(uqbench.Posterior):\n"
        "    def layer_factory(self):\n"
        "        return uqbench.PlainLayers()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clean_registry.reset_discovery()
    assert "uqbench-test-pkg-fam" in uqbench.list_posteriors()
