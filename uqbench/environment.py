"""Where uqbench runs: the machine and versions recorded with results, the device, the cache.

The runner, the executors and the benchmarks all read these from here:
:func:`environment` (versions, machine, git commit, for the results file),
:func:`resolve_device`, :func:`cpu_model` and :func:`cache_dir`, the one uqbench cache
folder (checkpoints under ``checkpoints/``, data under ``data/``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

import uqbench
from uqbench.errors import ConfigError
from uqbench.provenance import source_commit

#: Environment variable naming the uqbench cache folder.
ENV_CACHE_DIR = "UQBENCH_CACHE_DIR"


def cache_dir() -> Path:
    """The uqbench cache: ``$UQBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/uqbench`` or
    ``~/.cache/uqbench``. Checkpoints go to ``checkpoints/``, data to ``data/``."""
    env = os.environ.get(ENV_CACHE_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "uqbench"


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a GPU asked for but absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"bad device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        # torch knows more device types (mps, xpu, meta, ...); uqbench runs and is tested on
        # these two only, and an unbuilt backend would fail deep inside the first run.
        raise ConfigError(f"device {name!r} is not supported; use cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA GPU is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA "
            "GPU(s), numbered from 0"
        )
    return device


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, machine and git commit (:func:`uqbench.provenance.source_commit`), for the
    results file."""
    import numpy

    env: dict[str, Any] = {
        "uqbench": uqbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": source_commit(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = f"{env['cpu']} ({env['cpu_count']} cores)"
    return env


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
