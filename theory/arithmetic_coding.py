"""An exact arithmetic coder over a static symbol histogram, and the Elias-gamma code for header integers.

The coder is the integer coder of Witten, Neal & Cleary (CACM 1987) with 32-bit registers: the
decoder knows the message length and the symbol counts (both sent in a header), and reads the
bits after the code's end as zeros. Its termination (two bits naming a quarter of the final
interval, then the pending opposite bits) puts the dyadic interval of the code word inside the
message's final interval; distinct messages have disjoint final intervals, so the code words are
prefix-free (Kraft: Σ 2^−L ≤ 1 over messages of one length and histogram), which the Occam bound
with prior 2^−L needs. Its length is at most −log₂ P(message) + 2 bits plus the rounding of the
intervals (a fraction of a bit per thousand symbols at 32 bits), P the product of count/total.
"""

from __future__ import annotations

import numpy as np

PRECISION = 32  # bits of the coder's registers
_TOP = (1 << PRECISION) - 1
_HALF = 1 << (PRECISION - 1)
_QUARTER = 1 << (PRECISION - 2)
MAX_TOTAL = _QUARTER - 1  # the histogram's total must stay below a quarter of the range


def _cumulative(counts) -> list[int]:
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts) or not 0 < sum(counts) <= MAX_TOTAL:
        raise ValueError(f"symbol counts must be >= 0 with a total in (0, {MAX_TOTAL}], got {counts}")
    return [0] + list(np.cumsum(counts).tolist())


def encode(symbols, counts) -> list[int]:
    """The bits (0/1 list) coding `symbols` (ints in [0, len(counts))) under the static model
    P(s) = counts[s] / Σ counts; every symbol must have a positive count."""
    cumulative = _cumulative(counts)
    total = cumulative[-1]
    low, high, pending, out = 0, _TOP, 0, []

    def emit(bit):
        nonlocal pending
        out.append(bit)
        out.extend([1 - bit] * pending)
        pending = 0

    for s in symbols:
        s = int(s)
        if not (0 <= s < len(counts)) or cumulative[s + 1] == cumulative[s]:
            raise ValueError(f"symbol {s} has no probability under counts {list(counts)}")
        width = high - low + 1
        high = low + width * cumulative[s + 1] // total - 1
        low = low + width * cumulative[s] // total
        while True:
            if high < _HALF:
                emit(0)
            elif low >= _HALF:
                emit(1)
                low, high = low - _HALF, high - _HALF
            elif low >= _QUARTER and high < 3 * _QUARTER:
                pending += 1
                low, high = low - _QUARTER, high - _QUARTER
            else:
                break
            low, high = 2 * low, 2 * high + 1
    pending += 1
    emit(0 if low < _QUARTER else 1)
    return out


def decode(bits, counts, length: int) -> list[int]:
    """The `length` symbols coded by `bits` under the same `counts` (bits past the end read as 0)."""
    cumulative = _cumulative(counts)
    total = cumulative[-1]
    stream = iter(bits)
    read = lambda: next(stream, 0)
    value = 0
    for _ in range(PRECISION):
        value = 2 * value + read()
    low, high, out = 0, _TOP, []
    for _ in range(length):
        width = high - low + 1
        target = ((value - low + 1) * total - 1) // width
        s = int(np.searchsorted(cumulative, target, side="right")) - 1
        out.append(s)
        high = low + width * cumulative[s + 1] // total - 1
        low = low + width * cumulative[s] // total
        while True:
            if high < _HALF:
                pass
            elif low >= _HALF:
                low, high, value = low - _HALF, high - _HALF, value - _HALF
            elif low >= _QUARTER and high < 3 * _QUARTER:
                low, high, value = low - _QUARTER, high - _QUARTER, value - _QUARTER
            else:
                break
            low, high, value = 2 * low, 2 * high + 1, 2 * value + read()
    return out


def ideal_bits(symbols, counts) -> float:
    """−log₂ P(symbols) under the static model: the length the coder approaches (within 2 bits and rounding)."""
    counts = np.asarray(counts, np.float64)
    return float(-np.sum(np.log2(counts[np.asarray(symbols, np.int64)] / counts.sum())))


def elias_gamma_bits(value: int) -> int:
    """Length of the Elias-gamma code of an integer ≥ 1: 2⌊log₂ v⌋ + 1 (a prefix-free code for any v ≥ 1)."""
    if value < 1:
        raise ValueError(f"Elias gamma codes integers >= 1, got {value}")
    return 2 * (int(value).bit_length() - 1) + 1
