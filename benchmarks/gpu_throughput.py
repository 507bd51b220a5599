"""Training throughput of many small LeNet-5 models on one device, one way of training per mode.

Run ``python -m uqbench.benchmarks.gpu_throughput [--device cuda]`` (or ``uqbench perf
--gpu-modes [MODE ...] [options]``). It measures, on the card (or CPU) it runs on, what each way
of training many LeNet-5/MNIST-sized models costs, side by side, before the runner adopts any of
them. Every step is a real training step of a registered family (``model.loss`` forward,
backward, Adam step) on random batches of 100 MNIST-shaped inputs: it times steps, it does not
train to accuracy. Modes:

* ``eager``: one model in one process, as the runner trains today.
* ``packed``: P processes (``--packed``) each training its own model on the same device at
  once; aggregate and per-process steps/s. On CPU each process gets 1 torch thread and P is
  capped at the core count.
* ``vectorized``: k models (``--k``) trained as one with torch.func: parameters of k
  independently initialised models stacked (``stack_module_state``), the loss vmapped over them
  (``randomness="different"``: every model draws its own noise), each model on its own batch,
  one Adam over the stacked parameters (:class:`StackedModels`).
* ``seeds``: the ``vectorized`` step as ``uqbench run --vectorize-seeds`` takes it
  (:class:`uqbench.vectorize.SeedGroup`): model i built as seed ``--seed + i``'s run builds it,
  every noise draw from that seed's own generator (k draws per noise tensor, stacked outside
  the vmap, ``randomness="error"``), so each model trains exactly as its separate run. Its
  rate beside ``vectorized`` (one batched draw per noise tensor) is the price of exactness.
* ``grouped`` (l2 only): the registered ``ensemble`` with ``members=k`` and ``adv_eps=0``: k
  deterministic networks as grouped convolutions and batched matrix products.
* ``compiled``: ``torch.compile`` of the loss (default mode); ``graphed`` (CUDA only): the same
  with ``mode="reduce-overhead"`` (CUDA graphs); both through
  :class:`uqbench.compiling.CompiledLoss`, what ``uqbench run --compile`` trains with.
  Compilation time (the first step) is reported apart from the steady-state rate.

A mode that fails (no batching rule, no compiler, no CUDA) is reported as ``unsupported:
<reason>`` (``failed: <reason>`` for eager and packed) and the benchmark goes on. For every
cell: steps/s of the mode's own step, the equivalent single-model steps/s (steps/s times the
models it trains at once), runs per hour at ``--steps-per-run`` steps a run, and on CUDA the
peak GPU memory per model. Cells are measured mode by mode (all families in one mode, then the
next mode), and ``<out>/gpu_throughput.json`` and ``.md`` are rewritten after each, so a run cut
short keeps what it measured; ``--budget-s`` skips the cells that would start after it.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import multiprocessing as mp
import os
import queue
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from uqbench.benchmarks.op_count import family_step_ops
from uqbench.benchmarks.perf import family_config, lenet_spec, peak_rss_mb, step_fn

import uqbench
from uqbench.architectures import ModelSpec
from uqbench.compiling import CompiledLoss
from uqbench.environment import environment, resolve_device
from uqbench.errors import ConfigError, UQBenchError

MODES = ("eager", "vectorized", "seeds", "grouped", "packed", "compiled", "graphed")
METHODS = ("l2", "ffg", "mnf")
BATCH = 100
#: Version of the layout of gpu_throughput.json; bumped when its keys change (2: ops per step).
FORMAT_VERSION = 2
#: Modes whose failure means the route cannot take this family (vs. a broken measurement).
_UNSUPPORTED_MODES = ("vectorized", "seeds", "grouped", "compiled", "graphed")


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so that a clock read is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:240]


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def build_model(name: str, spec: ModelSpec, device: torch.device, members: int) -> nn.Module:
    """A family's model on LeNet-5/MNIST shapes with the MNIST task's config for it."""
    return uqbench.get_posterior(name)(spec, **family_config(name, members)).to(device)


def random_batch(device: torch.device, *lead: int) -> tuple[Tensor, Tensor]:
    """MNIST-shaped random inputs in [0, 1] and labels, ``[*lead, BATCH, ...]``."""
    x = torch.rand(*lead, BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (*lead, BATCH), device=device)
    return x, y


# -- vectorized: k models as one ---------------------------------------------------------------
class _LossOf(nn.Module):
    """``forward(x, y)`` = ``model.loss(x, y)[0]``, so that ``functional_call`` reaches the loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model.loss(x, y)[0]


class StackedModels:
    """k models of one family (same structure, own initialisations) trained as one.

    Their parameters are stacked along a new leading axis (``torch.func.stack_module_state``);
    :meth:`step` vmaps a ``functional_call`` of the family's loss over that axis with
    ``randomness="different"`` (each model draws its own weight noise), backpropagates the sum
    of the k losses (model i's loss depends on slice i only, so slice i's gradient is model i's)
    and takes one Adam step over the stacked tensors. Adam's update is per element, so this is
    k independent trainings, each on its own batch.
    """

    def __init__(self, models: Sequence[nn.Module], lr: float = 1e-3) -> None:
        from torch.func import functional_call, stack_module_state, vmap

        if not models:
            raise ConfigError("StackedModels needs at least one model")
        self.k = len(models)
        params, buffers = stack_module_state(list(models))
        # Keys as the wrapper names them; the stacked tensors are leaves that require grad.
        self.params = {f"model.{n}": p for n, p in params.items()}
        self.buffers = {f"model.{n}": b for n, b in buffers.items()}
        # Structure only: functional_call swaps the stacked slices in for its tensors.
        wrapper = _LossOf(copy.deepcopy(models[0]))

        def loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return functional_call(wrapper, (p, b), (x, y))

        self._losses = vmap(loss, in_dims=(0, 0, 0, 0), randomness="different")
        tensors = list(self.params.values())
        fused = all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
        self.opt = torch.optim.Adam(tensors, lr=lr, fused=fused or None)

    def losses(self, x: Tensor, y: Tensor) -> Tensor:
        """``[k]`` losses, model i on ``x[i]``, ``y[i]`` (``[k, batch, ...]``)."""
        return self._losses(self.params, self.buffers, x, y)

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        """One Adam step of every model, model i on batch ``x[i]``, ``y[i]``; the k losses."""
        self.opt.zero_grad(set_to_none=True)
        losses = self.losses(x, y)
        losses.sum().backward()
        self.opt.step()
        return losses.detach()

    def parameters_of(self, i: int) -> dict[str, Tensor]:
        """Model i's parameters, named as in the model (``net.0.weight``...)."""
        return {n.removeprefix("model."): p[i].detach() for n, p in self.params.items()}


# -- timing ------------------------------------------------------------------------------------
def time_steps(
    step: Callable[[], Any], device: torch.device, steps: int, warmup: int, repeats: int
) -> list[float]:
    """Steps per second of ``step`` in ``repeats`` timed blocks of ``steps`` (after ``warmup``
    untimed steps), the device synchronised before every clock read."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(steps / (time.perf_counter() - t0))
    return rates


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only)."""
    if device.type == "cuda":
        gc.collect()  # the previous cell's models, before the cache is emptied
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated since :func:`reset_peak`, MB (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def measure_inprocess(
    family: str, mode: str, device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """One cell of the modes that run in this process: models, rates, compile time, memory."""
    spec = lenet_spec()
    torch.manual_seed(args.seed)
    reset_peak(device)
    compile_s = None
    if mode == "eager":
        models = 1
        model = build_model(family, spec, device, args.k)
        x, y = random_batch(device)
        step = step_fn(model, lambda: model.loss(x, y)[0], args.lr)
    elif mode == "vectorized":
        models = args.k
        stacked = StackedModels(
            [build_model(family, spec, device, args.k) for _ in range(models)], args.lr
        )
        x, y = random_batch(device, models)  # each model its own batch

        def step() -> None:
            stacked.step(x, y)
    elif mode == "seeds":
        from uqbench.tasks.base import Split
        from uqbench.vectorize import SeedGroup, cannot_vectorize

        why = cannot_vectorize(uqbench.get_posterior(family))
        if why is not None:
            raise RuntimeError(why)
        models = args.k
        built, states = [], []
        for i in range(models):  # as seed (args.seed + i)'s run builds its model
            torch.manual_seed(args.seed + i)
            if device.type == "cuda":
                torch.cuda.manual_seed_all(args.seed + i)
            built.append(build_model(family, spec, device, args.k))
            cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
            states.append((torch.get_rng_state(), cuda))
        x, y = random_batch(device, models)  # each model its own batch
        group = SeedGroup(
            built,
            [Split(x[i], y[i]) for i in range(models)],
            seeds=[args.seed + i for i in range(models)],
            rng_states=states,
        )
        group.probe_layouts(BATCH)
        opt, noise = group.optimizer(args.lr), group.noise_generators()

        def step() -> None:
            group.step(opt, x, y, noise)
    elif mode == "grouped":
        models = args.k
        ens = uqbench.get_posterior("ensemble")(spec, members=models, adv_eps=0.0).to(device)
        x, y = random_batch(device)
        step = step_fn(ens, lambda: ens.loss(x, y)[0], args.lr)
    elif mode in ("compiled", "graphed"):
        models = 1
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()  # each cell compiles afresh: compile time is its own
        model = build_model(family, spec, device, args.k)
        x, y = random_batch(device)
        # What `uqbench run --compile` trains with; here a fallback to eager is no result.
        compiled = CompiledLoss(
            model, "reduce-overhead" if mode == "graphed" else "default", device
        )
        if compiled.error is not None:
            raise compiled.error

        def loss() -> Tensor:
            return compiled(x, y)[0]

        step = step_fn(model, loss, args.lr)
        synchronize(device)
        t0 = time.perf_counter()
        step()  # traces and compiles the forward and the backward
        synchronize(device)
        compile_s = time.perf_counter() - t0
        if compiled.error is not None:
            raise compiled.error
    else:
        raise ValueError(f"not an in-process mode: {mode}")
    rates = time_steps(step, device, args.steps, args.warmup, args.repeats)
    mem = peak_mb(device)
    ops = family_step_ops(family, device, args.seed) if mode == "eager" else None
    return {
        "ops_per_step": None if ops is None else ops["ops"],
        "kernel_ops_per_step": None if ops is None else ops["kernel_ops"],
        "models": models,
        "steps_per_s": statistics.median(rates),
        "rates": rates,
        "compile_s": compile_s,
        "peak_mem_mb_per_model": None if mem is None else mem / models,
    }


# -- packed: P processes on one device ----------------------------------------------------------
def _packed_worker(
    rank: int,
    family: str,
    device_name: str,
    threads: int | None,
    settings: dict[str, Any],
    barrier: Any,
    results: Any,
) -> None:
    """One packed process: build, warm up, wait for the others, time its steps, report."""
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        device = torch.device(device_name)
        torch.manual_seed(settings["seed"] + rank)
        reset_peak(device)
        model = build_model(family, lenet_spec(), device, settings["k"])
        x, y = random_batch(device)
        step = step_fn(model, lambda: model.loss(x, y)[0], settings["lr"])
        for _ in range(settings["warmup"]):
            step()
        synchronize(device)
        barrier.wait()  # every process timed over the same stretch of wall time
        n = settings["steps"] * settings["repeats"]
        t0 = time.time()
        for _ in range(n):
            step()
        synchronize(device)
        t1 = time.time()
        results.put({"rank": rank, "t0": t0, "t1": t1, "steps": n, "peak_mb": peak_mb(device)})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, never lost
        barrier.abort()
        results.put({"rank": rank, "error": one_line(exc)})


def measure_packed(family: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """P processes (spawned), each training its own ``family`` model on ``device`` at once."""
    procs = args.packed
    note = ""
    cores = available_cores()
    if device.type == "cpu":
        threads = 1
        if procs > cores:
            note = f"P capped at {cores} cores (asked {procs}); "
            procs = cores
    else:  # the host side of P processes shares the cores
        threads = args.threads or max(1, cores // procs)
    note += f"{threads} torch thread{'s' if threads > 1 else ''} per process"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    settings = {k: getattr(args, k) for k in ("steps", "warmup", "repeats", "seed", "k", "lr")}
    workers = [
        ctx.Process(
            target=_packed_worker,
            args=(r, family, str(device), threads, settings, barrier, results),
            daemon=True,
        )
        for r in range(procs)
    ]
    try:
        for w in workers:
            w.start()
        got = []
        for _ in range(procs):
            try:
                got.append(results.get(timeout=args.packed_timeout_s))
            except queue.Empty:
                raise RuntimeError(
                    f"packed processes gave no result within {args.packed_timeout_s} s"
                ) from None
        for w in workers:
            w.join(timeout=30)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join(timeout=10)
    errors = [r["error"] for r in got if "error" in r]
    if errors:
        real = [e for e in errors if not e.startswith("BrokenBarrierError")]
        raise RuntimeError((real or errors)[0])
    per_process = [r["steps"] / (r["t1"] - r["t0"]) for r in got]
    wall = max(r["t1"] for r in got) - min(r["t0"] for r in got)
    aggregate = sum(r["steps"] for r in got) / wall
    mems = [r["peak_mb"] for r in got if r["peak_mb"] is not None]
    return {
        "models": procs,
        "steps_per_s": statistics.median(per_process),
        "per_process_steps_per_s": per_process,
        "aggregate_steps_per_s": aggregate,
        "compile_s": None,
        "peak_mem_mb_per_model": max(mems) if mems else None,
        "ops_per_step": None,
        "kernel_ops_per_step": None,
        "note": note,
    }


# -- one cell, the report ----------------------------------------------------------------------
def measure(family: str, mode: str, device: torch.device, args: argparse.Namespace) -> dict:
    """One (family, mode) cell; a failure becomes the cell's status instead of an exception."""
    row: dict[str, Any] = {"family": family, "mode": mode, "status": "ok", "note": ""}
    t0 = time.perf_counter()
    try:
        if mode == "packed":
            got = measure_packed(family, device, args)
        else:
            got = measure_inprocess(family, mode, device, args)
    except Exception as exc:  # noqa: BLE001 - a route that cannot run is a result here
        word = "unsupported" if mode in _UNSUPPORTED_MODES else "failed"
        row.update(status=f"{word}: {one_line(exc)}", models=None, steps_per_s=None)
        row.update(model_steps_per_s=None, runs_per_hour=None, compile_s=None)
        row.update(peak_mem_mb_per_model=None, ops_per_step=None, kernel_ops_per_step=None)
        row["seconds"] = time.perf_counter() - t0
        return row
    note = got.pop("note", "")
    row.update(got)
    # Everything the mode trains at once, in single-model steps per second.
    row["model_steps_per_s"] = got.get("aggregate_steps_per_s", got["steps_per_s"] * got["models"])
    row["runs_per_hour"] = row["model_steps_per_s"] * 3600.0 / args.steps_per_run
    if mode == "vectorized":
        note = f"{got['models']} models, each on its own batch; " + note
    elif mode == "seeds":
        note = f"{got['models']} seeds, each its own batch and noise generator; " + note
    elif mode == "grouped":
        note = f"ensemble members={got['models']}, adv_eps=0; " + note
    row["note"] = note.strip("; ")
    row["seconds"] = time.perf_counter() - t0
    return row


def device_description(device: torch.device) -> dict[str, Any]:
    """The device and versions (``uqbench.environment``), plus ``nvidia-smi``'s line on CUDA."""
    env = environment(device)
    env["cores_available"] = available_cores()
    if device.type == "cuda" and shutil.which("nvidia-smi"):
        try:
            query = "--query-gpu=name,memory.total,driver_version"
            cmd = ["nvidia-smi", query, "--format=csv,noheader"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
            env["nvidia_smi"] = out.stdout.strip()
            # Packed processes share the GPU by time-slicing unless CUDA MPS runs.
            mps = subprocess.run(["pgrep", "-f", "nvidia-cuda-mps-control"], capture_output=True)
            env["cuda_mps_daemon"] = mps.returncode == 0
        except (OSError, subprocess.SubprocessError) as exc:
            env["nvidia_smi"] = f"unavailable ({one_line(exc)})"
    return env


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per mode: MNF's step time over FFG's (the issue's target is at most 1.3)."""
    ok = {(r["family"], r["mode"]): r for r in rows if r["status"] == "ok"}
    out = {}
    for (fam, mode), r in ok.items():
        if fam == "mnf" and ("ffg", mode) in ok:
            out[f"mnf_vs_ffg_step_{mode}"] = ok[("ffg", mode)]["steps_per_s"] / r["steps_per_s"]
    return out


def render_md(r: dict[str, Any]) -> str:
    """The markdown table: family x mode."""
    d, s = r["device"], r["settings"]

    def num(v: float | None, fmt: str = ".1f") -> str:
        return "" if v is None else format(v, fmt)

    lines = [
        "# uqbench training throughput (LeNet-5 / MNIST shapes, batch 100)",
        "",
        f"Command: `{r['command']}`  ",
        f"Device: {d['device_name']} ({d['device']}); torch {d['torch']}, "
        f"{d['torch_threads']} torch thread(s), {d['cores_available']} cores available; "
        f"load average before {r['load_avg_before'][0]:.2f}, after {r['load_avg_after'][0]:.2f}."
        + (f" nvidia-smi: {d['nvidia_smi']}." if d.get("nvidia_smi") else "")
        + (f" CUDA MPS daemon: {d['cuda_mps_daemon']}." if "cuda_mps_daemon" in d else "")
        + "  ",
        f"Steps/s: median of {s['repeats']} blocks of {s['steps']} steps after {s['warmup']} "
        f"warm-up steps (packed: one block of {s['steps'] * s['repeats']} per process, timed "
        "together); runs/hour at "
        f"{s['steps_per_run']} steps a run. *Equiv. steps/s*: single-model steps per second of "
        "everything the mode trains at once (steps/s x models; packed: the aggregate). "
        "*Kernel ops/step* (eager): aten operations of one step other than views "
        "(`python -m uqbench.benchmarks.op_count`), the launch count that bounds a small "
        "model on a GPU.",
        "",
        "| family | mode | models | steps/s | equiv. steps/s | runs/hour | vs eager | "
        "compile s | peak MB/model | kernel ops/step | note |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    eager = {x["family"]: x for x in r["results"] if x["mode"] == "eager" and x["status"] == "ok"}
    for x in r["results"]:
        if x["status"] != "ok":
            lines.append(f"| {x['family']} | {x['mode']} | | | | | | | | | {x['status']} |")
            continue
        base = eager.get(x["family"])
        vs = x["model_steps_per_s"] / base["model_steps_per_s"] if base else None
        lines.append(
            f"| {x['family']} | {x['mode']} | {x['models']} | {num(x['steps_per_s'])} | "
            f"{num(x['model_steps_per_s'])} | {num(x['runs_per_hour'], '.2f')} | "
            f"{num(vs, '.2f')} | {num(x['compile_s'])} | "
            f"{num(x['peak_mem_mb_per_model'], '.0f')} | "
            f"{num(x.get('kernel_ops_per_step'), 'd')} | {x['note']} |"
        )
    if r["summary"]:
        lines += ["", "MNF's step time over FFG's, per mode (issue 19's target: at most 1.3):", ""]
        lines += [f"- {k.rsplit('_', 1)[-1]}: {v:.2f}" for k, v in r["summary"].items()]
    if r["skipped"]:
        lines += ["", "Not measured: " + "; ".join(r["skipped"]) + "."]
    lines.append("")
    return "\n".join(lines)


def write(out: Path, result: dict[str, Any]) -> None:
    """Write gpu_throughput.json and .md (each replaced whole, never half-written)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("gpu_throughput.json", json.dumps(result, indent=2) + "\n"),
        ("gpu_throughput.md", render_md(result)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


# -- main --------------------------------------------------------------------------------------
def _names(values: list[str]) -> list[str]:
    """Space- or comma-separated names, in order, without repeats."""
    out: list[str] = []
    for v in values:
        out += [n for n in v.split(",") if n and n not in out]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m uqbench.benchmarks.gpu_throughput", description=__doc__.splitlines()[0]
    )

    def positive(v: str) -> int:
        n = int(v)
        if n < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
        return n

    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="registered families")
    p.add_argument(
        "--modes", nargs="*", default=list(MODES), help=f"any of {', '.join(MODES)} (default: all)"
    )
    p.add_argument("--steps", type=positive, default=100, help="timed steps per block")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up steps")
    p.add_argument("--repeats", type=positive, default=3, help="timed blocks (median reported)")
    p.add_argument("--k", type=positive, default=4, help="models per vectorized / grouped step")
    p.add_argument("--packed", type=positive, default=4, help="processes of the packed mode")
    p.add_argument(
        "--steps-per-run",
        type=positive,
        default=60000,
        help="steps of one run, for runs/hour (default: 100 epochs x 600 steps, the paper's MNIST)",
    )
    p.add_argument(
        "--threads", type=positive, default=None, help="torch threads (default: torch's)"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no cell after this many seconds (those left are listed as not measured)",
    )
    p.add_argument(
        "--packed-timeout-s", type=float, default=600.0, help="wait this long for packed processes"
    )
    p.add_argument("--out", default="results/gpu_throughput", help="output folder")
    args = p.parse_args(argv)
    args.methods = _names(args.methods)
    args.modes = _names(args.modes) or list(MODES)
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        p.error(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write gpu_throughput.json and .md; return an exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C: packed children are stopped, files stay.
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _exit_143) if main_thread else None
    try:
        return run(args, argv)
    except UQBenchError as exc:
        print(f"gpu_throughput: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, before)


def _exit_143(signum: int, frame: Any) -> None:
    sys.exit(143)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The cells of ``args``, mode by mode; the files rewritten after each cell."""
    device = resolve_device(args.device)
    for name in args.methods:
        uqbench.get_posterior(name)  # an unknown family: one RegistryError line, before any work
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "gpu_throughput",
        "format_version": FORMAT_VERSION,
        "command": "python -m uqbench.benchmarks.gpu_throughput "
        + " ".join(shlex.quote(a) for a in argv),
        "device": device_description(device),
        "settings": {
            "batch": BATCH,
            **{
                k: getattr(args, k)
                for k in ("methods", "modes", "steps", "warmup", "repeats", "k", "packed")
            },
            "steps_per_run": args.steps_per_run,
            "lr": args.lr,
            "seed": args.seed,
        },
        "load_avg_before": os.getloadavg(),
        "load_avg_after": os.getloadavg(),
        "results": [],
        "summary": {},
        "skipped": [],
        "peak_rss_mb": peak_rss_mb(),
        "seconds": 0.0,
    }
    out = Path(args.out)
    cells = [
        (fam, mode)
        for mode in args.modes
        for fam in args.methods
        if mode != "grouped" or fam == "l2"  # the ensemble's grouped layers are deterministic
    ]
    if "grouped" in args.modes and "l2" not in args.methods:
        result["skipped"].append("grouped: times the deterministic l2 route only (l2 not asked)")
    write(out, result)  # the settings and device, before any cell
    for i, (fam, mode) in enumerate(cells):
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            left = ", ".join(f"{f}/{m}" for f, m in cells[i:])
            result["skipped"].append(f"after the {args.budget_s:g} s budget: {left}")
            log(f"budget of {args.budget_s:g} s spent; not measured: {left}")
            break
        log(f"[{i + 1}/{len(cells)}] {fam} {mode} ...")
        row = measure(fam, mode, device, args)
        if row["status"] == "ok":
            extra = f", compile {row['compile_s']:.1f} s" if row["compile_s"] is not None else ""
            log(
                f"    {row['steps_per_s']:.1f} steps/s x {row['models']} models = "
                f"{row['model_steps_per_s']:.1f} equiv., {row['runs_per_hour']:.2f} runs/h{extra}"
            )
        else:
            log(f"    {row['status']}")
        result["results"].append(row)
        result["summary"] = summary(result["results"])
        result["load_avg_after"] = os.getloadavg()
        result["peak_rss_mb"] = peak_rss_mb()
        result["seconds"] = time.perf_counter() - start
        write(out, result)
    write(out, result)
    log(f"wrote {out / 'gpu_throughput.json'} and {out / 'gpu_throughput.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
