"""PAC-Bayes bounds with a Gaussian posterior around trained weights: the formulas.

Setting (split mode, `theory/README.md`): given S_in, the draws z = (u, y) of a sample B are
i.i.d. and the loss ℓ_γ(w; z) = −log((1 − γ) q_{u,w}(y) + γ/K) lies in [0, b], b = ln(K/γ). For a
prior P chosen without B and any posterior Q (which may depend on B), with probability ≥ 1 − δ
over B (Maurer 2004, Thm 5, the PAC-Bayes-kl bound of Seeger 2002 and Langford 2005 with
Maurer's ln(2√n/δ)), simultaneously for every Q,
    kl(R̂_B(Q)/b ‖ R(Q)/b) ≤ (KL(Q ‖ P) + ln(2√n/δ)) / n,
so R(Q) ≤ b · kl⁻¹(R̂_B(Q)/b, (KL + ln(2√n/δ))/n), with kl⁻¹(q, ε) = max{p : kl(q ‖ p) ≤ ε},
R(Q) = E_{w∼Q} R(w) and R̂_B(Q) = E_{w∼Q} R̂_B(w). kl⁻¹ increases in q, so an upper bound on
R̂_B(Q) may replace it.

R̂_B(Q) is an expectation over w that is estimated from M weight draws w_1..w_M ∼ Q: the M values
R̂_B(w_j) ∈ [0, b] are i.i.d. given B, and the empirical-Bernstein bound (Maurer & Pontil 2009,
`theory.certificate.empirical_bernstein_upper`) bounds their mean with probability ≥ 1 − δ_MC
(the sample-convergence step of Langford & Caruana 2001, there with a binomial tail; here the
spread of R̂_B(w) over w is tiny, and Bernstein's variance term is what makes M in the thousands
enough).

Gaussians: P = N(μ_P, diag σ²), Q = N(μ_Q, diag σ²) with the same σ, one scale per parameter
array a, σ_a = s · rms(μ_P,a) (a function of the prior mean alone, so of data independent of B), so
    KL(Q ‖ P) = Σ_a ‖μ_Q,a − μ_P,a‖² / (2 σ_a²).
The scale s is picked from a grid of S values on the bound (Dziugaite & Roy 2017): each s is its
own prior, so each bound is taken at δ/S (the union bound; `split_confidence`). The posterior mean
needs no union bound (the bound holds for every Q at once); the Monte Carlo estimate of the chosen
Q is made on fresh weight draws, after the choice.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from theory.certificate import empirical_bernstein_upper

SCALE_FLOOR = 1e-3  # rms below which a parameter array's prior scale is SCALE_FLOOR·s (an array at zero)


def kl_bernoulli(q: float, p: float) -> float:
    """kl(q ‖ p) = q ln(q/p) + (1 − q) ln((1 − q)/(1 − p)) for Bernoulli means, 0 ln 0 = 0."""
    if not (0 <= q <= 1 and 0 <= p <= 1):
        raise ValueError(f"Bernoulli means must lie in [0, 1], got q = {q}, p = {p}")
    term = lambda a, c: 0.0 if a == 0 else (math.inf if c == 0 else a * math.log(a / c))
    return term(q, p) + term(1 - q, 1 - p)


def kl_inverse_upper(q: float, epsilon: float, *, tol: float = 1e-12) -> float:
    """kl⁻¹(q, ε) = max{p ∈ [q, 1] : kl(q ‖ p) ≤ ε}, by bisection (kl(q ‖ ·) increases on [q, 1])."""
    if epsilon < 0:
        raise ValueError(f"ε must be >= 0, got {epsilon}")
    low, high = q, 1.0
    if kl_bernoulli(q, high) <= epsilon:
        return 1.0
    while high - low > tol:
        mid = (low + high) / 2
        low, high = (mid, high) if kl_bernoulli(q, mid) <= epsilon else (low, mid)
    return high


def pac_bayes_kl_bound(*, empirical_risk: float, kl: float, n: int, delta: float, loss_range: float) -> dict:
    """b · kl⁻¹(R̂/b, (KL + ln(2√n/δ))/n): the upper bound on R(Q) of the module docstring, for a
    loss in [0, b] = [0, `loss_range`] and `empirical_risk` R̂ (or an upper bound on it)."""
    epsilon = (kl + math.log(2 * math.sqrt(n) / delta)) / n
    bound = loss_range * kl_inverse_upper(min(max(empirical_risk / loss_range, 0.0), 1.0), epsilon)
    return {"bound": bound, "epsilon": epsilon}


def occam_bound(*, empirical_risk: float, bits: int, n: int, delta: float, loss_range: float) -> dict:
    """The Occam bound of a model named by an L-bit word of a prefix-free code: with the prior
    π(h) = 2^−L(h) (Σ π ≤ 1 by Kraft) and the point posterior on h, KL = L ln 2, so the bound of
    `pac_bayes_kl_bound` holds for every model of the code at once (Langford 2005, Lotfi et al. 2022)."""
    return pac_bayes_kl_bound(empirical_risk=empirical_risk, kl=bits * math.log(2), n=n, delta=delta,
                              loss_range=loss_range)


def monte_carlo_upper(risks, *, loss_range: float, delta: float) -> float:
    """Upper bound on R̂_B(Q) from the empirical risks R̂_B(w_j) of M i.i.d. draws w_j ∼ Q, each in
    [0, b]: the empirical-Bernstein bound at δ (module docstring)."""
    risks = np.asarray(risks, np.float64)
    return empirical_bernstein_upper(risks, np.ones_like(risks), low=0.0, high=loss_range, delta=delta)


def layer_scales(prior_mean, scale: float):
    """σ_a = s · max(rms(μ_P,a), SCALE_FLOOR) for every parameter array a of the tree `prior_mean`."""
    return jax.tree_util.tree_map(
        lambda w: scale * max(float(np.sqrt(np.mean(np.square(np.asarray(w, np.float64))))), SCALE_FLOOR), prior_mean)


def gaussian_kl(posterior_mean, prior_mean, scales) -> float:
    """KL(N(μ_Q, diag σ²) ‖ N(μ_P, diag σ²)) = Σ_a ‖μ_Q,a − μ_P,a‖² / (2 σ_a²), σ_a from `scales`."""
    terms = jax.tree_util.tree_map(
        lambda q, p, s: float(np.sum(np.square(np.asarray(q, np.float64) - np.asarray(p, np.float64)))) / (2 * s * s),
        posterior_mean, prior_mean, scales)
    return float(sum(jax.tree_util.tree_leaves(terms)))


def split_confidence(delta: float, *, priors: int) -> dict:
    """δ split in half between the PAC-Bayes step, which must hold for the `priors` scales at once
    (each its own prior: δ/(2S) each), and the Monte Carlo step (δ/2), whose weight draws are fresh
    ones taken after the scale and the posterior mean were chosen (on other draws), so it needs no
    union bound."""
    return {"pac_bayes": delta / (2 * priors), "monte_carlo": delta / 2}
