"""Facts and settings of the machine a run is on: the CPU model and the code's commit recorded
with every result, and the allocator setting that CPU training runs under."""

from __future__ import annotations

import ctypes
import platform
import subprocess
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


# Widest first: the first one a CPU lists is what `cpu_model` reports.
VECTOR_FLAGS = ("avx512f", "avx2", "avx")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name from /proc/cpuinfo, with its family, model, stepping and widest vector
    instructions (a virtual machine may show only "AMD EPYC", and XLA compiles for the host's
    vector width, so two such machines can round the same run differently); else what `platform`
    knows, else "unknown"."""
    try:
        first = cpuinfo.read_text().split("\n\n")[0].splitlines()
    except OSError:
        first = []
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first)}
    if "model name" not in fields:
        return platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    vector = next((flag for flag in VECTOR_FLAGS if flag in flags), "no AVX")
    return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}, "
            f"stepping {fields.get('stepping', '?')}; {vector})")


# Tracked paths that hold what runs write or what people read, not code (git pathspecs; `*.md`
# matches at any depth): a results file or a README rewritten since the last commit does not make
# a run's code "dirty".
NOT_CODE = ("benchmarks/results", "docs", "*.md")


def source_commit(repo: Path = PACKAGE_ROOT) -> str | None:
    """The git commit of the code a result comes from, with "+dirty" when tracked files other than
    `NOT_CODE` differ from it; None outside a git checkout. Results of different commits can
    differ where nothing meant to change them: a change of rounding in the loss moved one ML-100K
    seed's strong-generalization NDCG@100 from 0.5061 to 0.5230 through a different selected epoch."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    *(f":(exclude){path}" for path in NOT_CODE))
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_KEPT_BYTES = 1 << 30
# The same setting as glibc reads it from the environment at a process's start, before any thread
# has an arena of its own: for processes started to train or benchmark on a CPU.
ALLOCATOR_ENVIRONMENT = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(_KEPT_BYTES),
                         "MALLOC_TRIM_THRESHOLD_": str(_KEPT_BYTES)}


def reuse_freed_memory() -> bool:
    """Makes glibc's malloc keep freed blocks for reuse instead of returning them to the kernel.

    On a CPU, XLA (and torch) allocate each step's tens of MB of buffers afresh; glibc maps blocks
    above its mmap threshold, and blocks freed in worker threads' arenas, straight back, so every
    step faults and zeroes them again. ML-100K, batch 128, 2 cores: about 110,000 minor faults and
    0.4 s of kernel time in a 1.1 s epoch, and none with this setting. One arena, a 1 GiB mmap
    threshold and a 1 GiB trim threshold: process-wide, so `fit` sets it only on the CPU backend.
    Returns False (and changes nothing) where malloc is not glibc's.

    Set from inside a running process it reaches only threads without an arena yet: a thread that
    already has one keeps it, and there glibc maps every block over 64 MiB afresh whatever the
    threshold (XLA's per-step temporaries at ML-100K, batch 512: 180 MB, 46,000 faults an epoch).
    A process started with `ALLOCATOR_ENVIRONMENT` has one arena from its first allocation."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _KEPT_BYTES), (_M_TRIM_THRESHOLD, _KEPT_BYTES))
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
