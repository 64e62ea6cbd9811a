"""The allocator setting of CPU training: freed step-sized buffers are reused, not faulted in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from convae_jax.machine import ALLOCATOR_ENVIRONMENT, cpu_model

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


# A worker thread allocates once (so it has an arena of its own unless the process is limited to
# one), then frees and reallocates a 96 MiB buffer, over glibc's 64 MiB arena heaps.
_REALLOCATE_IN_A_THREAD = """
import resource, sys, threading, numpy as np
from convae_jax.machine import reuse_freed_memory
go, faults = threading.Event(), []
def worker():
    np.ones(1 << 12)
    go.wait()
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = np.ones(3 << 23, np.float32)
        del buffer
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=worker)
thread.start()
if sys.argv[1] == "mallopt":
    assert reuse_freed_memory()
go.set()
thread.join()
print(*faults[1:])
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's; other allocators are left alone")
def test_only_the_start_up_environment_reaches_threads_that_already_have_an_arena():
    def faults(mode, env):
        out = subprocess.run([sys.executable, "-c", _REALLOCATE_IN_A_THREAD, mode], check=True, capture_output=True,
                             text=True, env=env)
        return [int(x) for x in out.stdout.split()]

    plain = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENVIRONMENT}
    assert min(faults("mallopt", plain)) >= 32  # set too late for that thread: mapped afresh each time
    assert max(faults("environment", {**plain, **ALLOCATOR_ENVIRONMENT})) < 5


def test_source_commit_names_the_checkout_head_and_nothing_outside_git(tmp_path):
    from convae_jax.machine import PACKAGE_ROOT, source_commit

    if not (PACKAGE_ROOT / ".git").exists():
        pytest.skip(f"{PACKAGE_ROOT} is not a git checkout")
    head = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    commit = source_commit()
    assert commit in (head, head + "+dirty")
    assert source_commit(tmp_path) is None


def test_source_commit_is_dirty_for_changed_code_not_for_rewritten_results(tmp_path):
    from convae_jax.machine import source_commit

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "model.py").write_text("width = 1\n")
    (tmp_path / "benchmarks" / "results" / "table.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("rmse 1.0\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    head = git("rev-parse", "HEAD")
    assert source_commit(tmp_path) == head
    (tmp_path / "benchmarks" / "results" / "table.json").write_text('{"rmse": 0.9}\n')
    (tmp_path / "README.md").write_text("rmse 0.9\n")
    assert source_commit(tmp_path) == head
    (tmp_path / "model.py").write_text("width = 2\n")
    assert source_commit(tmp_path) == head + "+dirty"


def test_cpu_model_names_the_generation_and_vector_width_behind_a_masked_model_name(tmp_path):
    """Two virtual machines both called "AMD EPYC" can compile a run to different vector code;
    the record tells them apart by family, model, stepping and the widest AVX the first CPU lists."""
    block = ("processor\t: {n}\nmodel name\t: AMD EPYC\ncpu family\t: {family}\nmodel\t\t: {model}\n"
             "stepping\t: 0\nflags\t\t: {flags}\n")
    zen2 = tmp_path / "zen2"
    zen2.write_text(block.format(n=0, family=23, model=49, flags="fpu sse4_2 avx avx2 fma")
                    + "\n" + block.format(n=1, family=23, model=49, flags="fpu avx avx512f"))
    zen4 = tmp_path / "zen4"
    zen4.write_text(block.format(n=0, family=25, model=17, flags="fpu avx avx2 avx512f avx512bw"))
    old = tmp_path / "old"
    old.write_text(block.format(n=0, family=6, model=15, flags="fpu sse4_1"))
    assert cpu_model(zen2) == "AMD EPYC (family 23, model 49, stepping 0; avx2)"
    assert cpu_model(zen4) == "AMD EPYC (family 25, model 17, stepping 0; avx512f)"
    assert cpu_model(old).endswith("; no AVX)")
    nameless = tmp_path / "nameless"
    nameless.write_text("processor\t: 0\nflags\t\t: avx2\n")
    assert cpu_model(nameless) == (platform.processor() or "unknown")
    assert cpu_model(tmp_path / "missing") == (platform.processor() or "unknown")
