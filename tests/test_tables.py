"""Exact Laplace PMF tables: sums, hash, independent recomputation, symmetry."""

import math
import os
import zlib
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from coolchic.entropy import tables as T

# Regenerate with: COOLCHIC_REGEN_GOLDEN=1 .venv/bin/pytest -s tests/test_tables.py
# (prints the new value and rewrites the shipped table file from the `decimal` build; the
# tests then still fail until this constant and tables.TABLE_SHA256 are updated).
GOLDEN_TABLE_SHA256 = "a568c8beb01229c456e4161eac3ffa43fe85f45d3e2b34eb97da6d5dd292522e"

M = (1 << T.PROB_BITS) - T.ALPHABET


def _direct_pmf(mu_index: int, scale_index: int) -> np.ndarray:
    """One row straight from the definition, with a direct 60-digit exp per boundary."""
    ctx = Context(prec=60, rounding=ROUND_HALF_EVEN, Emin=-999_999, Emax=999_999)
    b = ctx.exp(Decimal(T.LOG_SCALE_MIN_FP + scale_index) / Decimal(16))
    delta = Decimal(mu_index - 16) / Decimal(32)
    cdf = [0]
    for k in range(1, T.ALPHABET):
        x = Decimal(k - T.RADIUS) - Decimal("0.5") - delta
        if x < 0:
            f = ctx.multiply(Decimal("0.5"), ctx.exp(ctx.divide(x, b)))
        else:
            f = ctx.subtract(1, ctx.multiply(Decimal("0.5"), ctx.exp(ctx.divide(-x, b))))
        scaled = ctx.multiply(f, M)
        if x != 0:
            # Irrational values: 60 digits decide the rounding only if far from a tie.
            frac = scaled - scaled.to_integral_value(rounding=ROUND_FLOOR)
            assert abs(frac - Decimal("0.5")) > Decimal("1e-20")
        cdf.append(int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN)) + k)
    cdf.append(1 << T.PROB_BITS)
    return np.diff(np.array(cdf, dtype=np.int64))


def test_constants_describe_the_documented_grid():
    assert (T.ALPHABET, T.N_MU, T.N_SCALE) == (63, 32, 144)
    assert T.LOG_SCALE_MIN == -4.5
    assert T.LOG_SCALE_MAX == 4.4375
    assert T.N_ROWS == T.N_MU * T.N_SCALE


def test_table_has_the_documented_shape_dtype_and_is_read_only():
    table = T.laplace_pmf_table()
    assert table.shape == (T.N_MU, T.N_SCALE, T.ALPHABET)
    assert table.dtype == np.int64
    assert not table.flags.writeable
    assert T.laplace_pmf_table() is table  # built once per process


def test_every_row_sums_to_two_to_the_24_and_every_entry_is_at_least_one():
    table = T.laplace_pmf_table()
    assert (table.sum(axis=-1) == 1 << T.PROB_BITS).all()
    assert table.min() >= 1


def test_table_hash_matches_the_pinned_golden_value():
    assert T.table_sha256() == T.TABLE_SHA256 == GOLDEN_TABLE_SHA256
    assert zlib.crc32(T.laplace_pmf_table().astype("<u4").tobytes()) == T.TABLE_CRC32


def test_shipped_table_file_equals_the_decimal_build_byte_for_byte():
    built = T.build_laplace_pmf_table()
    if os.environ.get("COOLCHIC_REGEN_GOLDEN"):
        T.write_table_file(resources.files(T.__package__) / T.TABLE_FILE, built)
        print(f"\nGOLDEN_TABLE_SHA256 = {T._sha256(built)!r}, TABLE_CRC32 = "
              f"{zlib.crc32(built.astype('<u4').tobytes()):#x}")
    assert built.dtype == np.int64
    assert built.astype("<i8").tobytes() == T.laplace_pmf_table().astype("<i8").tobytes()


def test_a_corrupt_shipped_table_is_refused(tmp_path, monkeypatch):
    table = T.laplace_pmf_table().astype("<u4")
    table[3, 4, 5] += 1
    T.write_table_file(tmp_path / "bad", table)
    (tmp_path / "truncated").write_bytes((Path(T.__file__).parent / T.TABLE_FILE).read_bytes()[:-9])
    T.laplace_pmf_table.cache_clear()
    try:
        for bad in ("bad", "truncated"):
            monkeypatch.setattr(T, "TABLE_FILE", str(tmp_path / bad))  # absolute: read from there
            with pytest.raises(RuntimeError, match="corrupt"):
                T.laplace_pmf_table()
        monkeypatch.setattr(T, "TABLE_FILE", str(tmp_path / "missing"))
        with pytest.raises(RuntimeError, match="cannot read"):
            T.laplace_pmf_table()
    finally:
        monkeypatch.undo()
        T.laplace_pmf_table.cache_clear()


def test_sampled_rows_equal_a_direct_high_precision_computation():
    rng = np.random.default_rng(2023)
    corners = [(0, 0), (0, T.N_SCALE - 1), (T.N_MU - 1, 0), (T.N_MU - 1, T.N_SCALE - 1), (16, 72)]
    sampled = list(zip(rng.integers(0, T.N_MU, 60), rng.integers(0, T.N_SCALE, 60), strict=True))
    table = T.laplace_pmf_table()
    for mu_index, scale_index in corners + sampled:
        expected = _direct_pmf(int(mu_index), int(scale_index))
        np.testing.assert_array_equal(table[mu_index, scale_index], expected)


def test_every_entry_is_within_one_unit_of_the_exact_laplace_mass():
    table = T.laplace_pmf_table().astype(np.float64)
    j = np.arange(T.N_MU)[:, None, None]
    i = np.arange(T.N_SCALE)[None, :, None]
    k = np.arange(1, T.ALPHABET)[None, None, :]
    b = np.exp((T.LOG_SCALE_MIN_FP + i) / 16)
    x = (k - T.RADIUS) - 0.5 - (j - 16) / 32  # (N_MU, 1, ALPHABET - 1) boundaries
    below = 0.5 * np.exp(np.minimum(x, 0) / b)
    cdf = np.where(x < 0, below, 1 - 0.5 * np.exp(-np.maximum(x, 0) / b))
    cdf = np.concatenate(
        [np.zeros((T.N_MU, T.N_SCALE, 1)), cdf, np.ones((T.N_MU, T.N_SCALE, 1))], axis=-1
    )
    mass = np.diff(cdf, axis=-1) * M  # (N_MU, N_SCALE, ALPHABET)
    assert np.abs((table - 1) - mass).max() <= 1 + 1e-6


def test_mirrored_mean_offsets_give_mirrored_pmfs():
    # delta = (j - 16) / 32 mirrors to j' = 32 - j; j = 0 (delta = -0.5) has no mirror on
    # the grid, and it is the only offset with an exact rounding tie (the boundary x = 0).
    table = T.laplace_pmf_table()
    for j in range(1, T.N_MU):
        np.testing.assert_array_equal(table[j, :, ::-1], table[T.N_MU - j])


def test_the_exact_tie_at_offset_minus_half_rounds_to_even():
    # x_RADIUS = 0 when delta = -0.5: F = 1/2 and M/2 = 8388576.5 rounds to 8388576.
    cdf_at_mean = T.laplace_pmf_table()[0, :, : T.RADIUS].sum(axis=-1)  # C_RADIUS, (N_SCALE,)
    assert (cdf_at_mean == (M - 1) // 2 + T.RADIUS).all()
    assert ((M - 1) // 2) % 2 == 0


def test_the_pmf_peaks_at_the_centre_symbol_for_every_row():
    table = T.laplace_pmf_table()
    centre = table[1:, :, T.RADIUS]  # delta > -0.5: the mean lies in the centre bin
    assert (centre == table[1:, :, 1:-1].max(axis=-1)).all()


def test_larger_scales_put_more_mass_in_the_escapes():
    table = T.laplace_pmf_table()
    escape_mass = table[..., 0] + table[..., -1]  # (N_MU, N_SCALE)
    assert (np.diff(escape_mass, axis=1) >= 0).all()
    assert escape_mass[:, 0].max() == 2  # narrowest scale: both escapes at the floor of 1


def test_flat_table_rows_follow_table_row():
    flat = T.flat_table()
    assert flat.shape == (T.N_ROWS, T.ALPHABET)
    np.testing.assert_array_equal(flat[T.table_row(7, 99)], T.laplace_pmf_table()[7, 99])
    assert T.table_row(T.N_MU - 1, T.N_SCALE - 1) == T.N_ROWS - 1


@pytest.mark.parametrize("grid_point", [(-1, 0), (0, -1), (T.N_MU, 0), (0, T.N_SCALE)])
def test_table_row_outside_the_grid_raises(grid_point):
    with pytest.raises(ValueError, match="outside"):
        T.table_row(*grid_point)


def test_clamped_log_scales_are_the_grid_end_points():
    assert math.isclose(T.LOG_SCALE_MIN * 16, T.LOG_SCALE_MIN_FP)
    assert math.isclose(T.LOG_SCALE_MAX * 16, T.LOG_SCALE_MIN_FP + T.N_SCALE - 1)
