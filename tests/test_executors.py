"""The process and Ray executors: same numbers as the local one (worker processes on this
machine; a local Ray instance and a real 2-node Ray cluster on loopback); a killed worker
is retried; bad requests fail in one line.

Everything that starts Ray is marked ``ray`` (``pytest -m ray`` selects it, ``-m "not ray"``
skips it); without Ray installed those tests skip, unless ``UQBENCH_REQUIRE_RAY=1`` (CI),
where they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from uqbench.cli import main
from uqbench.data import DataSource
from uqbench.errors import ConfigError
from uqbench.runner import Runner
from uqbench.suites import load_suite

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

if os.environ.get("UQBENCH_REQUIRE_RAY") and not HAVE_RAY:
    raise RuntimeError("UQBENCH_REQUIRE_RAY is set but Ray is not installed (uqbench[ray])")


def needs_ray(fn):
    """Mark a test ``ray``; skip it where Ray is not installed."""
    skip = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install uqbench[ray]")
    return pytest.mark.ray(skip(fn))


#: Every posterior family on the toy task (no data files, so any worker can run it); MNF
#: is the longest run (~10 s on one core), long enough to kill its worker midway.
TOY_SUITE = """
name = "toy"
methods = ["l2", "dropout", "ensemble", "ffg", "fflu", "mnf"]
tasks = ["toy-cubic"]
seeds = [0]
[eval]
test_samples = 8
[task.toy-cubic]
train = { epochs = 300 }
extra_methods = ["dropout-learned"]
[method.ensemble]
members = 2
"""

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _runner(tmp: Path, out: str, executor=None, suite: str = TOY_SUITE) -> Runner:
    (tmp / "suite.toml").write_text(suite)
    return Runner(
        load_suite(tmp / "suite.toml"),
        out=tmp / out,
        source=DataSource(root=tmp, download=False),
        device=torch.device("cpu"),
        command="uqbench run",
        progress=False,
        log=lambda *_: None,
        executor=executor,
    )


def _metrics(results: dict) -> dict:
    return {(r["method"], r["task"], r["seed"]): r["metrics"] for r in results["runs"]}


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread, as each worker runs (``--cpus-per-run 1``): the same float sums.
    On two threads the toy suite's RMSE differs from the workers' in the 10th digit (the
    driver's default on a 2-core machine; seen 2026-11-29), so a reference must use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_toy(tmp_path_factory) -> dict:
    """The toy suite made by the local executor, the reference for every Ray run."""
    tmp = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UQBENCH_CACHE_DIR", str(tmp / "cache"))
        with _one_thread():
            return _runner(tmp, "results").run()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    """A real Ray cluster of two nodes of one CPU each on this machine, on loopback only:
    ``ray start --head`` and a second ``ray start --address`` joining it; both stopped after.

    127.0.0.2: Ray rewrites 127.0.0.1 (and localhost) into the machine's outward address.
    """
    if not HAVE_RAY:
        pytest.skip("Ray is not installed")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    ip, port = "127.0.0.2", _free_port()
    env = {**os.environ, **RAY_ENV}
    node = [
        "--node-ip-address",
        ip,
        "--num-cpus",
        "1",
        "--object-store-memory",
        str(100 * 2**20),
        "--disable-usage-stats",
        "--block",
    ]
    head_only = ["--head", "--port", str(port), "--include-dashboard", "false"]
    head_only += ["--ray-client-server-port", str(_free_port())]
    logs = tmp_path_factory.mktemp("ray-logs")
    procs: list[subprocess.Popen] = []

    def start(args: list[str], name: str) -> None:
        with open(logs / f"{name}.log", "w") as log:
            procs.append(
                subprocess.Popen(
                    [ray_cli, "start", *args],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: we stop exactly it
                )
            )

    try:
        start([*head_only, *node], "head")
        _wait_for(lambda: _listening(ip, port), 60, "the head node", logs)
        start(["--address", f"{ip}:{port}", *node], "node2")
        _wait_for(lambda: _alive_nodes(f"{ip}:{port}", env) == 2, 90, "two nodes", logs)
        with pytest.MonkeyPatch.context() as mp:
            for k, v in RAY_ENV.items():
                mp.setenv(k, v)
            yield f"{ip}:{port}"
    finally:
        for p in reversed(procs):  # `ray start --block` stops its node's processes on SIGTERM
            _stop_group(p)


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _alive_nodes(address: str, env: dict) -> int:
    code = (
        f"import ray; ray.init(address={address!r}, logging_level='ERROR');"
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0


def _wait_for(cond, timeout: float, what: str, logs: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(1)
    tails = {p.name: p.read_text()[-2000:] for p in logs.glob("*.log")}
    raise RuntimeError(f"Ray cluster: no {what} after {timeout}s; logs: {tails}")


def _stop_group(p: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(p.pid, sig)
            p.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _task_pids() -> list[int]:
    """Processes that are executing a run for Ray right now (Ray names them ``ray::<fn>``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::_remote_make_run"):
                pids.append(int(proc.name))
    return pids


# --- one-line errors, before anything trains -------------------------------------------


def test_ray_not_installed_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(["run", "--suite", "smoke", "--executor", "ray", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        "uqbench: error: --executor ray needs Ray, which is not installed: "
        "pip install 'uqbench[ray]'"
    )
    assert not any(tmp_path.iterdir())


def test_ray_options_without_ray_executor_are_refused(tmp_path, capsys):
    code = main(["run", "--suite", "smoke", "--gpus-per-run", "0.5", "--out", str(tmp_path)])
    assert code == 2
    assert "need --executor ray" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"cpus_per_run": 0}, "--cpus-per-run must be positive"),
        ({"gpus_per_run": 1.5}, "whole number of GPUs"),
        ({"device": "cuda"}, "needs --gpus-per-run above 0"),
    ],
)
def test_bad_resource_requests_are_named(kw, message):
    from uqbench.executors import RayExecutor

    with pytest.raises(ConfigError, match=message):
        RayExecutor(**kw)


@needs_ray
def test_unreachable_address_is_one_line_before_training(tmp_path, capsys):
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    code = main(
        [
            "run",
            "--suite",
            "smoke",
            "--executor",
            "ray",
            "--address",
            f"127.0.0.1:{port}",
            "--out",
            str(tmp_path),
        ]  # fmt: skip
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"uqbench: error: cannot reach a Ray cluster at 127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30 and not any(tmp_path.iterdir())


@needs_ray
def test_address_auto_with_a_stopped_clusters_file_is_one_line(tmp_path, capsys, monkeypatch):
    """``--address auto`` joins the cluster named in ``<tmp>/ray/ray_current_cluster``, which
    outlives that cluster: Ray then retried it for minutes; now one line names the file."""
    port = _free_port()
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    t0 = time.monotonic()
    argv = ["run", "--suite", "smoke", "--executor", "ray", "--address", "auto"]
    code = main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"uqbench: error: cannot reach a Ray cluster at 127.0.0.1:{port}")
    assert err[0].endswith(
        f"(--address auto found it in {tmp_path / 'ray' / 'ray_current_cluster'}; that "
        "cluster may have stopped)"
    )
    assert time.monotonic() - t0 < 30 and not (tmp_path / "out").exists()


# --- a local Ray instance ----------------------------------------------------------------


@needs_ray
def test_local_ray_instance_matches_local_executor(tmp_path, local_toy, monkeypatch):
    from uqbench.executors import RayExecutor

    for k, v in RAY_ENV.items():
        monkeypatch.setenv(k, v)
    executor = RayExecutor(num_cpus=2)  # two workers of one core each
    results = _runner(tmp_path, "ray", executor).run()
    assert _metrics(results) == _metrics(local_toy)
    assert len(results["runs"]) == 7
    # the driver wrote one file per run, as the local executor does
    assert sorted(p.stem for p in (tmp_path / "ray" / "toy" / "runs").glob("*.json")) == sorted(
        f"{r['method']}-toy-cubic-seed0" for r in local_toy["runs"]
    )


# --- a real 2-node cluster ---------------------------------------------------------------


@pytest.mark.slow
@needs_ray
@pytest.mark.skipif(not os.environ.get("UQBENCH_DATA_DIR"), reason="needs the real data sets")
def test_smoke_suite_on_two_node_cluster_matches_local(tmp_path, cluster, monkeypatch):
    """The CI smoke suite (MNIST, CIFAR-5 and toy runs of every family), local vs cluster."""
    subset = ["--suite", "smoke", "--quiet", "--no-report"]
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache-local"))
    with _one_thread():
        assert main(["run", *subset, "--out", str(tmp_path / "local")]) == 0
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache-ray"))
    code = main(["run", *subset, "--executor", "ray", "--address", cluster,
                 "--out", str(tmp_path / "ray")])  # fmt: skip
    assert code == 0
    local, on_ray = (
        json.loads((tmp_path / d / "smoke/results.json").read_text()) for d in ("local", "ray")
    )
    assert len(on_ray["runs"]) == len(local["runs"]) == 19
    assert _metrics(on_ray) == _metrics(local)
    # the checkpoints went to the driver's cache dir, which the workers were told to use
    assert len(list((tmp_path / "cache-ray" / "checkpoints").glob("*.pt"))) == 19


@needs_ray
def test_resource_request_no_node_can_satisfy_is_one_line(tmp_path, cluster, capsys):
    code = main(
        [
            "run",
            "--suite",
            "smoke",
            "--executor",
            "ray",
            "--address",
            cluster,
            "--cpus-per-run",
            "2",
            "--out",
            str(tmp_path),
        ]  # fmt: skip
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (
        "uqbench: error: no node of the Ray cluster can give a run 2 CPU and 0 GPU "
        "(--cpus-per-run/--gpus-per-run); its nodes have: 1 CPU/0 GPU, 1 CPU/0 GPU"
    )
    assert not any(tmp_path.iterdir())


@needs_ray
def test_killed_worker_is_retried_and_suite_matches_local(tmp_path, cluster, local_toy):
    from uqbench.executors import RayExecutor

    executor = RayExecutor(address=cluster, max_retries=2)
    killed = _run_killing(_runner(tmp_path, "ray", executor), _task_pids)
    assert killed, "no run was seen executing on a worker"
    results = json.loads((tmp_path / "ray" / "toy" / "results.json").read_text())
    assert _metrics(results) == _metrics(local_toy)  # the retried run too: nothing lost


@needs_ray
def test_run_that_keeps_dying_is_reported_others_finish_and_rerun_resumes(
    tmp_path, cluster, local_toy
):
    from uqbench.executors import RayExecutor

    runner = _runner(tmp_path, "ray", RayExecutor(address=cluster, max_retries=0))
    killed = _run_killing(runner, _task_pids)
    assert killed
    assert len(runner.failed) == 1
    ((key, error),) = runner.failed.items()
    assert "died" in error.lower() or "crash" in error.lower() or "exit" in error.lower(), error
    records = {p.stem: json.loads(p.read_text()) for p in runner.runs_dir.glob("*.json")}
    runs = sorted(k for k, r in records.items() if r["status"] == "ok")
    assert len(runs) == 6 and key not in runs  # every other run finished and was written
    assert records[key]["status"] == "failed" and records[key]["error"]  # and it is recorded

    again = _runner(tmp_path, "ray", RayExecutor(address=cluster))
    todo = [s.key for s in again.specs if not again._is_done(s)]
    assert todo == [key]  # resuming redoes only the failed run
    results = again.run()
    again.executor.stop()
    assert not again.failed and _metrics(results) == _metrics(local_toy)


def _run_killing(
    runner: Runner, workers: Callable[[], list[int]], kills: int = 1, after: float = 1.0
) -> list[int]:
    """Run the suite in a thread; SIGKILL ``kills`` workers (pids from ``workers()``), one at
    a time: each the first new one (not alive at the previous kill) seen for over ``after`` s.
    Stops the runner's executor at the end."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    killed: list[int] = []
    old: set[int] = set()  # workers alive at the last kill: a broken pool's, going away
    seen: dict[int, float] = {}  # pid -> since when it has been seen
    end = time.monotonic() + 240
    while len(killed) < kills and thread.is_alive() and time.monotonic() < end:
        now = time.monotonic()
        seen = {pid: seen.get(pid, now) for pid in workers() if pid not in old}
        for pid, since in seen.items():
            if now - since > after and pid in workers():  # still there: kill it
                old |= set(workers())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                seen = {}
                break
        time.sleep(0.1)
    thread.join(300)
    runner.executor.stop()
    if errors:
        raise errors[0]
    return killed


# --- worker processes on this machine (--executor processes) ------------------------------

#: Three families on the toy task, short: enough for two workers and a queue, and for a
#: worker to be killed while its run (or its start-up) is under way.
PROC_SUITE = """
name = "toy"
methods = ["l2", "ffg", "mnf"]
tasks = ["toy-cubic"]
seeds = [0]
[eval]
test_samples = 8
[task.toy-cubic]
train = { epochs = 100 }
"""


@pytest.fixture(scope="module")
def local_proc_toy(tmp_path_factory) -> dict:
    """PROC_SUITE made by the local executor, the reference for the process executor."""
    tmp = tmp_path_factory.mktemp("local-proc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UQBENCH_CACHE_DIR", str(tmp / "cache"))
        with _one_thread():
            return _runner(tmp, "results", suite=PROC_SUITE).run()


def _spawned_workers(parent: int | None = None) -> list[int]:
    """The spawned worker processes (each executing one run) of ``parent`` (default: ours)."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmd:
            pids.append(int(proc.name))
    return pids


def test_processes_match_local_and_a_killed_worker_is_retried(
    tmp_path, local_proc_toy, monkeypatch
):
    from uqbench.executors import ProcessExecutor

    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache"))
    runner = _runner(tmp_path, "proc", ProcessExecutor(jobs=2, max_retries=1), PROC_SUITE)
    assert _run_killing(runner, _spawned_workers, after=2.0), "no worker was seen running"
    assert not runner.failed
    results = json.loads((tmp_path / "proc" / "toy" / "results.json").read_text())
    assert _metrics(results) == _metrics(local_proc_toy)  # retried too
    assert results["environment"]["torch_threads"] == 1  # the workers', not the driver's
    assert len(list((tmp_path / "proc" / "toy" / "runs").glob("*.npz"))) == 3


def test_processes_report_a_run_that_keeps_dying_and_a_rerun_resumes(
    tmp_path, local_proc_toy, monkeypatch
):
    """The first kill breaks the shared pool and names no run; the runs it was executing are
    retried alone, and the second kill (of one of them) is that run's own death."""
    from uqbench.executors import ProcessExecutor

    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache"))
    runner = _runner(tmp_path, "proc", ProcessExecutor(jobs=2, max_retries=0), PROC_SUITE)
    assert len(_run_killing(runner, _spawned_workers, kills=2, after=2.0)) == 2
    assert len(runner.failed) == 1, runner.failed
    ((key, error),) = runner.failed.items()
    assert "worker process died 1 time(s)" in error, error
    records = {p.stem: json.loads(p.read_text()) for p in runner.runs_dir.glob("*.json")}
    assert len(records) == 3  # the two others finished and were written
    assert {k for k, r in records.items() if r["status"] == "failed"} == {key}

    again = _runner(tmp_path, "proc", ProcessExecutor(jobs=2), PROC_SUITE)
    assert [s.key for s in again.specs if not again._is_done(s)] == [key]
    results = again.run()
    assert not again.failed
    assert _metrics(results) == _metrics(local_proc_toy)


def test_process_executor_bad_requests_are_one_line(tmp_path, capsys):
    from uqbench.executors import ProcessExecutor

    for kw, message in (({"jobs": 0}, "--jobs must be a positive"), ({"threads": 0}, "--cpus")):
        with pytest.raises(ConfigError, match=message):
            ProcessExecutor(**kw)
    code = main(["run", "--suite", "smoke", "--jobs", "2", "--out", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("uqbench: error: --jobs needs --executor processes")
    assert not any(tmp_path.iterdir())


def test_a_family_registered_by_its_decorator_alone_runs_in_worker_processes(
    tmp_path, clean_registry, monkeypatch
):
    """No entry point: a fresh worker knows the family only once it imports the module that
    registered it, which the executor names for it (before: "unknown posterior")."""
    from uqbench.executors import ProcessExecutor

    (tmp_path / "uqbench_deco_only.py").write_text(
        "import uqbench\n\n"
        '@uqbench.register_posterior("deco-l2")\n'
        'class DecoL2(uqbench.get_posterior("l2")):\n'
        '    display_name = "Deco L2"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("uqbench_deco_only")
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "cache"))
    suite = PROC_SUITE.replace('["l2", "ffg", "mnf"]', '["deco-l2"]').replace("100", "20")
    runner = _runner(tmp_path, "proc", ProcessExecutor(jobs=1), suite)
    (record,) = runner.run()["runs"]
    assert not runner.failed
    assert record["status"] == "ok" and record["method"] == "deco-l2"


def test_sigterm_to_the_driver_stops_its_worker_processes(tmp_path):
    """``kill``, ``timeout`` and batch schedulers send SIGTERM: the driver stops as on Ctrl-C,
    its workers with it (before, they were left training as orphans of init, and a rerun
    raced them for the same checkpoint)."""
    import signal
    import subprocess
    import sys
    import time

    suite = tmp_path / "long.toml"
    suite.write_text(PROC_SUITE.replace('["l2", "ffg", "mnf"]', '["l2"]').replace("100", "100000"))
    env = {**os.environ, "UQBENCH_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "uqbench.cli", "run", "--suite", str(suite), "--out",
           str(tmp_path / "out"), "--executor", "processes", "--jobs", "1", "--quiet"]  # fmt: skip
    driver = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        while not workers and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
            workers = _spawned_workers(driver.pid)
        assert workers, "no worker was seen running"
        time.sleep(2.0)
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=60) == 130
        assert "run the same command again to resume" in driver.stderr.read()
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers), "a worker outlived its driver"
    finally:
        driver.kill()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("env", "found"), [("auto", "file"), ("", "file"), ("10.0.0.1:6379", "env")]
)
def test_address_auto_looks_where_ray_does(tmp_path, monkeypatch, env, found):
    from uqbench.executors import _auto_address

    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:1234\n")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", env)
    want = (
        ("127.0.0.1:1234", str(tmp_path / "ray" / "ray_current_cluster"))
        if found == "file"
        else (env, "RAY_ADDRESS")
    )
    assert _auto_address() == want
