"""Suite files (TOML; built-in ones in ``benchmarks/suites/``, installed as
``uqbench.builtin_suites``): which runs to make, how.

A suite names methods, tasks and seeds, and per task (``[task.<name>]``) the
training, evaluation, data-subset and architecture settings, the OOD sets it is
evaluated on (``ood``), plus ``extra_methods`` run on that task only;
``[method.<name>]`` tables override a posterior family's config
(``[task.<task>.method.<name>]`` for one task only).
Every key is checked: a typo is an error naming the key and the file.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import math
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uqbench.architectures import check_arch_kwargs
from uqbench.errors import ConfigError
from uqbench.registry import OOD_SETS, POSTERIORS, TASKS
from uqbench.settings import DataSettings, EvalSettings, TrainSettings

TOP_KEYS = {"name", "description", "methods", "tasks", "seeds", "eval", "task", "method"}
#: A suite name is a folder under --out: no separators, no "..", nothing absolute.
SUITE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
#: Largest seed torch accepts.
MAX_SEED = 2**63 - 1
TASK_TABLE_KEYS = {"train", "eval", "data", "arch", "method", "extra_methods", "ood"}
#: What ``--set TASK.SECTION.KEY=VALUE`` may override on the command line, per task.
CLI_TASK_KEYS = {"train", "eval", "data", "arch", "ood"}


@dataclass
class RunSpec:
    """One (method, task, seed) run with its fully resolved settings."""

    method: str
    task: str
    seed: int
    train: dict[str, Any]
    eval: dict[str, Any]
    data: dict[str, Any]
    arch: dict[str, Any]
    posterior: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.method}-{self.task}-seed{self.seed}"

    def config(self) -> dict[str, Any]:
        """The settings that define this run (recorded in its results)."""
        return {
            "train": self.train,
            "eval": self.eval,
            "data": self.data,
            "arch": self.arch,
            "posterior": self.posterior,
        }

    def train_classes(self) -> tuple[type, ...]:
        """The registered classes whose code trains this run's model: posterior and task."""
        return POSTERIORS.get(self.method), TASKS.get(self.task)

    def code_classes(self) -> tuple[type, ...]:
        """Every registered class whose code makes this run: :meth:`train_classes`, then the
        OOD sets it is evaluated on (a plug-in OOD set's code changes only the evaluation)."""
        task_cls = TASKS.get(self.task)
        names = self.eval.get("ood")
        if names is None:
            names = getattr(task_cls, "ood_sets", ())
        return (*self.train_classes(), *(OOD_SETS.get(n) for n in names))

    def train_hash(self) -> str:
        """Identity of the trained model: everything but the evaluation settings."""
        ident = {k: v for k, v in self.config().items() if k != "eval"}
        return _digest({"method": self.method, "task": self.task, "seed": self.seed, **ident})

    def run_hash(self) -> str:
        """Identity of the whole run (training and evaluation)."""
        return _digest({"train": self.train_hash(), "eval": self.eval})


@dataclass
class Suite:
    """A parsed, validated suite file."""

    name: str
    path: Path
    description: str
    methods: list[str]
    tasks: list[str]
    seeds: list[int]
    eval: dict[str, Any] = field(default_factory=dict)
    task_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    method_tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def runs(self, overrides: dict[str, Any] | None = None) -> list[RunSpec]:
        """Resolve every (method, task, seed) run; ``overrides`` come from the CLI.

        Override keys: ``methods``, ``tasks``, ``seeds`` (lists), ``train``, ``eval`` and
        ``data`` (dicts applied to every task, after the suite's own settings), and
        ``task`` (``{task: table}``, tables as a suite's ``[task.<name>]`` with the keys
        train, eval, data, arch, ood; applied last, to that task only).
        """
        o = overrides or {}
        methods = o.get("methods") or self.methods
        tasks = o.get("tasks") or self.tasks
        seeds = o.get("seeds") or self.seeds
        known_m, known_t = POSTERIORS.names(), TASKS.names()
        for what, names, given in (
            ("method", methods, o.get("methods")),
            ("task", tasks, o.get("tasks")),
        ):
            twice = sorted({n for n in names if list(names).count(n) > 1})
            if twice:
                where = "command line" if given else str(self.path)
                raise ConfigError(f"{where}: {what}(s) named twice: {', '.join(twice)}")
        for m in methods:
            if m not in known_m:
                raise ConfigError(f"unknown method {m!r}; known: {', '.join(known_m)}")
        for t in tasks:
            if t not in known_t:
                raise ConfigError(f"unknown task {t!r}; known: {', '.join(known_t)}")
        _check_seeds(seeds, "command line" if o.get("seeds") else str(self.path))
        TrainSettings.check(o.get("train", {}), "command-line training override")
        EvalSettings.check(o.get("eval", {}), "command-line evaluation override")
        DataSettings.check(o.get("data", {}), "command-line data override")
        cli_tasks = o.get("task", {})
        for t, ct in cli_tasks.items():
            if t not in tasks:
                raise ConfigError(
                    f"--set {t}...: task {t!r} is not among the tasks run ({', '.join(tasks)})"
                )
            _check_task_table(ct, f"--set {t}", CLI_TASK_KEYS, t)
        specs = []
        for t in tasks:
            task_cls = TASKS.get(t)
            table = self.task_tables.get(t, {})
            ct = cli_tasks.get(t, {})
            TrainSettings.check(task_cls.train_defaults, f"task {t!r}: its train_defaults")
            _check_task_ood_sets(t, getattr(task_cls, "ood_sets", ()))
            train = {  # a task's train_defaults may name only the settings it changes
                **TrainSettings.defaults(),
                **task_cls.train_defaults,
                **table.get("train", {}),
                **o.get("train", {}),
                **ct.get("train", {}),
            }
            eval_settings = {
                **EvalSettings.defaults(),
                **self.eval,
                **table.get("eval", {}),
                **o.get("eval", {}),
                **ct.get("eval", {}),
            }
            asked = {**table.get("eval", {}), **ct.get("eval", {})}
            if (asked.get("rotations") or asked.get("corruptions")) and not task_cls.takes_shift():
                raise ConfigError(
                    f"task {t!r}: dataset shift (rotations, corruptions) needs images "
                    f"[C, H, W] with pixels in [0, 1] to classify; its inputs are "
                    f"{list(task_cls.in_shape)} in {list(task_cls.input_range)} "
                    f"({task_cls.kind})"
                )
            # Evaluation only: a different choice of OOD sets reuses the trained model.
            eval_settings["ood"] = list(ct.get("ood", table.get("ood", task_cls.ood_sets)))
            for name in eval_settings["ood"]:
                if name not in OOD_SETS.names():
                    raise ConfigError(
                        f"task {t!r}: unknown OOD set {name!r}; known: "
                        f"{', '.join(OOD_SETS.names()) or 'none'}"
                    )
                shapes = getattr(OOD_SETS.get(name), "in_shapes", None)
                if shapes is not None and tuple(task_cls.in_shape) not in map(tuple, shapes):
                    raise ConfigError(
                        f"task {t!r}: OOD set {name!r} gives inputs of shape "
                        f"{' or '.join(str(list(s)) for s in shapes)}, but the task takes "
                        f"{list(task_cls.in_shape)}"
                    )
            data_table = {**table.get("data", {}), **o.get("data", {}), **ct.get("data", {})}
            data = {k: data_table.get(k) for k in DataSettings.types()}
            arch = {**table.get("arch", {}), **ct.get("arch", {})}
            extra = [] if o.get("methods") else table.get("extra_methods", [])
            for m in [*methods, *[m for m in extra if m not in methods]]:
                if m not in known_m:
                    raise ConfigError(f"unknown method {m!r}; known: {', '.join(known_m)}")
                task_default = task_cls.method_defaults.get(m, {})
                _check_posterior_config(m, task_default, f"task {t!r} method_defaults[{m!r}]")
                post = {
                    **task_default,
                    **self.method_tables.get(m, {}),
                    **table.get("method", {}).get(m, {}),
                }
                _check_posterior_keys(m, post, str(self.path))
                for s in seeds:
                    specs.append(RunSpec(m, t, int(s), train, eval_settings, data, arch, post))
        return specs


def suite_dir() -> Path:
    """The folder of the built-in suites (package data of uqbench)."""
    return Path(str(importlib.resources.files("uqbench.builtin_suites")))


def list_suites() -> list[str]:
    """Names of the built-in suites."""
    return sorted(p.stem for p in suite_dir().glob("*.toml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a built-in suite by name, or a suite file by path, and validate it."""
    p = Path(name_or_path)
    if p.suffix != ".toml":
        if p.is_file():  # a path, not a name: say what is wrong with it
            raise ConfigError(
                f"{p} is not a suite file: suite files end in .toml (or name a built-in suite: "
                f"{', '.join(list_suites())})"
            )
        p = suite_dir() / f"{name_or_path}.toml"
        if not p.exists():
            raise ConfigError(
                f"unknown suite {str(name_or_path)!r}; built-in: {', '.join(list_suites())} "
                "(or give a path to a .toml file)"
            )
    if not p.exists():
        raise ConfigError(f"suite file {p} does not exist")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (a suite file is UTF-8 TOML)") from None
    return parse_suite(raw, p)


def parse_suite(raw: dict[str, Any], path: Path) -> Suite:
    """Validate the raw TOML of a suite file: every key, table name and value type."""
    _check_keys(raw, TOP_KEYS, str(path))
    for key in ("methods", "tasks", "seeds"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise ConfigError(f"{path}: {key!r} must be a non-empty list")
    for key in ("methods", "tasks"):
        if not all(isinstance(x, str) for x in raw[key]):
            raise ConfigError(f"{path}: {key!r} must be a list of names, got {raw[key]!r}")
    _check_seeds(raw["seeds"], str(path))
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not SUITE_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(
            f"{path}: name {name!r} must be a plain folder name (letters, digits, '_', '.', "
            "'+', '-'; it becomes <out>/<name>, so no '/', '..' or absolute path)"
        )
    if not isinstance(raw.get("description", ""), str):
        raise ConfigError(f"{path}: 'description' must be a string")
    eval_settings = raw.get("eval", {})
    EvalSettings.check(eval_settings, f"{path} [eval]")
    known_m, known_t = POSTERIORS.names(), TASKS.names()
    method_tables = raw.get("method", {})
    _check_tables(method_tables, known_m, "method", f"{path} [method]")
    for m, table in method_tables.items():
        _check_posterior_config(m, table, f"{path} [method.{m}]")
    tasks_tables = raw.get("task", {})
    _check_tables(tasks_tables, known_t, "task", f"{path} [task]")
    for t, table in tasks_tables.items():
        _check_task_table(table, f"{path} [task.{t}]", TASK_TABLE_KEYS, t)
    return Suite(
        name=name,
        path=path,
        description=str(raw.get("description", "")),
        methods=[str(m) for m in raw["methods"]],
        tasks=[str(t) for t in raw["tasks"]],
        seeds=[int(s) for s in raw["seeds"]],
        eval=dict(eval_settings),
        task_tables=dict(tasks_tables),
        method_tables=dict(method_tables),
    )


def _check_tables(tables: Any, known: list[str], kind: str, where: str) -> None:
    """Every sub-table must be named after a registered ``kind`` (a typo is an error)."""
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: expected tables of {kind}s, got {tables!r}")
    for name, table in tables.items():
        if name not in known:
            raise ConfigError(f"{where}: unknown {kind} {name!r}; known: {', '.join(known)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}.{name}: expected a table, got {table!r}")


def _check_task_ood_sets(task: str, names: Any) -> None:
    """Refuse a task class's ``ood_sets`` that is not a sequence of names (``("far")`` is a
    string, whose letters would be read as set names)."""
    if isinstance(names, list | tuple) and all(isinstance(n, str) for n in names):
        return
    hint = " (a tuple of one name is written ('name',))" if isinstance(names, str) else ""
    raise ConfigError(
        f"task {task!r}: its ood_sets must be a tuple of OOD set names, got {names!r}{hint}"
    )


def _check_seeds(seeds: Any, where: str) -> None:
    if not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds
    ):
        raise ConfigError(f"{where}: seeds must be integers from 0 to 2**63-1, got {seeds!r}")
    twice = sorted(s for s, n in Counter(seeds).items() if n > 1)
    if twice:
        raise ConfigError(f"{where}: seed {twice[0]} is listed twice (each seed runs once)")


def _check_posterior_keys(method: str, config: dict[str, Any], where: str) -> None:
    """Keys must be among the family's ``defaults``."""
    cls = POSTERIORS.get(method)
    bad = sorted(set(config) - set(cls.defaults))
    if bad:
        raise ConfigError(
            f"{where}: posterior {method!r} has no config key(s) {', '.join(bad)}; "
            f"known: {', '.join(sorted(cls.defaults)) or 'none'}"
        )


def _check_posterior_config(method: str, config: dict[str, Any], where: str) -> None:
    """Keys must be among the family's ``defaults``; values of the defaults' type.

    A family may name the type of a key whose default is None in ``config_types``
    (e.g. ``{"members": int}``); a key with neither is checked by the family itself.
    """
    _check_posterior_keys(method, config, where)
    cls = POSTERIORS.get(method)
    types = getattr(cls, "config_types", {}) or {}
    for k, v in config.items():
        want = types.get(k)
        default = cls.defaults[k]
        if want is None and default is not None:
            want = type(default)
        if want is None:
            continue
        wants = want if isinstance(want, tuple) else (want,)
        ok = any(_is_type(v, w) for w in wants)
        if not ok:
            names = " or ".join(w.__name__ for w in wants)
            raise ConfigError(f"{where}: {k} must be {names}, got {v!r}")


def _is_type(v: Any, want: type) -> bool:
    if want is bool:
        return isinstance(v, bool)
    if isinstance(v, bool):
        return False
    if want is float:
        return isinstance(v, int | float) and math.isfinite(v)
    return isinstance(v, want)


def _check_task_table(table: dict[str, Any], where: str, allowed: set[str], task: str) -> None:
    """Check a ``[task.<name>]`` table (from a suite file or ``--set``) of ``task``."""
    _check_keys(table, allowed, where)
    TrainSettings.check(table.get("train", {}), where + ".train")
    EvalSettings.check(table.get("eval", {}), where + ".eval")
    DataSettings.check(table.get("data", {}), where + ".data")
    arch = table.get("arch", {})
    if not isinstance(arch, dict):
        raise ConfigError(f"{where}.arch: expected a table, got {arch!r}")
    check_arch_kwargs(TASKS.get(task).arch, arch, where + ".arch")
    known_m = POSTERIORS.names()
    extra = table.get("extra_methods", [])
    if not isinstance(extra, list) or not all(isinstance(m, str) for m in extra):
        raise ConfigError(f"{where}: extra_methods must be a list of names, got {extra!r}")
    for m in extra:
        if m not in known_m:
            raise ConfigError(
                f"{where}: extra_methods names unknown method {m!r}; known: {', '.join(known_m)}"
            )
    per_method = table.get("method", {})
    _check_tables(per_method, known_m, "method", where + ".method")
    for m, cfg in per_method.items():
        _check_posterior_config(m, cfg, f"{where}.method.{m}")
    ood = table.get("ood")
    if ood is not None and (
        not isinstance(ood, list) or not all(isinstance(n, str) and n for n in ood)
    ):
        raise ConfigError(f"{where}.ood: expected a list of OOD set names, got {ood!r}")


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    bad = sorted(set(table) - allowed)
    if bad:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(allowed))}"
        )


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
