"""Bjontegaard deltas: known answers, invariances, and the shared reference BD-rates."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coolchic.evaluate.bdrate import bd_quality, bd_rate, pchip_integral, pchip_slopes
from coolchic.evaluate.published import read_reference_csv

RATES = [0.12, 0.25, 0.5, 0.9, 1.6]
PSNRS = [27.1, 29.8, 32.6, 35.4, 38.9]

curves = st.lists(
    st.tuples(st.floats(0.05, 1.0), st.floats(0.1, 3.0)), min_size=2, max_size=8
).map(lambda steps: (np.cumsum([s[0] for s in steps]), 20 + np.cumsum([s[1] for s in steps])))


def test_a_curve_against_itself_is_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS).value == 0.0
    assert bd_quality(RATES, PSNRS, RATES, PSNRS).value == 0.0


@settings(max_examples=60, deadline=None)
@given(curves, st.floats(0.5, 2.0))
def test_scaling_every_rate_by_a_factor_gives_that_factor_exactly(curve, factor):
    rates, psnrs = curve
    result = bd_rate(rates, psnrs, rates * factor, psnrs)
    assert result.value == pytest.approx(100.0 * (factor - 1.0), abs=1e-9)
    assert result.overlap == pytest.approx(1.0)


def test_ten_percent_fewer_bits_everywhere_is_minus_ten_percent():
    assert bd_rate(RATES, PSNRS, [0.9 * r for r in RATES], PSNRS).value == pytest.approx(
        -10.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(curves, st.floats(-2.0, 2.0))
def test_shifting_quality_by_a_constant_gives_that_bd_psnr(curve, shift):
    rates, psnrs = curve
    assert bd_quality(rates, psnrs, rates, psnrs + shift).value == pytest.approx(shift, abs=1e-9)


def test_point_order_does_not_matter():
    order = [3, 0, 4, 1, 2]
    shuffled = ([RATES[i] for i in order], [PSNRS[i] for i in order])
    test = ([r * 0.8 for r in RATES], [p + 0.3 for p in PSNRS])
    assert bd_rate(*shuffled, *test).value == pytest.approx(bd_rate(RATES, PSNRS, *test).value)


def test_a_better_codec_has_negative_bd_rate_and_positive_bd_psnr():
    better = [p + 1.0 for p in PSNRS]
    assert bd_rate(RATES, PSNRS, RATES, better).value < 0
    assert bd_quality(RATES, PSNRS, RATES, better).value > 0


def test_disjoint_quality_ranges_give_nan_and_zero_overlap():
    result = bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS])
    assert math.isnan(result.value) and result.overlap == 0.0


def test_the_integral_of_a_line_is_exact_and_a_cubic_end_slope_stays_monotone():
    x = np.array([0.0, 1.0, 3.0, 4.0])
    assert pchip_integral(x, 2 * x + 1, 0.5, 3.5) == pytest.approx((3.5**2 + 3.5) - (0.25 + 0.5))
    slopes = pchip_slopes(x, np.array([0.0, 1.0, 1.1, 5.0]))
    assert np.all(slopes >= 0)


@pytest.mark.parametrize("bad", [
    ([1.0], [30.0]),  # one point
    ([0.1, 0.2], [30.0, 30.0]),  # two points with the same quality
    ([0.0, 0.2], [29.0, 30.0]),  # a zero rate
    ([0.1, 0.2], [29.0, float("nan")]),
])
def test_unusable_curves_raise_value_error(bad):
    with pytest.raises(ValueError):
        bd_rate(RATES, PSNRS, *bad)


def _reference_curves():
    rows = read_reference_csv("classical_kodak_summary.csv")
    curves = {}
    for codec in {r["codec"] for r in rows}:
        mine = [r for r in rows if r["codec"] == codec]
        curves[codec] = tuple(np.array([float(r[k]) for r in mine])
                              for k in ("bpp", "psnr_rgb", "msssim_db"))
    return curves


def test_the_shared_reference_bd_rates_are_reproduced_to_their_printed_precision():
    curves = _reference_curves()
    expected = read_reference_csv("classical_kodak_bdrate.csv")
    assert len(expected) == 48
    for row in expected:
        (ra, pa, ma), (rt, pt, mt) = curves[row["anchor"]], curves[row["codec"]]
        by_psnr = bd_rate(ra, pa, rt, pt)
        assert by_psnr.value == pytest.approx(float(row["bd_rate_psnr_pct"]), abs=0.006)
        assert by_psnr.overlap == pytest.approx(float(row["psnr_overlap"]), abs=0.0006)
        assert f"{by_psnr.low:.2f}-{by_psnr.high:.2f}" == row["psnr_interval"]
        assert bd_quality(ra, pa, rt, pt).value == pytest.approx(float(row["bd_psnr_db"]),
                                                                 abs=0.0006)
        assert bd_rate(ra, ma, rt, mt).value == pytest.approx(
            float(row["bd_rate_msssim_db_pct"]), abs=0.006)


def test_jpeg420_against_hevc444_is_157_percent():
    curves = _reference_curves()
    (ra, pa, _), (rt, pt, _) = curves["hevc444"], curves["jpeg420"]
    assert round(bd_rate(ra, pa, rt, pt).value, 2) == 157.46
