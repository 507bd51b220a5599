"""Train and evaluate a suite of (method x task x seed) runs, one result file per run.

Each finished run is written at once to ``<out>/<suite>/runs/<key>.json``; a trained
model lives in the checkpoint cache (outside git) under a hash of its training
settings. Running the same command again skips finished runs, reuses trained models,
and resumes a training that was interrupted midway.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

import uqbench
from uqbench.data import DataSource
from uqbench.errors import ConfigError
from uqbench.evaluate import evaluate_classification, evaluate_regression
from uqbench.paper import PAPER_METHODS
from uqbench.registry import POSTERIORS, TASKS
from uqbench.results import RESULTS_SCHEMA, RUN_SCHEMA
from uqbench.suites import RunSpec, Suite
from uqbench.tasks.base import Split, TaskData
from uqbench.train import train


def cache_dir() -> Path:
    """Where checkpoints live: ``$UQBENCH_CACHE_DIR`` or the XDG cache (``~/.cache/uqbench``)."""
    env = os.environ.get("UQBENCH_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "uqbench"


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a GPU asked for but absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"bad device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA GPU is available")
    return device


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, machine and git commit, for the results file."""
    import numpy

    env: dict[str, Any] = {
        "uqbench": uqbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = f"{env['cpu']} ({env['cpu_count']} cores)"
    return env


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    """The commit of the code that runs: ``$UQBENCH_GIT_COMMIT`` (for copies made without
    git metadata, e.g. a tree shipped to a GPU machine), else ``git rev-parse HEAD``."""
    if os.environ.get("UQBENCH_GIT_COMMIT"):
        return os.environ["UQBENCH_GIT_COMMIT"].strip()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _to_device(data: TaskData, device: torch.device) -> TaskData:
    """Move every split to ``device`` once, so that no batch is copied from the host."""
    if device.type == "cpu":
        return data

    def move(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.to(device)
        if isinstance(v, Split):
            return Split(v.x.to(device), v.y.to(device))
        return v

    return TaskData(
        move(data.train),
        move(data.test),
        {k: move(v) for k, v in data.ood.items()},
        data.files,
        data.notes,
        {k: move(v) for k, v in data.extra.items()},
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
    ) -> None:
        self.suite = suite
        self.out = Path(out) / suite.name
        self.runs_dir = self.out / "runs"
        self.source = source
        self.device = device
        self.command = command
        self.specs = suite.runs(overrides)
        self.progress = progress
        self.log = log
        self._data: dict[tuple[str, int, str], TaskData] = {}

    def run(self) -> dict[str, Any]:
        """Make every run not yet done, then merge them into ``results.json``."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        env = environment(self.device)
        todo = [s for s in self.specs if not self._is_done(s, env["git_commit"])]
        self.log(
            f"suite {self.suite.name}: {len(self.specs)} runs, {len(self.specs) - len(todo)} "
            f"already done; results -> {self.out}, checkpoints -> {cache_dir() / 'checkpoints'}"
        )
        for spec in todo:  # fail fast: a missing or refused data set stops us before training
            self.task_data(spec)
        for i, spec in enumerate(todo, 1):
            self.log(f"[{i}/{len(todo)}] {spec.key}")
            record = self.run_one(spec, env)
            path = self.runs_dir / f"{spec.key}.json"
            _write_json(path, record)
            self.log(
                f"    done in {record['train_seconds']:.1f}s train + "
                f"{record['eval_seconds']:.1f}s eval -> {path}"
            )
        return merge_results(self.out, self.suite.name, self.command, env)

    def _is_done(self, spec: RunSpec, commit: str | None = None) -> bool:
        """A run file with the same settings, made by the same code (git commit, if known).

        Results committed from another version of uqbench are redone, not reused; the
        checkpoint cache still spares retraining when only the code's evaluation changed.
        """
        path = self.runs_dir / f"{spec.key}.json"
        if not path.exists():
            return False
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        same_code = commit is None or record.get("git_commit") == commit
        return record.get("run_hash") == spec.run_hash() and same_code

    def task_data(self, spec: RunSpec) -> TaskData:
        key = (spec.task, spec.seed, json.dumps(spec.data, sort_keys=True))
        if key not in self._data:
            task = TASKS.get(spec.task)()
            self._data[key] = _to_device(
                task.load(self.source, seed=spec.seed, **spec.data), self.device
            )
        return self._data[key]

    def run_one(self, spec: RunSpec, env: dict[str, Any]) -> dict[str, Any]:
        """Train (or reuse) and evaluate one run; returns its result record."""
        task = TASKS.get(spec.task)()
        data = self.task_data(spec)
        model_spec = task.model_spec(data, spec.arch)
        torch.manual_seed(spec.seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(spec.seed)
        model = POSTERIORS.get(spec.method)(model_spec, **spec.posterior).to(self.device)
        ckpt = cache_dir() / "checkpoints" / f"{spec.key}-{spec.train_hash()}.pt"
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        log = train(
            model,
            data.train,
            seed=spec.seed,
            checkpoint=ckpt,
            progress=self.progress,
            desc=f"train {spec.key}",
            **spec.train,
        )
        t1 = time.perf_counter()
        model.eval()
        torch.manual_seed(spec.seed + 10_000)
        ev = spec.eval
        if task.kind == "classification":
            fgsm = {"default": not model.skip_fgsm_by_default, "all": True, "none": False}
            metrics = evaluate_classification(
                model,
                task,
                data,
                test_samples=ev["test_samples"],
                fgsm=fgsm[ev["fgsm"]] and bool(task.fgsm_eps),
                fgsm_samples=ev["fgsm_samples"],
                fgsm_n=ev["fgsm_n"],
                batch_size=ev["batch_size"],
                device=self.device,
                progress=self.progress,
                shift={
                    "n": ev.get("shift_n"),
                    "rotations": ev.get("rotations", []),
                    "corruptions": ev.get("corruptions", []),
                    "severities": ev.get("severities"),
                },
            )
        else:
            metrics = evaluate_regression(
                model,
                task,
                data,
                test_samples=ev["test_samples"],
                device=self.device,
                progress=self.progress,
            )
        eval_seconds = time.perf_counter() - t1
        peak_mb = None
        if self.device.type == "cuda":  # what one run needs, for packing runs onto one GPU
            peak_mb = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return {
            "schema": RUN_SCHEMA,
            "run_hash": spec.run_hash(),
            "method": spec.method,
            "display_name": model.display_name or spec.method,
            "task": spec.task,
            "task_display_name": task.display_name or spec.task,
            "seed": spec.seed,
            "train_seconds": log.seconds,  # for a cached model: when it was trained
            "eval_seconds": eval_seconds,
            "device": env["device_name"],
            "peak_memory_mb": peak_mb,
            "git_commit": env["git_commit"],  # run files outlive code versions: say which
            "config": {
                **spec.config(),
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
            },
            "train_log": log.to_dict(),
            "metrics": metrics,
        }


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _write_json(path: Path, obj: Any) -> None:
    """Write atomically, so an interrupted run never leaves a half-written file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=True))
    os.replace(tmp, path)


def merge_results(
    suite_out: Path, suite: str, command: str, env: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Merge every run file of ``suite_out/runs`` into ``suite_out/results.json``."""
    runs = [json.loads(p.read_text()) for p in sorted((suite_out / "runs").glob("*.json"))]
    runs.sort(key=lambda r: (r["task"], _method_order(r["method"]), r["seed"]))
    results = {
        "schema": RESULTS_SCHEMA,
        "suite": suite,
        "command": command,
        "environment": env or {},
        "runs": runs,
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
