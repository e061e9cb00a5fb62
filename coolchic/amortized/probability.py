"""Exact integer PMFs from integer logits: the probability step shared by every amortized codec.

A context network (`intnet.IntegerContextNet`) returns logits as integers at
`LOGIT_FRAC` fractional bits. `pmf_from_logits` turns a row of A logits l_0..l_{A-1} into
an integer PMF q (q_k >= 1, sum q = 2^24), a softmax computed in integers only:

    d_k = max(l) - l_k                             (>= 0)
    e_k = EXP[d_k] if d_k < len(EXP) else 0,       EXP[d] = round_half_even(2^24 exp(-d / 16))
    q_k = 1 + floor(e_k * (2^24 - A) / sum(e))
    q_k* += 2^24 - sum(q)                          (k* = the first index of max(l))

A binary code uses one logit l (for the symbol 1) as the row (0, l), i.e. a sigmoid.
`EXP` is computed with Python's `decimal` (correctly rounded exp), never platform floats,
so the table is the same everywhere; a test pins its SHA-256. Every product stays below 2^48
in int64, so the whole step is exact on every machine.
"""

from __future__ import annotations

import functools
import hashlib
from decimal import ROUND_HALF_EVEN, Context, Decimal

import numpy as np

from coolchic.entropy.coder import MAX_PMF_ALPHABET
from coolchic.entropy.tables import PROB_BITS  # the entropy coder's precision: PMFs sum to 2^24

LOGIT_FRAC = 4  # fractional bits of an integer logit: step 1/16 nat
MAX_ALPHABET = MAX_PMF_ALPHABET  # largest alphabet of one PMF row: what the coder takes
_CTX = Context(prec=40, rounding=ROUND_HALF_EVEN, Emin=-999_999, Emax=999_999)


@functools.cache
def exp_table() -> np.ndarray:
    """EXP[d] = round_half_even(2^24 * exp(-d / 2^LOGIT_FRAC)) for every d where it is >= 1.

    Returns:
        Read-only int64 (278,): EXP[0] = 2^24, EXP[277] = 1; beyond the table e = 0.
    """
    values = []
    step = Decimal(1 << LOGIT_FRAC)
    scale = Decimal(1 << PROB_BITS)
    d = 0
    while True:
        e = _CTX.multiply(scale, _CTX.exp(_CTX.divide(Decimal(-d), step)))
        v = int(e.to_integral_value(rounding=ROUND_HALF_EVEN, context=_CTX))
        if v == 0:
            break
        values.append(v)
        d += 1
    table = np.array(values, dtype=np.int64)
    table.setflags(write=False)
    return table


def exp_table_sha256() -> str:
    """Hex SHA-256 of `exp_table()` as little-endian int64 bytes."""
    return hashlib.sha256(exp_table().astype("<i8").tobytes()).hexdigest()


def pmf_from_logits(logits: np.ndarray) -> np.ndarray:
    """Integer PMFs of integer logit rows, as defined in the module docstring.

    Args:
        logits: int64 (N, A), 2 <= A <= MAX_ALPHABET, values in 2^-LOGIT_FRAC units.

    Returns:
        int64 (N, A): every entry >= 1, every row sums to 2^PROB_BITS.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or not 2 <= logits.shape[1] <= MAX_ALPHABET:
        raise ValueError(f"logits must be (N, A) with 2 <= A <= {MAX_ALPHABET}, got {logits.shape}")
    if not np.issubdtype(logits.dtype, np.integer):
        raise ValueError(f"logits must be integers, got {logits.dtype}")
    n, a = logits.shape
    logits = logits.astype(np.int64, copy=False)
    table = np.append(exp_table(), 0)  # (278 + 1,): the last entry for every larger d
    top = logits.argmax(axis=1)  # (N,) first index of the maximum
    d = logits[np.arange(n), top][:, None] - logits  # (N, A) >= 0
    e = table[np.minimum(d, table.size - 1)]  # (N, A)
    total = e.sum(axis=1, keepdims=True)  # (N, 1) >= 2^24
    q = 1 + (e * ((1 << PROB_BITS) - a)) // total  # products < 2^48
    q[np.arange(n), top] += (1 << PROB_BITS) - q.sum(axis=1)
    return q


def binary_pmf(logits: np.ndarray) -> np.ndarray:
    """PMFs of bits from the logit of a 1: int64 (N,) -> int64 (N, 2), rows (q(0), q(1))."""
    logits = np.asarray(logits)
    if logits.ndim != 1:
        raise ValueError(f"binary logits must be (N,), got {logits.shape}")
    return pmf_from_logits(np.stack([np.zeros_like(logits), logits], axis=1))
