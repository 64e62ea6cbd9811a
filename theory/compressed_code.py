"""The code word of a quantised subspace model: every bit a decoder needs to rebuild θ = θ₀ + P·c[a].

Layout (all fields prefix-free given the ones before them, so the whole is a prefix-free code
over every (d, Q, seed, codebook, assignment), and Σ 2^−L ≤ 1 over all models it can name):
1. header: Elias gamma of d, of Q and of seed + 1 (the seed draws θ₀ and P, `theory.subspace`);
2. codebook: Q float16 levels, 16 bits each;
3. histogram: the Q level counts, ⌈log₂(d + 1)⌉ bits each;
4. payload: the assignment a ∈ [0, Q)^d, arithmetic-coded under that histogram
   (`theory.arithmetic_coding`).
Fixed before any data and not sent: the network's architecture and config, the projection's
nonzeros per row and bias scale, and the decoder program itself.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from theory import arithmetic_coding

LEVEL_BITS = 16  # a float16 level


@dataclasses.dataclass(frozen=True)
class QuantisedModel:
    dim: int  # d, the subspace's dimension
    seed: int  # the seed of θ₀ and P
    codebook: np.ndarray  # (Q,) float16 levels
    assignment: np.ndarray  # (d,) level index of each coordinate of w

    @property
    def weights(self) -> np.ndarray:
        """w = c[a] (d,), float32."""
        return np.asarray(self.codebook, np.float16).astype(np.float32)[np.asarray(self.assignment)]


def _uint(value: int, width: int) -> list[int]:
    return [(value >> (width - 1 - j)) & 1 for j in range(width)]


def _gamma(value: int) -> list[int]:
    width = arithmetic_coding.elias_gamma_bits(value) // 2 + 1
    return [0] * (width - 1) + _uint(value, width)


def _count_bits(dim: int) -> int:
    return int(dim).bit_length()  # ⌈log₂(d + 1)⌉


def encode_model(model: QuantisedModel) -> list[int]:
    """The code word (0/1 list) of `model`, in the layout of the module docstring."""
    levels = len(model.codebook)
    counts = np.bincount(model.assignment, minlength=levels)
    if counts.size != levels or model.assignment.size != model.dim:
        raise ValueError(f"assignment must hold {model.dim} indices in [0, {levels}), got {model.assignment.size} "
                         f"in [0, {counts.size})")
    bits = _gamma(model.dim) + _gamma(levels) + _gamma(model.seed + 1)
    for level in np.asarray(model.codebook, np.float16).view(np.uint16):
        bits += _uint(int(level), LEVEL_BITS)
    for count in counts:
        bits += _uint(int(count), _count_bits(model.dim))
    return bits + arithmetic_coding.encode(model.assignment, counts)


def decode_model(bits) -> QuantisedModel:
    """The model named by the code word `bits` (the inverse of `encode_model`)."""
    stream = iter(bits)

    def uint(width):
        value = 0
        for _ in range(width):
            value = 2 * value + next(stream)
        return value

    def gamma():
        zeros = 0
        while (bit := next(stream)) == 0:
            zeros += 1
        return (1 << zeros) | uint(zeros) if zeros else bit

    dim, levels, seed = gamma(), gamma(), gamma() - 1
    codebook = np.array([uint(LEVEL_BITS) for _ in range(levels)], np.uint16).view(np.float16)
    counts = [uint(_count_bits(dim)) for _ in range(levels)]
    assignment = np.asarray(arithmetic_coding.decode(list(stream), counts, dim), np.int32)
    return QuantisedModel(dim, seed, codebook, assignment)


def code_length(model: QuantisedModel) -> dict:
    """L = len(encode_model(model)) bits, and its parts (header, codebook, histogram, payload)."""
    levels = len(model.codebook)
    parts = {"header": sum(arithmetic_coding.elias_gamma_bits(v) for v in (model.dim, levels, model.seed + 1)),
             "codebook": LEVEL_BITS * levels, "histogram": _count_bits(model.dim) * levels}
    parts["payload"] = len(encode_model(model)) - sum(parts.values())
    return {"total": sum(parts.values()), **parts}
