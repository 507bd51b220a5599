"""Training steps per second of one 2-thread process against two 1-thread processes at once.

The measurement behind the README's advice to run a suite as one run per core on a small
machine (``--executor ray``): a LeNet-5-shaped convolutional net (conv 20 and 50 channels,
500 hidden units), batch 100, Adam, timed for 15 s after 10 warm-up steps. Usage::

    python -m uqbench.benchmarks.thread_split 2                  # one process, 2 threads
    python -m uqbench.benchmarks.thread_split 1 & python -m uqbench.benchmarks.thread_split 1

Each process prints its thread count and steps per second; add the two 1-thread figures.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn


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


if __name__ == "__main__":
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print(threads, f"{steps_per_second(threads):.1f} steps/s")
