"""uqbench.cpu: the malloc tuning keeps freed memory for reuse and can be switched off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from uqbench.cpu import DISABLE_ENV

# Allocates and frees a 256 MiB tensor, then prints the resident set (pages) that is left.
_PROBE = """
import os
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
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    if env_off:
        env[DISABLE_ENV] = "1"
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tuned_malloc_keeps_freed_tensor_memory_and_the_switch_turns_it_off() -> None:
    applied, rss_tuned = _probe(env_off=False)
    skipped, rss_default = _probe(env_off=True)
    assert applied and not skipped
    # Default glibc returns the 256 MiB mmap on free; tuned, the heap keeps it for reuse.
    assert rss_tuned - rss_default > 200
