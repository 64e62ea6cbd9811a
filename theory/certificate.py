"""A held-out certificate of recovery: an empirical-Bernstein upper bound on the smoothed risk,
turned into a bound on the mean total variation to the truth.

For i.i.d. Z_1..Z_n in [lo, hi], with probability ≥ 1 − δ (Maurer & Pontil 2009, Thm 4, for
(Z − lo)/(hi − lo) ∈ [0, 1]),
    E Z ≤ Z̄ + √(2 V_n ln(2/δ) / n) + 7 (hi − lo) ln(2/δ) / (3 (n − 1)),
V_n the unbiased sample variance. Two choices of Z over the S_cert draws y = (u, i, c):
- `plain`: Z = ℓ_γ(q; y) = −log q̃_u(y) ∈ [0, b], the γ-smoothed log-loss, b = ln(K/γ),
  q̃ = (1 − γ) q + γ/K. Then B ≥ R(q̃) = H + E_u KL(p_u ‖ q̃_u), and B − H bounds the KL;
- `centred`: Z = max(log p_u(y) − log q̃_u(y), −c), whose mean is at least E_u KL(p_u ‖ q̃_u)
  (clipping from below only raises it), so B bounds the KL itself. The truth's own log-loss is a
  control variate: Z's variance is about 2·KL instead of the variance of the loss (about 5 nats²
  here). Without the clip Z's range would start at min log p (−36 nats on the default truth), and
  the range term 7(b + 36)ln(2/δ)/(3n) would dominate; the clip at c = CENTRED_CLIP nats (fixed
  before certifying, not tuned per run) leaves the range [−c, b].
Both need the truth (H, or p_u(y)), so both exist only on synthetic data. Pinsker and Jensen
under P(u) then give E_u TV(p_u, q̃_u) ≤ √(KL bound / 2), and E_u TV(p_u, q_u) ≤ that + γ, since
TV(q, q̃) = γ·TV(q, uniform) ≤ γ. When S_cert also picked the epoch among E candidates, δ is
divided by E (a union bound over the candidates), and by 2 more to report the better of the two.
"""

from __future__ import annotations

import math

import numpy as np

CERT_DELTA = 0.05  # confidence of the certificate
CERT_SMOOTHING = 1e-3  # γ of the certified smoothed model: adds at most γ to the certified TV
CENTRED_CLIP = 5.0  # c: the centred certificate's Z = log p − log q̃ is clipped below at −c nats


def empirical_bernstein_upper(values, counts, *, low: float, high: float, delta: float) -> float:
    """Z̄ + √(2 V ln(2/δ)/n) + 7 (high − low) ln(2/δ)/(3(n − 1)) for `values` in [low, high], each
    entry repeated `counts` times (n = Σ counts draws), V the unbiased sample variance."""
    values, counts = np.asarray(values, np.float64), np.asarray(counts, np.float64)
    n = float(counts.sum())
    if n < 2:
        raise ValueError("the empirical-Bernstein bound needs at least two draws")
    if values.min(initial=low) < low - 1e-9 or values.max(initial=high) > high + 1e-9:
        raise ValueError(f"values outside the stated range [{low}, {high}]")
    mean = float(counts @ values) / n
    variance = float(counts @ (values - mean) ** 2) / (n - 1)
    log_term = math.log(2 / delta)
    return mean + math.sqrt(2 * variance * log_term / n) + 7 * (high - low) * log_term / (3 * (n - 1))


def certified_tv(kl_bound: float, *, smoothing: float) -> float:
    """√(max(KL bound, 0)/2) + γ: the certified bound on E_u TV(p_u, q_u) (module docstring)."""
    return math.sqrt(max(kl_bound, 0.0) / 2) + smoothing


def certify(model_losses, truth_losses, counts, *, entropy: float, n_outputs: int, candidates: int,
            smoothing: float = CERT_SMOOTHING, clip: float = CENTRED_CLIP, delta: float = CERT_DELTA) -> dict:
    """Both certificates of one model, each at δ/(2·candidates), and the smaller of the two
    (`best`, then a 1 − δ statement): from the model's γ-smoothed log-losses `model_losses` and
    the truth's log-losses `truth_losses` on the S_cert draws (entries with `counts`), the epoch
    picked among `candidates` on the same draws."""
    b = math.log(n_outputs / smoothing)
    level = delta / (2 * candidates)
    plain = empirical_bernstein_upper(model_losses, counts, low=0.0, high=b, delta=level) - entropy
    excess = np.maximum(np.asarray(model_losses) - np.asarray(truth_losses), -clip)
    centred = empirical_bernstein_upper(excess, counts, low=-clip, high=b, delta=level)
    out = {"smoothing": smoothing, "clip": clip, "delta": delta, "candidates": candidates,
           "plain": {"kl_bound": plain, "tv_bound": certified_tv(plain, smoothing=smoothing)},
           "centred": {"kl_bound": centred, "tv_bound": certified_tv(centred, smoothing=smoothing)}}
    return out | {"best": min(out["plain"], out["centred"], key=lambda entry: entry["kl_bound"])}
