"""Mutation test of the regression check: does it catch planted behaviour changes?

Each mutant is a bug of a kind that really happens (a KL term not divided by N, MNF's flows
switched off, dropout off at prediction time, an FGSM step with the wrong sign, ...). It is
planted by patching uqbench or a baseline *from here*, for the duration of its runs only: the
library has no switch for it. A mutant runs only the (method, task) runs it can affect, with
a seed the reference was not made with, and then the statistical check compares those runs
with the reference (``uqbench check --any-seeds --two-sided``, with the committed
tolerances). It is *caught* when the check fails, and the failing rows name the method and
metric that saw it. Clean re-runs (no mutant) with other new seeds measure false alarms::

    python -m uqbench.mutation --out /tmp/mutation                  # everything, resumable
    python -m uqbench.mutation --out /tmp/m --mutants one-sample-prediction --tasks toy-cubic
    python -m uqbench.mutation --out /tmp/m --clean-seeds 5 6 7 8 9 --mutants none

Everything is resumable: finished runs are kept in ``--out`` and skipped when the same
command is run again. The summary goes to ``--json`` (results/reference/mutation.json) and
``--md``. Exit status: 0 when every mutant run was caught and no clean run raised an alarm,
1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch.nn import functional as F

from uqbench.check import (
    RESULTS_SCHEMA,
    check_results,
    load_tolerances,
    read_json,
    read_reference,
    resolve_results_path,
)
from uqbench.errors import ResultsError, UQBenchError

REF_DIR = Path(__file__).resolve().parents[1] / "results" / "reference"


@dataclass(frozen=True)
class Mutant:
    """A planted behaviour change and the runs it can affect."""

    name: str
    kind: str  # the kind of bug, in the words of issue 16
    what: str  # what the patch does
    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    patch: Callable[[], contextlib.AbstractContextManager]
    trains: bool = True  # False: evaluation only, so a model trained cleanly is reused


# --------------------------------------------------------------------------- the patches


def _kl_scaled(factor: float, per_n: bool) -> contextlib.AbstractContextManager:
    from uqbench.posterior import Posterior

    def loss(self, x, y):
        nll = self.nll(self(x), y)
        kl = self.kl()
        scale = factor / self.spec.n_data if per_n else factor
        return nll + kl * scale, {"nll": nll.detach(), "kl": kl.detach()}

    return mock.patch.object(Posterior, "loss", loss)


@contextlib.contextmanager
def _flows_off() -> Iterator[None]:
    from uqbench.layers import MaskedRealNVP, PlanarFlow

    def forward(self, z, masks=None, with_logdet: bool = True):
        return z, (z.new_zeros(z.shape[:-1]) if with_logdet else None)

    with mock.patch.object(MaskedRealNVP, "forward", forward):
        with mock.patch.object(PlanarFlow, "forward", forward):
            yield


@contextlib.contextmanager
def _qz_variance_zero() -> Iterator[None]:
    from uqbench import layers

    def sample(self, batch_shape):
        z0 = self.q0_mean.expand(*batch_shape, self.dim)
        return self.flow_q(z0, with_logdet=False)[0]

    def sample_with_log_q(self):
        z, logdet = self.flow_q(self.q0_mean.unsqueeze(0))
        log_q0 = -0.5 * (layers._LOG_2PI + 1.0 + self.q0_logvar).sum()
        return z[0], log_q0 - logdet[0]

    with (
        mock.patch.object(layers.MNFNoise, "sample", sample),
        mock.patch.object(layers.MNFNoise, "sample_with_log_q", sample_with_log_q),
    ):
        yield


def _no_std_clamp() -> contextlib.AbstractContextManager:
    from uqbench.layers import _BayesianLayer

    def forward_vars(self):
        blv = self.bias_logvar
        return self.weight_logvar.exp(), None if blv is None else blv.exp()

    return mock.patch.object(_BayesianLayer, "_forward_vars", forward_vars)


def _dropout_off_at_prediction() -> contextlib.AbstractContextManager:
    from uqbench.baselines.dropout import MCDropout

    def forward(self, x):
        if self.p > 0 and self.training:
            x = x * (torch.rand_like(x) >= self.p).to(x.dtype)
        return self.layer(x)

    return mock.patch.object(MCDropout, "forward", forward)


class _MeanSampleEntropy:
    """Stands in for ``uqbench.metrics`` inside evaluate.py: ``entropy`` returns the mean of
    the per-sample entropies of the logits that made the predictive, not its entropy."""

    def __init__(self, metrics: Any) -> None:
        self._m = metrics
        self._pending: list[torch.Tensor] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)

    def _record(self, logits: torch.Tensor) -> None:
        p = F.softmax(logits.detach().double(), dim=-1)
        self._pending.append((-torch.special.xlogy(p, p).sum(-1)).mean(0).cpu())

    def predictive_log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        self._record(logits)
        return self._m.predictive_log_probs(logits)

    def predictive_probs(self, logits: torch.Tensor) -> torch.Tensor:
        self._record(logits)
        return self._m.predictive_probs(logits)

    def entropy(self, probs: Any) -> torch.Tensor:
        pending, self._pending = self._pending, []
        h = torch.cat(pending) if pending else None
        if h is None or len(h) != len(probs):
            return self._m.entropy(probs)
        return h


def _entropy_mean_of_samples() -> contextlib.AbstractContextManager:
    from uqbench import evaluate

    return mock.patch.object(evaluate, "M", _MeanSampleEntropy(evaluate.M))


def _one_sample() -> contextlib.AbstractContextManager:
    from uqbench.posterior import Posterior

    original = Posterior.sample_outputs

    def sample_outputs(self, x, n_samples, chunk_rows=None):
        return original(self, x, 1, chunk_rows).expand(n_samples, -1, -1)

    return mock.patch.object(Posterior, "sample_outputs", sample_outputs)


@contextlib.contextmanager
def _ensemble_shared_weights() -> Iterator[None]:
    from uqbench.baselines import ensemble

    def linear(self, x):
        h = x.reshape(-1, self.members, x.shape[-1])
        w = self.weight[:1].expand_as(self.weight)
        out = torch.einsum("bmi,moi->bmo", h, w) + self.bias[:1]
        return out.reshape(-1, out.shape[-1])

    def conv(self, x):
        m = self.members
        _, c, h, w = x.shape
        weight = self.weight[:1].expand_as(self.weight)
        bias = self.bias[:1].expand_as(self.bias)
        out = F.conv2d(x.reshape(-1, m * c, h, w), weight.flatten(0, 1), bias.flatten(), groups=m)
        return out.reshape(-1, out.shape[1] // m, out.shape[2], out.shape[3])

    with (
        mock.patch.object(ensemble.EnsembleLinear, "forward", linear),
        mock.patch.object(ensemble.EnsembleConv2d, "forward", conv),
    ):
        yield


def _fgsm(sign: float, clip: bool) -> contextlib.AbstractContextManager:
    from uqbench import attacks, evaluate

    def fgsm(model, x, y, eps, n_samples, input_range=(0.0, 1.0)):
        if eps == 0:
            return x.detach()
        x_in = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model.sample_outputs(x_in, n_samples)
            log_p = torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(
                logits.shape[0]
            )
            loss = F.nll_loss(log_p, y.to(log_p.device), reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_in)
        x_adv = x.detach() + sign * eps * grad.sign()
        return x_adv.clamp(*input_range) if clip else x_adv

    assert evaluate.fgsm_attack is attacks.fgsm  # what the evaluation calls
    return mock.patch.object(evaluate, "fgsm_attack", fgsm)


def _ece_bin_edges() -> contextlib.AbstractContextManager:
    from uqbench import metrics

    original = metrics.reliability

    def reliability(probs, y, n_bins=metrics.ECE_BINS):
        rel = original(probs, y, n_bins)
        rel["confidence"] = [
            None if c is None else lo
            for c, lo in zip(rel["confidence"], rel["bin_lower"], strict=True)
        ]
        return rel

    return mock.patch.object(metrics, "reliability", reliability)


def _ood_on_in_distribution() -> contextlib.AbstractContextManager:
    from uqbench import evaluate

    original = evaluate.evaluate_classification

    def evaluate_classification(model, task, data, **kw):
        ood = {k: data.test.x[: len(v)] for k, v in data.ood.items()}
        return original(model, task, replace(data, ood=ood), **kw)

    return mock.patch.object(evaluate, "evaluate_classification", evaluate_classification)


def _notmnist_first_files() -> contextlib.AbstractContextManager:
    # OOD sets are loaded by uqbench.ood (the registry), not by the MNIST task: patching the
    # task's name, as this mutant first did, left it a no-op once the sets moved there.
    from uqbench import ood

    original = ood.stratified_indices

    def stratified_indices(labels, n, seed, stream=""):
        if stream == "mnist/ood/notmnist" and n is not None:
            return np.arange(min(n, len(labels)))  # the first n files: not a stratified split
        return original(labels, n, seed, stream=stream)

    return mock.patch.object(ood, "stratified_indices", stratified_indices)


MUTANTS: tuple[Mutant, ...] = (
    Mutant("kl-not-divided-by-n", "KL not divided by N",
           "loss = NLL + KL instead of NLL + KL / N",
           ("ffg", "mnf"), ("toy-cubic", "mnist"), lambda: _kl_scaled(1.0, per_n=False)),
    Mutant("kl-weight-10x", "KL weight 10x", "loss = NLL + 10 KL / N",
           ("ffg", "mnf"), ("toy-cubic", "mnist"), lambda: _kl_scaled(10.0, per_n=True)),
    Mutant("mnf-flows-off", "MNF flows disabled",
           "every masked RealNVP flow (q(z) and r(z|W)) is the identity with log-det 0",
           ("mnf",), ("toy-cubic", "mnist"), _flows_off),
    Mutant("qz-variance-zero", "q(z) variance frozen at 0",
           "z is sampled as the flow of q(z0)'s mean, with no noise (the KL is unchanged)",
           ("mnf",), ("toy-cubic", "mnist"), _qz_variance_zero),
    Mutant("std-clamp-removed", "the std clamp removed",
           "the forward pass no longer clamps q(W)'s std (0.5 on MNIST, 0.4 on CIFAR-5)",
           ("ffg", "mnf"), ("mnist", "cifar5"), _no_std_clamp),
    Mutant("dropout-off-at-prediction", "dropout off at prediction time",
           "MC dropout masks only in training mode: every prediction sample is the same net",
           ("dropout",), ("toy-cubic", "mnist"), _dropout_off_at_prediction, trains=False),
    Mutant("entropy-mean-of-samples", "predictive entropy as the mean of per-sample entropies",
           "entropy of the MC predictive replaced by the mean entropy of each sample's softmax",
           ("dropout", "ffg"), ("mnist",), _entropy_mean_of_samples, trains=False),
    Mutant("one-sample-prediction", "one posterior sample used where many are asked",
           "sample_outputs draws 1 sample and repeats it n times",
           ("ffg", "dropout"), ("toy-cubic", "mnist"), _one_sample, trains=False),
    Mutant("ensemble-shared-weights", "ensemble members sharing weights",
           "every member uses member 0's weights and biases",
           ("ensemble",), ("toy-cubic", "mnist"), _ensemble_shared_weights),
    Mutant("fgsm-wrong-sign", "FGSM step with the wrong sign",
           "x_adv = x - eps * sign(grad): a step that lowers the loss",
           ("l2", "ffg"), ("mnist",), lambda: _fgsm(-1.0, clip=True), trains=False),
    Mutant("fgsm-no-clip", "FGSM without clipping to the input range",
           "x_adv = x + eps * sign(grad), not clamped to [0, 1]",
           ("l2", "ffg"), ("mnist",), lambda: _fgsm(1.0, clip=False), trains=False),
    Mutant("ece-bin-edges", "ECE bins shifted",
           "each reliability bin's confidence is its lower edge, not the mean confidence in it",
           ("l2",), ("mnist",), _ece_bin_edges, trains=False),
    Mutant("ood-on-in-distribution", "OOD scores computed on in-distribution data",
           "the OOD set is replaced by as many MNIST test images",
           ("l2",), ("mnist",), _ood_on_in_distribution, trains=False),
    Mutant("notmnist-wrong-split", "the wrong notMNIST split",
           "the OOD subset is the first n notMNIST files (letter A) instead of a stratified one",
           ("l2",), ("mnist",), _notmnist_first_files, trains=False),
)  # fmt: skip
MUTANT_NAMES = tuple(m.name for m in MUTANTS)


# --------------------------------------------------------------------------- running


def _run(
    suite_name: str,
    out: Path,
    cache: Path,
    methods: list[str] | None,
    tasks: list[str],
    seed: int,
) -> dict[str, Any]:
    """``uqbench run`` in-process (so that patches apply), resumable in ``out``; the results
    of the runs asked for only (``out`` may also hold runs of other seeds, tasks or methods,
    from an earlier command, which the runner's merge keeps)."""
    from uqbench.data import DataSource
    from uqbench.environment import resolve_device
    from uqbench.runner import Runner
    from uqbench.suites import load_suite

    overrides: dict[str, Any] = {"tasks": tasks, "seeds": [seed]}
    if methods:
        overrides["methods"] = methods
    old = os.environ.get("UQBENCH_CACHE_DIR")
    os.environ["UQBENCH_CACHE_DIR"] = str(cache)
    try:
        runner = Runner(
            load_suite(suite_name),
            out=out,
            source=DataSource.resolve(download=False),
            device=resolve_device("cpu"),
            command="python -m uqbench.mutation",
            overrides=overrides,
            progress=False,
            log=lambda msg: print("   ", msg, flush=True),
        )
        results = runner.run()
        asked = {(spec.method, spec.task, spec.seed) for spec in runner.specs}
        runs = [r for r in results["runs"] if (r["method"], r["task"], r["seed"]) in asked]
        return {**results, "runs": runs}
    finally:
        if old is None:
            os.environ.pop("UQBENCH_CACHE_DIR", None)
        else:
            os.environ["UQBENCH_CACHE_DIR"] = old


def _restricted_reference(reference: dict, pairs: set[tuple[str, str]]) -> dict:
    return {
        **reference,
        "runs": [r for r in reference["runs"] if (r["method"], r["task"]) in pairs],
    }


def _failing(report: Any) -> list[dict[str, Any]]:
    return [
        {
            "method": r.method,
            "task": r.task,
            "metric": r.metric,
            "status": r.status,
            "reference": r.reference,
            "current": r.current,
            "tolerance": r.tolerance,
            "direction": r.direction,
            "note": r.note,
        }
        for r in report.rows
        if r.status in report.failing
    ]


def _seen(f: dict[str, Any]) -> str:
    """One failing row of a mutant's check, as the markdown table shows it."""
    where = f"{f['method']}/{f['task']} {f['metric']}"
    if f["reference"] is None or f["current"] is None or f["tolerance"] is None:
        return f"{where}: {f.get('note') or f['status']}"  # the class counts: no value
    return f"{where}: {f['reference']:.4g} -> {f['current']:.4g} (±{f['tolerance']:.3g})"


def _check(results: dict, reference: dict, tolerances: dict) -> tuple[bool, list[dict]]:
    pairs = {(r["method"], r["task"]) for r in results["runs"]}
    report = check_results(
        results,
        _restricted_reference(reference, pairs),
        tolerances,
        seeds="any",
        two_sided=True,
    )
    return report.passed, _failing(report)


def run_mutants(
    mutants: list[Mutant],
    *,
    out: Path,
    reference: dict,
    tolerances: dict,
    suite: str,
    seed: int,
    tasks: list[str] | None = None,
    methods: list[str] | None = None,
    check_only: bool = False,
) -> list[dict[str, Any]]:
    """Run each mutant's restricted runs under its patch and check them; one dict each.

    With ``check_only``, nothing is run: the runs already in ``out`` are checked, and a
    mutant with none is reported as not run.
    """
    rows = []
    for m in mutants:
        m_tasks = [t for t in m.tasks if tasks is None or t in tasks]
        m_methods = [x for x in m.methods if methods is None or x in methods]
        row: dict[str, Any] = {
            "name": m.name,
            "kind": m.kind,
            "what": m.what,
            "methods": m_methods,
            "tasks": m_tasks,
        }
        if not m_tasks or not m_methods:
            row.update(methods=list(m.methods), tasks=list(m.tasks))
            rows.append({**row, "caught": None, "note": "no run left after --tasks/--methods"})
            continue
        print(f"== mutant {m.name}: {', '.join(m_methods)} on {', '.join(m_tasks)}", flush=True)
        cache = out / "cache" / (m.name if m.trains else "clean-models")
        t0 = time.perf_counter()
        if check_only:
            results = _runs_made(out / "mutants" / m.name / suite, m_methods, m_tasks, seed)
            if not results["runs"]:
                rows.append({**row, "caught": None, "note": "not run yet"})
                continue
            row.update(
                methods=sorted({r["method"] for r in results["runs"]}),
                tasks=sorted({r["task"] for r in results["runs"]}),
            )
        else:
            with m.patch():
                results = _run(suite, out / "mutants" / m.name, cache, m_methods, m_tasks, seed)
        passed, failing = _check(results, reference, tolerances)
        row.update(caught=not passed, seconds=round(time.perf_counter() - t0, 1), failing=failing)
        seen = sorted({f"{f['method']}/{f['task']} {f['metric']}" for f in failing})
        print(f"   {'CAUGHT' if not passed else 'NOT CAUGHT'}: {'; '.join(seen)}", flush=True)
        rows.append(row)
    return rows


def _runs_made(suite_out: Path, methods: list[str], tasks: list[str], seed: int) -> dict[str, Any]:
    """The finished runs of ``methods`` x ``tasks`` with ``seed`` in ``suite_out/runs``, as
    results."""
    runs = []
    for path in sorted((suite_out / "runs").glob("*.json")):
        run = json.loads(path.read_text())
        if run["method"] in methods and run["task"] in tasks and run.get("seed") == seed:
            runs.append(run)
    return {"schema": RESULTS_SCHEMA, "suite": suite_out.name, "runs": runs}


def run_clean(
    seeds: list[int],
    *,
    out: Path,
    reference: dict,
    tolerances: dict,
    suite: str,
    tasks: list[str] | None,
) -> list[dict[str, Any]]:
    """Unmutated re-runs with new seeds: every failing row is a false alarm."""
    all_tasks = tasks or sorted({r["task"] for r in reference["runs"]})
    rows = []
    for s in seeds:
        print(f"== clean re-run, seed {s}: {', '.join(all_tasks)}", flush=True)
        t0 = time.perf_counter()
        results = _run(
            suite, out / "clean" / f"seed{s}", out / "cache" / "clean", None, all_tasks, s
        )
        passed, failing = _check(results, reference, tolerances)
        print(f"   {'no alarm' if passed else f'{len(failing)} FALSE ALARM(S)'}", flush=True)
        rows.append(
            {
                "seed": s,
                "tasks": all_tasks,
                "false_alarm": not passed,
                "failing": failing,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    return rows


def check_clean_files(
    paths: list[Path], reference: dict, tolerances: dict, tasks: list[str] | None
) -> list[dict[str, Any]]:
    """Clean re-runs made with ``uqbench run`` (one seed each), checked like :func:`run_clean`."""
    rows = []
    for path in paths:
        results = read_json(resolve_results_path(path), "results file")
        if tasks:
            results = {**results, "runs": [r for r in results["runs"] if r["task"] in tasks]}
        seeds = sorted({r["seed"] for r in results["runs"]})
        passed, failing = _check(results, reference, tolerances)
        print(f"== clean results {path} (seeds {seeds}): "
              f"{'no alarm' if passed else f'{len(failing)} FALSE ALARM(S)'}")  # fmt: skip
        rows.append(
            {
                "seed": seeds[0] if len(seeds) == 1 else seeds,
                "tasks": sorted({r["task"] for r in results["runs"]}),
                "false_alarm": not passed,
                "failing": failing,
                "source": str(path),
            }
        )
    return rows


def summarize(mutants: list[dict], clean: list[dict], meta: dict[str, Any]) -> dict[str, Any]:
    """The mutation.json document: score, false alarms and every row."""
    ran = [m for m in mutants if m.get("caught") is not None]
    return {
        "schema": "uqbench.mutation/1",
        **meta,
        "score": {"caught": sum(m["caught"] for m in ran), "planted": len(ran)},
        "false_alarms": {
            "runs_with_alarm": sum(c["false_alarm"] for c in clean),
            "clean_runs": len(clean),
            "alarm_rows": sum(len(c["failing"]) for c in clean),
        },
        "mutants": mutants,
        "clean": clean,
    }


def format_md(doc: dict[str, Any]) -> str:
    """A short Markdown table of the mutation run."""
    s, fa = doc["score"], doc["false_alarms"]
    lines = [
        "# Mutation test of the regression check",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Mutation score: **{s['caught']} / {s['planted']}** caught. False alarms: "
        f"**{fa['runs_with_alarm']}** of {fa['clean_runs']} clean re-runs with new seeds "
        f"({fa['alarm_rows']} failing rows). Suite `{doc['suite']}`, mutants with seed "
        f"{doc['seed']}, checked with `uqbench check --any-seeds --two-sided` against "
        f"`{doc['reference']}` and `{doc['tolerances']}`.",
        "",
        "| mutant | kind | runs | caught | seen by (method/task metric: reference -> new, tol) |",
        "|---|---|---|---|---|",
    ]
    for m in doc["mutants"]:
        runs = f"{', '.join(m['methods'])} on {', '.join(m['tasks']) or '-'}"
        if m.get("caught") is None:
            lines.append(
                f"| `{m['name']}` | {m['kind']} | {runs} | not run | {m.get('note', '')} |"
            )
            continue
        seen = "; ".join(_seen(f) for f in m["failing"][:4])
        more = f" (+{len(m['failing']) - 4} more)" if len(m["failing"]) > 4 else ""
        lines.append(
            f"| `{m['name']}` | {m['kind']} | {runs} | {'yes' if m['caught'] else '**no**'} | "
            f"{seen}{more} |"
        )
    if doc["clean"]:
        lines += ["", "| clean seed | tasks | alarm | failing rows |", "|---|---|---|---|"]
        for c in doc["clean"]:
            rows = "; ".join(f"{f['method']}/{f['task']} {f['metric']}" for f in c["failing"])
            lines.append(
                f"| {c['seed']} | {', '.join(c['tasks'])} | "
                f"{'**yes**' if c['false_alarm'] else 'no'} | {rows} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m uqbench.mutation``: see the module docstring."""
    p = argparse.ArgumentParser(
        prog="python -m uqbench.mutation",
        description="Plant behaviour changes and report which ones the regression check catches.",
    )
    p.add_argument("--out", type=Path, required=True, help="work folder (resumable)")
    p.add_argument("--suite", default="ci")
    p.add_argument(
        "--reference",
        type=Path,
        action="append",
        help="reference results (default: results/reference/ci.json); given again, one "
        "reference of all their runs, as `uqbench check --reference`",
    )
    p.add_argument(
        "--tolerance", type=Path, default=None, help="default: beside a single reference"
    )
    p.add_argument(
        "--mutants",
        nargs="+",
        default=None,
        help=f"names, or 'none' (default: all: {', '.join(MUTANT_NAMES)})",
    )
    p.add_argument("--tasks", nargs="+", default=None, help="only runs of these tasks")
    p.add_argument("--methods", nargs="+", default=None, help="only runs of these methods")
    p.add_argument("--seed", type=int, default=100, help="seed of the mutant runs (default 100)")
    p.add_argument("--clean-seeds", type=int, nargs="*", default=[], help="clean re-runs")
    p.add_argument(
        "--clean-from",
        type=Path,
        nargs="*",
        default=[],
        help="results of clean re-runs made elsewhere (uqbench run --seeds S), checked as such",
    )
    p.add_argument(
        "--check-only", action="store_true", help="run nothing: check the runs already in --out"
    )
    p.add_argument(
        "--allow-missed",
        nargs="*",
        default=[],
        metavar="MUTANT",
        help="mutants known to be invisible to every metric of the suite (a finding, said in "
        "mutation.md): still counted as not caught, but they do not fail the exit status",
    )
    p.add_argument("--json", type=Path, help="write the summary here (mutation.json)")
    p.add_argument("--md", type=Path, help="write a Markdown table here (mutation.md)")
    args = p.parse_args(argv)
    try:
        names = MUTANT_NAMES if args.mutants is None else [n for n in args.mutants if n != "none"]
        unknown = [n for n in [*names, *args.allow_missed] if n not in MUTANT_NAMES]
        if unknown:
            raise UQBenchError(
                f"unknown mutant(s) {', '.join(unknown)}; known: {', '.join(MUTANT_NAMES)}"
            )
        if args.reference and len(args.reference) > 1 and args.tolerance is None:
            raise UQBenchError("a reference of several files needs --tolerance")
        reference, ref_files = read_reference(args.reference or [REF_DIR / "ci.json"])
        ref_file = ref_files[0]
        tol_file = args.tolerance or ref_file.with_name(f"{ref_file.stem}-tolerances.json")
        tolerances = load_tolerances(tol_file)
        if reference.get("suite") != args.suite:
            raise ResultsError(
                f"{ref_file} is of suite {reference.get('suite')!r}, not {args.suite!r}"
            )
        common = dict(out=args.out, reference=reference, tolerances=tolerances, suite=args.suite)
        mutants = run_mutants(
            [m for m in MUTANTS if m.name in names],
            seed=args.seed,
            tasks=args.tasks,
            methods=args.methods,
            check_only=args.check_only,
            **common,
        )
        clean = run_clean(args.clean_seeds, tasks=args.tasks, **common)
        clean += check_clean_files(args.clean_from, reference, tolerances, args.tasks)
    except UQBenchError as exc:
        print(f"uqbench.mutation: error: {exc}", file=sys.stderr)
        return 2
    meta = {
        "command": "python -m uqbench.mutation "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "suite": args.suite,
        "reference": ", ".join(map(str, ref_files)),
        "tolerances": str(tol_file),
        "seed": args.seed,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    doc = summarize(mutants, clean, meta)
    for path, text in ((args.json, json.dumps(doc, indent=1) + "\n"), (args.md, format_md(doc))):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    s, fa = doc["score"], doc["false_alarms"]
    print(
        f"mutation score {s['caught']}/{s['planted']}; false alarms in "
        f"{fa['runs_with_alarm']} of {fa['clean_runs']} clean re-runs"
    )
    missed = [m["name"] for m in mutants if m.get("caught") is False]
    unexpected = [n for n in missed if n not in args.allow_missed]
    if missed:
        print(f"not caught: {', '.join(missed)}" + (" (allowed)" if not unexpected else ""))
    return 0 if not unexpected and not fa["runs_with_alarm"] else 1


if __name__ == "__main__":
    sys.exit(main())
