"""How far the suite's posterior sample count biases the predictive entropy.

The predictive entropy is the entropy of an average of S sampled softmax outputs; it is
biased low for sampling families (it misses the spread of the samples it did not draw), by
about c / S, and not at all for L2 or an ensemble's members taken whole. This benchmark
measures that bias on trained models of a results folder: for each Bayesian run it loads
the checkpoint, draws ``--max-samples`` posterior samples ``--repeats`` times on seeded
subsets of the test and OOD sets, computes the mean entropy with the first S samples for
each S, and extrapolates to S -> infinity by a least-squares fit of H(S) = H_inf - c / S.
The bias at the suite's own S is set beside the half-width of the 95% interval over seeds
of the same mean entropy (``results.json``), the number it must stay below.

    python -m uqbench.benchmarks.entropy_bias results/quick [--n 2000] [--repeats 3]

Writes ``entropy-bias.json`` and ``entropy-bias.md`` beside ``results.json``, the json after
each run, and resumes: a run whose rows the json already holds (same run hash, ``--n``,
``--repeats`` and ``--max-samples``) is not measured again, only its seeds' half-widths are
recomputed from the current ``results.json`` (so seeds added later update them for free).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import uqbench
from uqbench import metrics as M
from uqbench.data.source import as_source
from uqbench.registry import TASKS
from uqbench.report.style import ReportView

SAMPLE_COUNTS = (1, 2, 5, 10, 20, 50, 100)


def entropy_by_samples(
    model: Any, x: torch.Tensor, max_samples: int, counts: list[int], batch: int = 500
) -> dict[int, float]:
    """Mean over ``x`` of the entropy of the predictive from the first S of ``max_samples``."""
    sums = dict.fromkeys(counts, 0.0)
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model.sample_outputs(x[i : i + batch], max_samples)
            for s in counts:
                p = M.predictive_probs(logits[:s])
                sums[s] += float(M.entropy(p).sum())
    return {s: sums[s] / len(x) for s in counts}


def extrapolate(h: dict[int, float], min_s: int = 10) -> tuple[float, float]:
    """(H_inf, c) of the least-squares fit H(S) = H_inf - c / S over S >= ``min_s``."""
    s = np.array([k for k in h if k >= min_s], dtype=float)
    if len(s) < 2:
        raise SystemExit(f"the fit needs at least 2 sample counts >= {min_s}: raise --max-samples")
    y = np.array([h[int(k)] for k in s])
    a = np.stack([np.ones_like(s), -1.0 / s], 1)
    (h_inf, c), *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(h_inf), float(c)


def seed_half_width(values: list[float]) -> float | None:
    """Half-width of the 95% t-interval of a mean over seeds (None for fewer than 2)."""
    if len(values) < 2:
        return None
    from uqbench.stats import t_quantile

    sd = float(np.std(values, ddof=1))
    return t_quantile(0.975, len(values) - 1) * sd / math.sqrt(len(values))


def _seed_values(results: dict[str, Any], run: dict[str, Any], name: str) -> list[float]:
    """The mean entropy on set ``name`` of every seed of ``run``'s method and task."""
    key = "test_entropy" if name == "test" else "mean_entropy"
    return [
        r["metrics"][key]["mean"] if name == "test" else r["metrics"]["ood"][name][key]
        for r in results["runs"]
        if r["method"] == run["method"] and r["task"] == run["task"] and r.get("metrics")
    ]


def _cached_rows(path: Path, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Rows of an earlier ``entropy-bias.json`` made with the same settings, by run hash."""
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if [old.get(k) for k in ("n", "repeats", "max_samples")] != [
        args.n,
        args.repeats,
        args.max_samples,
    ]:
        return {}
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in old.get("rows", []):
        if row.get("run_hash"):
            row["h_by_samples"] = {int(k): v for k, v in row["h_by_samples"].items()}
            by_run.setdefault(row["run_hash"], []).append(row)
    return by_run


def _measure(
    run: dict[str, Any], task: Any, source: Any, args: argparse.Namespace, counts: list[int]
) -> list[dict[str, Any]]:
    """The entropy-by-samples rows of one run's checkpoint, one per set (test, each OOD)."""
    cfg = run["config"]
    data = task.load_with_ood(source, ood=cfg["eval"].get("ood"), seed=run["seed"], **cfg["data"])
    model = uqbench.load_posterior(run["checkpoint"]).eval()
    suite_s = int(cfg["eval"]["test_samples"])
    rows = []
    for name, x in {"test": data.test.x, **data.ood}.items():
        gen = torch.Generator().manual_seed(0)
        x = x[torch.randperm(len(x), generator=gen)[: args.n]]
        torch.manual_seed(1)
        reps = [entropy_by_samples(model, x, args.max_samples, counts) for _ in range(args.repeats)]
        h = {s: float(np.mean([r[s] for r in reps])) for s in counts}
        h_inf, c = extrapolate(h)
        rows.append(
            {
                "method": run["method"],
                "task": run["task"],
                "seed": run["seed"],
                "run_hash": run.get("run_hash"),
                "set": name,
                "suite_samples": suite_s,
                "h_by_samples": h,
                "h_inf": h_inf,
                "bias_at_suite_samples": h.get(suite_s, h_inf - c / suite_s) - h_inf,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m uqbench.benchmarks.entropy_bias", description=__doc__.splitlines()[0]
    )
    ap.add_argument("results", type=Path, help="a suite's results folder (with results.json)")
    ap.add_argument("--n", type=int, default=2000, help="test / OOD points per set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-samples", type=int, default=100)
    ap.add_argument("--methods", nargs="*", default=["dropout", "ffg", "fflu", "mnf"])
    ap.add_argument("--seed", type=int, default=0, help="which seed's model to load")
    args = ap.parse_args(argv)
    results = json.loads((args.results / "results.json").read_text())
    source = as_source(None)
    counts = [s for s in SAMPLE_COUNTS if s <= args.max_samples]
    json_path = args.results / "entropy-bias.json"
    cached = _cached_rows(json_path, args)
    out: dict[str, Any] = {
        "command": "python -m uqbench.benchmarks.entropy_bias "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "n": args.n,
        "repeats": args.repeats,
        "max_samples": args.max_samples,
        "rows": [],
    }
    for run in results["runs"]:
        task = TASKS.get(run["task"])()
        if task.kind != "classification" or run["method"] not in args.methods:
            continue
        if run["seed"] != args.seed:
            continue
        reused = cached.get(run.get("run_hash") or "")
        if reused is None and not Path(run.get("checkpoint", "")).exists():
            continue
        run_rows = reused if reused is not None else _measure(run, task, source, args, counts)
        for row in run_rows:
            seeds = _seed_values(results, run, row["set"])
            row["seed_interval_half_width"] = seed_half_width(seeds)
            row["n_seeds"] = len(seeds)
            print(
                f"{run['method']:>8} {run['task']:>8} {row['set']:>14}: "
                f"H({row['suite_samples']}) - H(inf) = {row['bias_at_suite_samples']:+.4f} nats; "
                f"seeds' half-width {row['seed_interval_half_width']}"
                + (" (measured before)" if reused is not None else ""),
                flush=True,
            )
        out["rows"].extend(run_rows)
        json_path.write_text(json.dumps(out, indent=1) + "\n")
    json_path.write_text(json.dumps(out, indent=1) + "\n")
    rows = out["rows"]
    lines = [
        "# Sampling bias of the predictive entropy",
        "",
        f"`{out['command']}`: the models of seed {args.seed}, {args.n} points per set, "
        f"{args.repeats} repeat(s) of {args.max_samples} posterior samples; H(inf) from a fit "
        "H(S) = H_inf - c/S over S >= 10; half-width: of the mean over all seeds in results.json.",
        "",
        "| method | task | set | S | H(S) | H(inf) | bias | seeds' 95% half-width | below? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        hw = r["seed_interval_half_width"]
        s = r["suite_samples"]
        below = (
            "n/a (1 seed)"
            if hw is None
            else ("yes" if abs(r["bias_at_suite_samples"]) < hw else "NO")
        )
        lines.append(
            f"| {r['method']} | {r['task']} | {r['set']} | {s} | "
            f"{r['h_by_samples'].get(s, float('nan')):.4f} | {r['h_inf']:.4f} | "
            f"{r['bias_at_suite_samples']:+.4f} | {'-' if hw is None else f'{hw:.4f}'} | {below} |"
        )
    label = ReportView(results).data_label(dict.fromkeys(r["task"] for r in rows))
    if label:
        lines += ["", f"*{label.strip()}*"]
    (args.results / "entropy-bias.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.results / 'entropy-bias.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
