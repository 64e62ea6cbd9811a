"""`convae theory pacbayes`: a PAC-Bayes bound with a data-dependent prior, from training data alone
(Dziugaite & Roy 2017; Dziugaite et al. 2021; Pérez-Ortiz et al. 2021), on the split-mode model.

For every (N, seed), with the samples of `theory.synthetic.draw_samples`:
1. S_tgt is cut at random into halves A and B (a uniformly random permutation of i.i.d. draws cut
   in two gives two independent i.i.d. samples of N/2 draws each, `halves`).
2. Prior mean μ_P: Conv4Rec trained in split mode (encoder reads S_in) on the targets S_in ∪ A,
   stopped early on S_cert. Nothing of B is read.
3. Posterior means μ_Q: μ_P fine-tuned on B (Adam, `POSTERIOR_STEPS`: learning rate and epochs).
4. For every scale s in SCALES (σ_a = s·rms(μ_P,a), `theory.pacbayes`) and every μ_Q, a screening
   estimate of the bound from SCREEN_DRAWS weight draws; the (s, μ_Q) with the smallest is kept.
5. The kept Q is scored on MC_DRAWS fresh weight draws: the empirical-Bernstein upper bound on
   R̂_B(Q) at δ/2, then the PAC-Bayes-kl bound at δ/(2S) (`split_confidence`): a 1 − δ bound on
   R(Q) = E_{w∼Q} R_γ(w), the γ-smoothed population risk of the stochastic network, γ =
   `theory.bounds.SMOOTHING`. The certified TV is √((B − H)/2) + γ (E_w E_u TV(p_u, q_{u,w}) by
   Pinsker and Jensen, `theory.certificate.certified_tv`).
6. Measured for comparison: R(Q) exactly on the truth for TRUE_RISK_DRAWS weight draws (mean and
   sd), the posterior mean's and the prior mean's risks, and the global popularity × rating
   histogram predictor's population log-loss.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from convae_jax.predict import FittedModel
from theory import pacbayes
from theory.bounds import SMOOTHING
from theory.certificate import certified_tv
from theory.estimators import GlobalPopularity, ModelEstimator
from theory.experiments import Preset, run_config, sample_grid, timed, truth_record
from theory.fitting import BOUNDS_OVERRIDES, fit_to_draws
from theory.gaussian_posterior import DrawRisk, perturbed
from theory.recovery import population_log_loss, recovery_distances
from theory.synthetic import conditional_entropy, make_truth

DELTA = 0.05  # confidence of the reported bound
SCALES = (0.025, 0.05, 0.1, 0.2, 0.4)  # s: σ_a = s·rms(μ_P,a); each is a prior, paid for in δ
POSTERIOR_STEPS = ((1e-5, 1), (3e-5, 1), (1e-4, 1), (3e-5, 3))  # (Adam learning rate, epochs) of the fine-tune on B
SCREEN_DRAWS = 64  # weight draws per (scale, posterior mean) when choosing
MC_DRAWS = 2000  # fresh weight draws of the chosen posterior: its Monte Carlo bound
TRUE_RISK_DRAWS = 8  # weight draws whose population risk is computed exactly


def halves(draws, *, seed: int):
    """(A, B): the individual draws of `draws` (an entry stands for `count` draws) permuted at random
    and cut into the first ⌊N/2⌋ and the rest, each aggregated back into counts."""
    owner = np.repeat(np.arange(draws.nnz), draws.count.astype(np.int64))
    np.random.default_rng([seed, 33]).shuffle(owner)
    cut = owner.size // 2

    def aggregate(part):
        counts = np.bincount(part, minlength=draws.nnz)
        kept = counts > 0
        return dataclasses.replace(draws.subset(kept), count=counts[kept].astype(np.float32))

    return aggregate(owner[:cut]), aggregate(owner[cut:])


def _posterior_means(prior, b, cert, inputs, config) -> dict:
    """{label: μ_Q}: the prior mean fine-tuned on B for each (learning rate, epochs) of POSTERIOR_STEPS."""
    out = {}
    for lr, epochs in POSTERIOR_STEPS:
        tuned = config.override([f"train.learning_rate={lr}", f"train.max_epochs={epochs}",
                                 f"train.validate_every={epochs}"])
        out[f"lr {lr:g}, {epochs} epoch{'s' * (epochs > 1)}"] = fit_to_draws(
            b, cert, tuned, inputs=inputs, initial_params=prior.params).params
    return out


def _stochastic_population_risk(truth, config, inputs, mean, scales, key) -> dict:
    """R_γ(w) exactly on the truth for TRUE_RISK_DRAWS draws w ∼ Q: their mean and sd (ddof 1)."""
    risks = [population_log_loss(truth, ModelEstimator(FittedModel(config, perturbed(k, mean, scales), inputs)),
                                 smoothing=SMOOTHING) for k in jax.random.split(key, TRUE_RISK_DRAWS)]
    return {"mean": float(np.mean(risks)), "std": float(np.std(risks, ddof=1)), "draws": len(risks)}


def certify_run(truth, entropy: float, samples, config, *, seed: int, log=print) -> dict:
    """Steps 1–6 of the module docstring for one (N, seed)."""
    a, b = halves(samples.targets, seed=seed)
    prior, prior_seconds = timed(fit_to_draws, samples.inputs.concat(a), samples.cert, config, inputs=samples.inputs)
    means, posterior_seconds = timed(_posterior_means, prior, b, samples.cert, samples.inputs, config)
    risk = DrawRisk(prior, b, smoothing=SMOOTHING)
    n_b, loss_range = int(b.count.sum()), math.log(truth.n_items * truth.n_channels / SMOOTHING)
    levels = pacbayes.split_confidence(DELTA, priors=len(SCALES))
    key = jax.random.fold_in(jax.random.key(seed), 33)
    screen = []
    for j, scale in enumerate(SCALES):
        scales = pacbayes.layer_scales(prior.params, scale)
        for label, mean in means.items():
            kl = pacbayes.gaussian_kl(mean, prior.params, scales)
            estimate = float(np.mean(risk.sampled(jax.random.fold_in(key, j), mean, scales, draws=SCREEN_DRAWS)))
            bound = pacbayes.pac_bayes_kl_bound(empirical_risk=estimate, kl=kl, n=n_b, delta=levels["pac_bayes"],
                                                loss_range=loss_range)["bound"]
            screen.append({"scale": scale, "posterior": label, "kl": kl, "empirical_risk_estimate": estimate,
                           "bound_estimate": bound})
    chosen = min(screen, key=lambda entry: entry["bound_estimate"])
    mean, scales = means[chosen["posterior"]], pacbayes.layer_scales(prior.params, chosen["scale"])
    fresh = risk.sampled(jax.random.fold_in(key, 10_000), mean, scales, draws=MC_DRAWS)
    mc_upper = pacbayes.monte_carlo_upper(fresh, loss_range=loss_range, delta=levels["monte_carlo"])
    bound = pacbayes.pac_bayes_kl_bound(empirical_risk=mc_upper, kl=chosen["kl"], n=n_b, delta=levels["pac_bayes"],
                                        loss_range=loss_range)
    posterior_mean = FittedModel(config, mean, samples.inputs)
    out = {
        "n_a": int(a.count.sum()), "n_b": n_b, "loss_range": loss_range, "delta": DELTA, "levels": levels,
        "fit_seconds": {"prior": prior_seconds, "posteriors": posterior_seconds},
        "prior_epochs": len(prior.history), "screen": screen, "chosen": chosen,
        "empirical_risk": {"mc_mean": float(np.mean(fresh)), "mc_std": float(np.std(fresh, ddof=1)),
                           "mc_draws": MC_DRAWS, "mc_upper": mc_upper},
        "bound": bound["bound"], "epsilon": bound["epsilon"], "kl": chosen["kl"],
        "true_risk": _stochastic_population_risk(truth, config, samples.inputs, mean, scales, jax.random.fold_in(key, 20_000)),
        "certified_tv": certified_tv(bound["bound"] - entropy, smoothing=SMOOTHING),
        "posterior_mean": {"empirical_risk": risk(mean), "population_risk": population_log_loss(
            truth, ModelEstimator(posterior_mean), smoothing=SMOOTHING),
            "tv_joint": recovery_distances(truth, ModelEstimator(posterior_mean))["tv_joint"]},
        "prior_mean": {"empirical_risk": risk(prior.params),
                       "population_risk": population_log_loss(truth, ModelEstimator(prior), smoothing=SMOOTHING)},
        "global_popularity_risk": population_log_loss(truth, GlobalPopularity(samples.targets).select(samples.cert)),
    }
    log(f"bound {out['bound']:.4f} (KL {out['kl']:.1f}, scale {chosen['scale']}, {chosen['posterior']}), "
        f"R̂_B(Q) {out['empirical_risk']['mc_mean']:.4f} (MC upper {mc_upper:.4f}), R(Q) {out['true_risk']['mean']:.4f}, "
        f"certified TV {out['certified_tv']:.4f}, global {out['global_popularity_risk']:.4f}")
    return out


def run_pacbayes(preset: Preset, *, log=print) -> dict:
    """The PAC-Bayes certificate for every (N, seed) of `preset`, ℓ2-normalised split-mode inputs."""
    truth = make_truth(**preset.truth)
    entropy = conditional_entropy(truth)
    runs = []
    for n, seed, samples in sample_grid(truth, preset):
        config = run_config(preset, seed, BOUNDS_OVERRIDES, n=n, n_users=truth.n_users)
        run = certify_run(truth, entropy, samples, config, seed=seed,
                          log=lambda line, n=n, seed=seed: log(f"N={n} seed={seed}: {line}"))
        runs.append({"n": n, "seed": seed} | run)
    return {"preset": dataclasses.asdict(preset), "truth": truth_record(truth), "truth_entropy": entropy,
            "ln_k": math.log(truth.n_items * truth.n_channels), "smoothing": SMOOTHING,
            "scales": SCALES, "posterior_steps": POSTERIOR_STEPS, "screen_draws": SCREEN_DRAWS, "runs": runs}
