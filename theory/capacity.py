"""`convae theory catalogue` and `convae theory sharing`: how the split gap and the norm-based bounds
of `theory/bounds.py` scale with the catalogue size n, and whether tying the 1x1 filters across
columns (weight sharing) acts as capacity where it restricts the function class (k < C).

Both train the split-mode, ℓ2-input model of the bounds check (`theory.fitting.BOUNDS_OVERRIDES`;
encoder reads S_in, loss scores S_tgt, S_cert stops training) and record, per model, its smoothed
and plain gaps (exact population risk on the truth) and every bound in two readings: `shared`
(a tied filter counts once; an untied model's n filters count n times) and `naive` (every model's
filters read as n untied ones, `bounds.untied_filters`), the `ledent` form included in both.

- `catalogue`: n ∈ `CatalogueGrid.items` (a truth of that many items, other knobs default), at
  each fixed N of the preset and at N = `draws_per_item`·n; the fitted exponent in n of each value
  (OLS of log value on log n over seeds, 95% t-interval), beside its prediction (`PREDICTIONS`,
  written in theory/README.md before the run).
- `sharing`: k ∈ `SharingGrid.conv_channels` (< C) input channels, k' = C decoder channels (so the
  output bias moves into the decoder exactly and the bounds cover the network as it is), n and input
  dropout over their grids; each configuration trained tied and untied (`model.tie_filters`).
  Kendall's τ between each bound and the split gap over all models, the paired gap difference
  untied − tied with its t-interval over configurations, and the sign of the bounds' difference.

Multiplicity: every bound of a study is at δ/(models × bounds per model), so that all of them, and
so the smallest over forms and configurations, hold together with probability 1 − δ (δ = 0.05).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
from scipy import stats

from theory import bounds as bounds_lib
from theory.estimators import ModelEstimator
from theory.experiments import Preset, risks, run_config, sample_grid, timed, truth_record
from theory.fitting import BOUNDS_OVERRIDES, fit_to_draws
from theory.reporting import log_log_slope
from theory.synthetic import conditional_entropy, make_truth

BOUNDS = bounds_lib.REPORTED + (("ledent", "naive"),)  # (form, reading) of every bound recorded per model
SHARING_AWARE = "ledent"  # the form whose `shared` reading is the sharing-aware bound of the τ target (README)


@dataclasses.dataclass(frozen=True)
class CatalogueGrid:
    items: tuple[int, ...]  # n: catalogue sizes (truth n_items)
    draws_per_item: int  # the second series: N = draws_per_item·n


@dataclasses.dataclass(frozen=True)
class SharingGrid:
    items: tuple[int, ...]  # n: catalogue sizes
    conv_channels: tuple[int, ...]  # k, each < C
    dropouts: tuple[float, ...]  # model.input_dropout


CATALOGUE_GRIDS = {"full": CatalogueGrid((50, 100, 200, 400, 800, 1600), 25), "quick": CatalogueGrid((20, 40, 80), 20)}
SHARING_GRIDS = {"full": SharingGrid((100, 200, 400), (2, 3), (0.0, 0.5)), "quick": SharingGrid((20, 40), (2,), (0.0, 0.5))}

# Predicted exponents in n (theory/README.md, "Capacity", committed before the run), per series.
PREDICTIONS = {
    "gap (split, smoothed)": {"fixed_n": 0.35, "fixed_per_item": -0.30},
    "spectral (shared)": {"fixed_n": 1.0, "fixed_per_item": 0.7},
    "spectral (naive)": {"fixed_n": 1.5, "fixed_per_item": 1.2},
    "frobenius (shared)": {"fixed_n": 1.0, "fixed_per_item": 0.8},
    "frobenius (naive)": {"fixed_n": 2.0, "fixed_per_item": 1.8},
    "parameter_count (shared)": {"fixed_n": 0.5, "fixed_per_item": 0.1},
    "parameter_count (naive)": {"fixed_n": 0.5, "fixed_per_item": 0.1},
    "ledent (shared)": {"fixed_n": 1.5, "fixed_per_item": 1.15},
    "ledent (naive)": {"fixed_n": 1.5, "fixed_per_item": 1.15},
}
TOLERANCE = 0.25  # a measured exponent within this of its prediction is a hit


def _bound_record(entry) -> dict:
    return {key: entry[key] for key in ("bound", "complexity", "concentration", "norm_term")}


def split_model_record(truth, entropy: float, samples, config, *, union: int) -> dict:
    """Fit the split-mode model of `config` on `samples`; its risks, gaps and every bound of BOUNDS,
    each at δ/`union`."""
    model, seconds = timed(fit_to_draws, samples.targets, samples.cert, config, inputs=samples.inputs)
    params0 = bounds_lib.initial_params(model)
    computed = bounds_lib.model_bounds(model, samples.targets, params0, union=union)
    n_cols, n_outputs = model.matrix.n_cols, model.matrix.n_cols * model.train.n_channels
    chain = bounds_lib.ledent_layers(bounds_lib.untied_filters(model.params, n_cols),
                                     bounds_lib.untied_filters(params0, n_cols), model.train, samples.targets)
    computed["naive"]["ledent"] = bounds_lib.ledent_bound(chain, n=computed["inputs"]["n_draws"], n_outputs=n_outputs,
                                                          union=union)
    return {"fit_seconds": seconds, "epochs": len(model.history), "model_parameters": computed["model_parameters"],
            "output_bias_residual": computed["output_bias_residual"],
            **risks(truth, entropy, ModelEstimator(model), samples.targets),
            "bounds": {f"{form} ({reading})": _bound_record(computed[reading][form]) for form, reading in BOUNDS},
            "n_params": {reading: computed[reading]["n_params"] for reading in bounds_lib.VARIANTS}}


def _study_record(preset: Preset, runs, *, union: int, **extra) -> dict:
    return {"preset": dataclasses.asdict(preset), "delta": bounds_lib.DELTA, "bounds_in_union": union, "runs": runs, **extra}


def _log(log, run, label: str) -> None:
    log(f"{label}: gap {run['smoothed']['gap']:.4f}  " + "  ".join(
        f"{name} {entry['bound']:.3g}" for name, entry in run["bounds"].items() if "shared" in name)
        + f"  ({run['fit_seconds']:.0f} s, {run['epochs']} epochs)")


def run_catalogue(preset: Preset, *, log=print) -> dict:
    """Every (n, N, seed) of the catalogue grid: fixed N (the preset's sizes) and N = draws_per_item·n."""
    grid = CATALOGUE_GRIDS[preset.name]
    sizes = {n_items: tuple(sorted({*preset.sample_sizes, grid.draws_per_item * n_items})) for n_items in grid.items}
    union = sum(map(len, sizes.values())) * len(preset.seeds) * len(BOUNDS)
    runs, truths = [], {}
    for n_items in grid.items:
        truth = make_truth(**preset.truth | {"n_items": n_items})
        entropy = conditional_entropy(truth)
        truths[n_items] = {"entropy": entropy, "ln_k": math.log(n_items * truth.n_channels)}
        for n, seed, samples in sample_grid(truth, dataclasses.replace(preset, sample_sizes=sizes[n_items])):
            config = run_config(preset, seed, BOUNDS_OVERRIDES, n=n, n_users=truth.n_users)
            run = {"n_items": n_items, "n": n, "seed": seed} | split_model_record(truth, entropy, samples, config, union=union)
            runs.append(run)
            _log(log, run, f"n={n_items} N={n} seed={seed}")
    series = catalogue_series(runs, fixed_sizes=preset.sample_sizes, draws_per_item=grid.draws_per_item)
    return _study_record(preset, runs, union=union, grid=dataclasses.asdict(grid), truths=truths,
                         truth=truth_record(make_truth(**preset.truth)), series=series,
                         exponents=catalogue_exponents(runs, series), predictions=PREDICTIONS, tolerance=TOLERANCE)


def catalogue_series(runs, *, fixed_sizes, draws_per_item: int) -> dict:
    """{series name: indices of its runs}: `fixed_n` for each fixed N (suffixed when several), and
    `fixed_per_item`."""
    out = {("fixed_n" if len(fixed_sizes) == 1 else f"fixed_n={n}"): [i for i, r in enumerate(runs) if r["n"] == n]
           for n in fixed_sizes}
    out["fixed_per_item"] = [i for i, r in enumerate(runs) if r["n"] == draws_per_item * r["n_items"]]
    return out


def catalogue_values(run) -> dict:
    """The quantities whose exponent in n is fitted: the smoothed split gap and every bound."""
    return {"gap (split, smoothed)": run["smoothed"]["gap"]} | {name: e["bound"] for name, e in run["bounds"].items()}


def catalogue_exponents(runs, series) -> dict:
    """{series: {quantity: log_log_slope in n}}; a quantity with a value <= 0 in the series has none
    (its 'slope' is None and 'nonpositive' counts those runs)."""
    out = {}
    for name, indices in series.items():
        chosen = [runs[i] for i in indices]
        values = [catalogue_values(r) for r in chosen]
        out[name] = {}
        for quantity in values[0]:
            ys = [v[quantity] for v in values]
            bad = sum(y <= 0 for y in ys)
            fits = not bad and len({r["n_items"] for r in chosen}) > 2
            out[name][quantity] = (log_log_slope([r["n_items"] for r in chosen], ys) if fits
                                   else {"slope": None, "ci95": None, "nonpositive": bad})
    return out


def run_sharing(preset: Preset, *, log=print) -> dict:
    """Tied and untied models at every (n, k, dropout) of the sharing grid, N and seed of the preset."""
    grid = SHARING_GRIDS[preset.name]
    models = len(grid.items) * len(grid.conv_channels) * len(grid.dropouts) * 2 * len(preset.sample_sizes) * len(preset.seeds)
    union = models * len(BOUNDS)
    runs = []
    for n_items in grid.items:
        truth = make_truth(**preset.truth | {"n_items": n_items})
        if max(grid.conv_channels) >= truth.n_channels:
            raise ValueError(f"the sharing check needs k < C = {truth.n_channels}, got k = {max(grid.conv_channels)}")
        entropy = conditional_entropy(truth)
        for n, seed, samples in sample_grid(truth, preset):
            for k, dropout, tied in itertools.product(grid.conv_channels, grid.dropouts, (True, False)):
                knobs = (f"model.conv_channels={k}", f"model.decoder_channels={truth.n_channels}",
                         f"model.input_dropout={dropout}", f"model.tie_filters={tied}")
                config = run_config(preset, seed, BOUNDS_OVERRIDES + knobs, n=n, n_users=truth.n_users)
                run = ({"n_items": n_items, "n": n, "seed": seed, "k": k, "dropout": dropout, "tied": tied}
                       | split_model_record(truth, entropy, samples, config, union=union))
                runs.append(run)
                _log(log, run, f"n={n_items} N={n} seed={seed} k={k} dropout={dropout} {'tied' if tied else 'untied'}")
    return _study_record(preset, runs, union=union, grid=dataclasses.asdict(grid),
                         truth=truth_record(make_truth(**preset.truth)), **sharing_statistics(runs))


def paired_interval(differences, *, confidence: float = 0.95) -> dict:
    """Mean of paired differences with its t-interval (ddof 1), and how many are positive."""
    d = np.asarray(differences, float)
    half = stats.t.ppf(0.5 + confidence / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return {"mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)],
            "positive": int(np.sum(d > 0)), "count": int(d.size)}


def sharing_statistics(runs) -> dict:
    """Kendall's τ (τ-b) of each bound with the smoothed split gap over all models (and its mean
    within each n, which n's own effect cannot drive); the paired differences untied − tied of the
    gap and of each bound over the configurations."""
    gaps = [r["smoothed"]["gap"] for r in runs]
    by_n = {}
    for i, r in enumerate(runs):
        by_n.setdefault(r["n_items"], []).append(i)
    tau = {}
    for name in runs[0]["bounds"]:
        values = [r["bounds"][name]["bound"] for r in runs]
        overall = stats.kendalltau(values, gaps)
        within = [stats.kendalltau([values[i] for i in idx], [gaps[i] for i in idx]).statistic for idx in by_n.values()]
        tau[name] = {"tau": float(overall.statistic), "p_value": float(overall.pvalue),
                     "within_n": {str(n): float(t) for n, t in zip(by_n, within)}}
    pairs = {}
    for r in runs:
        pairs.setdefault((r["n_items"], r["n"], r["seed"], r["k"], r["dropout"]), {})[r["tied"]] = r
    complete = [p for p in pairs.values() if len(p) == 2]
    differences = {"gap (split, smoothed)": paired_interval([p[False]["smoothed"]["gap"] - p[True]["smoothed"]["gap"]
                                                             for p in complete])}
    for name in runs[0]["bounds"]:
        differences[name] = paired_interval([p[False]["bounds"][name]["bound"] - p[True]["bounds"][name]["bound"]
                                             for p in complete])
    return {"kendall_tau": tau, "paired_untied_minus_tied": differences, "sharing_aware": f"{SHARING_AWARE} (shared)",
            "naive": f"{SHARING_AWARE} (naive)"}
