"""Training steps per second of one N-thread process against N 1-thread processes at once.

The measurement behind the README's advice to run a suite as one run per core on a small
machine (``--executor processes`` or ``ray``), and behind its figure for the allocator tuning
``uqbench run`` applies: a LeNet-5-shaped convolutional net (conv 20 and 50 channels, 500
hidden units), batch 100, Adam, timed for ``--seconds`` after 10 warm-up steps. Usage::

    python -m uqbench.benchmarks.thread_split --out results/perf   # the comparison, recorded
    python -m uqbench.benchmarks.thread_split 2                    # one process, 2 threads

With ``--out`` it runs four configurations, each in fresh processes: one process with N
threads (N = ``--cores``, default the cores this process may use) and N 1-thread processes
side by side, each with and without the allocator tuning (``UQBENCH_NO_MALLOC_TUNING``).
Processes that run side by side warm up first and then time the same window (each waits
for a common start). ``--repeats`` rounds, the order of the configurations rotating from
round to round; writes ``thread-split.md`` / ``.json``. Given only a thread count it prints
that process's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from uqbench.cpu import DISABLE_ENV, tune_malloc
from uqbench.environment import cpu_model


def steps_per_second(
    threads: int, seconds: float = 15.0, ready: Callable[[], None] | None = None
) -> float:
    """Adam steps per second of the LeNet-5-shaped net with ``threads`` torch threads;
    ``ready`` (if given) is called after the warm-up and returns when timing may start."""
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
    if ready is not None:
        ready()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - start)


def _processes(threads: int, count: int, seconds: float, tuned: bool) -> list[dict]:
    """``count`` fresh processes of ``threads`` threads each, timed over the same window
    (all warmed up first); ``tuned``: with :func:`uqbench.cpu.tune_malloc`. One dict per
    process: its steps/s, its torch threads and whether the tuning was applied."""
    cmd = [sys.executable, "-m", "uqbench.benchmarks.thread_split", str(threads)]
    cmd += ["--seconds", str(seconds), "--sync"]
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    if not tuned:
        env[DISABLE_ENV] = "1"
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(count)
    ]
    for proc in procs:  # every one warmed up ...
        if proc.stdout.readline().strip() != "ready":
            for other in procs:
                other.kill()
            raise RuntimeError(f"{' '.join(cmd)} did not get ready")
    for proc in procs:  # ... then all start timing together
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
        results.append(json.loads(out))
    return results


def configurations(cores: int) -> list[tuple[str, str, int, int, bool]]:
    """(key, label, threads per process, processes, allocator tuned) of each configuration:
    one ``cores``-thread process and ``cores`` 1-thread ones, with and without the tuning."""
    return [
        (f"{layout}_{alloc}", f"{label}, allocator {alloc}", threads, count, alloc == "tuned")
        for alloc in ("tuned", "untouched")
        for layout, label, threads, count in (
            ("one", f"1 process, {cores} threads", cores, 1),
            ("split", f"{cores} processes, 1 thread each (sum)", 1, cores),
        )
    ]


def compare(cores: int, seconds: float, repeats: int) -> dict:
    """Steps/s of every configuration in ``repeats`` rounds, the order rotating each round."""
    load_before = os.getloadavg()[0]
    configs = configurations(cores)
    rates: dict[str, list[float]] = {key: [] for key, *_ in configs}
    orders: list[list[str]] = []
    seen: dict[str, dict[str, set]] = {
        key: {"threads": set(), "malloc_tuned": set()} for key in rates
    }
    for r in range(repeats):
        shift = r % len(configs)
        order = configs[shift:] + configs[:shift]
        orders.append([key for key, *_ in order])
        for key, _label, threads, count, tuned in order:
            procs = _processes(threads, count, seconds, tuned)
            rates[key].append(sum(p["steps_per_s"] for p in procs))
            for field, values in seen[key].items():
                values.update(p[field] for p in procs)
    med = {key: statistics.median(v) for key, v in rates.items()}
    return {
        "cores": cores,
        "seconds": seconds,
        "repeats": repeats,
        "labels": {key: label for key, label, *_ in configs},
        "steps_per_s": rates,
        "order": orders,
        "processes": {k: {f: sorted(v) for f, v in fs.items()} for k, fs in seen.items()},
        "split_gain": med["split_tuned"] / med["one_tuned"] - 1.0,
        "split_gain_untouched": med["split_untouched"] / med["one_untouched"] - 1.0,
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
        "A LeNet-5-shaped net (conv 20/50, dense 500), batch 100, Adam, in fresh processes, "
        f"timed for {r['seconds']:g} s after 10 warm-up steps (processes side by side time the "
        f"same window; their figure is the sum); {r['repeats']} rounds, the order of the four "
        "configurations rotating. 'Allocator tuned': glibc malloc keeps freed memory "
        "(`uqbench/cpu.py`, as `uqbench run` and its workers do); 'untouched': "
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
        f"process with every thread with the allocator tuned, "
        f"{100 * r['split_gain_untouched']:+.0f}% with it untouched (medians).",
        f"- The allocator tuning: {100 * gain['one']:+.0f}% steps/s as one process, "
        f"{100 * gain['split']:+.0f}% as one process per core (medians; compare the rounds' "
        "spread before reading a small figure as an effect).",
        "",
    ]
    return "\n".join(lines)


def _sync() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def main(argv: list[str] | None = None) -> int:
    """Print one process's steps/s, or (``--out``) compare the layouts and write them down."""
    p = argparse.ArgumentParser(
        prog="python -m uqbench.benchmarks.thread_split", description=__doc__.splitlines()[0]
    )
    p.add_argument("threads", nargs="?", type=int, default=1, help="threads of this process")
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per process")
    p.add_argument("--repeats", type=int, default=3, help="rounds (with --out)")
    p.add_argument("--cores", type=int, help="N (with --out; default: the usable cores)")
    p.add_argument("--out", help="folder for thread-split.md / .json: run the comparison")
    p.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)  # see _processes
    args = p.parse_args(argv)
    if args.out is None:
        tuned = tune_malloc()
        rate = steps_per_second(args.threads, args.seconds, _sync if args.sync else None)
        if args.sync:
            info = {"steps_per_s": rate, "threads": torch.get_num_threads()}
            print(json.dumps({**info, "malloc_tuned": tuned}))
        else:
            print(args.threads, f"{rate:.1f} steps/s")
        return 0
    usable = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere all cores
    cores = args.cores or (len(usable(0)) if usable else os.cpu_count() or 1)
    if min(cores, args.repeats) < 1 or not args.seconds > 0:
        p.error("--cores, --repeats and --seconds must be positive")
    result = compare(cores, args.seconds, args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    command = "python -m uqbench.benchmarks.thread_split " + " ".join(given)
    (out / "thread-split.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "thread-split.md").write_text(render_md(result, command))
    print(f"-> {out / 'thread-split.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
