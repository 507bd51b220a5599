"""Wall time of one suite with the local executor and on a local Ray instance (1 and 2 workers).

Each configuration runs ``uqbench run --suite SUITE`` in a fresh process with a fresh
checkpoint cache and output folder, so every run trains from scratch; the wall time
includes starting Python, loading the data and (for Ray) starting and stopping Ray.

    local          --executor local                       one run at a time, torch's threads
    ray, 1 worker  --executor ray --cpus-per-run N        one run at a time on all N cores
    ray, 2 workers --executor ray --cpus-per-run N/2      two runs at once, N/2 cores each

It also checks that the three give identical metrics. Usage (needs ``uqbench[ray]``):

    python -m uqbench.benchmarks.executor_overhead [--suite smoke] [--out results/perf/executors.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(args: list[str], work: Path, name: str) -> tuple[float, dict]:
    env = {**os.environ, "UQBENCH_CACHE_DIR": str(work / name / "cache")}
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cmd = [sys.executable, "-m", "uqbench.cli", "run", *args, "--out", str(work / name)]
    cmd += ["--quiet", "--no-report"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    suite_dir = next((work / name).glob("*/results.json"))
    return seconds, json.loads(suite_dir.read_text())


def main(argv: list[str] | None = None) -> int:
    """Time the three configurations and write a Markdown table."""
    p = argparse.ArgumentParser(
        prog="python -m uqbench.benchmarks.executor_overhead", description=__doc__.splitlines()[0]
    )
    p.add_argument("--suite", default="smoke")
    p.add_argument("--tasks", nargs="+", help="only these tasks of the suite")
    p.add_argument("--out", default="results/perf/executors.md")
    args = p.parse_args(argv)
    select = ["--tasks", *args.tasks] if args.tasks else []
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    configs = [
        ("local", "local executor", []),
        ("ray1", "Ray, 1 worker", ["--executor", "ray", "--cpus-per-run", str(cores)]),
        ("ray2", "Ray, 2 workers", ["--executor", "ray", "--cpus-per-run", str(half)]),
    ]
    rows, metrics = [], {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="uqbench-exec-") as tmp:
        for name, label, extra in configs:
            seconds, results = _run(["--suite", args.suite, *select, *extra], Path(tmp), name)
            runs = results["runs"]
            metrics[name] = {
                (r["method"], r["task"], r["seed"]): json.dumps(r["metrics"], sort_keys=True)
                for r in runs
            }
            busy = sum(r["train_seconds"] + r["eval_seconds"] for r in runs)
            rows.append((label, " ".join(extra) or "-", len(runs), seconds, busy))
            print(f"{label}: {seconds:.1f} s wall, {busy:.1f} s in runs", flush=True)
    same = all(m == metrics["local"] for m in metrics.values())
    command = "python -m uqbench.benchmarks.executor_overhead " + " ".join(argv or sys.argv[1:])
    lines = [
        f"# Executor overhead: suite `{args.suite}` {' '.join(select)}".rstrip(),
        "",
        f"`{command.strip()}` on {cores} CPU cores ({_cpu()}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Wall time of the whole "
        "`uqbench run` (start, data, every run, results.json; Ray's start and stop included); "
        "'in runs' sums each run's own training and evaluation seconds. "
        f"1-minute load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
        "(other jobs shared the cores when above 0).",
        "",
        "| executor | options | runs | wall s | in runs s |",
        "|---|---|--:|--:|--:|",
        *(f"| {a} | `{b}` | {n} | {w:.1f} | {s:.1f} |" for a, b, n, w, s in rows),
        "",
        f"Metrics identical in all three: {'yes' if same else 'NO'}.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"-> {out}")
    return 0 if same else 1


def _cpu() -> str:
    from uqbench.environment import cpu_model

    return cpu_model()


if __name__ == "__main__":
    sys.exit(main())
