"""Rates read off a grid of sample sizes: local slopes between neighbouring N with bootstrap
intervals over seeds, and the fit KL(N) = a + c·N^(−α).

One straight line through all N (`reporting.log_log_slope`) averages a curve; local slopes show
where it bends. Their intervals resample the seeds at each N independently (percentile bootstrap),
so they carry seed noise only, not the curvature between grid points.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit

BOOTSTRAP = 2000  # resamples of the seeds
CONFIDENCE = 0.95


def _by_n(sizes, values) -> tuple[np.ndarray, list[np.ndarray]]:
    sizes, values = np.asarray(sizes, float), np.asarray(values, float)
    grid = np.unique(sizes)
    return grid, [values[sizes == n] for n in grid]


def _resampled_means(groups, rng, reps: int) -> np.ndarray:
    """(reps, len(groups)) means of the groups, each resampled with replacement."""
    return np.stack([rng.choice(g, size=(reps, g.size)).mean(axis=1) for g in groups], axis=1)


def _interval(samples) -> list[float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    return [float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))]


def local_slopes(sizes, values, *, seed: int = 0, reps: int = BOOTSTRAP) -> list[dict]:
    """Slope of log(mean value) on log N between each pair of neighbouring N, with its bootstrap
    interval: [{'from', 'to', 'slope', 'ci95'}]."""
    grid, groups = _by_n(sizes, values)
    means = np.array([g.mean() for g in groups])
    boot = _resampled_means(groups, np.random.default_rng(seed), reps)
    dx = np.diff(np.log(grid))
    point = np.diff(np.log(means)) / dx
    spread = np.diff(np.log(boot), axis=1) / dx
    return [{"from": int(grid[j]), "to": int(grid[j + 1]), "slope": float(point[j]), "ci95": _interval(spread[:, j])}
            for j in range(dx.size)]


def _power_law(log_n, a, log_c, alpha):
    return a + np.exp(log_c - alpha * log_n)


def _fit_power_law(grid, means) -> np.ndarray:
    log_n = np.log(grid)
    start = (0.0, float(np.log(means[0]) + 0.5 * log_n[0]), 0.5)
    params, _ = curve_fit(_power_law, log_n, means, p0=start, bounds=([0.0, -50.0, 0.0], [np.inf, 50.0, 3.0]),
                          maxfev=20000)
    return params


def power_law_fit(sizes, values, *, seed: int = 0, reps: int = 500) -> dict:
    """Least squares fit of mean value(N) = a + c·N^(−α) (a ≥ 0: a floor, e.g. misspecification;
    0 ≤ α ≤ 3) on the seed means, and bootstrap intervals of a and α from refits on resampled
    seeds. With as many grid points as parameters the fit interpolates and says nothing."""
    grid, groups = _by_n(sizes, values)
    means = np.array([g.mean() for g in groups])
    a, log_c, alpha = _fit_power_law(grid, means)
    boot = _resampled_means(groups, np.random.default_rng(seed), reps)
    refits = np.array([_fit_power_law(grid, row) for row in boot])
    return {"a": float(a), "c": float(np.exp(log_c)), "alpha": float(alpha),
            "a_ci95": _interval(refits[:, 0]), "alpha_ci95": _interval(refits[:, 2])}
