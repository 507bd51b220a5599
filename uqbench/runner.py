"""Train and evaluate a suite of (method x task x seed) runs, one result file per run.

Each finished run is written at once to ``<out>/<suite>/runs/<key>.json``; a trained
model lives in the checkpoint cache (outside git) under a hash of its training
settings. Running the same command again skips finished runs, reuses trained models,
and resumes a training that was interrupted midway.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from uqbench.architectures import CLASSIFICATION
from uqbench.check import DataCopy, data_files, data_identity, data_mismatch, validate_metrics
from uqbench.compiling import CompiledLoss
from uqbench.data import DataSource, as_source
from uqbench.environment import cache_dir, environment
from uqbench.errors import (
    ConfigError,
    OutputError,
    PluginError,
    ResultsError,
    TrainingError,
    UQBenchError,
)
from uqbench.evaluate import evaluate_run
from uqbench.paper import PAPER_METHODS
from uqbench.provenance import code_version, plugin_sources, source_version, train_version
from uqbench.registry import POSTERIORS, TASKS
from uqbench.results import (
    RESULTS_SCHEMA,
    RUN_SCHEMA,
    readable_archive,
    unique_tmp,
    validate_runs,
)
from uqbench.settings import EvalSettings
from uqbench.suites import RunSpec, Suite
from uqbench.tasks.base import Split, TaskData
from uqbench.train import train

try:  # advisory locks (POSIX); elsewhere concurrent runs rely on unique temp names alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from uqbench.architectures import ModelSpec
    from uqbench.executors import Executor
    from uqbench.posterior import Posterior
    from uqbench.tasks.base import Task


def _to_device(data: TaskData, device: torch.device) -> TaskData:
    """Move every split to ``device`` once, so that no batch is copied from the host."""
    if device.type == "cpu":
        return data

    def move(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.to(device)
        if isinstance(v, Split):
            return Split(v.x.to(device), v.y.to(device), v.index)  # index: host-side
        return v

    return TaskData(
        move(data.train),
        move(data.test),
        {k: move(v) for k, v in data.ood.items()},
        data.files,
        data.notes,
        {k: move(v) for k, v in data.extra.items()},
        data.ood_labels,  # only counted, never fed to a model: they stay on the host
        data.ood_index,
    )


class Runner:
    """Runs a suite into ``out/<suite>``, resuming whatever was already done."""

    def __init__(
        self,
        suite: Suite,
        *,
        out: Path,
        source: DataSource,
        device: torch.device,
        command: str,
        overrides: dict[str, Any] | None = None,
        progress: bool = True,
        log=print,
        executor: Executor | None = None,
        vectorize_seeds: bool = False,
        compile_mode: str = "off",
    ) -> None:
        self.suite = suite
        self.out = Path(out) / suite.name
        self.runs_dir = self.out / "runs"
        self.source = source
        self.device = device
        self.command = command
        self.overrides = dict(overrides or {})
        self.specs = suite.runs(overrides)
        self.progress = progress
        self.log = log
        #: Runs elsewhere (``uqbench.executors.RayExecutor``); None: one by one, here.
        self.executor = executor
        #: How training steps run (:data:`uqbench.compiling.COMPILE_MODES`); not in run hashes.
        self.compile_mode = compile_mode
        #: ``{run key: error}`` of the runs an executor gave up on (the others finished).
        self.failed: dict[str, str] = {}
        self._data: dict[tuple[str, int, str], TaskData] = {}
        #: ``{(task, data and OOD settings): {dataset: copy}}`` of the data found now.
        self._copies: dict[tuple[str, str], dict[str, DataCopy]] = {}
        #: Keys of the runs this command wrote (made from the data found now).
        self._written: set[str] = set()
        #: Per-example outputs of the run being evaluated (see :func:`evaluate_classification`).
        self.outputs: dict[str, Any] = {}
        #: Train the seeds of each (method, task) as one model first (:mod:`uqbench.vectorize`).
        self.vectorize_seeds = vectorize_seeds
        #: ``{run key: seeds}`` of the runs whose models were trained together.
        self.vectorized: dict[str, list[int]] = {}

    def run(self) -> dict[str, Any]:
        """Make every run not yet done, then merge the matching ones into ``results.json``.

        A run that fails (diverges, gives non-finite metrics, raises) is recorded as
        failed in its run file and the others go on; ``results["failed"]`` lists them.
        Raises :class:`OutputError` when the results folder or the cache cannot be
        written, or another ``uqbench run`` is writing the same folder.
        """
        _prepare_dir(self.runs_dir, "results folder")
        _prepare_dir(cache_dir() / "checkpoints", "checkpoint cache")
        with _exclusive(self.out):
            return self._run_locked()

    def _run_locked(self) -> dict[str, Any]:
        env = environment(self.device)
        describe = getattr(self.executor, "environment", None)
        if describe is not None:  # runs made elsewhere: say where
            env = describe(env)
        todo = self.todo()
        self.log(
            f"suite {self.suite.name}: {len(self.specs)} runs, {len(self.specs) - len(todo)} "
            f"already done; results -> {self.out}, checkpoints -> {cache_dir() / 'checkpoints'}"
        )
        for run in todo:  # fail fast: a missing or refused data set stops us before training
            self.task_data(run)
        if self.vectorize_seeds:
            self.train_seed_groups(todo)
        if self.executor is not None:
            failed = self.failed = self.executor.run(self, todo, env)
            for run in todo:  # recorded like a local failure: the suite's summary lists it
                if run.key in failed:
                    self.write_run(run, self.failed_record(run, env, failed[run.key]))
        for i, run in enumerate(todo if self.executor is None else [], 1):
            self.log(f"[{i}/{len(todo)}] {run.key}")
            self.outputs = {}
            try:
                record = self.run_one(run, env)
            except Exception as exc:  # noqa: BLE001 - recorded; the other runs go on
                record = self.failed_record(run, env, exc)
                self.failed[run.key] = record["error"]
                path = self.write_run(run, record)
                self.log(f"    FAILED: {record['error']} -> {path}")
                continue
            path = self.write_run(run, record, self.outputs)
            self.log(
                f"    done in {record['train_seconds']:.1f}s train + "
                f"{record['eval_seconds']:.1f}s eval -> {path}"
            )
        return merge_results(
            self.out,
            self.suite.name,
            self.command,
            env,
            expected=self.expected_specs(),
            stale=self._merge_stale,
        )

    def todo(self) -> list[RunSpec]:
        """The suite's runs not yet done in the results folder (see :meth:`_is_done`)."""
        return [s for s in self.specs if not self._is_done(s)]

    def train_seed_groups(self, todo: list[RunSpec]) -> None:
        """Train the seeds of each (method, task, settings) of ``todo`` as one model.

        Each seed's trained model lands in its own run's checkpoint, so the runs that
        follow only evaluate. A group that cannot be trained together (a family that has not
        opted in, a failure of the vectorized step, checkpoints at different points) is
        reported in one line and left to the separate runs, which resume any checkpoint
        the group wrote.
        """
        from uqbench.vectorize import SeedGroup, cannot_vectorize

        groups: dict[str, list[RunSpec]] = {}
        for run in todo:
            same = [run.method, run.task, run.train, run.data, run.arch, run.posterior]
            groups.setdefault(json.dumps(same, sort_keys=True, default=str), []).append(run)
        for runs in groups.values():
            if len(runs) < 2:
                continue
            seeds = [r.seed for r in runs]
            label = f"{runs[0].method}-{runs[0].task} seeds {', '.join(map(str, seeds))}"
            why = cannot_vectorize(POSTERIORS.get(runs[0].method))
            if why is not None:
                self.log(f"vectorized seeds: {label}: {why}; training them separately")
                continue
            self.log(f"vectorized seeds: training {label} as one model")
            try:
                built, states = [], []
                for r in runs:  # each RNG state right after its own model was built
                    built.append(build_run_model(r, self.task_data(r), self.device))
                    cuda = self.device.type == "cuda"
                    cuda_state = torch.cuda.get_rng_state(self.device) if cuda else None
                    states.append((torch.get_rng_state(), cuda_state))
                group = SeedGroup(
                    [b[2] for b in built],
                    [self.task_data(r).train for r in runs],
                    seeds=seeds,
                    rng_states=states,
                    checkpoints=[b[3] for b in built],
                )
                group.train(
                    progress=self.progress,
                    desc=f"train {runs[0].method}-{runs[0].task} x{len(runs)}",
                    log_message=self.log,
                    **runs[0].train,
                )
            except Exception as exc:  # noqa: BLE001 - the separate runs go on from here
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                self.log(
                    f"vectorized seeds: {label} cannot be trained as one "
                    f"({type(exc).__name__}: {first}); training them separately"
                )
                continue
            if group.vectorized_seeds is not None:
                for r in runs:
                    self.vectorized[r.key] = list(group.vectorized_seeds)

    def expected_specs(self) -> list[RunSpec]:
        """The runs whose files may be merged: the suite's runs with this command's setting
        overrides, plus the runs it selected (``--methods`` etc. choose what to make now,
        not what the results hold).

        A run file of a seed, task or family the suite does not name (made by an earlier
        command with ``--seeds``, ``--tasks`` or ``--methods``, a plug-in say) counts too, as
        the run the suite's settings give that (family, task, seed): when it was made with
        them, it stays in the results of later commands.
        """
        settings = {k: v for k, v in self.overrides.items() if k in ("train", "eval", "data")}
        per_task = self.overrides.get("task") or {}  # --set TASK...: that task's runs only

        def overrides(tasks: list[str]) -> dict[str, Any]:
            own = {t: v for t, v in per_task.items() if t in tasks}
            return {**settings, "tasks": tasks, **({"task": own} if own else {})}

        specs = {s.key: s for s in self.suite.runs(overrides(list(self.suite.tasks)))}
        specs.update({s.key: s for s in self.specs})
        found: dict[tuple[str, str], list[int]] = {}
        methods, tasks = set(POSTERIORS.names()), set(TASKS.names())
        paths = sorted(self.runs_dir.glob("*.json")) if self.runs_dir.is_dir() else []
        for path in paths:
            if path.stem in specs:
                continue
            # The file says which run it is (its name would not: names may hold "-").
            record, _ = _load_run_file(path)
            if record is None:
                continue
            method, task, seed = record["method"], record["task"], record["seed"]
            names = isinstance(method, str) and isinstance(task, str)
            if names and method in methods and task in tasks and type(seed) is int:
                found.setdefault((method, task), []).append(seed)
        for (method, task), seeds in sorted(found.items()):
            over = {**overrides([task]), "methods": [method], "seeds": sorted(seeds)}
            try:
                extra = self.suite.runs(over)
            except UQBenchError:  # not a run this suite can make: left out, with the reason
                continue
            specs.update({s.key: s for s in extra if s.key not in specs})
        return list(specs.values())

    def write_run(
        self, run: RunSpec, record: dict[str, Any], outputs: dict[str, Any] | None = None
    ) -> Path:
        """Write one run's file, and its per-example ``outputs`` compressed beside it (the
        driver alone does, whatever the executor). A finished run of the same name made
        with other settings is kept, not overwritten (:meth:`supersede`)."""
        path = self.runs_dir / f"{run.key}.json"
        self.supersede(run)
        self._written.add(run.key)
        if outputs:
            record["predictions"] = _write_outputs(self.runs_dir / f"{run.key}.npz", outputs)
        _write_json(path, record)
        return path

    def _outputs_readable(self, record: dict[str, Any]) -> bool:
        """Whether the saved per-example outputs a run record names (if any) read back."""
        preds = record.get("predictions")
        return not isinstance(preds, str) or readable_archive(self.runs_dir / Path(preds).name)

    def superseded(self, run: RunSpec) -> dict[str, Any] | None:
        """The finished run file of ``run``'s name that writing ``run`` would replace while
        it holds results: made with other settings (a quick test with ``--epochs 1`` in a
        folder of real results), by another version of the code (its ``code_version``), or
        with its saved outputs missing or damaged (the run is made again). None when there
        is none."""
        record, _ = _load_run_file(self.runs_dir / f"{run.key}.json")
        if record is None or record.get("status", "ok") != "ok":
            return None
        return record if self._stale(run, record) is not None else None

    def _stale(self, run: RunSpec, record: dict[str, Any]) -> str | None:
        """Why the finished run file ``record`` of ``run``'s name cannot stand as ``run``'s
        result (None: it can): other settings, other code, its saved outputs unreadable, or
        made from data files whose contents have changed since."""
        if record.get("run_hash") != run.run_hash():
            return "made with other settings"
        if record.get("code_version") != self.code_version(run):
            return "made by other code"
        if not self._outputs_readable(record):
            return "its saved outputs are missing or damaged"
        return self._data_changed(run, record)

    @staticmethod
    def _copy_key(run: RunSpec) -> tuple[str, str]:
        """What a task's data copy depends on: the task, its data and OOD settings."""
        return (run.task, json.dumps([run.data, run.eval.get("ood")], sort_keys=True))

    def _data_changed(self, run: RunSpec, record: dict[str, Any]) -> str | None:
        """How the data ``record`` was made from differs from the copy found now
        (:func:`uqbench.check.data_mismatch`), or None: the same, the record names no data
        files, or no data can be read here without downloading (a finished run needs none to
        be merged or reported)."""
        recorded = data_identity(data_files(record))
        if not recorded or run.key in self._written:  # nothing to compare; made just now
            return None
        key = self._copy_key(run)
        if key not in self._copies:
            try:  # never downloads: a copy fetched now would not be the one the runs saw
                data = TASKS.get(run.task)().load_with_ood(
                    replace(as_source(self.source), download=False),
                    ood=run.eval.get("ood"),
                    seed=run.seed,
                    **run.data,
                )
                self._copies[key] = data_identity(data.files)
            except (UQBenchError, OSError) as exc:  # unreadable here: finished runs stand
                self._copies[key] = {}
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                self.log(
                    f"task {run.task}: its data cannot be read here ({first}); its finished "
                    "runs are kept without checking that they were made from the same data"
                )
        differ = data_mismatch(recorded, self._copies[key])
        return None if differ is None else f"made from another copy of {differ}"

    def _merge_stale(self, run: RunSpec, record: dict[str, Any]) -> str | None:
        """:meth:`_data_changed` for the merge, where it matters: for the tasks whose data
        this command read (the runs of a task it never touched are all as they were, one
        copy among themselves, and need no data loaded to be merged)."""
        return self._data_changed(run, record) if self._copy_key(run) in self._copies else None

    def supersede(self, run: RunSpec) -> Path | None:
        """Move a finished run that ``run`` replaces (:meth:`superseded`; with its saved
        outputs) to ``runs/superseded/``, named with its run hash: nothing computed is
        lost, and the merge does not read that folder."""
        record = self.superseded(run)
        path = self.runs_dir / f"{run.key}.json"
        refused = record is None and path.is_file() and _load_run_file(path)[0] is None
        if record is None and not refused:
            return None
        dest = self.runs_dir / "superseded"
        dest.mkdir(exist_ok=True)
        if refused:  # a file the merge refuses (a NaN, a string seed: edited by hand?) too
            moved = dest / f"{run.key}.refused-{uuid.uuid4().hex[:8]}.json"
            os.replace(path, moved)
            self.log(
                f"    kept the run file it replaces, which cannot be read as a run, as {moved}"
            )
            return moved
        assert record is not None
        tag = str(record.get("run_hash", "unknown"))[:12]
        if record.get("run_hash") == run.run_hash():  # same settings, older code, outputs, data
            tag += f".{record.get('code_version')}"
        if (dest / f"{run.key}.{tag}.json").exists():  # replaced once before: keep both
            tag += f".{uuid.uuid4().hex[:8]}"
        moved = dest / f"{run.key}.{tag}.json"
        preds = record.get("predictions")
        if isinstance(preds, str) and (self.runs_dir / Path(preds).name).is_file():
            os.replace(self.runs_dir / Path(preds).name, dest / f"{run.key}.{tag}.npz")
        os.replace(self.runs_dir / f"{run.key}.json", moved)
        self.log(f"    kept the finished {run.key} it replaces as {moved}")
        return moved

    def code_version(self, run: RunSpec) -> str:
        """Version of the code that makes ``run``: see :mod:`uqbench.provenance`."""
        return code_version(*run.code_classes())

    def _is_done(self, run: RunSpec) -> bool:
        """A finished run file with the same settings, made by the same code.

        Results made by another version of uqbench (its ``code_version``) are redone,
        not reused, and so are failed runs; the checkpoint cache still spares
        retraining when only the code's evaluation changed.
        """
        record, _ = _load_run_file(self.runs_dir / f"{run.key}.json")
        if record is None or record.get("status", "ok") != "ok":
            return False
        stale = self._stale(run, record)  # run again; supersede() keeps this record
        if stale is not None and stale.startswith("made from another copy"):  # news to a user
            self.log(f"{run.key}: finished, but {stale}: to be made again")
        return stale is None

    def failed_record(
        self, run: RunSpec, env: dict[str, Any], exc: Exception | str
    ) -> dict[str, Any]:
        """The run file of a run that failed: what, why (an exception, or the one-line
        error an executor reported), and no metrics."""
        if isinstance(exc, str):
            error, tb = (exc if run.key in exc else f"{run.key}: {exc}"), None
        elif isinstance(exc, UQBenchError):
            error, tb = (str(exc) if run.key in str(exc) else f"{run.key}: {exc}"), None
        else:
            error = f"{run.key}: {type(exc).__name__}: {exc}"
            tb = "".join(traceback.format_exception(exc))
        return {
            "schema": RUN_SCHEMA,
            "status": "failed",
            "run_hash": run.run_hash(),
            "code_version": self.code_version(run),
            "plugins": plugin_sources(*run.code_classes()),
            "method": run.method,
            "task": run.task,
            "seed": run.seed,
            "device": env["device_name"],
            "git_commit": env["git_commit"],
            "config": run.config(),
            "error": error,
            "traceback": tb,
        }

    def task_data(self, run: RunSpec) -> TaskData:
        ood = run.eval.get("ood")
        key = (run.task, run.seed, json.dumps([run.data, ood], sort_keys=True))
        if key not in self._data:
            task = TASKS.get(run.task)()
            self._data[key] = _to_device(
                task.load_with_ood(self.source, ood=ood, seed=run.seed, **run.data),
                self.device,
            )
            self._copies.setdefault(self._copy_key(run), data_identity(self._data[key].files))
        return self._data[key]

    def run_one(self, run: RunSpec, env: dict[str, Any]) -> dict[str, Any]:
        """Train (or reuse) and evaluate one run; returns its result record.

        The evaluation's per-example outputs go to ``self.outputs`` (saved by :meth:`run`).
        """
        record = make_run(
            run,
            self.task_data(run),
            self.device,
            env,
            progress=self.progress,
            log=self.log,
            keep=self.outputs,
            compile_mode=self.compile_mode,
        )
        if run.key in self.vectorized:  # how it was trained; not part of what the run is
            record["vectorized_seeds"] = self.vectorized[run.key]
        return record


def check_family_values(specs: Iterable[RunSpec], where: str) -> None:
    """Build each distinct (family, task, config, arch) of ``specs`` once on the meta device
    (no memory, no data, no random draw), so that a value the family refuses (``members =
    0``, ``p = 1.5``, ``max_std = -1``) is one :class:`ConfigError` naming ``where`` before
    anything runs, not a failed run when its turn comes. A family that cannot be built
    this way (it needs its data or a real device) is left to its run."""
    from types import SimpleNamespace

    seen: set[str] = set()
    rng = torch.get_rng_state()
    try:
        for run in specs:
            key = json.dumps([run.method, run.task, run.posterior, run.arch], default=str)
            if key in seen:
                continue
            seen.add(key)
            try:
                spec = TASKS.get(run.task)().model_spec(SimpleNamespace(train=range(1)), run.arch)
                with torch.device("meta"):
                    POSTERIORS.get(run.method)(spec, **run.posterior)
            except (ConfigError, PluginError) as exc:
                raise ConfigError(
                    f"{where}: {run.method} on {run.task} with {run.posterior or 'its defaults'}"
                    f" (the suite's tables, the task's method_defaults or --set): {exc}"
                ) from None
            except Exception:  # noqa: BLE001, S112 - not buildable off its data: its run says
                continue
    finally:
        torch.set_rng_state(rng)


def build_run_model(
    run: RunSpec, data: TaskData, device: torch.device
) -> tuple[Task, ModelSpec, Posterior, Path]:
    """A run's task, model spec, freshly initialised model and training checkpoint path.

    Seeds torch's RNG with the run's seed first: the model's initialisation, and the noise
    its training draws afterwards, are the run's own.
    """
    task = TASKS.get(run.task)()
    model_spec = task.model_spec(data, run.arch)
    torch.manual_seed(run.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(run.seed)
    model = POSTERIORS.get(run.method)(model_spec, **run.posterior).to(device)
    ckpt_key = _digest(
        {
            "train": run.train_hash(),
            "train_version": train_version(*run.train_classes()),
            "spec": model_spec.to_dict(),
            "resolved_posterior": _jsonable(model.config),
        }
    )
    return task, model_spec, model, cache_dir() / "checkpoints" / f"{run.key}-{ckpt_key}.pt"


def make_run(
    run: RunSpec,
    data: TaskData,
    device: torch.device,
    env: dict[str, Any],
    *,
    progress: bool = False,
    log: Callable[[str], Any] = print,
    keep: dict[str, Any] | None = None,
    compile_mode: str = "off",
) -> dict[str, Any]:
    """Train (or reuse from the checkpoint cache) and evaluate one run; return its record.

    The evaluation's per-example outputs (arrays) are put in ``keep`` when it is given.
    ``compile_mode``: train through :class:`uqbench.compiling.CompiledLoss` (equal to eager
    within float tolerance only); the record's ``train_steps`` says how the steps ran.

    A top-level function of picklable arguments, so that every executor calls the same
    code: the local loop in this process, a Ray task on another machine. It writes only
    checkpoints (under :func:`cache_dir`); the caller writes the run file.
    """
    task, model_spec, model, ckpt = build_run_model(run, data, device)
    classes = run.code_classes()
    version = code_version(*classes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log = train(
        model,
        data.train,
        seed=run.seed,
        checkpoint=ckpt,
        progress=progress,
        desc=f"train {run.key}",
        log_message=log,
        loss_fn=None if compile_mode == "off" else CompiledLoss(model, compile_mode, device, log),
        **run.train,
    )
    t1 = time.perf_counter()
    model.eval()
    torch.manual_seed(run.seed + 10_000)
    metrics = evaluate_run(
        model,
        task,
        data,
        EvalSettings.from_dict(run.eval),
        device=device,
        progress=progress,
        keep=keep,
    )
    eval_seconds = time.perf_counter() - t1
    bad = nonfinite_paths(metrics)
    if bad:
        raise TrainingError(
            f"{run.key}: evaluation gave non-finite metrics ({', '.join(bad[:8])}); "
            f"the trained model is kept in {ckpt}"
        )
    try:  # what the merge would refuse fails the run once, not every later merge
        validate_metrics(metrics, f"{run.key}: evaluation gave metrics that cannot be compared")
    except ResultsError as exc:
        raise TrainingError(f"{exc}; the trained model is kept in {ckpt}") from None
    peak_mb = None
    if device.type == "cuda":  # what one run needs, for packing runs onto one GPU
        peak_mb = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    record = {
        "schema": RUN_SCHEMA,
        "status": "ok",
        "run_hash": run.run_hash(),
        "code_version": version,
        "source_version": source_version(*classes),
        "plugins": plugin_sources(*classes),
        "checkpoint": str(ckpt),  # a model file: uqbench.load_posterior(path)
        "method": run.method,
        "display_name": model.display_name or run.method,
        "task": run.task,
        "task_display_name": task.display_name or run.task,
        "seed": run.seed,
        "train_seconds": log.seconds,  # for a cached model: when it was trained
        "eval_seconds": eval_seconds,
        "device": env["device_name"],
        "train_steps": log.train_steps,  # eager, or compiled: how the training steps ran
        "peak_memory_mb": peak_mb,
        "git_commit": env["git_commit"],  # run files outlive code versions: say which
        "config": {
            **run.config(),
            "spec": model_spec.to_dict(),
            "resolved_posterior": _jsonable(model.config),
        },
        "data": {
            "files": data.files,
            "verified": data.verified,
            "notes": data.notes,
            "n_train": len(data.train),
            "n_test": len(data.test),
            "n_ood": {k: int(v.shape[0]) for k, v in data.ood.items()},
            # regression targets are not classes
            **({"class_counts": data.class_counts()} if task.kind == CLASSIFICATION else {}),
        },
        "train_log": log.to_dict(),
        "metrics": metrics,
    }
    bad = nonfinite_paths(record)
    if bad:  # JSON has no NaN or infinity; a record holding one is not a result
        raise TrainingError(f"{run.key}: non-finite values in the run record ({bad[0]})")
    return record


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _digest(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def nonfinite_paths(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every NaN or infinite number in a nested dict/list."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [prefix or "value"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in nonfinite_paths(v, f"{prefix}.{k}".lstrip("."))]
    if isinstance(obj, list | tuple):
        return [p for i, v in enumerate(obj) for p in nonfinite_paths(v, f"{prefix}[{i}]")]
    return []


def _write_json(path: Path, obj: Any) -> None:
    """Write strict JSON atomically (a unique temp file, then a rename), so that an
    interrupted or concurrent writer never leaves a half-written file."""
    text = json.dumps(obj, indent=1, allow_nan=False)
    tmp = unique_tmp(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _prepare_dir(path: Path, what: str) -> None:
    """Create ``path`` and make sure a file can be written there, before any training."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = unique_tmp(path / "write-probe")
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"cannot write the {what} {path}: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else "")
        ) from None


@contextlib.contextmanager
def _exclusive(suite_out: Path) -> Iterator[None]:
    """Hold ``suite_out/.lock`` for the duration; OutputError naming the holder if taken."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = suite_out / ".lock"
    fh = open(path, "a+")  # noqa: SIM115 - held for the duration of the run
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise OutputError(
                f"{suite_out} is being written by another uqbench run ({holder}); wait for it "
                "to finish, or give this one another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(
            f"pid {os.getpid()} on {socket.gethostname()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
        )
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_run_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A run file's record, or None and why it cannot be used (what the merge and the
    check of finished runs read: a file the report or ``check`` would refuse is not a
    finished run either)."""
    try:
        record = json.loads(path.read_text(), parse_constant=_no_constant)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except UnicodeDecodeError:
        return None, "not a text (UTF-8 JSON) file"
    except ValueError as exc:
        if "is not JSON" in str(exc):  # NaN or Infinity: Python writes them, JSON has none
            return None, f"holds {str(exc).split()[0]}, which JSON has not (edited by hand?)"
        return None, "not valid JSON (truncated?)"
    if not isinstance(record, dict) or not all(k in record for k in ("method", "task", "seed")):
        return None, "not a uqbench run file"
    try:
        validate_runs([record], "run file")
    except ResultsError:
        return None, "its method, task or seed is not a string, string and whole number"
    if path.stem != f"{record['method']}-{record['task']}-seed{record['seed']}":
        return None, (
            f"its run is {record['method']}-{record['task']}-seed{record['seed']}, "
            "not what its file name says (a copy?)"
        )
    if record.get("status", "ok") == "ok":
        if not isinstance(record.get("metrics"), dict):
            return None, "has no metrics"
        try:
            validate_metrics(record["metrics"], "its metrics")
        except ResultsError as exc:
            return None, str(exc)
    return record, None


def _settings_diff(record: dict[str, Any], run: RunSpec) -> str:
    """What differs between a run file's settings and the ones asked for, briefly."""
    have, want = record.get("config") or {}, run.config()
    diffs = []
    for part, wanted in want.items():
        got = have.get(part)
        if isinstance(wanted, dict) and isinstance(got, dict):
            for k in sorted(set(wanted) | set(got)):
                if got.get(k) != wanted.get(k):
                    diffs.append(f"{part}.{k} {got.get(k)!r} instead of {wanted.get(k)!r}")
        elif got != wanted:
            diffs.append(f"{part} {got!r} instead of {wanted!r}")
    return "; ".join(diffs[:4]) or "settings differ"


def _write_outputs(path: Path, outputs: dict[str, Any]) -> str:
    """Save per-example outputs compressed (atomically); returns the file name."""
    import numpy as np

    tmp = unique_tmp(path)  # like every other write: no temp name shared between processes
    try:
        with open(tmp, "wb") as fh:  # a file object: numpy adds no ".npz" to the name
            np.savez_compressed(fh, **outputs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.name


def merge_results(
    suite_out: Path,
    suite: str,
    command: str,
    env: dict[str, Any] | None = None,
    expected: Iterable[RunSpec] | None = None,
    stale: Callable[[RunSpec, dict[str, Any]], str | None] | None = None,
) -> dict[str, Any]:
    """Merge the run files of ``suite_out/runs`` into ``suite_out/results.json``.

    With ``expected`` (the runs the command asks for), only run files with the same
    settings (run hash) made by the current code are merged, and with ``stale`` only those
    for which it gives no reason (the runner's: made from another copy of the data); the
    others, and any file that is unreadable or not a run, are listed in
    ``results["left_out"]`` with the reason. Failed runs are listed in ``results["failed"]``,
    never in ``runs``.
    """
    want = {s.key: s for s in expected} if expected is not None else None
    runs: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    left_out: list[dict[str, str]] = []
    for path in sorted((suite_out / "runs").glob("*.json")):
        record, why = _load_run_file(path)
        if record is None:
            left_out.append({"file": path.name, "reason": str(why)})
            continue
        if want is not None:
            run = want.get(path.stem)
            if run is None:
                why = "not a run of this suite and command"
            elif record.get("run_hash") != run.run_hash():
                why = f"made with other settings: {_settings_diff(record, run)}"
            elif record.get("code_version") != code_version(*run.code_classes()):
                why = "made by another version of the code (code_version differs)"
            elif stale is not None and record.get("status", "ok") == "ok":
                why = stale(run, record)
                if why:  # a run this command did not select (others were made again)
                    why += (
                        f" (this command with `--methods {run.method} --tasks {run.task} "
                        f"--seeds {run.seed}` makes it again)"
                    )
            if why:
                left_out.append({"file": path.name, "reason": why})
                continue
        if record.get("status", "ok") == "ok":
            runs.append(record)
        else:
            keys = ("method", "task", "seed", "error", "code_version", "git_commit")
            failed.append({k: record.get(k) for k in keys})
    runs.sort(key=lambda r: (r["task"], _method_order(r["method"]), r["seed"]))
    results = {
        "schema": RESULTS_SCHEMA,
        "suite": suite,
        "command": command,
        "environment": env or {},
        "runs": runs,
        "failed": failed,
        "left_out": left_out,
    }
    _write_json(suite_out / "results.json", results)
    return results


def _method_order(name: str) -> tuple[int, str]:
    """Sort key: the paper's Table 2 column order, then anything else by name."""
    order = PAPER_METHODS
    return (order.index(name) if name in order else len(order), name)


def describe(specs: Iterable[RunSpec]) -> str:
    """One line per run, for ``--dry-run``."""
    return "\n".join(f"{s.key}: {json.dumps(s.config(), sort_keys=True)}" for s in specs)


def argv_command() -> str:
    """The command line that invoked us, as the user typed it (for the report)."""
    return " ".join(["uqbench", *sys.argv[1:]])
