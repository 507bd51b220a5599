"""How many aten operations one training step runs, per family and, for MNF, per component.

On a GPU a LeNet-sized step is bound by kernel launches and Python overhead, not FLOPs, so the
number of aten operations a step dispatches is the CPU-measurable proxy of its GPU cost. A
step is what the runner does: ``model.loss`` (forward with the KL), backward, Adam step.
Every operation that reaches the aten dispatcher is counted (a
:class:`~torch.utils._python_dispatch.TorchDispatchMode`, below autograd, so the backward's
and the optimizer's operations are seen too); *kernel* operations leave out views and
metadata-only ones (``view``, ``expand``, ``split``, ``t``, ``detach``...), which launch
nothing on a GPU.

MNF's step is split by component: each forward operation belongs to the innermost of
``q(z) sample`` (:meth:`MNFNoise.sample`, the forward's z), ``q(z) + log q`` (the KL's z and
its density), ``r(z|W)`` (:meth:`MNFNoise.log_r`), ``KL rest`` (the other work of
:meth:`_BayesianLayer.kl_parts`: eq. 14, the moments of ``c^T W``), ``layer moments`` (the
rest of a Bayesian layer's forward) that is running, else ``network + loss``; a backward
operation belongs to the component whose forward created the autograd node it runs in;
``optimizer`` is Adam's step plus the gradients' accumulation into ``.grad``.

Run ``python -m uqbench.benchmarks.op_count [--methods l2 ffg mnf] [--out DIR]``; it prints the
table and writes ``op_count.json`` / ``.md``. ``uqbench perf --gpu-modes`` reports the total
beside each eager cell's steps/s.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

import uqbench
from uqbench.layers import MNFNoise, _BayesianLayer

#: Aten operations that only make a new view or read metadata: no kernel on a GPU.
VIEW_OPS = frozenset(
    {
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "expand",
        "permute",
        "t",
        "transpose",
        "unsqueeze",
        "squeeze",
        "split",
        "split_with_sizes",
        "narrow",
        "slice",
        "select",
        "as_strided",
        "alias",
        "detach",
        "unbind",
        "flatten",
        "numpy_T",
        "lift_fresh",
        "is_same_size",
        "_has_compatible_shallow_copy_type",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "sym_storage_offset",
        "size",
        "stride",
        "dim",
        "numel",
        "is_contiguous",
        "_local_scalar_dense",
    }
)
#: Profiler markers that the optimizer's step and ``zero_grad`` dispatch: not counted.
MARKER_OPS = frozenset(
    {"_record_function_enter", "_record_function_enter_new", "_record_function_exit"}
)
OTHER = "network + loss"
OPTIMIZER = "optimizer"
#: Components in the order of the report.
COMPONENTS = (
    "q(z) sample",
    "q(z) + log q",
    "r(z|W)",
    "KL rest",
    "layer moments",
    OTHER,
    OPTIMIZER,
)


def op_name(func: Any) -> str:
    """``aten.addmm.default`` -> ``addmm``."""
    return func.__name__.split(".")[0] if hasattr(func, "__name__") else str(func)


class _Counter(TorchDispatchMode):
    """Counts aten calls by (phase, component, name); backward ops by their node's component."""

    def __init__(self, labels: dict[int, str], stack: list[str]) -> None:
        super().__init__()
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.labels = labels
        self.stack = stack

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if op_name(func) in MARKER_OPS:
            return out
        node = torch._C._current_autograd_node()
        if node is not None:
            name = type(node).__name__
            if name == "AccumulateGrad":
                comp = OPTIMIZER
            else:
                comp = self.labels.get(id(node), OTHER)
            self.counts[("backward", comp, op_name(func))] += 1
        else:
            comp = self.stack[-1] if self.stack else OTHER
            self.counts[("forward", comp, op_name(func))] += 1
        return out


class _Labeller(torch.overrides.TorchFunctionMode):
    """Above autograd: records which component created each autograd node."""

    def __init__(self, labels: dict[int, str], stack: list[str], keep: list[Any]) -> None:
        super().__init__()
        self.labels, self.stack, self.keep = labels, stack, keep

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        comp = self.stack[-1] if self.stack else OTHER
        todo = [
            t.grad_fn
            for t in (out if isinstance(out, tuple | list) else (out,))
            if isinstance(t, Tensor) and t.grad_fn is not None
        ]
        while todo:  # the output's node and those made inside the call (e.g. linear's t)
            fn = todo.pop()
            if id(fn) in self.labels or type(fn).__name__ == "AccumulateGrad":
                continue
            self.labels[id(fn)] = comp
            self.keep.append(fn)  # ids stay unique while the graph lives
            todo += [f for f, _ in fn.next_functions if f is not None]
        return out


@contextmanager
def _components(stack: list[str]) -> Iterator[None]:
    """Push a component label while MNF's and the Bayesian layers' methods run."""
    wrapped = [
        (MNFNoise, "sample", "q(z) sample"),
        (MNFNoise, "sample_with_log_q", "q(z) + log q"),
        (MNFNoise, "log_r", "r(z|W)"),
        (_BayesianLayer, "kl_parts", "KL rest"),
        (_BayesianLayer, "moments", "layer moments"),
        (_BayesianLayer, "forward", "layer moments"),
    ]
    originals = []
    for cls, name, label in wrapped:
        fn = cls.__dict__[name]
        originals.append((cls, name, fn))

        def labelled(*a: Any, _fn: Callable = fn, _label: str = label, **k: Any) -> Any:
            stack.append(_label)
            try:
                return _fn(*a, **k)
            finally:
                stack.pop()

        setattr(cls, name, labelled)
    try:
        yield
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)


def count_step(
    model: nn.Module, loss_fn: Callable[[], Tensor], opt: torch.optim.Optimizer
) -> Counter[tuple[str, str, str]]:
    """Aten calls of one training step (zero_grad, ``loss_fn()``, backward, ``opt.step()``),
    keyed by (``forward`` or ``backward``, component, op name)."""
    labels: dict[int, str] = {}
    stack: list[str] = []
    keep: list[Any] = []
    counter = _Counter(labels, stack)
    with _components(stack), counter:
        opt.zero_grad(set_to_none=True)
        with _Labeller(labels, stack, keep):
            loss = loss_fn()
        loss.backward()
        stack.append(OPTIMIZER)
        try:
            opt.step()
        finally:
            stack.pop()
    return counter.counts


def summarize(counts: Counter[tuple[str, str, str]]) -> dict[str, Any]:
    """Totals (all ops, kernel ops) per step, per phase and per component."""
    out: dict[str, Any] = {"ops": 0, "kernel_ops": 0, "forward": 0, "backward": 0}
    comps: dict[str, dict[str, int]] = {}
    top: Counter[str] = Counter()
    for (phase, comp, name), n in counts.items():
        kernel = name not in VIEW_OPS
        out["ops"] += n
        out["kernel_ops"] += n * kernel
        out[phase] += n
        c = comps.setdefault(comp, {"ops": 0, "kernel_ops": 0, "forward": 0, "backward": 0})
        c["ops"] += n
        c["kernel_ops"] += n * kernel
        c[phase] += n
        top[name] += n
    out["components"] = {k: comps[k] for k in COMPONENTS if k in comps}
    out["top_ops"] = dict(top.most_common(15))
    return out


def family_step_ops(name: str, device: torch.device | str = "cpu", seed: int = 0) -> dict:
    """:func:`summarize` of one training step of family ``name`` on LeNet-5/MNIST shapes (the
    MNIST task's config, batch 100, random inputs), after one uncounted warm-up step (Adam's
    state exists from then on, as in every later step)."""
    from uqbench.benchmarks.perf import BATCH, family_config, lenet_spec

    device = torch.device(device)
    torch.manual_seed(seed)
    model = uqbench.get_posterior(name)(lenet_spec(), **family_config(name, 10)).to(device)
    opt = model.configure_optimizer(1e-3)
    x = torch.rand(BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)

    def loss() -> Tensor:
        return model.loss(x, y)[0]

    opt.zero_grad(set_to_none=True)
    loss().backward()
    opt.step()
    return summarize(count_step(model, loss, opt))


def render_md(rows: dict[str, dict[str, Any]], command: str) -> str:
    """The markdown report: totals per family, MNF's components."""
    lines = [
        "# aten operations per training step (LeNet-5 / MNIST shapes, batch 100)",
        "",
        f"Command: `{command}`. One step = `model.loss` (forward with the KL), backward, "
        "Adam step; *kernel ops* leave out views and metadata-only ops (no GPU launch).",
        "",
        "| family | ops | kernel ops | forward | backward | vs ffg (kernel ops) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    ffg = rows.get("ffg", {}).get("kernel_ops")
    for name, r in rows.items():
        vs = f"{r['kernel_ops'] / ffg:.2f}" if ffg else ""
        lines.append(
            f"| {name} | {r['ops']} | {r['kernel_ops']} | {r['forward']} | {r['backward']} | {vs} |"
        )
    for name, r in rows.items():
        if name != "mnf" and len(r["components"]) <= 2:
            continue
        lines += [
            "",
            f"{name} by component (backward ops counted with the forward that made them):",
            "",
            "| component | ops | kernel ops | forward | backward |",
            "|---|--:|--:|--:|--:|",
        ]
        for comp, c in r["components"].items():
            lines.append(
                f"| {comp} | {c['ops']} | {c['kernel_ops']} | {c['forward']} | {c['backward']} |"
            )
        lines += [
            "",
            "Most frequent ops: " + ", ".join(f"{k} {v}" for k, v in r["top_ops"].items()),
        ]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Count, print, and write ``op_count.json`` / ``.md`` under ``--out``."""
    p = argparse.ArgumentParser(prog="python -m uqbench.benchmarks.op_count")
    p.add_argument("--methods", nargs="+", default=["l2", "ffg", "mnf"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="folder for op_count.json / .md (default: none)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    rows = {m: family_step_ops(m, args.device) for m in args.methods}
    command = "python -m uqbench.benchmarks.op_count " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    md = render_md(rows, command.strip())
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "op_count.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out / "op_count.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
