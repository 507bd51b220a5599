"""The op counter of benchmarks/op_count.py: hand-counted steps and MNF's components."""

from __future__ import annotations

import torch
from helpers import TINY_LENET
from uqbench.benchmarks.op_count import count_step, summarize

import uqbench

SPEC = TINY_LENET


def test_hand_counted_step() -> None:
    """loss = sum(p * x), plain SGD: forward mul + sum, backward's seed ones_like, the
    backward of sum (an expand: a view) and of mul (one mul), the gradient's accumulation
    (a detach: a view) and SGD's in-place add_: 7 ops, 5 of them kernels."""
    p = torch.nn.Parameter(torch.ones(3))
    x = torch.tensor([1.0, 2.0, 3.0])
    opt = torch.optim.SGD([p], lr=0.1, foreach=False)
    counts = count_step(torch.nn.Module(), lambda: (p * x).sum(), opt)
    fwd = {name: n for (phase, _, name), n in counts.items() if phase == "forward"}
    bwd = {name: n for (phase, _, name), n in counts.items() if phase == "backward"}
    assert fwd == {"mul": 1, "sum": 1, "ones_like": 1, "add_": 1}
    assert bwd == {"expand": 1, "mul": 1, "detach": 1}
    s = summarize(counts)
    assert (s["ops"], s["kernel_ops"]) == (7, 5)
    assert s["components"]["optimizer"]["ops"] == 2  # add_ and the accumulation's detach
    assert torch.allclose(p.detach(), 1.0 - 0.1 * x)  # the step really ran


def step_summary(name: str, **config) -> dict:
    torch.manual_seed(0)
    model = uqbench.get_posterior(name)(SPEC, **config)
    opt = model.configure_optimizer(1e-3)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    return summarize(count_step(model, lambda: model.loss(x, y)[0], opt))


def test_components_follow_the_flows() -> None:
    """Flow steps count in the component that runs them: each step after the first adds
    the same number of ops (4 layers, so a multiple of 4) to q(z)'s components and none
    to r(z|W)'s; FFG has no MNF parts."""
    ffg = step_summary("ffg")
    assert set(ffg["components"]) <= {"KL rest", "layer moments", "network + loss", "optimizer"}
    base = step_summary("mnf", flow_q=0, flow_r=0)
    q1 = step_summary("mnf", flow_q=1, flow_r=0)
    q2 = step_summary("mnf", flow_q=2, flow_r=0)
    q3 = step_summary("mnf", flow_q=3, flow_r=0)
    r1 = step_summary("mnf", flow_q=0, flow_r=1)
    for comp in ("q(z) sample", "q(z) + log q"):
        first = q1["components"][comp]["ops"] - base["components"][comp]["ops"]
        per_step = q2["components"][comp]["ops"] - q1["components"][comp]["ops"]
        assert first > 0 and per_step > 0 and per_step % 4 == 0
        assert q3["components"][comp]["ops"] - q2["components"][comp]["ops"] == per_step
    assert q3["components"]["r(z|W)"] == base["components"]["r(z|W)"]
    assert r1["components"]["q(z) sample"] == base["components"]["q(z) sample"]
    assert r1["components"]["r(z|W)"]["ops"] > base["components"]["r(z|W)"]["ops"]
    for s in (ffg, base, q2):
        assert s["ops"] == sum(c["ops"] for c in s["components"].values())
        assert s["ops"] == s["forward"] + s["backward"] and s["kernel_ops"] < s["ops"]
    assert ffg["kernel_ops"] < base["kernel_ops"] < q2["kernel_ops"]
