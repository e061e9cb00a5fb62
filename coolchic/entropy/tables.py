"""Exact integer PMF tables of discretised Laplace distributions.

The entropy decoder reads probabilities only from these tables, so they must be the same
bit for bit on every machine. They are therefore computed with Python's `decimal` module
(correctly rounded arithmetic, defined by the General Decimal Arithmetic specification)
instead of platform float `exp`, which differs by +-1 in about 1 of 80 entries.

Parameter grid (COOL-CHIC, Ladune et al., ICCV 2023, codes each latent with a Laplace
whose mean and scale come from the ARM; here both are quantised to a fixed grid):

* mean offset ``delta = (j - 16) / 32`` for ``j in 0..N_MU-1``, so ``delta in [-0.5, 0.5)``;
  the latent's integer centre ``m`` is coded implicitly (symbols are ``y - m``);
* log-scale ``ln b = (LOG_SCALE_MIN_FP + i) / 16`` for ``i in 0..N_SCALE-1``.

Alphabet of ``ALPHABET = 2 * RADIUS + 1`` symbols for ``d = y - m``: ``s = d + RADIUS`` for
``|d| < RADIUS``; ``s = 0`` is the low escape (``d <= -RADIUS``, whole lower tail) and
``s = 2 * RADIUS`` the high escape (``d >= RADIUS``, whole upper tail).

Cumulative table of one row, with ``M = 2**PROB_BITS - ALPHABET`` and Laplace CDF ``F``
relative to the mean: ``C_0 = 0``, ``C_k = round_half_even(F(x_k) * M) + k`` with
``x_k = (k - RADIUS) - 0.5 - delta`` for ``k = 1..ALPHABET-1``, ``C_ALPHABET = 2**PROB_BITS``.
The PMF ``q_k = C_{k+1} - C_k`` is therefore ``>= 1`` and sums to ``2**PROB_BITS``.

Building the table takes about 0.3 s, a large part of a decode, so the package ships it
(TABLE_FILE, next to this module: the table's little-endian uint32 entries in C order,
1.1 MB, uncompressed: a wheel compresses it anyway, and reading it takes a millisecond
where inflating took 8-16) and loads it instead, checking its CRC-32 (zlib, which a decode
loads anyway: no zipfile or hashlib import on the decoding path); the tests rebuild it,
compare it byte for byte and pin its SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path

import numpy as np

PROB_BITS = 24  # constriction's probability precision: q sums to 2**PROB_BITS
RADIUS = 31  # alphabet covers d in (-RADIUS, RADIUS) plus two escape symbols
ALPHABET = 2 * RADIUS + 1  # 63 symbols
MU_FRAC_BITS = 5  # mean offset grid step 1/32
N_MU = 1 << MU_FRAC_BITS  # 32 mean offsets, delta = (j - 16) / 32
LOG_SCALE_FRAC_BITS = 4  # ln(scale) grid step 1/16
LOG_SCALE_MIN_FP = -72  # ln(scale) = (LOG_SCALE_MIN_FP + i) / 16, i.e. from -4.5
N_SCALE = 144  # ln(scale) up to (LOG_SCALE_MIN_FP + N_SCALE - 1) / 16 = 4.4375
N_ROWS = N_MU * N_SCALE  # rows of flat_table()

# Clamp range of ln(scale) on the float (training) side; the grid's end points.
LOG_SCALE_MIN = LOG_SCALE_MIN_FP / (1 << LOG_SCALE_FRAC_BITS)  # -4.5
LOG_SCALE_MAX = (LOG_SCALE_MIN_FP + N_SCALE - 1) / (1 << LOG_SCALE_FRAC_BITS)  # 4.4375

TABLE_FILE = "laplace_pmf.u32"  # the table, shipped in this package (`write_table_file`)
TABLE_CRC32 = 0x1C24A643  # zlib.crc32 of the table's little-endian uint32 bytes in C order
# SHA-256 of the table's little-endian int64 bytes in C order (pinned in the tests)
TABLE_SHA256 = "a568c8beb01229c456e4161eac3ffa43fe85f45d3e2b34eb97da6d5dd292522e"

# 40 significant digits leave > 25 digits of margin below the integer rounding of values
# up to 2**24; the wide exponent range keeps exp(-2900) representable.
_CTX = Context(prec=40, rounding=ROUND_HALF_EVEN, Emin=-999_999, Emax=999_999)
# Every boundary lies at a multiple of 1/N_MU from the mean: exponents n of G = exp(-1/(32 b)).
_N_POWERS = N_MU * (RADIUS + 1)


def _scale_powers(scale_index: int) -> list[Decimal]:
    """Half-mass tail values ``(M / 2) * G**n`` for ``n in 0.._N_POWERS-1``.

    ``G = exp(-1 / (N_MU * b))`` with ``b = exp(ln_scale)``; ``0.5 * exp(-t / b)`` at the
    boundary distance ``t = n / N_MU`` is ``0.5 * G**n``. One pair of correctly rounded
    `exp` per scale and then repeated multiplication: a fixed sequence of Decimal
    operations, hence identical on every platform (tests compare it with a direct `exp`).
    """
    ctx = _CTX
    grid_step = Decimal(1 << LOG_SCALE_FRAC_BITS)
    ln_scale = ctx.divide(Decimal(LOG_SCALE_MIN_FP + scale_index), grid_step)
    inv_b = ctx.exp(ctx.minus(ln_scale))
    g = ctx.exp(ctx.minus(ctx.divide(inv_b, Decimal(N_MU))))
    value = Decimal((1 << PROB_BITS) - ALPHABET) / 2  # exact: M is odd, M / 2 has one decimal
    powers = [value]
    for _ in range(_N_POWERS - 1):
        value = ctx.multiply(value, g)
        powers.append(value)
    return powers


def _round_half_even(x: Decimal) -> int:
    return int(x.to_integral_value(rounding=ROUND_HALF_EVEN, context=_CTX))


@functools.cache
def _boundary_index() -> tuple[np.ndarray, np.ndarray]:
    """Power exponent and side of every boundary ``(j, k)``; shapes (N_MU, ALPHABET - 1).

    Boundary ``x_k = (k - RADIUS) - f`` with ``f = j / N_MU = 0.5 + delta``. Below the mean
    (``k <= RADIUS``) ``F(x_k) = 0.5 * G**n`` with ``n = N_MU * (RADIUS - k) + j``; above it
    ``F(x_k) = 1 - 0.5 * G**n`` with ``n = N_MU * (k - RADIUS) - j >= 1``.
    """
    j = np.arange(N_MU)[:, None]  # (N_MU, 1)
    k = np.arange(1, ALPHABET)[None, :]  # (1, ALPHABET - 1)
    upper = np.broadcast_to(k > RADIUS, (N_MU, ALPHABET - 1))
    n = np.where(upper, N_MU * (k - RADIUS) - j, N_MU * (RADIUS - k) + j)
    return n, upper


def build_laplace_pmf_table() -> np.ndarray:
    """Compute the integer PMF of every grid point with `decimal` (about 0.3 s).

    Returns:
        int64 array of shape (N_MU, N_SCALE, ALPHABET); each row is >= 1 and sums to
        ``2**PROB_BITS``. Indexed ``[mu_index, scale_index, symbol]``.
    """
    m_total = (1 << PROB_BITS) - ALPHABET
    n, upper = _boundary_index()
    cdf = np.empty((N_MU, N_SCALE, ALPHABET + 1), dtype=np.int64)
    for i in range(N_SCALE):
        powers = _scale_powers(i)
        lower_round = np.array([_round_half_even(p) for p in powers], dtype=np.int64)
        upper_round = np.array(
            [_round_half_even(_CTX.subtract(Decimal(m_total), p)) for p in powers], dtype=np.int64
        )
        # (N_MU, ALPHABET - 1): round_half_even(F(x_k) * M) for every (j, k)
        cdf[:, i, 1:ALPHABET] = np.where(upper, upper_round[n], lower_round[n])
    cdf[:, :, 1:ALPHABET] += np.arange(1, ALPHABET)
    cdf[:, :, 0] = 0
    cdf[:, :, ALPHABET] = 1 << PROB_BITS
    return np.diff(cdf, axis=-1)  # (N_MU, N_SCALE, ALPHABET)


def _sha256(table: np.ndarray) -> str:
    return hashlib.sha256(table.astype("<i8").tobytes()).hexdigest()


@functools.cache
def laplace_pmf_table() -> np.ndarray:
    """The table `build_laplace_pmf_table` computes, read from TABLE_FILE once per process.

    Returns:
        Read-only int64 array of shape (N_MU, N_SCALE, ALPHABET).

    Raises:
        RuntimeError: the shipped file is missing or differs from the pinned table (a
            broken installation: decoding with it would give wrong images).
    """
    try:
        # a plain path: importlib.resources costs a decode 10 ms of imports, and the package
        # (with its native libraries) is never imported from a zip file
        raw = (Path(__file__).parent / TABLE_FILE).read_bytes()
    except OSError as exc:
        raise RuntimeError(f"cannot read the probability table {TABLE_FILE}: {exc}") from exc
    if len(raw) != 4 * N_ROWS * ALPHABET or zlib.crc32(raw) != TABLE_CRC32:
        raise RuntimeError(f"the probability table {TABLE_FILE} is corrupt; reinstall coolchic")
    pmf = np.frombuffer(raw, dtype="<u4").astype(np.int64).reshape(N_MU, N_SCALE, ALPHABET)
    pmf.setflags(write=False)
    return pmf


def write_table_file(path: str | Path, table: np.ndarray) -> None:
    """Write `table` ((N_MU, N_SCALE, ALPHABET), entries below 2^32) as TABLE_FILE holds it."""
    Path(path).write_bytes(np.ascontiguousarray(table, dtype="<u4").tobytes())


def flat_table() -> np.ndarray:
    """The same table as a read-only (N_MU * N_SCALE, ALPHABET) int64 array; see `table_row`."""
    return laplace_pmf_table().reshape(N_ROWS, ALPHABET)


def table_row(mu_index: int, scale_index: int) -> int:
    """Flat row index ``mu_index * N_SCALE + scale_index`` of one grid point."""
    if not (0 <= mu_index < N_MU and 0 <= scale_index < N_SCALE):
        raise ValueError(
            f"grid point ({mu_index}, {scale_index}) is outside [0, {N_MU}) x [0, {N_SCALE})"
        )
    return mu_index * N_SCALE + scale_index


def table_sha256() -> str:
    """Hex SHA-256 of the table's little-endian int64 bytes in C order."""
    return _sha256(laplace_pmf_table())
