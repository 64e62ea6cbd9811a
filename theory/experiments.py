"""The two theory experiments (`recovery`, `bounds`) over a grid of sample sizes, with presets.

Each run draws N i.i.d. interactions from the truth (90% to fit, 10% held out for early stopping
and for the baselines' smoothing), fits Conv4Rec (user rows, see `theory.fitting`) and measures:
- recovery: exact TV / KL to the truth of the model and of both baselines, and the log-log
  slope of TV against N with its 95% confidence interval;
- bounds: the generalization gap R − R̂, the excess risk R − H (H the truth's conditional
  entropy, so the excess risk is E_u KL(p_u ‖ p̂_u)), and every bound of `theory.bounds` in both
  variants; plus the naive/shared ratio of each bound over catalogue sizes.
Results go to `<out_dir>/{recovery,bounds}.{json,md,png}`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from theory import bounds as bounds_lib
from theory import plots, reporting
from theory.reporting import log_log_slope
from theory.estimators import GlobalPopularity, ModelEstimator, PerUserEmpirical, mean_log_loss
from theory.fitting import fit_to_draws, theory_config
from theory.recovery import recovery_distances
from theory.synthetic import conditional_entropy, draw_sample, make_truth

ESTIMATORS = ("model", "per_user_empirical", "global_popularity")


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    truth: dict  # SyntheticTruth knobs (empty: the default setting)
    sample_sizes: tuple[int, ...]  # N grid (draws, fit + held out)
    seeds: tuple[int, ...]  # one run per (N, seed); the seed drives the draws and the training
    catalogue_sizes: tuple[int, ...]  # n_items of the weight-sharing comparison
    catalogue_draws: int  # N of each catalogue-size run
    overrides: tuple[str, ...] = ()  # config overrides on top of theory.fitting.theory_config


PRESETS = {
    "full": Preset("full", {}, tuple(int(round(x)) for x in np.geomspace(2_000, 200_000, 6)), (0, 1, 2),
                   (100, 400, 1600), 50_000),
    "quick": Preset("quick", {"n_users": 100, "n_items": 50, "rank": 3},
                    (400, 1_600, 6_400), (0, 1), (25, 50, 100), 3_000, ("train.max_epochs=25", "train.patience=5")),
}


def _fit(truth, n: int, seed: int, preset: Preset):
    fit_draws, heldout = draw_sample(truth, n, seed=seed)
    config = theory_config(preset.overrides + (f"train.seed={seed}",))
    start = time.perf_counter()
    model = fit_to_draws(fit_draws, heldout, config)
    return model, fit_draws, heldout, time.perf_counter() - start


def run_recovery(preset: Preset, *, log=print) -> dict:
    """TV / KL of the model and both baselines for every (N, seed); slopes of TV against N."""
    truth = make_truth(**preset.truth)
    runs = []
    for n in preset.sample_sizes:
        for seed in preset.seeds:
            model, fit_draws, heldout, seconds = _fit(truth, n, seed, preset)
            estimators = {"model": ModelEstimator(model), "per_user_empirical": PerUserEmpirical(fit_draws).select(heldout),
                          "global_popularity": GlobalPopularity(fit_draws).select(heldout)}
            run = {"n": n, "seed": seed, "fit_seconds": seconds, "epochs": len(model.history),
                   "alpha": {k: e.alpha for k, e in estimators.items() if hasattr(e, "alpha")},
                   **{name: recovery_distances(truth, e) for name, e in estimators.items()}}
            runs.append(run)
            log(f"N={n} seed={seed}: " + "  ".join(f"{k} TV {run[k]['tv_joint']:.4f}" for k in ESTIMATORS)
                + f"  ({seconds:.0f} s, {run['epochs']} epochs)")
    slopes = {name: {part: log_log_slope([r["n"] for r in runs], [r[name][f"tv_{part}"] for r in runs])
                     for part in ("joint", "implicit", "explicit")} for name in ESTIMATORS}
    return {"preset": dataclasses.asdict(preset), "truth": _truth_record(truth), "runs": runs, "tv_slopes": slopes}


def run_bounds(preset: Preset, *, log=print) -> dict:
    """Gap, excess risk and every bound for every (N, seed); naive/shared ratios over catalogues."""
    truth = make_truth(**preset.truth)
    entropy = conditional_entropy(truth)
    runs = [_bounds_run(truth, entropy, n, seed, preset, log) for n in preset.sample_sizes for seed in preset.seeds]
    catalogue = []
    for n_items in preset.catalogue_sizes:
        sized = make_truth(**(preset.truth | {"n_items": n_items}))
        run = _bounds_run(sized, conditional_entropy(sized), preset.catalogue_draws, 0, preset, log)
        run["n_items"] = n_items
        run["naive_over_shared"] = {form: run["bounds"]["naive"][form]["bound"] / run["bounds"]["shared"][form]["bound"]
                                    for form in bounds_lib.FORMS}
        catalogue.append(run)
    return {"preset": dataclasses.asdict(preset), "truth": _truth_record(truth), "truth_entropy": entropy,
            "runs": runs, "catalogue": catalogue}


def _bounds_run(truth, entropy: float, n: int, seed: int, preset: Preset, log) -> dict:
    model, fit_draws, heldout, seconds = _fit(truth, n, seed, preset)
    kl = recovery_distances(truth, ModelEstimator(model))["kl_joint"]
    empirical = mean_log_loss(ModelEstimator(model), fit_draws)
    population = entropy + kl  # Σ_u P(u) Σ p_u log(1/p̂_u) = H + E_u KL(p_u ‖ p̂_u), exactly
    measured = {"empirical_risk": empirical, "population_risk": population, "heldout_risk": mean_log_loss(ModelEstimator(model), heldout),
                "generalization_gap": population - empirical, "excess_risk": kl}
    values = bounds_lib.model_bounds(model)
    for variant in bounds_lib.VARIANTS:
        for form in bounds_lib.FORMS:
            entry = values[variant][form]
            entry["over_gap"] = entry["bound"] / measured["generalization_gap"] if measured["generalization_gap"] > 0 else None
            entry["over_excess_risk"] = entry["bound"] / kl
    log(f"N={n} seed={seed} n_items={truth.n_items}: gap {measured['generalization_gap']:.4f} excess {kl:.4f}  "
        + "  ".join(f"{form} {values['shared'][form]['bound']:.3g}/{values['naive'][form]['bound']:.3g}"
                    for form in bounds_lib.FORMS) + f"  ({seconds:.0f} s)")
    return {"n": n, "seed": seed, "fit_seconds": seconds, "epochs": len(model.history), "measured": measured, "bounds": values}


def _truth_record(truth) -> dict:
    return {f.name: getattr(truth, f.name) for f in dataclasses.fields(truth)}


def run_theory(experiment: str, *, quick: bool = False, out_dir: str | Path | None = None, log=print) -> dict:
    """Runs `experiment` ('recovery' or 'bounds') with the quick or full preset and writes
    `<out_dir>/<experiment>.json|md|png` (default out_dir: theory/results/<preset>)."""
    if experiment not in ("recovery", "bounds"):
        raise ValueError(f"unknown theory experiment {experiment!r}: expected 'recovery' or 'bounds'")
    preset = PRESETS["quick" if quick else "full"]
    out = Path(out_dir) if out_dir is not None else Path(__file__).parent / "results" / preset.name
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = (run_recovery if experiment == "recovery" else run_bounds)(preset, log=log)
    result["environment"] = reporting.environment(command=" ".join(["convae theory", experiment] + ["--quick"] * quick),
                                                  wall_seconds=time.perf_counter() - start)
    (out / f"{experiment}.json").write_text(json.dumps(result, indent=1, default=float))
    if experiment == "recovery":
        plots.recovery_plot(result, out / "recovery.png")
        (out / "recovery.md").write_text(reporting.recovery_markdown(result))
    else:
        plots.bounds_plot(result, out / "bounds.png")
        (out / "bounds.md").write_text(reporting.bounds_markdown(result))
    log(f"wrote {out}/{experiment}.json, .md, .png in {time.perf_counter() - start:.0f} s")
    return result
