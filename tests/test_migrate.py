"""``python -m uqbench.migrate``: positions added to results saved before evaluations saved
them, recomputed from the run's data and refused when that data is not the run's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyBlobs
from helpers import TINY_SUITE, tiny_runner

from uqbench.data import DataSource
from uqbench.errors import ResultsError
from uqbench.migrate import add_positions, main
from uqbench.registry import TASKS
from uqbench.tasks.base import Split, TaskData


class PoolBlobs(TinyBlobs):
    """Tiny blobs whose test split is a seeded 60-point subset of a fixed pool of 200."""

    def load(self, source, *, n_train=None, n_test=None, n_ood=None, seed=0) -> TaskData:
        data = super().load(source, n_train=n_train, n_ood=n_ood, seed=0)
        pool = super().load(source, n_test=200, seed=0).test
        idx = torch.randperm(200, generator=torch.Generator().manual_seed(seed))[:60].sort()[0]
        data.test = Split(pool.x[idx], pool.y[idx], idx)
        return data


@pytest.fixture
def pool_runs(tmp_path):
    state = TASKS.snapshot()
    TASKS.add("pool-blobs", PoolBlobs)
    suite = TINY_SUITE.replace('"tiny-blobs"', '"pool-blobs"').replace('["l2", "ffg"]', '["l2"]')
    try:
        tiny_runner(tmp_path, suite).run()
        yield tmp_path / "results" / "tiny"
    finally:
        TASKS.restore(state)


def _outputs(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_positions_are_recomputed_for_runs_saved_without_them(pool_runs, tmp_path):
    files = sorted((pool_runs / "runs").glob("*.npz"))
    saved = {f.name: _outputs(f) for f in files}
    assert all("test.index" in o for o in saved.values())
    assert not np.array_equal(*(o["test.index"] for o in saved.values()))  # seeds differ
    for f in files:  # as saved before evaluations recorded positions
        o = {k: v for k, v in saved[f.name].items() if k != "test.index"}
        np.savez_compressed(f, **o)
    source = DataSource(root=tmp_path, download=False)
    changed = add_positions(pool_runs, source, log=lambda *_: None)
    assert changed == ["l2-pool-blobs-seed0", "l2-pool-blobs-seed1"]
    for f in files:
        now = _outputs(f)
        assert set(now) == set(saved[f.name])
        for k, v in saved[f.name].items():
            np.testing.assert_array_equal(now[k], v)
    assert add_positions(pool_runs, source, log=lambda *_: None) == []  # nothing left to add


def test_positions_are_refused_when_the_data_is_not_the_runs(pool_runs, tmp_path, capsys):
    f = pool_runs / "runs" / "l2-pool-blobs-seed1.npz"
    o = {k: v for k, v in _outputs(f).items() if k != "test.index"}
    o["test.y"] = o["test.y"][::-1].copy()  # scored on other examples than seed 1 draws
    np.savez_compressed(f, **o)
    before = f.read_bytes()
    with pytest.raises(ResultsError, match="labels differ"):
        add_positions(pool_runs, DataSource(root=tmp_path, download=False), log=lambda *_: None)
    assert f.read_bytes() == before
    assert main([str(pool_runs), "--data-dir", str(tmp_path)]) == 2
    assert "labels differ" in capsys.readouterr().err
