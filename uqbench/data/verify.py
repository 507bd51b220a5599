"""``uqbench data verify``: where each data set is, whether it verifies, what it holds."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from uqbench.data import datasets
from uqbench.data.formats import NOTMNIST_LETTERS
from uqbench.data.source import DataSource
from uqbench.errors import DataError

DATASETS = ("mnist", "notmnist", "cifar10", "fashion-mnist")


def _counts(y: np.ndarray, names: list[str]) -> dict[str, int]:
    c = np.bincount(y, minlength=len(names))
    return {name: int(c[i]) for i, name in enumerate(names)}


def _entry(name: str, source: DataSource) -> dict[str, Any]:
    loader = {
        "mnist": datasets.load_mnist,
        "notmnist": datasets.load_notmnist,
        "cifar10": datasets.load_cifar10,
        "fashion-mnist": datasets.load_fashion_mnist,
    }[name]
    finder = {
        "mnist": lambda s: next((p.parent for p in datasets.find_mnist(s).values() if p), None),
        "notmnist": datasets.find_notmnist,
        "cifar10": datasets.find_cifar10,
        "fashion-mnist": lambda s: next(
            (p.parent for p in datasets.find_fashion_mnist(s).values() if p), None
        ),
    }[name]
    entry: dict[str, Any] = {
        "dataset": name,
        "found": None,
        "status": "missing",
        "verified": False,
        "files": [],
        "counts": {},
        "notes": [],
        "error": None,
        "searched": [str(d) for d in datasets.search_dirs(source, name)],
    }
    try:
        where = finder(source)
        entry["found"] = str(where) if where is not None else None
        raw = loader(source, check=False)
    except DataError as exc:
        entry["status"] = "missing" if entry["found"] is None else "corrupt"
        entry["error"] = str(exc)
        return entry
    except Exception as exc:  # noqa: BLE001 - verify reports, it never crashes
        entry["status"] = "corrupt"
        entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry
    entry["found"] = str(raw.location)
    entry["files"] = raw.files
    entry["verified"] = raw.verified
    entry["status"] = "verified" if raw.verified else "unverified"
    entry["notes"] = raw.notes
    a = raw.arrays
    if name == "mnist":
        digits = [str(i) for i in range(10)]
        entry["counts"] = {
            "train": _counts(a["train_y"], digits),
            "test": _counts(a["test_y"], digits),
        }
    elif name in ("cifar10", "fashion-mnist"):
        labels = raw.info["label_names" if name == "cifar10" else "class_names"]
        entry["counts"] = {
            "train": _counts(a["train_y"], labels),
            "test": _counts(a["test_y"], labels),
        }
    else:
        entry["counts"] = _counts(a["y"], list(NOTMNIST_LETTERS))
        entry["readable"] = int(len(a["y"]))
        entry["unreadable"] = len(raw.info["unreadable"])
        entry["unreadable_files"] = sorted(raw.info["unreadable"])
    return entry


def verify_all(source: DataSource) -> dict[str, Any]:
    """Check every data set against its published checksums; never raises, never downloads.

    Returns ``{"mnist": ..., "notmnist": ..., "cifar10": ..., "fashion-mnist": ...}``;
    each entry has ``found`` (path or None), ``status`` (verified / unverified / missing /
    corrupt), ``verified``, ``files`` (md5, expected md5, verified per file), ``counts``
    per class (``train``/``test`` for MNIST, CIFAR-10 and Fashion-MNIST; per letter for
    notMNIST, plus ``readable``, ``unreadable`` and ``unreadable_files``), ``notes``,
    ``error`` (the message when missing or corrupt, else None) and ``searched`` (the
    folders).
    Unverified data are read and reported, not refused.
    """
    src = replace(source, download=False)
    return {name: _entry(name, src) for name in DATASETS}


def format_verify_table(report: dict[str, Any]) -> str:
    """Human-readable form of :func:`verify_all`'s report."""
    lines = []
    for name in DATASETS:
        e = report.get(name)
        if e is None:
            continue
        status = e["status"].upper() if e["status"] != "verified" else "verified"
        lines.append(f"{name:13s} {status:11s} {e['found'] or '-'}")
        for f in e["files"]:
            mark = "ok" if f["verified"] else "MISMATCH"
            exp = "" if f["verified"] else f" (expected {f['expected_md5']})"
            lines.append(f"    {f['file']:34s} md5 {f['md5']} {mark}{exp}")
        counts = e["counts"]
        if name == "notmnist" and counts:
            per = " ".join(f"{k}:{v}" for k, v in counts.items())
            lines.append(f"    readable {e['readable']}: {per}")
            bad = ", ".join(e["unreadable_files"]) or "none"
            lines.append(f"    unreadable {e['unreadable']}: {bad}")
        else:
            for split, c in counts.items():
                per = " ".join(f"{k}:{v}" for k, v in c.items())
                lines.append(f"    {split:5s} {sum(c.values())}: {per}")
        for n in e["notes"]:
            if not (name == "notmnist" and "unreadable PNG" in n):  # already listed above
                lines.append(f"    note: {n}")
        if e["status"] == "missing":
            lines.append("    searched: " + ", ".join(e["searched"]))
        elif e["error"]:
            lines += ["    " + ln for ln in e["error"].splitlines()]
    if any(e["status"] == "missing" for e in report.values()):
        lines.append(
            "verify never downloads: `uqbench run` fetches the data sets a suite needs into "
            "the download cache (its folder for each set is among those searched), or place "
            "them in a folder given by --data-dir / UQBENCH_DATA_DIR (`uqbench data verify "
            "--json` gives the URLs)."
        )
    return "\n".join(lines)
