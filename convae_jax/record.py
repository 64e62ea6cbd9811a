"""What every result is written with: one run record (command, machine, versions, commit) and one
summary over seeds (mean ± std, ddof 1)."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from importlib import metadata

import numpy as np

from convae_jax.machine import cpu_model, source_commit

# Distributions whose versions a record names when they are installed (torch and cornac only where
# a benchmark imports them).
VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "torch", "cornac")
# Standard deviations over seeds are sample standard deviations: divided by n − 1.
DDOF = 1


def run_record(*, program: tuple[str, ...] = ("convae",), argv: list[str] | None = None) -> dict:
    """Command (`program` and its arguments, by default this process's), machine, versions, commit
    and date of a run, recorded with every result."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"command": shlex.join(list(program) + (sys.argv[1:] if argv is None else list(argv))),
            "cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "versions": versions, "commit": source_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def record_line(record: dict) -> str:
    """The machine, versions and commit of a `run_record`, as reports print them (records older
    than the commit field have none)."""
    commit = f"; commit {record['commit']}" if record.get("commit") else ""
    return f"{record['cpu']} ({record['cores']} cores); versions: {record['versions']}{commit}"


def mean_std(values) -> dict:
    """Mean and sample standard deviation (ddof = DDOF) of scores over seeds; std 0 for one score."""
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=DDOF)) if values.size > 1 else 0.0}
