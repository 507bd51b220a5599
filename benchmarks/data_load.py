"""Time loading the data sets: ``python -m uqbench.benchmarks.data_load [--data-dir D]``.

The target is MNIST (read, md5-verify, decode, scale to float32 tensors) in under 3 s.
The notMNIST and CIFAR-5 lines are for information. Not a test: it prints timings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from uqbench.data import DataSource, images_to_tensor, labels_to_tensor, load_mnist
from uqbench.errors import DataError

MNIST_TARGET_S = 3.0


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def mnist_tensors(source: DataSource) -> dict[str, Any]:
    """MNIST as the task's tensors (x / 255, [N, 1, 28, 28]; int64 labels)."""
    raw = load_mnist(source)
    a = raw.arrays
    return {
        "train_x": images_to_tensor(a["train_x"]),
        "train_y": labels_to_tensor(a["train_y"]),
        "test_x": images_to_tensor(a["test_x"]),
        "test_y": labels_to_tensor(a["test_y"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m uqbench.benchmarks.data_load", description=__doc__)
    p.add_argument("--data-dir", help="data folder (else $UQBENCH_DATA_DIR, else the cache)")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is reported)")
    p.add_argument("--all", action="store_true", help="also time the mnist and cifar5 tasks")
    args = p.parse_args(argv)
    src = DataSource.resolve(data_dir=args.data_dir, download=False, allow_unverified=True)
    print(f"data: {src.describe()}")
    try:
        times = [_time(lambda: mnist_tensors(src))[0] for _ in range(max(1, args.repeat))]
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    best = min(times)
    verdict = "OK" if best < MNIST_TARGET_S else "SLOWER THAN TARGET"
    print(
        f"MNIST -> tensors: best {best:.2f} s of {len(times)} "
        f"({', '.join(f'{t:.2f}' for t in times)}); target < {MNIST_TARGET_S:.1f} s: {verdict}"
    )
    if args.all:
        import uqbench

        with tempfile.TemporaryDirectory() as tmp:
            cold = DataSource(src.root, download=False, allow_unverified=True, cache_dir=tmp)
            for label, task, source in [
                ("mnist task (+notMNIST, cold decode cache)", "mnist", cold),
                ("mnist task (+notMNIST, warm decode cache)", "mnist", cold),
                ("cifar5 task", "cifar5", cold),
            ]:
                try:
                    t, _ = _time(lambda n=task, s=source: uqbench.get_task(n)().load(s))
                    print(f"{label}: {t:.2f} s")
                except DataError as exc:
                    print(f"{label}: skipped ({str(exc).splitlines()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
