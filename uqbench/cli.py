"""The ``uqbench`` command line: run, report, check, list, data verify.

Errors meant for the user (:class:`uqbench.errors.UQBenchError`, and file-system
errors such as a read-only or full disk) are printed as one line, without a
traceback, and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uqbench.errors import ConfigError, UQBenchError
from uqbench.settings import SETTINGS

EPILOG = "Docs: README.md. Data lookup: --data-dir (else $UQBENCH_DATA_DIR), then the user cache."


def _names(values: list[str] | None, flag: str) -> list[str] | None:
    """Accept both ``--methods a b`` and ``--methods a,b`` (None: the flag was not given).
    A flag given only empty names (``--methods "$UNSET"``) is refused: running the whole
    suite instead would be a surprise of hours."""
    if values is None:
        return None
    names = [v.strip() for item in values for v in item.split(",") if v.strip()]
    if not names:
        raise ConfigError(
            f"{flag} was given no names (an empty value?); leave it out to run all of the suite's"
        )
    return names


def _data_args(p: argparse.ArgumentParser, downloads: bool = True) -> None:
    p.add_argument("--data-dir", help="folder with mnist/, notmnist/, cifar10/ (else env/cache)")
    p.add_argument(
        "--no-download",
        action="store_true",
        help="never download missing data"
        if downloads
        else "accepted for symmetry with run; verify never downloads",
    )
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        default=None,
        help="accept data whose checksum does not match (or UQBENCH_ALLOW_UNVERIFIED=1); "
        "results are labelled unverified",
    )


def build_parser(with_extras: bool = True) -> argparse.ArgumentParser:
    """The argument parser of every subcommand (``with_extras``: also list those of
    :data:`COMMANDS_GROUP`, which cost an entry-point scan)."""
    parser = argparse.ArgumentParser(prog="uqbench", description=__doc__, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train and evaluate a suite, then write its report")
    run.add_argument(
        "--suite", default="quick", help="built-in suite name or a .toml path (default: quick)"
    )
    # action="extend": a repeated flag adds to the first (``--seeds 0 --seeds 1``: both)
    run.add_argument(
        "--methods", nargs="+", action="extend", help="posterior families (default: the suite's)"
    )
    run.add_argument("--tasks", nargs="+", action="extend", help="tasks (default: the suite's)")
    run.add_argument(
        "--seeds", nargs="+", type=int, action="extend", help="seeds (default: the suite's)"
    )
    for settings in SETTINGS:  # one flag per setting that has one (uqbench.settings)
        for flag, name, kind, meta in settings.flags():
            run.add_argument(
                flag,
                dest=f"{settings.section}.{name}",
                type=kind,
                choices=meta["choices"],
                metavar=None if meta["choices"] else {int: "N", float: "X"}.get(kind, "VALUE"),
                help=meta["help"],
            )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TASK.SECTION.KEY=VALUE",
        help="override one task's suite setting, e.g. mnist.train.epochs=1, "
        "cifar5.data.n_train=500, mnist.ood=notmnist,fashion-mnist (repeatable; wins over "
        "the options that apply to every task)",
    )
    run.add_argument(
        "--device",
        help="cpu, cuda, cuda:N or auto (default cpu; on Ray: cuda when --gpus-per-run > 0)",
    )
    run.add_argument(
        "--compile",
        choices=["off", "default", "reduce-overhead"],
        default="off",
        help="train through torch.compile (default) or CUDA graphs (reduce-overhead, CUDA "
        "only); equal to eager within float tolerance only. Falls back to eager, with one "
        "line, where it cannot run (default: off)",
    )
    run.add_argument(
        "--executor",
        choices=["local", "processes", "ray"],
        default="local",
        help="local: one run after another in this process (default); processes: --jobs "
        "runs at once on this machine, each in its own process (several may share one GPU); "
        "ray: each run a Ray task (pip install 'uqbench[ray]')",
    )
    run.add_argument(
        "--jobs",
        type=int,
        help="processes: runs at once (default: this machine's cores / --cpus-per-run)",
    )
    run.add_argument(
        "--address",
        help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray instance)",
    )
    run.add_argument(
        "--gpus-per-run", type=float, default=0, help="Ray: GPUs per run, may be a fraction"
    )
    run.add_argument(
        "--cpus-per-run", type=int, default=1, help="ray, processes: CPU cores (threads) per run"
    )
    run.add_argument(
        "--vectorize-seeds",
        action="store_true",
        help="train the seeds of each (method, task) as one vectorized model (same results "
        "as separate runs up to float rounding; families that cannot are trained separately)",
    )
    run.add_argument("--out", default="results", help="results root (default: results/)")
    run.add_argument("--no-report", action="store_true", help="skip the report")
    run.add_argument("--dry-run", action="store_true", help="print the resolved runs and stop")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _data_args(run)

    rep = sub.add_parser("report", help="rebuild the report from stored results alone")
    rep.add_argument("results_dir", help="a results/<suite> folder (or its results.json)")
    rep.add_argument(
        "--test-noise",
        action="store_true",
        help="intervals over seeds also cover the test set's noise the seeds share, for "
        "statistics recomputable from the runs' saved outputs (slower); default: over seeds "
        "alone",
    )
    rep.add_argument("--quiet", action="store_true", help="no progress bar")

    chk = sub.add_parser(
        "check",
        help="compare results with a reference: exit 0 pass, 1 regression, 2 bad input",
    )
    chk.add_argument("results", help="results.json or its folder")
    chk.add_argument(
        "--reference",
        required=True,
        action="append",
        help="reference results.json; given again (--reference A --reference B): one reference "
        "of all their runs, repeats with other seeds whose mean tolerances from `python -m "
        "uqbench.tolerances --reference-mean` hold against (name them with --tolerance)",
    )
    chk.add_argument("--tolerance", help="tolerance file (default: beside the reference)")
    chk.add_argument(
        "--exact",
        action="store_true",
        help="behaviour tripwire: every metric value must equal the reference's bit for bit",
    )
    chk.add_argument(
        "--if-same-machine",
        action="store_true",
        help="with --exact: skip the tripwire (exit 0, saying why) for results of another "
        "machine class than the reference's (CPU model, torch build, threads) instead of "
        "refusing them",
    )
    chk.add_argument(
        "--close",
        type=float,
        metavar="RTOL",
        help="on any machine class: every checked metric of each reference run within RTOL "
        "(relative; absolute for values below 1) of the same seed's value (for tasks whose "
        "seed spread is too wide for the statistical check, e.g. the toy's 5e-3 in CI)",
    )
    chk.add_argument(
        "--tasks",
        nargs="+",
        action="extend",
        metavar="TASK",
        help="compare only the runs of these tasks (each one of the reference's; "
        "--tasks a b, or a,b)",
    )
    chk.add_argument(
        "--any-seeds",
        action="store_true",
        help="the results may use other seeds than the reference: compare each side's mean",
    )
    chk.add_argument(
        "--two-sided",
        action="store_true",
        help="an improvement beyond the tolerance fails too (the reference is out of date)",
    )
    chk.add_argument("--changes-only", action="store_true", help="list only rows that moved")
    chk.add_argument("--json", action="store_true", help="machine-readable report on stdout")

    lst = sub.add_parser("list", help="registered posteriors, tasks, OOD sets and suites")
    lst.add_argument("--json", action="store_true", help="machine-readable output")

    data = sub.add_parser("data", help="data set utilities")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    ver = dsub.add_parser(
        "verify",
        help="find, checksum and count every data set (never downloads)",
        description="Find, checksum and count every data set; nothing is downloaded "
        "(`uqbench run` downloads what a suite needs into the cache unless --no-download).",
    )
    ver.add_argument("--json", action="store_true", help="machine-readable output")
    _data_args(ver, downloads=False)

    for name, ep in (extra_commands() if with_extras else {}).items():  # own options
        sub.add_parser(name, help=f"{ep.value} (`uqbench {name} --help`)", add_help=False)
    return parser


#: Entry-point group of subcommands that live outside the library, ``name = "module:main"``
#: with ``main(argv) -> int`` (``perf``: the speed benchmark, uqbench.benchmarks.perf).
COMMANDS_GROUP = "uqbench.commands"


def extra_commands() -> dict[str, Any]:
    """The entry points of :data:`COMMANDS_GROUP` not shadowing a built-in command."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name not in COMMANDS}


def _version() -> str:
    from uqbench import __version__

    return f"uqbench {__version__}"


def _source(args: argparse.Namespace):
    from uqbench.data import DataSource

    return DataSource.resolve(
        data_dir=args.data_dir,
        download=not args.no_download,
        allow_unverified=args.allow_unverified,
    )


def parse_task_settings(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["mnist.train.epochs=1", ...]`` -> ``{"mnist": {"train": {"epochs": 1}}}``.

    The task name is everything before the first dot that is followed by a known
    section (``train``, ``eval``, ``data``, ``arch``, ``ood``), so task names may hold
    dots and dashes. VALUE is read as a TOML value (``1``, ``0.5``, ``[16, 16]``,
    ``"x"``); anything else is a string, and for ``ood`` a comma-separated list.
    """
    import tomllib

    from uqbench.errors import ConfigError

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        path, sep, text = item.partition("=")
        parts = path.strip().split(".")
        cut = next((i for i in range(1, len(parts)) if parts[i] in _TASK_SECTIONS), None)
        if not sep or cut is None or not text.strip():
            raise ConfigError(
                f"--set {item!r}: expected TASK.SECTION.KEY=VALUE or TASK.ood=SET,SET "
                f"(TASK.ood=[] for none; sections: {', '.join(sorted(_TASK_SECTIONS))})"
            )
        task, keys = ".".join(parts[:cut]), parts[cut:]
        try:
            value: Any = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        if keys == ["ood"] and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if (keys[0] == "ood") != (len(keys) == 1):
            raise ConfigError(f"--set {item!r}: {keys[0]} needs exactly one key after it")
        table = out.setdefault(task, {})
        for k in keys[:-1]:
            table = table.setdefault(k, {})
        table[keys[-1]] = value
    return out


_TASK_SECTIONS = {"train", "eval", "data", "arch", "ood"}


def _flag_values(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    """The settings of one section given on the command line (all tasks)."""
    names = [name for _, name, _, _ in settings.flags()]
    given = {name: getattr(args, f"{settings.section}.{name}") for name in names}
    return {k: v for k, v in given.items() if v is not None}


def cmd_run(args: argparse.Namespace) -> int:
    from uqbench.cpu import tune_malloc
    from uqbench.report import write_report
    from uqbench.runner import Runner, argv_command, check_family_values, describe
    from uqbench.suites import load_suite

    tune_malloc()
    # After the runner (which imports torch first): the order of the heavy imports is the
    # one an early Ctrl-C was tested with (tests/test_failures.py).
    from uqbench.environment import resolve_device
    from uqbench.errors import ConfigError

    suite = load_suite(args.suite)
    overrides: dict[str, Any] = {
        "methods": _names(args.methods, "--methods"),
        "tasks": _names(args.tasks, "--tasks"),
        "seeds": args.seeds,
        **{s.section: _flag_values(args, s) for s in SETTINGS},
        "task": parse_task_settings(args.set),
    }
    if args.jobs is not None and args.executor != "processes":
        raise ConfigError("--jobs needs --executor processes")
    for flag, value in (("--jobs", args.jobs), ("--cpus-per-run", args.cpus_per_run)):
        if value is not None and value < 1:  # the executors say so too; --dry-run must as well
            raise ConfigError(f"{flag} must be a positive whole number, got {value}")
    if args.compile != "off" and args.executor != "local":
        raise ConfigError(
            f"--compile needs --executor local ({args.executor} workers train eagerly)"
        )
    if args.vectorize_seeds and args.executor != "local":
        raise ConfigError(
            f"--vectorize-seeds trains in this process: leave out --executor {args.executor}"
        )
    if args.executor != "ray" and (args.address or args.gpus_per_run):
        raise ConfigError("--address and --gpus-per-run need --executor ray")
    if args.executor == "local" and args.cpus_per_run != 1:
        raise ConfigError("--cpus-per-run needs --executor processes or ray")
    specs = suite.runs(overrides)
    check_family_values(specs, str(suite.path))
    if args.dry_run:
        if args.executor != "ray":  # Ray's workers, not this machine, provide the device
            resolve_device(args.device or "cpu")
        else:
            _ray_executor(args)  # its flags' checks, without starting Ray
        print(describe(specs))
        dry = Runner(
            suite,
            out=Path(args.out),
            source=_source(args),
            device=resolve_device("cpu"),
            command="",
            overrides=overrides,
            log=lambda message: print(message, file=sys.stderr),  # stdout: the runs alone
        )
        _check_out(dry.runs_dir)
        pending = dry.todo()
        todo = len(pending)
        replaced = [s.key for s in pending if dry.superseded(s) is not None]
        print(
            f"{len(specs)} runs: {len(specs) - todo} already done in {dry.runs_dir}, "
            f"{todo} would run"
            + (
                f"; {len(replaced)} of them would replace finished runs (made with other "
                "settings, by another code version or from another copy of the data, or with "
                f"their saved outputs missing: "
                f"{', '.join(replaced[:5])}{', ...' if len(replaced) > 5 else ''}), "
                f"which are kept in {dry.runs_dir / 'superseded'}"
                if replaced
                else ""
            ),
            file=sys.stderr,
        )
        return 0
    executor = None
    if args.executor == "ray":
        executor = _ray_executor(args)
        suite.runs(overrides)  # a bad name or value is reported before Ray starts
        executor.start()  # Ray missing, unreachable or too small: one line, nothing trained
        device = resolve_device("cpu")  # the driver only loads data; workers pick their device
    elif args.executor == "processes":
        from uqbench.executors import ProcessExecutor

        device_name = args.device or "cpu"
        resolve_device(device_name)  # a bad or absent device: one line, nothing trained
        executor = ProcessExecutor(jobs=args.jobs, device=device_name, threads=args.cpus_per_run)
        device = resolve_device("cpu")  # the driver only loads data; workers train
    else:
        device = resolve_device(args.device or "cpu")
    runner = Runner(
        suite,
        out=Path(args.out),
        source=_source(args),
        device=device,
        command=argv_command(),
        overrides=overrides,
        progress=not args.quiet,
        log=log_line,
        executor=executor,
        vectorize_seeds=args.vectorize_seeds,
        compile_mode=args.compile,
    )
    try:
        results = runner.run()
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished runs are saved in {runner.runs_dir}; run the same "
            "command again to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if executor is not None:
            executor.stop()
    for item in results.get("left_out", []):
        print(f"left out of results.json: {item['file']}: {item['reason']}", file=sys.stderr)
    print(f"results: {runner.out / 'results.json'} ({len(results['runs'])} runs)")
    if not args.no_report:
        try:
            paths = write_report(results, runner.out, progress=not args.quiet)
        except Exception:
            # Hours of runs are safe in results.json: say so before the report's own error.
            print(
                f"the report could not be written; the results are saved in "
                f"{runner.out / 'results.json'}, and `uqbench report {runner.out}` rebuilds it",
                file=sys.stderr,
            )
            raise
        print("report: " + ", ".join(str(p) for p in paths if p.suffix in (".md", ".html")))
    # Failed runs of the folder that this command did not ask for (another command's) are
    # shown, but only this command's own failures make it fail.
    mine = {(r.method, r.task, r.seed) for r in runner.specs}
    failed = results.get("failed", [])
    own = [f for f in failed if (f["method"], f["task"], f["seed"]) in mine]
    others = [f for f in failed if f not in own]
    for runs, header in (
        (own, "run(s) FAILED (recorded in their run files)"),
        (others, "run(s) of other commands in this folder failed earlier (run them to retry)"),
    ):
        if runs:
            print(f"{len(runs)} {header}:", file=sys.stderr)
            for f in runs:
                print(f"  {f['error']}", file=sys.stderr)
    return 1 if own else 0


def _ray_executor(args: argparse.Namespace) -> Any:
    """The RayExecutor of ``uqbench run``'s flags (checked; Ray not started)."""
    from uqbench.executors import RayExecutor

    return RayExecutor(
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        device=args.device,
    )


def _check_out(out: Path) -> None:
    """What a run's first write would find wrong with ``out``, without creating it: a file
    where a folder must be, or a folder this user cannot write in (OutputError)."""
    from uqbench.errors import OutputError

    path = out.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise OutputError(f"cannot write the results folder {out}: {path} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the results folder {out}: {path} is not writable")


def cmd_report(args: argparse.Namespace) -> int:
    from uqbench.errors import ResultsError
    from uqbench.report import write_report
    from uqbench.results import load_results, resolve_results_path

    # A folder, or a results file of any name: the report goes beside the file, whose runs'
    # saved outputs are in runs/ there.
    path = resolve_results_path(Path(args.results_dir))
    if path.name != "results.json" and (path.parent / "results.json").is_file():
        raise ResultsError(
            f"{path.parent} holds its own results.json, whose report a report of {path.name} "
            "would overwrite: move the file into a folder of its own"
        )
    paths = write_report(
        load_results(path), path.parent, test_noise=args.test_noise, progress=not args.quiet
    )
    print("report: " + ", ".join(str(p) for p in paths if p.suffix in (".md", ".html")))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from uqbench.check import format_report, run_check

    if args.exact and (args.any_seeds or args.two_sided or args.tolerance):
        raise ConfigError(
            "--exact compares every value bit for bit: it takes no --any-seeds, --two-sided "
            "or --tolerance (those are the statistical check's)"
        )
    if args.if_same_machine and not args.exact:
        raise ConfigError("--if-same-machine is the tripwire's (--exact)")
    if args.close is not None:
        if args.exact or args.any_seeds or args.two_sided or args.tolerance:
            raise ConfigError(
                "--close compares each run with the same seed's within RTOL: it takes no "
                "--exact, --any-seeds, --two-sided or --tolerance"
            )
        if not 0 < args.close < 1:  # also refuses nan
            raise ConfigError(f"--close RTOL must lie between 0 and 1, got {args.close:g}")
    report = run_check(
        Path(args.results),
        [Path(p) for p in args.reference],
        Path(args.tolerance) if args.tolerance else None,
        exact=args.exact,
        seeds="any" if args.any_seeds else "same",
        two_sided=args.two_sided,
        if_same_machine=args.if_same_machine,
        close=args.close,
        tasks=_names(args.tasks, "--tasks"),
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(format_report(report, all_rows=not args.changes_only))
    return 0 if report.passed else 1


def cmd_list(args: argparse.Namespace) -> int:
    from uqbench import (
        get_ood_set,
        get_posterior,
        get_task,
        list_ood_sets,
        list_posteriors,
        list_tasks,
    )
    from uqbench.suites import list_suites

    listing = {
        "posteriors": list_posteriors(),
        "tasks": list_tasks(),
        "ood_sets": list_ood_sets(),
        "suites": list_suites(),
    }
    if args.json:
        print(json.dumps(listing, indent=1))
        return 0
    print("posteriors:")
    for n in listing["posteriors"]:
        print(f"  {n:18s} {get_posterior(n).display_name}")
    print("tasks:")
    for n in listing["tasks"]:
        print(f"  {n:18s} {get_task(n).display_name}")
    print("OOD sets:")
    for n in listing["ood_sets"]:
        print(f"  {n:18s} {get_ood_set(n).display_name}")
    print("suites:")
    for n in listing["suites"]:
        print(f"  {n}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from uqbench.data import format_verify_table, verify_all

    source = _source(args)
    report = verify_all(source)
    print(json.dumps(report, indent=1) if args.json else format_verify_table(report))
    usable = {"verified", "unverified"} if source.allow_unverified else {"verified"}
    refused = {name: e["status"] for name, e in report.items() if e["status"] not in usable}
    if not refused:
        return 0
    why = {
        "missing": "not found",
        "corrupt": "unreadable",
        "unverified": "checksum mismatch, refused by `uqbench run` without --allow-unverified "
        "or UQBENCH_ALLOW_UNVERIFIED=1",
    }
    said = "; ".join(
        f"{name} {status} ({why.get(status, status)})" for name, status in refused.items()
    )
    print(f"uqbench: data verify: exit 1: {said}", file=sys.stderr)
    return 1


def import_torch_holding_ctrl_c() -> None:
    """Import torch with Ctrl-C (and SIGTERM) held back until the import is done, then
    honoured.

    A KeyboardInterrupt raised inside torch's C++ module initialisation cannot unwind through
    it: the process aborts ("terminate called after throwing ... KeyboardInterrupt"). So the
    commands that train import torch first, with SIGINT only noted, and raise the
    interrupt afterwards, where :func:`main` turns it into one line. Left alone when torch is
    loaded, off the main thread, or when SIGINT is not Python's default (ignored, or a
    caller's own handler).
    """
    if (
        "torch" in sys.modules
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        import torch  # noqa: F401

        return
    caught: list[int] = []
    term = signal.getsignal(signal.SIGTERM)  # sigterm_as_interrupt's, when main set it
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        import torch  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL if term is None else term)
    if caught:
        raise KeyboardInterrupt


# Commands that load torch: imported under import_torch_holding_ctrl_c before they run.
TORCH_COMMANDS = frozenset({"run", "data"})

COMMANDS = {
    "run": cmd_run,
    "report": cmd_report,
    "check": cmd_check,
    "list": cmd_list,
    "data": cmd_data,
}


def log_line(message: str) -> None:
    """Print a line of a run's log; a reader that went away (``uqbench run | head``) does not
    stop the runs: the rest of the log goes to the null device."""
    try:
        print(message, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class OutlivesReader:
    """A text stream that, once its reader has gone (a closed pipe: ``uqbench run 2>&1 |
    head``), sends the rest to the null device instead of raising: progress bars and
    warnings must not stop the runs either. Everything else is the stream's own."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _drop(self) -> None:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        except (OSError, ValueError, AttributeError):  # not a real file: nothing to redirect
            pass

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def outliving_readers() -> Iterator[None]:
    """Within: ``sys.stdout`` and ``sys.stderr`` survive a reader that goes away
    (:class:`OutlivesReader`), for commands whose work must go on (runs, workers)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (None if s is None else OutlivesReader(s) for s in saved)  # closed
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM (``kill``, ``timeout``, a batch scheduler) stop a command as Ctrl-C does:
    finished runs stay saved, worker processes are stopped (not left training as orphans),
    and the message says how to resume. Only in the main thread, where handlers live."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``uqbench`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    with sigterm_as_interrupt():
        return _main(argv)


def _main(argv: list[str]) -> int:
    try:
        builtin = bool(argv) and argv[0] in COMMANDS  # then no entry-point scan at start-up
        extra = None if builtin or not argv else extra_commands().get(argv[0])
        if extra is not None:  # its options are its own, not ours
            import_torch_holding_ctrl_c()
            return int(extra.load()(argv[1:]) or 0)
        args = build_parser(with_extras=not builtin).parse_args(argv)
        if args.command in TORCH_COMMANDS:
            import_torch_holding_ctrl_c()
        if args.command == "run":  # its runs go on when the reader of its log goes away
            with outliving_readers():
                return cmd_run(args)
        return COMMANDS[args.command](args)
    except UQBenchError as exc:
        print(f"uqbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before or between runs: nothing is half-written
        print("\nuqbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `uqbench list | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # read-only or full disk, permissions, a file where a folder goes
        where = f": {exc.filename}" if exc.filename else ""
        print(f"uqbench: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
