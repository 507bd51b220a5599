"""What the dataset-shift evaluation adds to a suite's wall time, per (task, method).

Run ``python -m uqbench.benchmarks.shift_cost [suite]`` (default: quick). For each classification
task and method of the suite it builds the posterior at its suite settings (untrained:
inference costs the same as after training), then times the suite's shift evaluation
(``evaluate_shift``: building the rotated / corrupted subsets and the MC predictive on
each) and, for scale, the predictive on the plain test set. Prints one line per run and
the total.
"""

from __future__ import annotations

import sys
import time

import torch

from uqbench.architectures import CLASSIFICATION
from uqbench.data.source import as_source
from uqbench.data.subset import stratified_subset
from uqbench.evaluate import _predict, evaluate_shift, shift_set_count
from uqbench.registry import POSTERIORS, TASKS
from uqbench.settings import EvalSettings
from uqbench.suites import load_suite


class _NoBar:
    def update(self, n: int) -> None:
        """Progress is not shown."""


def main(suite_name: str = "quick") -> None:
    """Time the shift evaluation of every classification run of ``suite_name``."""
    suite = load_suite(suite_name)
    source = as_source(None)
    total_shift = total_test = 0.0
    loaded: dict[str, object] = {}
    for run in suite.runs():
        task = TASKS.get(run.task)()
        if task.kind != CLASSIFICATION:
            continue
        settings = EvalSettings.from_dict(run.eval)
        shift = settings.shift()
        if not shift_set_count(shift):
            continue
        if run.task not in loaded:
            loaded[run.task] = task.load(source, seed=run.seed, **run.data)
        data = loaded[run.task]
        torch.manual_seed(run.seed)
        model = POSTERIORS.get(run.method)(task.model_spec(data, run.arch), **run.posterior)
        model.eval()
        idx = stratified_subset(data.test.y, shift["n"], 0)
        dev = torch.device("cpu")
        t0 = time.perf_counter()
        _predict(model, data.test.x, settings.test_samples, settings.batch_size, dev, _NoBar())
        t1 = time.perf_counter()
        evaluate_shift(
            model, data.test, idx, shift, settings.test_samples, settings.batch_size, dev, _NoBar()
        )
        t2 = time.perf_counter()
        total_test += t1 - t0
        total_shift += t2 - t1
        print(
            f"{run.key}: shift {t2 - t1:.1f} s ({shift_set_count(shift)} sets of {len(idx)}), "
            f"plain test predictive {t1 - t0:.1f} s",
            flush=True,
        )
    print(f"total: shift {total_shift / 60:.1f} min, plain test {total_test / 60:.1f} min")


if __name__ == "__main__":
    main(*sys.argv[1:])
