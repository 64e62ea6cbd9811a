"""Generalization-bound quantities of a trained Conv4Rec, and the bounds they give (SPEC §6).

The network (user rows, ψ = identity, φ = ReLU) as a chain of matrices acting on the flattened
history x ∈ R^{nC}, each augmented with a constant coordinate so that biases are matrix entries
(M̃ = [[M, b], [0, 1]]; ReLU and the identity keep the constant 1; the last layer drops it):
    1. input 1x1 conv   I_n ⊗ Aᵀ            (nk × nC)   A (C, k) shared by every item
    2. encoder dense    W_enc, b_enc         (d × nk), then ReLU (extra dense layers likewise)
    3. decoder dense    W_dec, b_dec'        (nk' × d)
    4. output 1x1 conv  I_n ⊗ Bᵀ            (nC × nk')  B (k', C) shared by every item
The per-item output bias β is moved into the decoder bias, b_dec'[i] = b_dec[i] + β[i]·B⁺, an
exact reparametrisation when B has full column rank C ≤ k' (checked; the residual is reported).

Two variants of every quantity:
- naive: each 1x1 conv is the n-fold block-diagonal matrix above (its norms, its n·C·k free
  parameters, as if the n blocks were untied);
- shared (weight-sharing-aware): each conv counts its k×C filter once, as in norm-based and
  parameter-counting bounds for CNNs (Long & Sedghi 2020; Ledent et al. 2021).

Setting. N training draws z_j = (x_{u_j}, (i_j, c_j)); the loss is the joint log-loss
ℓ(L, y) = −log softmax(L)_y over the K = n·C logits, which is √2-Lipschitz in ‖·‖₂ of L
(‖softmax(L) − e_y‖₂ ≤ √2), and lies in [0, b] with
    b = ln K + 2 · Π_l s_l · max_u ‖x̃_u‖₂                 (‖L‖_∞ ≤ ‖L‖₂ ≤ Π_l s_l ‖x̃‖₂).
Each bound is the uniform-convergence form (Mohri, Rostamizadeh & Talwalkar 2018, Thm 3.3,
scaled to [0, b]): with probability ≥ 1 − δ,
    R(f) − R̂(f) ≤ 2 ℜ̂_N(ℓ∘F) + 3 b √(ln(2/δ) / (2N)),
with the empirical Rademacher complexity ℜ̂_N bounded in one of three published ways:
- `spectral` (Bartlett, Foster & Telgarsky 2017: their Thm 3.3 covering bound, and Dudley's integral):
    ln 𝒩(F|S, ε, ‖·‖_F) ≤ ‖X‖_F² ln(2W²) R_A² / ε²,
    R_A = Π_l ρ_l s_l · (Σ_l (a_l / s_l)^{2/3})^{3/2},  s_l = ‖M̃_l‖_σ,  a_l = ‖(M̃_l − M̃_l⁰)ᵀ‖_{2,1},
  and Dudley's integral from α = b/N to b√N (the α = 1/n their proof takes for a [0, 1] loss, rescaled)
  gives, with κ = √2 ‖X‖_F √(ln 2W²) R_A (the √2 of the loss),
    ℜ̂_N ≤ 4b / N^{3/2} + 18 κ ln(N) / N.
- `frobenius` (Golowich, Rakhlin & Shamir 2018, Thm 1, scalar outputs, positive-homogeneous
  1-Lipschitz activations, no biases (here absorbed as above)):
    ℜ̂_N ≤ (√(2 D ln 2) + 1) Π_l ‖M̃_l‖_F ‖X‖_F / N  per output coordinate; the K outputs enter
  through Maurer's (2016) vector contraction, which costs √2·√K:
    ℜ̂_N(ℓ∘F) ≤ √2 · √K · (√(2 D ln 2) + 1) Π_l ‖M̃_l‖_F ‖X‖_F / N.
- `parameter_count` (a covering bound that counts parameters, in the manner of Anthony & Bartlett 1999):
  layer l has p_l free parameters within Frobenius distance r_l of initialisation; a cover of
  each at scale ε_l perturbs F(X) by at most e ‖X‖_F Π s Σ_l ε_l / s_l (the telescoping of
  Neyshabur et al. 2018, Lemma 2, for perturbations under s_l / D), so
    ln 𝒩(ℓ∘F|S, ε) ≤ Σ_l p_l ln(1 + 2√2 e D r_l ‖X‖_F Π s / (s_l ε)),
  and ℜ̂_N ≤ 4b / N^{3/2} + (12/N) ∫_{b/N}^{b√N} √(ln 𝒩(ε)) dε (same α), integrated numerically.
Here ‖X‖_F = √(Σ_j ‖x̃_{u_j}‖²) over the N training draws, W the widest layer, D the depth.
No bound is clipped at the trivial ℜ̂ ≤ b, so the values are the published forms' own (and the
two variants stay comparable when both are vacuous).

Caveats, stated rather than hidden: the norm budgets are those of the trained model (the union
bound over budgets that makes the bounds a posteriori adds log terms we omit); the inputs x_u are
the users' own training histories, so draws of one user share an input and are not the
independent (x, y) pairs the theorems assume; the shared variant substitutes filter norms into
the naive formulas, the way the CNN bounds above count a filter, without reproducing their exact
constants and log factors, so it shows the scaling rather than a certified value.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from convae_jax.data import Interactions
from convae_jax.model import build_model, init_params
from convae_jax.predict import FittedModel

VARIANTS = ("shared", "naive")
FORMS = ("spectral", "frobenius", "parameter_count")
DELTA = 0.05  # confidence parameter δ of every bound
LOSS_LIPSCHITZ = math.sqrt(2.0)  # of the log-loss in ‖·‖₂ of the logits


def spectral_norm(m) -> float:
    """Largest singular value ‖M‖_σ."""
    return float(np.linalg.norm(np.asarray(m, np.float64), 2)) if np.size(m) else 0.0


def frobenius_norm(m) -> float:
    """‖M‖_F = √(Σ M_ij²)."""
    return float(np.linalg.norm(np.asarray(m, np.float64)))


def norm_2_1(m) -> float:
    """‖M‖_{2,1} = Σ_j ‖M[:, j]‖₂, the sum of the columns' ℓ2 norms (Bartlett et al. 2017 apply it
    to Mᵀ, i.e. sum the rows: one row per output unit)."""
    return float(np.sum(np.linalg.norm(np.asarray(m, np.float64), axis=0)))


@dataclasses.dataclass(frozen=True)
class LayerNorms:
    """Norms of one augmented layer matrix M̃ (and of M̃ − M̃⁰, M̃⁰ at initialisation)."""

    name: str
    spectral: float  # s = ‖M̃‖_σ
    frobenius: float  # ‖M̃‖_F
    distance_2_1: float  # a = ‖(M̃ − M̃⁰)ᵀ‖_{2,1}
    distance_frobenius: float  # r = ‖M̃ − M̃⁰‖_F
    n_params: int  # free parameters of the layer
    width: int  # output dimension (constant coordinate included)
    lipschitz: float = 1.0  # ρ of the activation that follows (ReLU or identity)


def _dense(name, kernel, bias, kernel0, bias0, *, last=False) -> LayerNorms:
    """Augmented dense layer [[M, b], [0, 1]] from M (out, in) and b (out,)."""
    def augment(m, b):
        top = np.concatenate([m, b[:, None]], axis=1)
        return top if last else np.concatenate([top, np.eye(1, top.shape[1], top.shape[1] - 1)], axis=0)
    full, full0 = augment(kernel, bias), augment(kernel0, bias0)
    delta = full - full0
    return LayerNorms(name, spectral_norm(full), frobenius_norm(full), norm_2_1(delta.T), frobenius_norm(delta),
                      kernel.size + bias.size, full.shape[0])


def _conv(name, filt, filt0, n: int, *, variant: str, last=False) -> LayerNorms:
    """The 1x1 conv I_n ⊗ filtᵀ (filt: (in, out)), augmented unless `last`, without building it:
    its singular values are the filter's, repeated n times (plus 1 for the constant row)."""
    copies = n if variant == "naive" else 1
    constant = 0.0 if last else 1.0
    delta = np.asarray(filt, np.float64) - filt0
    return LayerNorms(
        name,
        spectral=max(spectral_norm(filt), constant),
        frobenius=math.sqrt(copies * frobenius_norm(filt) ** 2 + constant),
        distance_2_1=copies * norm_2_1(delta),
        distance_frobenius=math.sqrt(copies) * frobenius_norm(delta),
        n_params=copies * filt.size,
        width=n * filt.shape[1] + int(not last),
    )


def output_bias_into_decoder(params) -> tuple[np.ndarray, float]:
    """b_dec' = b_dec + β B⁺ (n, k'), and the largest |b_dec'·B − (b_dec·B + β)| (0 when B has
    full column rank)."""
    b_dec, beta, out = (np.asarray(params[k], np.float64) for k in ("decoder_bias", "output_bias", "output_conv"))
    moved = b_dec + beta @ np.linalg.pinv(out)
    residual = float(np.max(np.abs(moved @ out - (b_dec @ out + beta)), initial=0.0))
    return moved, residual


def layer_norms(params, params0, *, variant: str) -> list[LayerNorms]:
    """The layers of the module docstring, first to last, for `variant` in VARIANTS."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), dict(params))
    p0 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), dict(params0))
    n, k, d = p["encoder_kernel"].shape
    layers = [_conv("input_conv", p["input_conv"], p0["input_conv"], n, variant=variant)]
    layers.append(_dense("encoder", p["encoder_kernel"].reshape(n * k, d).T, p["encoder_bias"],
                         p0["encoder_kernel"].reshape(n * k, d).T, p0["encoder_bias"]))
    j = 0
    while f"dense_{j}" in p:
        layers.append(_dense(f"dense_{j}", p[f"dense_{j}"]["kernel"].T, p[f"dense_{j}"]["bias"],
                             p0[f"dense_{j}"]["kernel"].T, p0[f"dense_{j}"]["bias"]))
        j += 1
    bias, _ = output_bias_into_decoder(p)
    bias0, _ = output_bias_into_decoder(p0)
    kernel = lambda q: q["decoder_kernel"].reshape(-1, q["decoder_kernel"].shape[2])
    layers.append(_dense("decoder", kernel(p), bias.ravel(), kernel(p0), bias0.ravel()))
    layers.append(_conv("output_conv", p["output_conv"], p0["output_conv"], n, variant=variant, last=True))
    return layers


@dataclasses.dataclass(frozen=True)
class InputNorms:
    """‖X‖_F over the N training draws and the largest ‖x̃_u‖ over users (x̃ = [counts; 1])."""

    n_draws: int
    data_frobenius: float
    max_input: float


def input_norms(train: Interactions) -> InputNorms:
    """Norms of the user-row inputs: ‖x̃_u‖² = Σ_(i,c) count² + 1; each draw of u carries x̃_u."""
    squared = np.bincount(train.user, weights=train.count.astype(np.float64) ** 2, minlength=train.n_users) + 1.0
    draws = np.bincount(train.user, weights=train.count, minlength=train.n_users)
    return InputNorms(int(round(draws.sum())), math.sqrt(float(draws @ squared)), math.sqrt(float(squared.max())))


def _dudley(log_cover, *, b: float, n: int) -> float:
    """4b/N^{3/2} + (12/N) ∫_{b/N}^{b√N} √(ln 𝒩(ε)) dε, the trapezoid rule on a log grid."""
    eps = np.geomspace(b / n, b * math.sqrt(n), 4001)
    root = np.sqrt(np.maximum(log_cover(eps), 0.0))
    integral = float(np.sum(0.5 * (root[1:] + root[:-1]) * np.diff(eps)))
    return 4 * b / n**1.5 + 12 * integral / n


def bound_values(layers: list[LayerNorms], inputs: InputNorms, *, n_outputs: int, delta: float = DELTA) -> dict:
    """{form: {'complexity': 2ℜ̂, 'bound': 2ℜ̂ + concentration}} plus the shared terms, for one
    variant's layers (see the module docstring for every formula)."""
    n = inputs.n_draws
    s = np.array([layer.spectral for layer in layers])
    rho = np.array([layer.lipschitz for layer in layers])
    depth, width = len(layers), max(layer.width for layer in layers)
    product = float(np.prod(rho * s))
    loss_range = math.log(n_outputs) + 2 * product * inputs.max_input
    concentration = 3 * loss_range * math.sqrt(math.log(2 / delta) / (2 * n))
    x_norm = inputs.data_frobenius

    ratios = np.array([layer.distance_2_1 for layer in layers]) / s
    r_a = product * float(np.sum(ratios ** (2 / 3))) ** 1.5
    kappa = LOSS_LIPSCHITZ * x_norm * math.sqrt(math.log(2 * width**2)) * r_a
    spectral = 4 * loss_range / n**1.5 + 18 * kappa * math.log(n) / n

    frob_product = float(np.prod([layer.frobenius for layer in layers]))
    frobenius = (LOSS_LIPSCHITZ * math.sqrt(n_outputs) * (math.sqrt(2 * depth * math.log(2)) + 1)
                 * frob_product * x_norm / n)

    scale = 2 * LOSS_LIPSCHITZ * math.e * depth * x_norm * product
    terms = [(layer.n_params, scale * layer.distance_frobenius / layer.spectral) for layer in layers
             if layer.distance_frobenius > 0]
    log_cover = lambda eps: sum(p * np.log1p(c / eps) for p, c in terms)
    counting = _dudley(log_cover, b=loss_range, n=n)

    complexities = {"spectral": spectral, "frobenius": frobenius, "parameter_count": counting}
    return {
        "loss_range": loss_range, "concentration": concentration, "spectral_complexity_R_A": r_a,
        "spectral_product": product, "frobenius_product": frob_product, "depth": depth, "max_width": width,
        "n_params": int(sum(layer.n_params for layer in layers)),
        **{form: {"complexity": 2 * value, "bound": 2 * value + concentration} for form, value in complexities.items()},
    }


def initial_params(model: FittedModel):
    """The parameters `convae_jax.train.fit` started from: init_params at fold_in(key(seed), 0)
    (jitted: one compilation instead of one per initialiser op)."""
    module = build_model(model.config.model, n_cols=model.matrix.n_cols, n_channels=model.train.n_channels)
    return jax.jit(lambda key: init_params(module, key))(jax.random.fold_in(jax.random.key(model.config.train.seed), 0))


def model_bounds(model: FittedModel, params0=None) -> dict:
    """Every quantity and bound of one trained user-row model, in both variants."""
    mc = model.config.model
    if (mc.orientation != "user" or mc.decoder_activation != "identity" or mc.encoder_activation not in ("relu", "identity")
            or mc.rating_head != "categorical"):
        raise ValueError("bounds are derived for user rows, a ReLU or identity encoder, an identity decoder activation "
                         f"and the categorical rating head (got {mc.orientation!r}, {mc.encoder_activation!r}, "
                         f"{mc.decoder_activation!r}, {mc.rating_head!r})")
    params0 = initial_params(model) if params0 is None else params0
    inputs = input_norms(model.train)
    _, residual = output_bias_into_decoder(model.params)
    out = {"inputs": dataclasses.asdict(inputs), "loss_lipschitz": LOSS_LIPSCHITZ, "delta": DELTA,
           "output_bias_residual": residual,
           "model_parameters": int(sum(np.size(a) for a in jax.tree_util.tree_leaves(model.params)))}
    n_outputs = model.matrix.n_cols * model.train.n_channels
    for variant in VARIANTS:
        layers = layer_norms(model.params, params0, variant=variant)
        out[variant] = {"layers": [dataclasses.asdict(layer) for layer in layers],
                        **bound_values(layers, inputs, n_outputs=n_outputs)}
    return out
