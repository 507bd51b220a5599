"""What one seed of a suite costs on this machine: training steps timed, evaluation run whole.

    python -m uqbench.benchmarks.suite_cost [SUITE] [--seed 0] [--steps 20] [--additions]

The question it answers is the quick suite's budget (at most 2 hours per seed on 2 CPU
cores), which the suite's own run files cannot answer when they were made on a shared,
loaded machine. For every run of SUITE at one seed, built exactly as the runner builds it
(:func:`uqbench.runner.build_run_model`, the suite's data, settings and threads):

- **training**: ``--warmup`` steps, then two timed calls of :func:`uqbench.train.train` of
  ``--steps`` and ``2 x --steps`` steps on the first rows of the training set; the step
  time is their difference over ``--steps`` (what a call costs once, such as its first,
  contract-checked step, cancels); small steps are timed over more of them, so that a
  timed call lasts about ``MIN_TIMED_S`` (judged from the warm-up call). A step costs the
  same whatever rows it draws, so the run's training time is estimated as its step count times that;
- **evaluation**: the run's whole evaluation (:func:`uqbench.evaluate.evaluate_run` at the
  suite's settings), timed once, on the briefly trained model (inference costs the same
  before and after training);
- with ``--additions``, each classification run is evaluated a second time without what
  issue 18 added (the shift sets and every OOD set after the first), so that their cost is
  measured rather than estimated.

Loading each task's data is timed too. Writes ``suite-cost-SUITE.md`` and ``.json`` to
``--out`` (default ``results/perf``) and prints where. Run it on an otherwise idle
machine: it records the load average before and after, and a busy machine inflates every
number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from uqbench.architectures import CLASSIFICATION
from uqbench.cpu import tune_malloc
from uqbench.data.source import as_source
from uqbench.environment import cpu_model
from uqbench.errors import ConfigError, UQBenchError
from uqbench.evaluate import evaluate_run
from uqbench.registry import TASKS
from uqbench.runner import build_run_model
from uqbench.settings import EvalSettings
from uqbench.suites import RunSpec, load_suite
from uqbench.tasks.base import Split, TaskData
from uqbench.train import train

#: Evaluation settings that issue 18 added (dataset shift); with ``ood`` past its first set.
ADDITIONS = ("shift_n", "rotations", "corruptions", "severities")

#: Seconds that each timed training call should last at least (see :func:`cost_of`).
MIN_TIMED_S = 3.0


def _timed_train(model: Any, data: Split, run: RunSpec, steps: int) -> tuple[float, int]:
    """Seconds and steps of one :func:`train` call of at least ``steps`` steps."""
    batch = int(run.train["batch_size"])
    rows = min(len(data), steps * batch)
    per_epoch = -(-rows // batch)
    epochs = -(-steps // per_epoch)
    subset = Split(data.x[:rows], data.y[:rows])
    settings = {**run.train, "epochs": epochs}
    t0 = time.perf_counter()
    train(model, subset, seed=run.seed, checkpoint=None, progress=False, **settings)
    return time.perf_counter() - t0, epochs * per_epoch


def run_steps(run: RunSpec, data: TaskData) -> int:
    """The number of training steps ``run`` takes (what :func:`train` loops over)."""
    batch = int(run.train["batch_size"])
    return int(run.train["epochs"]) * max(1, -(-len(data.train) // batch))


def paper_only(run: RunSpec, data: TaskData) -> tuple[EvalSettings, TaskData]:
    """The run's evaluation without issue 18's additions: no shift, only the first OOD set."""
    settings = {k: v for k, v in run.eval.items() if k not in ADDITIONS}
    first = list(data.ood)[:1]
    kept = dataclasses.replace(
        data,
        ood={k: data.ood[k] for k in first},
        ood_labels={k: v for k, v in data.ood_labels.items() if k in first},
    )
    return EvalSettings.from_dict(settings), kept


def cost_of(
    run: RunSpec, data: TaskData, *, steps: int, warmup: int, additions: bool
) -> dict[str, Any]:
    """Measured step time, estimated training time and measured evaluation time of ``run``."""
    device = torch.device("cpu")
    task, _, model, _ = build_run_model(run, data, device)
    t_warm, n_warm = _timed_train(model, data.train, run, warmup)
    n_steps = run_steps(run, data)
    # Small steps (the toy task's) are timed over more of them, so that a timed call lasts
    # about MIN_TIMED_S (judged from the warm-up call, which also pays the first step's
    # contract check) and the clock's and the scheduler's jitter stay small against it.
    steps = min(max(steps, math.ceil(MIN_TIMED_S * n_warm / max(t_warm, 1e-9))), n_steps)
    t_short, n_short = _timed_train(model, data.train, run, steps)
    t_long, n_long = _timed_train(model, data.train, run, 2 * steps)
    if t_long <= t_short:  # jitter larger than the extra steps: time the long call again
        t_long, n_long = _timed_train(model, data.train, run, 2 * steps)
    if t_long <= t_short:
        raise RuntimeError(
            f"{run.key}: {n_long} steps took no longer than {n_short}; the machine is too "
            "busy to time this run (or raise --steps)"
        )
    step_s = (t_long - t_short) / (n_long - n_short)
    model.eval()
    torch.manual_seed(run.seed + 10_000)
    t0 = time.perf_counter()
    evaluate_run(model, task, data, EvalSettings.from_dict(run.eval), device=device, progress=False)
    eval_s = time.perf_counter() - t0
    row: dict[str, Any] = {
        "run": run.key,
        "method": run.method,
        "task": run.task,
        "train_steps": n_steps,
        "timed_steps": n_long - n_short,
        "step_ms": 1000 * step_s,
        "train_s": step_s * n_steps,
        "eval_s": eval_s,
    }
    if additions and task.kind == CLASSIFICATION:
        settings, kept = paper_only(run, data)
        torch.manual_seed(run.seed + 10_000)
        t0 = time.perf_counter()
        evaluate_run(model, task, kept, settings, device=device, progress=False)
        row["eval_without_additions_s"] = time.perf_counter() - t0
    row["total_s"] = row["train_s"] + eval_s
    return row


def _cost_in_worker(
    run: RunSpec, data: TaskData, threads: int, kw: dict[str, Any]
) -> dict[str, Any]:
    """:func:`cost_of` in a worker process set up as the processes executor sets its own."""
    tune_malloc()
    torch.set_num_threads(threads)
    return cost_of(run, data, **kw)


def list_schedule(durations: list[float], workers: int) -> float:
    """When the last of ``durations`` ends if each, in order, starts on the first free one of
    ``workers`` (how a process pool hands out a suite's runs)."""
    free = [0.0] * workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def _fmt_min(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def render(result: dict[str, Any]) -> str:
    """The Markdown report of a :func:`main` result."""
    rows = result["runs"]
    additions = any("eval_without_additions_s" in r for r in rows)
    head = "| run | steps | timed | step ms | train min (est.) | eval min |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if additions:
        head += " eval min without issue-18 additions |"
        rule += "---:|"
    lines = [
        f"# What one seed of the `{result['suite']}` suite costs",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}, {result['cpus']} CPUs, torch {result['torch']}, "
        f"{result['jobs']} run(s) at once of {result['threads']} thread(s) each; "
        f"1-minute load average before {result['load_before']:.2f}, "
        f"after {result['load_after']:.2f}; measured {result['date']}. glibc malloc tuning "
        f"(uqbench.cpu, which `uqbench run` applies): "
        f"{'on' if result['malloc_tuned'] else 'OFF (steps slower than in a real run)'}.",
        "",
        "Training: the step time of the run's own model and settings (the difference of two "
        "timed calls of k and 2k steps over k; k in the 'timed' column, at least "
        f"{result['steps']}) times the run's step count. Evaluation: the run's whole "
        "evaluation, timed once.",
        "",
        head,
        rule,
    ]
    for r in rows:
        line = (
            f"| {r['run']} | {r['train_steps']} | {r['timed_steps']} | {r['step_ms']:.1f} "
            f"| {_fmt_min(r['train_s'])} | {_fmt_min(r['eval_s'])} |"
        )
        if additions:
            without = r.get("eval_without_additions_s")
            line += f" {_fmt_min(without)} |" if without is not None else " - |"
        lines.append(line)
    t = result["totals"]
    lines += [
        "",
        f"Data loading: {_fmt_min(t['load_s'])} min. Sum over runs: training "
        f"{_fmt_min(t['train_s'])} min (estimated), evaluation {_fmt_min(t['eval_s'])} min "
        f"(measured). **One seed: {_fmt_min(t['wall_s'])} min of wall time** "
        f"({t['wall_s'] / 3600:.2f} h)"
        + (
            "."
            if result["jobs"] == 1
            else f": data loading, then the runs in suite order, each on the first free one of "
            f"{result['jobs']} workers."
        ),
    ]
    if "additions_s" in t:
        lines.append(
            f"Issue 18's additions (dataset shift, OOD sets after the first): "
            f"{_fmt_min(t['additions_s'])} min of the evaluation."
        )
    for task, s in sorted(t["per_task_s"].items()):
        lines.append(f"- {task}: {_fmt_min(s)} min")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of :func:`main`."""
    ap = argparse.ArgumentParser(
        prog="python -m uqbench.benchmarks.suite_cost", description=__doc__.splitlines()[0]
    )
    ap.add_argument("suite", nargs="?", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps (and twice that)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--tasks", nargs="*", default=None)
    ap.add_argument("--additions", action="store_true", help="also time eval without issue 18's")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs measured at once in fresh worker processes of --threads threads each, as "
        "`uqbench run --executor processes --jobs N` runs them (default 1: in this process, "
        "with torch's default threads, as `uqbench run`)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of each worker with --jobs (as --cpus-per-run; default 1)",
    )
    ap.add_argument("--out", type=Path, default=Path("results/perf"))
    args = ap.parse_args(argv)
    if min(args.steps, args.warmup, args.jobs, args.threads) < 1:
        ap.error("--steps, --warmup, --jobs and --threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure; write suite-cost-SUITE[-jobsN].json and .md; return an exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        return measure(args, argv)
    except UQBenchError as exc:
        print(f"suite_cost: error: {exc}", file=sys.stderr)
        return 2


def _measure_rows(
    args: argparse.Namespace, suite_name: str, runs: list[RunSpec], data_of: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every run's :func:`cost_of` row, in suite order, and the threads each run had."""
    kw = {"steps": args.steps, "warmup": args.warmup, "additions": args.additions}
    bar = tqdm(total=len(runs), desc=f"cost of {suite_name}", unit="run", dynamic_ncols=True)

    def done(row: dict[str, Any]) -> None:
        bar.update(1)
        tqdm.write(
            f"{row['run']}: {row['step_ms']:.1f} ms/step x {row['train_steps']} steps, "
            f"eval {row['eval_s']:.0f} s"
        )

    by_key: dict[str, dict[str, Any]] = {}
    if args.jobs == 1:
        threads = torch.get_num_threads()
        for run in runs:
            by_key[run.key] = cost_of(run, data_of(run), **kw)
            done(by_key[run.key])
    else:  # as `uqbench run --executor processes --jobs N`: fresh spawned processes
        threads = args.threads
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context, max_tasks_per_child=1) as pool:
            futures = [pool.submit(_cost_in_worker, r, data_of(r), threads, kw) for r in runs]
            for future in as_completed(futures):
                row = future.result()
                by_key[row["run"]] = row
                done(row)
    bar.close()
    return [by_key[r.key] for r in runs], threads


def _totals(rows: list[dict[str, Any]], load_s: float, jobs: int) -> dict[str, Any]:
    """Sums over the runs, per task, and the wall time of ``jobs`` workers."""
    per_task: dict[str, float] = {}
    for r in rows:
        per_task[r["task"]] = per_task.get(r["task"], 0.0) + r["total_s"]
    totals: dict[str, Any] = {
        "load_s": load_s,
        "train_s": sum(r["train_s"] for r in rows),
        "eval_s": sum(r["eval_s"] for r in rows),
        "per_task_s": per_task,
    }
    totals["total_s"] = totals["load_s"] + totals["train_s"] + totals["eval_s"]
    totals["wall_s"] = totals["load_s"] + list_schedule([r["total_s"] for r in rows], jobs)
    with_add = [r for r in rows if "eval_without_additions_s" in r]
    if with_add:
        totals["additions_s"] = sum(r["eval_s"] - r["eval_without_additions_s"] for r in with_add)
    return totals


def measure(args: argparse.Namespace, argv: list[str]) -> int:
    """The body of :func:`main`; raises :class:`UQBenchError` on bad input."""
    malloc_tuned = tune_malloc()  # as `uqbench run` does (uqbench.cpu); workers do their own
    suite = load_suite(args.suite)
    runs = [
        dataclasses.replace(r, seed=args.seed)
        for r in suite.runs()
        if r.seed == suite.seeds[0]
        and (args.methods is None or r.method in args.methods)
        and (args.tasks is None or r.task in args.tasks)
    ]
    if not runs:
        raise ConfigError(f"no run of suite {suite.name!r} matches --methods / --tasks")
    source = as_source(None)
    load_before = os.getloadavg()[0]
    loaded: dict[str, TaskData] = {}
    load_s: dict[str, float] = {}

    def data_of(run: RunSpec) -> TaskData:
        key = json.dumps([run.task, run.data, run.eval.get("ood")], sort_keys=True)
        if key not in loaded:
            t0 = time.perf_counter()
            loaded[key] = TASKS.get(run.task)().load_with_ood(
                source, ood=run.eval.get("ood"), seed=run.seed, **run.data
            )
            load_s[key] = time.perf_counter() - t0
        return loaded[key]

    rows, threads = _measure_rows(args, suite.name, runs, data_of)
    totals = _totals(rows, sum(load_s.values()), args.jobs)
    result = {
        "suite": suite.name,
        "seed": args.seed,
        "steps": args.steps,
        "command": f"python -m uqbench.benchmarks.suite_cost {' '.join(argv)}".strip(),
        "machine": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "jobs": args.jobs,
        "malloc_tuned": malloc_tuned,
        "threads": threads,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": rows,
        "totals": totals,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"suite-cost-{suite.name}{'' if args.jobs == 1 else f'-jobs{args.jobs}'}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(render(result))
    print(
        f"one seed of {suite.name}: {totals['wall_s'] / 3600:.2f} h -> {args.out / stem}.md, .json"
    )
    return 0 if math.isfinite(totals["wall_s"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
