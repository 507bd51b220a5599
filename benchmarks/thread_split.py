"""Training steps per second of one 2-thread process against two 1-thread processes at once.

The measurement behind the README's advice to run a suite as one run per core on a small
machine (``--executor processes`` or ``ray``): a LeNet-5-shaped convolutional net (conv 20
and 50 channels, 500 hidden units), batch 100, Adam, timed for ``--seconds`` after 10
warm-up steps, with the allocator tuning ``uqbench run`` applies. Usage::

    python -m uqbench.benchmarks.thread_split --out results/perf   # both, written down
    python -m uqbench.benchmarks.thread_split 2                    # one process, 2 threads

With ``--out`` it runs, each in a fresh process, one process with N threads (N = the
cores) and then N 1-thread processes side by side, ``--repeats`` times alternately, and
writes ``thread-split.md`` / ``.json``. Given only a thread count it prints one figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from uqbench.cpu import DISABLE_ENV, tune_malloc
from uqbench.environment import cpu_model


def steps_per_second(threads: int, seconds: float = 15.0) -> float:
    """Adam steps per second of the LeNet-5-shaped net with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters())
    x, y = torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,))

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(10):
        step()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - start)


def _processes(threads: int, count: int, seconds: float, tuned: bool) -> list[float]:
    """Steps/s of ``count`` fresh processes of ``threads`` threads each, started together;
    ``tuned``: with the allocator tuning of :func:`uqbench.cpu.tune_malloc`."""
    cmd = [sys.executable, "-m", "uqbench.benchmarks.thread_split", str(threads)]
    cmd += ["--seconds", str(seconds)]
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    if not tuned:
        env[DISABLE_ENV] = "1"
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(count)
    ]
    rates = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
        rates.append(float(out.split()[1]))
    return rates


#: The measured configurations: (key, label, threads per process, processes, malloc tuned).
def configurations(cores: int) -> list[tuple[str, str, int, int, bool]]:
    """One ``cores``-thread process and ``cores`` 1-thread ones, each with and without
    the allocator tuning."""
    return [
        (f"{layout}_{alloc}", f"{label}, allocator {alloc}", threads, count, alloc == "tuned")
        for alloc in ("tuned", "untouched")
        for layout, label, threads, count in (
            ("one", f"1 process, {cores} threads", cores, 1),
            ("split", f"{cores} processes, 1 thread each (sum)", 1, cores),
        )
    ]


def compare(cores: int, seconds: float, repeats: int) -> dict:
    """Steps/s of every configuration, ``repeats`` rounds of each in turn."""
    load_before = os.getloadavg()[0]
    configs = configurations(cores)
    rates: dict[str, list[float]] = {key: [] for key, *_ in configs}
    for _ in range(repeats):
        for key, _label, threads, count, tuned in configs:
            rates[key].append(sum(_processes(threads, count, seconds, tuned)))
    med = {key: statistics.median(v) for key, v in rates.items()}
    return {
        "cores": cores,
        "seconds": seconds,
        "repeats": repeats,
        "labels": {key: label for key, label, *_ in configs},
        "steps_per_s": rates,
        "split_gain": med["split_tuned"] / med["one_tuned"] - 1.0,
        "malloc_gain": {
            layout: med[f"{layout}_tuned"] / med[f"{layout}_untouched"] - 1.0
            for layout in ("one", "split")
        },
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render_md(r: dict, command: str) -> str:
    """The Markdown record of :func:`compare`'s result."""
    fmt = ", ".join
    lines = [
        "# One process with all threads, or one 1-thread process per core",
        "",
        f"Command: `{command}`  ",
        f"Machine: {r['cpu']}, {r['cores']} cores, torch {r['torch']}; {r['when']}; 1-minute load "
        f"average before {r['load_before']:.2f}, after {r['load_after']:.2f}.  ",
        f"A LeNet-5-shaped net (conv 20/50, dense 500), batch 100, Adam; each figure is one "
        f"fresh process timed for {r['seconds']:g} s after 10 warm-up steps, the four "
        f"configurations taking turns, {r['repeats']} rounds. 'Allocator tuned': glibc "
        "malloc keeps freed memory (`uqbench/cpu.py`, as `uqbench run` does); 'untouched': "
        "`UQBENCH_NO_MALLOC_TUNING=1`.",
        "",
        "| configuration | steps/s (each round) | median |",
        "|---|---|--:|",
    ]
    for key, rates in r["steps_per_s"].items():
        lines.append(
            f"| {r['labels'][key]} | {fmt(f'{v:.1f}' for v in rates)} "
            f"| {statistics.median(rates):.1f} |"
        )
    gain = r["malloc_gain"]
    lines += [
        "",
        f"- One 1-thread process per core: {100 * r['split_gain']:+.0f}% steps/s against one "
        "process with every thread (allocator tuned, medians).",
        f"- The allocator tuning: {100 * gain['one']:+.0f}% steps/s as one process, "
        f"{100 * gain['split']:+.0f}% as one process per core (medians).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print one process's steps/s, or (``--out``) compare both layouts and write them down."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("threads", nargs="?", type=int, default=1, help="threads of this process")
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per process")
    p.add_argument("--repeats", type=int, default=3, help="alternations (with --out)")
    p.add_argument("--out", help="folder for thread-split.md / .json: run the comparison")
    args = p.parse_args(argv)
    if args.out is None:
        tune_malloc()
        print(args.threads, f"{steps_per_second(args.threads, args.seconds):.1f} steps/s")
        return 0
    cores = os.cpu_count() or 1
    result = compare(cores, args.seconds, args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m uqbench.benchmarks.thread_split " + " ".join(argv or sys.argv[1:])
    (out / "thread-split.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "thread-split.md").write_text(render_md(result, command))
    print(f"-> {out / 'thread-split.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
