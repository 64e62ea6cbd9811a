"""Norm-based generalization bounds of a trained Conv4Rec in split mode, and the quantities they read.

Setting (split mode, `theory/README.md`). The inputs x_u are built from a sample S_in independent
of the N scored draws S_tgt = {(u_j, y_j)}, y = (i, c); given S_in, the pairs z_j = (x_{u_j}, y_j)
are i.i.d. and x_u is a fixed function of u, so uniform convergence over the weights applies. The
inputs are ℓ2-normalised (`model.input_norm=l2`): x̃_u = [x_u/‖x_u‖; 1], ‖x̃_u‖ ≤ √2.

Loss: the γ-smoothed joint log-loss ℓ_γ(L, y) = −log((1 − γ) softmax(L)_y + γ/K) over the K = n·C
logits: the log-loss of the predictor mixed with γ of the uniform distribution. It lies in [0, b],
b = ln(K/γ), whatever the weights, is √2-Lipschitz in ‖·‖₂ of L and 2-Lipschitz in ‖·‖_∞ (its
gradient is a (1 − γ)p_y/((1 − γ)p_y + γ/K) ≤ 1 multiple of softmax(L) − e_y, whose ℓ2 norm is
≤ √2 and ℓ1 norm ≤ 2).

The network (user rows, φ = ReLU, ψ = identity) is a chain of four matrices on x̃ ∈ R^{nC+1}, each
augmented with a constant coordinate so that biases are entries (M̃ = [[M, b], [0, 1]]):
    1. input 1x1 conv   I_n ⊗ Aᵀ   (A (C, k) shared by every item)
    2. encoder dense    W_enc, b_enc, then ReLU
    3. decoder dense    W_dec, b_dec' (b_dec' = b_dec + β B⁺ takes in the output bias β exactly
                        when B has full column rank; the residual is reported)
    4. output 1x1 conv  I_n ⊗ Bᵀ   (B (k', C) shared by every item)
`naive` counts each conv as the n-fold block-diagonal matrix with n untied blocks; `shared`
counts its filter once. An untied model (`model.tie_filters=False`: A (n, C, k), B (n, k', C)) has
n distinct blocks, counted n times in both variants: for it `shared` and `naive` coincide.

Every bound has the form (Mohri, Rostamizadeh & Talwalkar 2018, Thm 3.3, scaled to [0, b])
    R_γ(f) − R̂_γ(f) ≤ 2 ℜ̂_N(ℓ_γ∘F) + 3 b √((ln(2/δ') + c) / (2N)),
where ℜ̂ is evaluated at norm budgets rounded up on a geometric grid and c = Σ ln(1/w_j) is the
cost of the union bound over that grid (`budget_grid`), and δ' = δ / (number of bounds reported),
so that the smallest of them is itself a 1 − δ statement. The four ℜ̂ forms:
- `spectral` (Bartlett, Foster & Telgarsky 2017: their cover ln 𝒩(ε) ≤ κ²/ε² in Dudley's
  integral from α = b/N, `dudley`, which is their 4b/N^{3/2} + 18 κ ln(N)/N),
    κ = √2 ‖X‖_F √(ln 2W²) R_A,
    R_A = Π s_l · (Σ_l (a_l/s_l)^{2/3})^{3/2},  s_l = ‖M̃_l‖_σ,  a_l = ‖(M̃_l − M̃_l⁰)ᵀ‖_{2,1};
- `frobenius` (Golowich, Rakhlin & Shamir 2018, Thm 1, per output; Maurer 2016's vector
  contraction brings in the K outputs at a cost √2·L·√K = 2√K for the √2-Lipschitz loss):
    ℜ̂ ≤ 2 √K (√(2D ln 2) + 1) Π_l ‖M̃_l‖_F ‖X‖_F / N;
- `parameter_count` (a covering bound that counts parameters, after Anthony & Bartlett 1999, with
  the perturbation telescoping of Neyshabur et al. 2018, Lemma 2):
    ln 𝒩(ε) ≤ Σ_l p_l ln(1 + 2√2 e D r_l ‖X‖_F Π s / (s_l ε)),  r_l = ‖M̃_l − M̃_l⁰‖_F,
    ℜ̂ ≤ `dudley` of that cover;
- `ledent` (Ledent, Mustafa, Lei & Kloft, AAAI 2021, Thm 11, in the form that Graf et al. 2022
  implement as `ledent_main`): see `ledent_complexity`. Convolutional filters count once, and the
  loss enters through its ℓ∞-Lipschitz constant, so the K outputs cost only logarithms.
Here ‖X‖_F = √(Σ_j ‖x̃_{u_j}‖²) over the N scored draws, W the widest layer, D = 4 the depth.
Spectral, frobenius and parameter_count come in both variants; `ledent` is shared by construction.
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
FORMS = ("spectral", "frobenius", "parameter_count", "ledent")
REPORTED = tuple((f, v) for f in FORMS for v in VARIANTS if not (f == "ledent" and v == "naive"))
DELTA = 0.05  # overall confidence parameter, split evenly over the REPORTED bounds
SMOOTHING = 0.01  # γ of the smoothed log-loss: b = ln(K/γ) (12.2 nats at K = 2000)
LOSS_LIPSCHITZ_L2 = math.sqrt(2.0)  # of ℓ_γ in ‖·‖₂ of the logits
BUDGET_RATIO = 2.0 ** 0.25  # step of the geometric grid of norm budgets


def loss_range(n_outputs: int, smoothing: float = SMOOTHING) -> float:
    """b = ln(K/γ): the largest value of the γ-smoothed log-loss over K outcomes."""
    return math.log(n_outputs / smoothing)


def budget_grid(values, *, ratio: float = BUDGET_RATIO) -> tuple[np.ndarray, float]:
    """Each value rounded up to the grid {0} ∪ {ratio^j : j ∈ ℤ}, and the union bound's cost
    c = Σ ln(1/w) over the values, with prior weights w(0) = 1/2 and w(ratio^j) = 1/(3(|j|+1)(|j|+2))
    (they sum to 1 over the grid, since Σ_{j∈ℤ} 1/((|j|+1)(|j|+2)) = 3/2). A bound proved for fixed
    budgets then holds at 1 − δ·w for each grid point at once, hence with ln(1/δ) + c for budgets
    read off the trained network; rounding costs at most the factor `ratio` per value."""
    values = np.asarray(values, np.float64)
    positive = values > 0
    j = np.where(positive, np.ceil(np.log(np.where(positive, values, 1.0)) / math.log(ratio) - 1e-12), 0.0)
    rounded = np.where(positive, ratio ** j, 0.0)
    cost = np.where(positive, np.log(3 * (np.abs(j) + 1) * (np.abs(j) + 2)), math.log(2.0))
    return rounded, float(np.sum(cost))


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
    """The 1x1 conv diag(filt_1ᵀ, …, filt_nᵀ) (filt: (in, out) tied, every block the same, or
    (n, in, out) untied), augmented unless `last`, without building it: its singular values are
    the blocks' (plus 1 for the constant row). A tied filter counts n times under `naive`."""
    blocks = np.asarray(filt, np.float64).reshape((-1,) + np.shape(filt)[-2:])
    delta = blocks - np.asarray(filt0, np.float64).reshape(blocks.shape)
    copies = n // len(blocks) if variant == "naive" else 1
    constant = 0.0 if last else 1.0
    return LayerNorms(
        name,
        spectral=max(max(spectral_norm(block) for block in blocks), constant),
        frobenius=math.sqrt(copies * frobenius_norm(blocks) ** 2 + constant),
        distance_2_1=copies * sum(norm_2_1(block) for block in delta),
        distance_frobenius=math.sqrt(copies) * frobenius_norm(delta),
        n_params=copies * blocks.size,
        width=n * blocks.shape[2] + int(not last),
    )


def output_bias_into_decoder(params) -> tuple[np.ndarray, float]:
    """b_dec' = b_dec + β B⁺ (n, k'), and the largest |b_dec'·B − (b_dec·B + β)| (0 when B has
    full column rank, so k' >= C). Untied: per column, with B_i⁺."""
    b_dec, beta, out = (np.asarray(params[k], np.float64) for k in ("decoder_bias", "output_bias", "output_conv"))
    out = np.broadcast_to(out, (len(b_dec),) + out.shape[-2:])
    moved = b_dec + np.einsum("nc,nck->nk", beta, np.linalg.pinv(out))
    residual = float(np.max(np.abs(np.einsum("nk,nkc->nc", moved - b_dec, out) - beta), initial=0.0))
    return moved, residual


def _float64(params) -> dict:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), dict(params))


def layer_norms(params, params0, *, variant: str) -> list[LayerNorms]:
    """The four layers of the module docstring, first to last, for `variant` in VARIANTS."""
    p, p0 = _float64(params), _float64(params0)
    if any(key.startswith("dense_") for key in p):
        raise ValueError("bounds are derived for one hidden layer (model.hidden of length 1)")
    n, k, d = p["encoder_kernel"].shape
    bias, _ = output_bias_into_decoder(p)
    bias0, _ = output_bias_into_decoder(p0)
    kernel = lambda q: q["decoder_kernel"].reshape(-1, q["decoder_kernel"].shape[2])
    return [_conv("input_conv", p["input_conv"], p0["input_conv"], n, variant=variant),
            _dense("encoder", p["encoder_kernel"].reshape(n * k, d).T, p["encoder_bias"],
                   p0["encoder_kernel"].reshape(n * k, d).T, p0["encoder_bias"]),
            _dense("decoder", kernel(p), bias.ravel(), kernel(p0), bias0.ravel()),
            _conv("output_conv", p["output_conv"], p0["output_conv"], n, variant=variant, last=True)]


@dataclasses.dataclass(frozen=True)
class InputNorms:
    """‖X‖_F = √(Σ_j ‖x̃_{u_j}‖²) over the N scored draws, and the largest ‖x̃_u‖."""

    n_draws: int
    data_frobenius: float
    max_input: float


def input_norms(inputs: Interactions, targets: Interactions) -> InputNorms:
    """Norms of ℓ2-normalised inputs built from `inputs`, for the draws of `targets`:
    ‖x̃_u‖² = 2 for a user with inputs, 1 (the constant alone) for one without."""
    has_input = np.bincount(inputs.user, minlength=inputs.n_users) > 0
    squared = 1.0 + has_input
    draws = np.bincount(targets.user, weights=targets.count, minlength=targets.n_users)
    return InputNorms(round(draws.sum()), math.sqrt(float(draws @ squared)),
                      math.sqrt(float(squared[draws > 0].max())))


@dataclasses.dataclass(frozen=True)
class LedentLayer:
    """One layer of Ledent et al.'s chain: a convolution with O output positions (patches) of m
    channels; a dense layer is a convolution with one patch."""

    name: str
    distance: float  # a_l: Σ over filters of ‖filter − its init‖₂, each shared filter once (last layer: Frobenius)
    lipschitz: float  # ρ_l: ‖filter map‖_σ (last layer: the largest filter norm)
    input_patch_norm: float  # b_{l−1}: largest ℓ2 norm of a patch of the layer's input over the sample
    input_side: float  # d_l: √(positions of the layer's input) (Graf et al.'s spatial side, here 1-D: √n)
    positions: int  # O_l: output positions
    channels: int  # m_l: output channels


def ledent_complexity(layers: list[LedentLayer], *, margin: float, n: int) -> dict:
    """ℜ̂_N of the loss class scaled to [0, 1] (Ledent et al. 2021, Thm 11, as Graf et al. 2022's
    `ledent_main`), where `margin` γ is the output norm the loss needs (b_L = γ):
        r_l = b_{l−1} ρ_{l+} a_l,   ρ_{l+} = d_{l+1} · max_{i=l+1..L} Π_{j=l+1}^{i} ρ_j / b_i  (l < L),
        ρ_{L+} = 1/γ,   R = (Σ_l r_l^{2/3})^{3/2},   Γ = max_l r_l O_l m_l,   W̄ = max_l O_l m_l,
        ℜ̂ ≤ 4/N + 768 R √(log₂(32 Γ N² + 7 W̄ N)) ln(N)/√N,
    with b_i the input patch norm of layer i + 1 (b_L = γ). One departure from `ledent_main`: it
    sets ρ_{L+} = b_{L−1}/γ, which makes r_L quadratic in b_{L−1}; the theorem's ρ_{L+} for the last
    layer (an empty product over b_L = γ) is 1/γ, used here."""
    depth = len(layers)
    b = [layer.input_patch_norm for layer in layers] + [margin]
    rho = [layer.lipschitz for layer in layers]
    rho_plus = []
    for j in range(depth - 1):
        rho_plus.append(layers[j + 1].input_side * max(math.prod(rho[j + 1:i + 1]) / b[i + 1]
                                                       for i in range(j + 1, depth)))
    rho_plus.append(1.0 / margin)
    r = np.array([b[j] * rho_plus[j] * layers[j].distance for j in range(depth)])
    big_r = float(np.sum(r ** (2 / 3)) ** 1.5)
    sizes = np.array([layer.positions * layer.channels for layer in layers], np.float64)
    gamma_ = float(np.max(r * sizes))
    value = 4 / n + 768 * big_r * math.sqrt(math.log2(32 * gamma_ * n**2 + 7 * sizes.max() * n)) * math.log(n) / math.sqrt(n)
    return {"r": r.tolist(), "R": big_r, "Gamma": gamma_, "rademacher": value}


def ledent_layers(params, params0, inputs: Interactions, targets: Interactions) -> list[LedentLayer]:
    """The chain A, W̃_enc, W̃_dec, B of the module docstring as Ledent layers, with each layer's
    input patch norm measured on the users of `targets` (inputs ℓ2-normalised, built from `inputs`):
    patches are x_u[i, :] for A, [Z_u; 1] (Z_u = x_u A, all items) for W̃_enc, [h_u; 1] for W̃_dec
    and Y_u[i, :] (Y_u = W̃_dec [h_u; 1], per item) for B. Untied filters (A (n, C, k)) make A and B
    dense block-diagonal layers: each filter counts in a_l, and their patches are the whole x_u, Y_u."""
    p, p0 = _float64(params), _float64(params0)
    n, k, d = p["encoder_kernel"].shape
    a, b_out = p["input_conv"], p["output_conv"]
    c, k_out = a.shape[-2], b_out.shape[-2]
    enc = np.concatenate([p["encoder_kernel"].reshape(n * k, d).T, p["encoder_bias"][:, None]], axis=1)
    enc0 = np.concatenate([p0["encoder_kernel"].reshape(n * k, d).T, p0["encoder_bias"][:, None]], axis=1)
    moved, _ = output_bias_into_decoder(p)
    moved0, _ = output_bias_into_decoder(p0)
    dec = np.concatenate([p["decoder_kernel"].reshape(n * k_out, d), moved.reshape(-1, 1)], axis=1)
    dec0 = np.concatenate([p0["decoder_kernel"].reshape(n * k_out, d), moved0.reshape(-1, 1)], axis=1)

    users = np.unique(targets.user)
    x = np.zeros((users.size, n, c))
    position = np.searchsorted(users, inputs.user)
    known = (position < users.size) & (users[np.minimum(position, users.size - 1)] == inputs.user)
    np.add.at(x, (position[known], inputs.item[known], inputs.channel[known]), inputs.count[known])
    norms = np.sqrt(np.sum(x**2, axis=(1, 2)))
    x /= np.where(norms > 0, norms, 1.0)[:, None, None]
    z = np.concatenate([np.einsum("unc,nck->unk", x, np.broadcast_to(a, (n,) + a.shape[-2:])).reshape(users.size, n * k),
                        np.ones((users.size, 1))], axis=1)
    h = np.concatenate([np.maximum(z @ enc.T, 0.0), np.ones((users.size, 1))], axis=1)
    y = (h @ dec.T).reshape(users.size, n, k_out)
    patch = lambda v, axes: float(np.sqrt(np.max(np.sum(v**2, axis=axes))))
    blocks = lambda m: m.reshape((-1,) + m.shape[-2:])
    # tied: A and B convolve n positions (patches per item); untied: dense block-diagonal layers, one
    # position whose patch is the whole input (sharing is what lets a filter read one item at a time)
    tied = a.ndim == 2
    side, positions, axes = (math.sqrt(n), n, -1) if tied else (1.0, 1, (-2, -1))
    return [
        LedentLayer("input_conv", sum(norm_2_1(block) for block in blocks(a - p0["input_conv"])),
                    max(spectral_norm(block) for block in blocks(a)), patch(x, axes), side, positions, k * n // positions),
        LedentLayer("encoder", norm_2_1((enc - enc0).T), spectral_norm(enc), patch(z, -1), side, 1, d),
        LedentLayer("decoder", norm_2_1((dec - dec0).T), spectral_norm(dec), patch(h, -1), 1.0, positions,
                    k_out * n // positions),
        LedentLayer("output_conv", frobenius_norm(b_out - p0["output_conv"]), float(np.max(np.linalg.norm(b_out, axis=-2))),
                    patch(y, axes), side, 1, n * c),
    ]


def dudley(log_cover, *, b: float, n: int) -> float:
    """4b/N^{3/2} + (12/N) ∫_{b/N}^{b√N} √(ln 𝒩(ε)) dε: Dudley's entropy integral with covers in
    ‖·‖₂ over the N draws, from α = b/N (the α = 1/N of Bartlett et al. 2017, Lemma A.5, for a
    loss scaled to [0, b]). α is not optimised: for these vacuous covers the optimum is the
    trivial end α = b√N, whose value 4b reads no norm. Trapezoid rule on a log grid."""
    eps = np.geomspace(b / n, b * math.sqrt(n), 4001)
    root = np.sqrt(np.maximum(log_cover(eps), 0.0))
    integral = float(np.sum(0.5 * (root[1:] + root[:-1]) * np.diff(eps)))
    return 4 * b / n**1.5 + 12 * integral / n


def bound_values(layers: list[LayerNorms], inputs: InputNorms, *, n_outputs: int, delta: float = DELTA,
                 smoothing: float = SMOOTHING, union: int = len(REPORTED)) -> dict:
    """{form: {'complexity': 2ℜ̂, 'concentration', 'budget_cost': c, 'norm_term', 'bound'}} for
    spectral, frobenius and parameter_count on one variant's layers (module docstring), each at
    norm budgets rounded up on the grid, at confidence δ/union (`union`: the bounds that share δ,
    by default the REPORTED ones of one model). `norm_term` is the product of norms that ℜ̂ is
    linear in (R_A, Π‖M̃‖_F; for parameter_count Π s, inside a log)."""
    n = inputs.n_draws
    b = loss_range(n_outputs, smoothing)
    depth, width = len(layers), max(layer.width for layer in layers)
    x_norm = inputs.data_frobenius
    log_delta = math.log(2 * union / delta)
    concentration = lambda cost: 3 * b * math.sqrt((log_delta + cost) / (2 * n))
    out = {"loss_range": b, "depth": depth, "max_width": width, "n_params": int(sum(layer.n_params for layer in layers))}

    s_dist, cost = budget_grid([layer.spectral for layer in layers] + [layer.distance_2_1 for layer in layers])
    s, a = s_dist[:depth], s_dist[depth:]
    r_a = float(np.prod(s)) * float(np.sum((a / s) ** (2 / 3))) ** 1.5
    kappa = LOSS_LIPSCHITZ_L2 * x_norm * math.sqrt(math.log(2 * width**2)) * r_a
    out["spectral"] = _entry(dudley(lambda eps: (kappa / eps) ** 2, b=b, n=n), cost, r_a, concentration)

    frob, cost = budget_grid([layer.frobenius for layer in layers])
    product = float(np.prod(frob))
    grs = 2 * math.sqrt(n_outputs) * (math.sqrt(2 * depth * math.log(2)) + 1) * product * x_norm / n
    out["frobenius"] = _entry(grs, cost, product, concentration)

    s_dist, cost = budget_grid([layer.spectral for layer in layers] + [layer.distance_frobenius for layer in layers])
    s, r = s_dist[:depth], s_dist[depth:]
    scale = 2 * LOSS_LIPSCHITZ_L2 * math.e * depth * x_norm * float(np.prod(s))
    terms = [(layer.n_params, scale * r_l / s_l) for layer, r_l, s_l in zip(layers, r, s) if r_l > 0]
    log_cover = lambda eps: sum(p * np.log1p(c / eps) for p, c in terms)
    out["parameter_count"] = _entry(dudley(log_cover, b=b, n=n), cost, float(np.prod(s)), concentration)
    return out


def ledent_bound(layers: list[LedentLayer], *, n: int, n_outputs: int, delta: float = DELTA,
                 smoothing: float = SMOOTHING, union: int = len(REPORTED)) -> dict:
    """The `ledent` entry of `bound_values`: ℓ_γ/b is (2/b)-Lipschitz in ‖·‖_∞, as a ramp loss of
    margin γ on the margin operator (itself 2-Lipschitz in ‖·‖_∞) is (2/γ)-Lipschitz: so the margin
    is b, and ℜ̂(ℓ_γ∘F) = b · ℜ̂(ℓ_γ/b∘F). Every a_l, ρ_l and b_l enters the budget grid."""
    b = loss_range(n_outputs, smoothing)
    values = [q for layer in layers for q in (layer.distance, layer.lipschitz, layer.input_patch_norm)]
    rounded, cost = budget_grid(values)
    budgeted = [dataclasses.replace(layer, distance=rounded[3 * i], lipschitz=rounded[3 * i + 1],
                                    input_patch_norm=rounded[3 * i + 2]) for i, layer in enumerate(layers)]
    detail = ledent_complexity(budgeted, margin=b, n=n)
    log_delta = math.log(2 * union / delta)
    entry = _entry(b * detail["rademacher"], cost, detail["R"],
                   lambda c: 3 * b * math.sqrt((log_delta + c) / (2 * n)))
    return entry | {"r": detail["r"], "Gamma": detail["Gamma"]}


def _entry(rademacher: float, cost: float, norm_term: float, concentration) -> dict:
    return {"complexity": 2 * rademacher, "concentration": concentration(cost), "budget_cost": cost,
            "norm_term": norm_term, "bound": 2 * rademacher + concentration(cost)}


def initial_params(model: FittedModel):
    """The parameters `convae_jax.train.fit` started from: init_params at fold_in(key(seed), 0)
    (jitted: one compilation instead of one per initialiser op)."""
    module = build_model(model.config.model, n_cols=model.matrix.n_cols, n_channels=model.train.n_channels)
    return jax.jit(lambda key: init_params(module, key))(jax.random.fold_in(jax.random.key(model.config.train.seed), 0))


FILTERS = ("input_conv", "output_conv")  # the 1x1 convolutions A and B


def untied_filters(params, n: int) -> dict:
    """The same network with each tied filter copied to all n columns (A (n, C, k), B (n, k', C)):
    what `naive` reads, as an untied model's parameters."""
    return dict(params) | {name: np.broadcast_to(params[name], (n,) + np.shape(params[name])[-2:]) for name in FILTERS}


def model_bounds(model: FittedModel, targets: Interactions, params0=None, *, union: int = len(REPORTED)) -> dict:
    """Every bound of a user-row model whose encoder reads `model.train` (S_in, ℓ2-normalised)
    and whose loss scored `targets` (S_tgt, independent of S_in), with the quantities they read;
    each at δ/`union` (default: the REPORTED bounds of this one model share δ)."""
    mc = model.config.model
    if (mc.orientation != "user" or mc.decoder_activation != "identity" or mc.encoder_activation not in ("relu", "identity")
            or mc.rating_head != "categorical" or mc.input_norm != "l2"):
        raise ValueError("bounds are derived for user rows, a ReLU or identity encoder, an identity decoder activation, "
                         f"the categorical rating head and l2-normalised inputs (got {mc.orientation!r}, "
                         f"{mc.encoder_activation!r}, {mc.decoder_activation!r}, {mc.rating_head!r}, {mc.input_norm!r})")
    params0 = initial_params(model) if params0 is None else params0
    inputs = input_norms(model.train, targets)
    _, residual = output_bias_into_decoder(model.params)
    n_outputs = model.matrix.n_cols * model.train.n_channels
    out = {"inputs": dataclasses.asdict(inputs), "smoothing": SMOOTHING, "delta": DELTA,
           "output_bias_residual": residual,
           "model_parameters": int(sum(np.size(a) for a in jax.tree_util.tree_leaves(model.params)))}
    for variant in VARIANTS:
        layers = layer_norms(model.params, params0, variant=variant)
        out[variant] = {"layers": [dataclasses.asdict(layer) for layer in layers],
                        **bound_values(layers, inputs, n_outputs=n_outputs, union=union)}
    chain = ledent_layers(model.params, params0, model.train, targets)
    out["shared"]["ledent"] = ledent_bound(chain, n=inputs.n_draws, n_outputs=n_outputs, union=union)
    out["shared"]["ledent_layers"] = [dataclasses.asdict(layer) for layer in chain]
    return out
