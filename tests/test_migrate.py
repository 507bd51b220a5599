"""``python -m uqbench.migrate``: positions added to results saved before evaluations saved
them, recomputed from the run's data and refused when that data is not the run's."""

from __future__ import annotations

import json

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
        data.ood_index["far"] = torch.arange(len(data.ood["far"])) * 2
        return data


@pytest.fixture
def pool_runs(tmp_path, tiny_task):
    state = TASKS.snapshot()
    TASKS.add("pool-blobs", PoolBlobs)
    suite = TINY_SUITE.replace('"tiny-blobs"', '"pool-blobs", "tiny-blobs"')
    suite = suite.replace('["l2", "ffg"]', '["l2"]')
    try:
        tiny_runner(tmp_path, suite).run()
        yield tmp_path / "results" / "tiny"
    finally:
        TASKS.restore(state)


def _position(key: str) -> bool:
    """An array of positions migrate adds (``fgsm.index`` is the attack's own)."""
    return key == "test.index" or (key.startswith("ood.") and key.endswith(".index"))


def _outputs(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_positions_are_recomputed_for_runs_saved_without_them(pool_runs, tmp_path):
    files = sorted((pool_runs / "runs").glob("l2-pool-blobs-*.npz"))
    saved = {f.name: _outputs(f) for f in files}
    assert all("test.index" in o and "ood.far.index" in o for o in saved.values())
    assert not np.array_equal(*(o["test.index"] for o in saved.values()))  # seeds differ
    for f in files:  # as saved before evaluations recorded positions
        o = {k: v for k, v in saved[f.name].items() if not _position(k)}
        np.savez_compressed(f, **o)
    source = DataSource(root=tmp_path, download=False)
    said: list[str] = []
    changed = add_positions(pool_runs, source, log=said.append)
    assert changed == ["l2-pool-blobs-seed0", "l2-pool-blobs-seed1"]
    # A task whose data says not where its examples lie (the toy task's kind) is skipped.
    assert any("l2-tiny-blobs-seed0.json: skipped" in line for line in said)
    for f in files:
        now = _outputs(f)
        assert set(now) == set(saved[f.name])
        for k, v in saved[f.name].items():
            np.testing.assert_array_equal(now[k], v)
    assert add_positions(pool_runs, source, log=lambda *_: None) == []  # nothing left to add


def _strip(f) -> dict:
    o = {k: v for k, v in _outputs(f).items() if not _position(k)}
    np.savez_compressed(f, **o)
    return o


def test_positions_are_refused_when_the_data_is_not_the_runs(pool_runs, tmp_path, capsys):
    first, f = (pool_runs / "runs" / f"l2-pool-blobs-seed{s}.npz" for s in (0, 1))
    _strip(first)
    o = _strip(f)
    o["test.y"] = o["test.y"][::-1].copy()  # scored on other examples than seed 1 draws
    np.savez_compressed(f, **o)
    before = {p: p.read_bytes() for p in (first, f)}
    with pytest.raises(ResultsError, match="labels differ"):
        add_positions(pool_runs, DataSource(root=tmp_path, download=False), log=lambda *_: None)
    assert {p: p.read_bytes() for p in (first, f)} == before  # nothing written, seed 0 neither
    assert main([str(pool_runs), "--data-dir", str(tmp_path)]) == 2
    assert "labels differ" in capsys.readouterr().err


def test_runs_of_another_code_version_are_refused(pool_runs, tmp_path):
    path = pool_runs / "runs" / "l2-pool-blobs-seed0.json"
    _strip(path.with_suffix(".npz"))
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "code_version": "t1.e1"}))
    with pytest.raises(ResultsError, match="made by code version t1.e1"):
        add_positions(pool_runs, DataSource(root=tmp_path, download=False), log=lambda *_: None)


def test_files_it_cannot_use_are_skipped_and_named(pool_runs, tmp_path, capsys):
    runs = pool_runs / "runs"
    _strip(runs / "l2-pool-blobs-seed0.npz")
    (runs / "broken.json").write_text("{not json")
    (runs / "list.json").write_text("[1, 2]")
    (runs / "l2-pool-blobs-seed1.npz").write_bytes(b"PK not a zip")
    assert main([str(pool_runs), "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "broken.json: skipped, not valid JSON" in out
    assert "list.json: skipped, not a uqbench run file" in out
    assert "l2-pool-blobs-seed1.json: skipped, its outputs" in out
    assert "1 run(s) given" in out and "test.index" in _outputs(runs / "l2-pool-blobs-seed0.npz")
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no runs folder" in capsys.readouterr().err
