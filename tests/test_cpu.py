"""uqbench.cpu: the malloc tuning keeps freed memory for reuse and can be switched off."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocates and frees a 256 MiB tensor, then prints the resident set (pages) that is left.
_PROBE = """
import os, sys
from uqbench.cpu import tune_malloc
applied = tune_malloc()
import torch
t = torch.ones(64 << 20)  # 256 MiB, written so that its pages are resident
del t
with open("/proc/self/statm") as f:
    resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
print(applied, resident >> 20)
"""


def _probe(env_off: bool) -> tuple[bool, int]:
    env = {"UQBENCH_NO_MALLOC_TUNING": "1"} if env_off else {}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**_base_env(), **env},
    ).stdout.split()
    return out[0] == "True", int(out[1])


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "UQBENCH_NO_MALLOC_TUNING"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tuned_malloc_keeps_freed_tensor_memory_and_the_switch_turns_it_off() -> None:
    applied, rss_tuned = _probe(env_off=False)
    skipped, rss_default = _probe(env_off=True)
    assert applied and not skipped
    # Default glibc returns the 256 MiB mmap on free; tuned, the heap keeps it for reuse.
    assert rss_tuned - rss_default > 200
