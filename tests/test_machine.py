"""The allocator setting of CPU training: freed step-sized buffers are reused, not faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A fresh interpreter frees and reallocates a 64 MiB buffer (above glibc's largest mmap threshold)
# and prints the minor page faults of each allocation after the first.
_REALLOCATE = """
import resource, sys, numpy as np
from convae_jax.machine import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = np.ones(1 << 24, np.float32)
    del buffer
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults[1:])
"""


def _repeat_faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", _REALLOCATE, mode], check=True, capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's mallopt; other allocators are left alone")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    # By default glibc unmaps the buffer on free and maps it anew: at least one fault per page,
    # 32 with 2 MiB transparent huge pages, 16,384 with 4 KiB pages.
    assert min(_repeat_faults("default")) >= 32
    assert max(_repeat_faults("reuse")) < 5
