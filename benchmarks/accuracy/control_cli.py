"""The command line the accuracy controls share (`rank_sweep`, `loss_control`, `paired_gap`):
the same dataset and output options, and the same first lines, command and machine, of a run."""

from __future__ import annotations

import argparse

from convae_jax.compare import IMPLICIT_USERS, RESULTS_DIR, environment, machine_line


def control_parser(module_doc: str, *, datasets: list[str], outputs: str) -> argparse.ArgumentParser:
    """--data-dir, --datasets (among the comparison's strong-generalization datasets) and --out;
    the description is the first paragraph of the control's module docstring."""
    parser = argparse.ArgumentParser(description=module_doc.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding one sub-folder per dataset")
    parser.add_argument("--datasets", nargs="+", default=datasets, choices=list(IMPLICIT_USERS))
    parser.add_argument("--out", default=str(RESULTS_DIR), help=f"folder for {outputs}")
    return parser


def announce(module: str, argv) -> dict:
    """The run's `environment()` record, its command and machine printed first."""
    env = environment(program=("python", "-m", module), argv=argv)
    print(f"{env['command']}\n{machine_line(env)}", flush=True)
    return env
