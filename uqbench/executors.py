"""Where a suite's runs are made: here one by one (the default), several at once in worker
processes on this machine, or as tasks on a Ray cluster.

:class:`ProcessExecutor` (``--executor processes --jobs N``) keeps N runs going at once, each
in a fresh spawned process (the standard library's ``concurrent.futures``), for a machine
with more cores than one run uses, or a GPU that one LeNet-sized run leaves mostly idle
(several processes share it; under CUDA MPS their kernels run concurrently).

Ray (``pip install 'uqbench[ray]'``) schedules each run as one task with its resource
request (``cpus_per_run``, ``gpus_per_run``; a fraction of a GPU lets several small runs
share a card). The driver (the ``uqbench run`` process) keeps every file to itself: it
loads and checks the data before anything trains, ships it through Ray's object store,
and writes each run's file as its task returns, exactly as the local loop does, so a
stopped suite resumes the same way. Workers call :func:`uqbench.runner.make_run`, the
function the local loop calls, and keep checkpoints in the driver's checkpoint cache
(``$UQBENCH_CACHE_DIR``), which must therefore be a folder every node reaches.

A worker process that dies (killed, out of memory, its node lost) is retried up to
``max_retries`` times by Ray, and the retry resumes from the run's last checkpoint; a
run that raises, or dies once more than that, is reported with its error when the
others have finished.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tqdm.auto import tqdm

from uqbench.errors import ConfigError
from uqbench.suites import RunSpec

if TYPE_CHECKING:
    from uqbench.runner import Runner

#: Ray retries a run whose worker process died this many times before reporting it failed.
DEFAULT_MAX_RETRIES = 2


class Executor(Protocol):
    """Makes a list of runs for a :class:`~uqbench.runner.Runner`."""

    def run(self, runner: Runner, todo: list[RunSpec], env: dict[str, Any]) -> dict[str, str]:
        """Make every run of ``todo``, writing each with ``runner.write_run`` as it finishes;
        return ``{run key: error}`` for the runs that failed (the others are all written)."""
        ...


class _Progress:
    """The progress bar and per-run lines every executor shows, and the writing of each
    finished run by the driver (``runner.write_run``), shared by the executors."""

    def __init__(self, runner: Runner, total: int, slots: int) -> None:
        self.runner, self.total, self.slots = runner, total, slots
        self.failed: dict[str, str] = {}
        self.finished = 0
        self.bar = tqdm(total=total, desc="runs", unit="run", disable=not runner.progress)
        self.say = self.bar.write if runner.progress else runner.log

    def status(self, pending: int) -> None:
        self.bar.set_postfix_str(
            f"running {min(pending, self.slots)}, queued {max(0, pending - self.slots)}, "
            f"failed {len(self.failed)}"
        )

    def done(self, run: RunSpec, record: dict[str, Any], outputs: dict[str, Any]) -> None:
        path = self.runner.write_run(run, record, outputs)
        self.finished += 1
        self.say(
            f"[{self.finished}/{self.total}] {run.key}: {record['train_seconds']:.1f}s "
            f"train + {record['eval_seconds']:.1f}s eval -> {path}"
        )
        self.bar.update(1)

    def fail(self, run: RunSpec, error: str) -> None:
        self.failed[run.key] = error
        self.say(f"FAILED {run.key}: {error}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _ray():
    """Import Ray, or say in one line how to get it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, which is not installed: pip install 'uqbench[ray]'"
        ) from None
    return ray


def _auto_address() -> tuple[str, str] | None:
    """The cluster ``--address auto`` would join, as Ray finds it: ``$RAY_ADDRESS``, else
    the address of the last cluster started on this machine (``<tmp>/ray/ray_current_cluster``,
    which outlives that cluster); with where it was found. None: neither is there."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":  # RAY_ADDRESS=auto: Ray looks the cluster up, as below
        return env, "RAY_ADDRESS"
    tmp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir())
    path = tmp / "ray" / "ray_current_cluster"
    try:
        found = path.read_text().strip().splitlines()
    except OSError:
        return None
    return (found[0].strip(), str(path)) if found and found[0].strip() else None


def _address_parts(address: str, found_in: str | None = None) -> tuple[str, str]:
    """``HOST:PORT`` split in two, or :class:`ConfigError` naming a malformed address."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        given = "" if found_in is None else f" (from {found_in})"
        raise ConfigError(f"bad Ray address {address!r}{given}: use auto or HOST:PORT")
    return host, port


def _check_address(address: str, timeout: float = 5.0, found_in: str | None = None) -> None:
    """Fail fast, in one line, when nothing listens at ``HOST:PORT`` (``found_in``: where
    ``--address auto`` found it, for the message)."""
    if address.startswith("ray://"):
        return  # Ray Client: let Ray report it
    host, port = _address_parts(address, found_in)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        hint = "is `ray start --head` running there?"
        if found_in is not None:
            hint = f"--address auto found it in {found_in}; that cluster may have stopped"
        raise ConfigError(
            f"cannot reach a Ray cluster at {address}: {exc.strerror or exc} ({hint})"
        ) from None


def plugin_modules(run: RunSpec) -> tuple[str, ...]:
    """The modules that define a run's classes, for a worker to import before it looks them
    up by name: a class registered by its decorator alone (no entry point) is known to a
    fresh process only once its module is imported. ``__main__`` is left out: a spawned
    process runs the main script again itself."""
    return tuple(sorted({c.__module__ for c in run.code_classes()} - {"__main__"}))


def _remote_make_run(
    run: RunSpec,
    data: Any,
    device_name: str,
    env: dict[str, Any],
    cache: str,
    threads: int,
    modules: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body of one Ray task or worker process: one run, on the worker's device, with
    the driver's cache, after importing ``modules`` (:func:`plugin_modules`); returns its
    record and its per-example outputs."""
    import importlib

    import torch

    from uqbench.cli import OutlivesReader
    from uqbench.cpu import tune_malloc
    from uqbench.environment import cpu_model, resolve_device
    from uqbench.runner import _to_device, make_run

    if sys.stderr is not None and not isinstance(sys.stderr, OutlivesReader):
        sys.stderr = OutlivesReader(sys.stderr)  # the driver's pipe may close first
    if sys.stdout is not None and not isinstance(sys.stdout, OutlivesReader):
        sys.stdout = OutlivesReader(sys.stdout)
    for module in modules:
        importlib.import_module(module)
    tune_malloc()
    os.environ["UQBENCH_CACHE_DIR"] = cache  # make_run checkpoints under cache_dir()
    torch.set_num_threads(threads)
    device = resolve_device(device_name)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_model()} ({os.cpu_count()} cores)"
    outputs: dict[str, Any] = {}
    env = {**env, "device_name": name}
    record = make_run(run, _to_device(data, device), device, env, keep=outputs)
    return record, outputs


class RayExecutor:
    """Runs each (method, task, seed) as a Ray task; see the module docstring.

    ``address``: None starts a local Ray instance on this machine (``num_cpus`` caps the
    cores it offers; default all), ``"auto"`` joins the cluster this machine belongs to,
    ``"HOST:PORT"`` the cluster whose head listens there. ``device``: where runs train on
    their worker (default ``cuda`` when ``gpus_per_run`` > 0, else ``cpu``).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        device: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        num_cpus: int | None = None,
    ) -> None:
        if not cpus_per_run > 0:
            raise ConfigError(f"--cpus-per-run must be positive, got {cpus_per_run}")
        if not gpus_per_run >= 0:
            raise ConfigError(f"--gpus-per-run must be 0 or more, got {gpus_per_run}")
        if gpus_per_run > 1 and gpus_per_run != int(gpus_per_run):
            raise ConfigError(
                f"--gpus-per-run {gpus_per_run}: above 1 it must be a whole number of GPUs"
            )
        if address not in (None, "auto") and not address.startswith("ray://"):
            _address_parts(address)  # its form now: --dry-run checks what a run would
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.device = device or ("cuda" if gpus_per_run > 0 else "cpu")
        if self.device.startswith("cuda") and gpus_per_run == 0:
            raise ConfigError(f"--device {self.device} on Ray needs --gpus-per-run above 0")
        self.max_retries = max_retries
        self.num_cpus = num_cpus
        self._started_here = False

    def start(self) -> None:
        """Connect to (or start) Ray and check that some node can take one run, or raise
        :class:`ConfigError` in one line; call it before any data is loaded."""
        ray = _ray()
        if ray.is_initialized():
            return
        if self.address not in (None, "auto"):
            _check_address(self.address)
        elif self.address == "auto" and (found := _auto_address()) is not None:
            _check_address(found[0], found_in=found[1])  # Ray itself retries a dead one
        kwargs: dict[str, Any] = {"logging_level": "WARNING", "include_dashboard": False}
        if self.address is None:
            kwargs["num_cpus"] = self.num_cpus
        try:  # "local": a new instance, even where another cluster runs on this machine
            ray.init(address=self.address or "local", **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at {self.address}" if self.address != "auto" else "(address auto)"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot connect to a Ray cluster {where}: {first}") from None
        self._started_here = self.address is None
        try:
            self._check_resources(ray)
        except ConfigError:
            self.stop()
            raise

    def _check_resources(self, ray) -> None:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if any(
            n.get("CPU", 0) >= self.cpus_per_run and n.get("GPU", 0) >= self.gpus_per_run
            for n in nodes
        ):
            return
        biggest = (
            ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes)
            or "no live node"
        )
        raise ConfigError(
            f"no node of the Ray cluster can give a run {self.cpus_per_run:g} CPU and "
            f"{self.gpus_per_run:g} GPU (--cpus-per-run/--gpus-per-run); its nodes have: {biggest}"
        )

    def stop(self) -> None:
        """Disconnect; a local Ray instance started by :meth:`start` is shut down."""
        ray = _ray()
        if ray.is_initialized():
            ray.shutdown()

    def slots(self) -> int:
        """How many runs the cluster can hold at once, from its total resources."""
        ray = _ray()
        res = ray.cluster_resources()
        n = math.floor(res.get("CPU", 0) / self.cpus_per_run + 1e-9)
        if self.gpus_per_run:
            n = min(n, math.floor(res.get("GPU", 0) / self.gpus_per_run + 1e-9))
        return max(n, 1)

    def run(self, runner: Runner, todo: list[RunSpec], env: dict[str, Any]) -> dict[str, str]:
        """Submit every run, write each as it returns, and report failures at the end."""
        if not todo:
            return {}
        self.start()
        ray = _ray()
        from uqbench.environment import cache_dir

        task = ray.remote(_remote_make_run).options(
            num_cpus=self.cpus_per_run,
            num_gpus=self.gpus_per_run,
            max_retries=self.max_retries,
            retry_exceptions=False,  # an exception in a run repeats; a dead worker may not
        )
        threads = max(1, int(self.cpus_per_run))
        cache = str(cache_dir().resolve())
        data_refs: dict[int, Any] = {}
        pending: dict[Any, RunSpec] = {}
        for run in todo:
            data = runner.task_data(run)  # loaded and checked by the driver, shipped once
            ref = data_refs.setdefault(id(data), ray.put(data))
            modules = plugin_modules(run)
            pending[task.remote(run, ref, self.device, env, cache, threads, modules)] = run
        slots = self.slots()
        runner.log(
            f"ray: {len(todo)} runs on {slots} slot(s) of {self.cpus_per_run:g} CPU/"
            f"{self.gpus_per_run:g} GPU; workers checkpoint in {cache}"
        )
        progress = _Progress(runner, len(todo), slots)
        failed = progress.failed
        start = time.perf_counter()
        try:
            while pending:
                progress.status(len(pending))
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    run = pending.pop(ref)
                    try:
                        record, outputs = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        progress.fail(run, _one_line(exc))
                    else:
                        progress.done(run, record, outputs)
        finally:
            progress.close()
            for ref in pending:  # interrupted: the finished runs are written already
                ray.cancel(ref, force=True)
            if self._started_here:
                self.stop()
        runner.log(
            f"ray: {len(todo) - len(failed)} runs done, {len(failed)} failed, "
            f"in {time.perf_counter() - start:.1f}s"
        )
        return failed


def _one_line(exc: BaseException) -> str:
    """The gist of a Ray error: the run's own exception, or why its worker died."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        msg = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {msg[0] if msg else ''}".rstrip(": ")
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


class ProcessExecutor:
    """Makes up to ``jobs`` runs at once on this machine, each in its own fresh process.

    Worker processes are spawned (never forked: CUDA cannot be forked) by the standard
    library's :class:`~concurrent.futures.ProcessPoolExecutor`, one process per run
    (``max_tasks_per_child=1``: a run never inherits another's memory), ``threads`` torch
    threads each, training on ``device``. As with Ray, the driver loads and checks the data
    once (tensors reach the workers through shared memory), writes every run file as its
    run returns, and the workers checkpoint in the driver's cache, so an interrupted suite
    resumes the same way. A worker that dies (killed, out of memory) breaks the whole pool,
    and names no run: the runs seen executing then are retried one at a time, alone, where a
    death is the run's own, and the others go back to the pool; all resume from their
    checkpoints. A run that dies alone more than ``max_retries`` times is reported failed,
    and a run that raises is reported with its error at once.
    """

    def __init__(
        self,
        *,
        jobs: int | None = None,
        device: str = "cpu",
        threads: int = 1,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        if not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"--cpus-per-run must be a positive whole number, got {threads}")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        if jobs is None:
            jobs = max(1, (cores or os.cpu_count() or 1) // threads)
        if not isinstance(jobs, int) or jobs < 1:
            raise ConfigError(f"--jobs must be a positive whole number, got {jobs}")
        self.jobs, self.device, self.threads, self.max_retries = jobs, device, threads, max_retries

    def start(self) -> None:
        """Nothing to connect to (the pool starts with the first run)."""

    def environment(self, env: dict[str, Any]) -> dict[str, Any]:
        """The results header's environment, describing where the runs train (the workers'
        device and threads), not the driver, which only loads data."""
        import torch

        from uqbench.environment import resolve_device

        device = resolve_device(self.device)
        out = {**env, "device": str(device), "torch_threads": self.threads}
        if device.type == "cuda":
            out["device_name"] = torch.cuda.get_device_name(device)
        return out

    def stop(self) -> None:
        """Nothing to release (each pool is shut down when its runs end)."""

    def run(self, runner: Runner, todo: list[RunSpec], env: dict[str, Any]) -> dict[str, str]:
        """Run everything in ``todo``, ``jobs`` at a time; write each as it returns."""
        if not todo:
            return {}
        from uqbench.environment import cache_dir

        cache = str(cache_dir().resolve())
        slots = min(self.jobs, len(todo))
        runner.log(
            f"processes: {len(todo)} runs, {slots} at a time, {self.threads} thread(s) each on "
            f"{self.device}; workers checkpoint in {cache}"
        )
        progress = _Progress(runner, len(todo), slots)
        deaths = {run.key: 0 for run in todo}
        start = time.perf_counter()
        queue = list(todo)
        try:
            while queue:
                broken, executing = self._pool_round(runner, queue, env, cache, progress, self.jobs)
                # A death in a shared pool names no run: the runs seen executing are suspects,
                # each retried alone, where a death is its own; the others go back in the queue.
                suspects = [run for run in broken if run.key in executing] or broken
                queue = [run for run in broken if run not in suspects]
                if broken:
                    progress.say(
                        f"a worker process died: {len(suspects)} run(s) retried one at a time, "
                        f"{len(queue)} requeued, all from their checkpoints"
                    )
                for run in suspects:
                    while self._pool_round(runner, [run], env, cache, progress, 1)[0]:
                        deaths[run.key] += 1
                        if deaths[run.key] > self.max_retries:
                            progress.fail(
                                run,
                                f"its worker process died {deaths[run.key]} time(s) "
                                "(killed, or out of memory?)",
                            )
                            break
        finally:
            progress.close()
        runner.log(
            f"processes: {len(todo) - len(progress.failed)} runs done, "
            f"{len(progress.failed)} failed, in {time.perf_counter() - start:.1f}s"
        )
        return progress.failed

    def _pool_round(
        self,
        runner: Runner,
        runs: list[RunSpec],
        env: dict[str, Any],
        cache: str,
        progress: _Progress,
        jobs: int,
    ) -> tuple[list[RunSpec], set[str]]:
        """One pool of ``jobs`` workers for ``runs``; returns the runs it could not finish
        because it broke, and the keys of the runs last seen handed to a worker (executing,
        or the one next in line: the pool passes work one item ahead) when it did."""
        import torch.multiprocessing as tmp

        pool = ProcessPoolExecutor(
            max_workers=min(jobs, len(runs)),
            mp_context=tmp.get_context("spawn"),
            max_tasks_per_child=1,
        )
        broken: list[RunSpec] = []
        executing: set[str] = set()
        pending: dict[Future, RunSpec] = {}
        try:
            for run in runs:
                fut = pool.submit(
                    _remote_make_run, run, runner.task_data(run), self.device, env, cache,
                    self.threads, plugin_modules(run),
                )  # fmt: skip
                pending[fut] = run
            while pending:
                progress.status(len(pending))
                executing = {run.key for fut, run in pending.items() if fut.running()}
                ready, _ = wait(list(pending), timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in ready:
                    run = pending.pop(fut)
                    try:
                        record, outputs = fut.result()
                    except BrokenProcessPool:
                        broken.append(run)
                    except Exception as exc:  # noqa: BLE001 - the run's own error, reported
                        msg = str(exc).strip().splitlines()
                        progress.fail(run, f"{type(exc).__name__}: {msg[0] if msg else ''}")
                    else:
                        progress.done(run, record, outputs)
        finally:
            if pending:  # interrupted: the finished runs are written; stop the others now
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
        return broken, executing
