"""Per-epoch training objective, KL and test error of one family on one task.

The numbers behind the quick suite's settings (benchmarks/suites/quick.toml): how fast
FFG's KL falls with and without ``variance_lr``, and how CIFAR-5's test error evolves with
epochs. Training resumes epoch by epoch from a checkpoint, so the model after epoch k is
exactly the one a k-epoch run would give.

    python -m uqbench.benchmarks.epoch_probe ffg mnist --epochs 3 --variance-lr 1e-2
    python -m uqbench.benchmarks.epoch_probe l2 cifar5 --epochs 10 --n-test 2000 \
        --arch '{"channels": [32, 64], "hidden": 256}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from uqbench.data.source import DataSource
from uqbench.registry import POSTERIORS, TASKS
from uqbench.train import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m uqbench.benchmarks.epoch_probe", description=__doc__.splitlines()[0]
    )
    ap.add_argument("method")
    ap.add_argument("task")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--variance-lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--arch", type=json.loads, default={}, help="architecture kwargs (JSON)")
    ap.add_argument("--samples", type=int, default=20, help="posterior samples for the error")
    args = ap.parse_args(argv)
    task = TASKS.get(args.task)()
    if task.kind != "classification":
        ap.error(f"task {args.task!r} is a {task.kind} task: the probe reports a test error")
    data = task.load(DataSource.resolve(), seed=0, n_train=args.n_train, n_test=args.n_test)
    torch.manual_seed(0)
    model = POSTERIORS.get(args.method)(task.model_spec(data, args.arch))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "probe.pt"
        for epoch in range(1, args.epochs + 1):
            model.train()
            log = train(
                model, data.train, epochs=epoch, batch_size=args.batch_size, lr=args.lr,
                variance_lr=args.variance_lr, seed=0, checkpoint=ckpt, progress=False,
            )  # fmt: skip
            model.eval()
            wrong = 0
            with torch.no_grad():
                for i in range(0, len(data.test), 500):
                    x, y = data.test.x[i : i + 500], data.test.y[i : i + 500]
                    probs = model.sample_outputs(x, args.samples).softmax(-1).mean(0)
                    wrong += int((probs.argmax(-1) != y).sum())
            print(
                f"{args.method} {args.task} epoch {epoch}: objective {log.loss[-1]:.4f} "
                f"nll {log.nll[-1]:.4f} kl {log.kl[-1]:.0f} test error "
                f"{100 * wrong / len(data.test):.2f}% ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
