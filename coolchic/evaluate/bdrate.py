"""Bjontegaard delta rate and delta quality between two rate-distortion curves.

Method (G. Bjontegaard, "Calculation of average PSNR differences between RD-curves",
VCEG-M33, 2001, with the piecewise cubic interpolation that replaced its single cubic fit in
the JCT-VC/JVET common-test-conditions spreadsheets):

1. Each curve is a set of (rate, quality) points, rate > 0 in any unit (bpp here), quality
   in dB (PSNR, or MS-SSIM as ``-10 log10(1 - ms_ssim)``). Points are sorted by the
   interpolation abscissa; two points with the same abscissa are an error.
2. BD-rate: abscissa = quality, ordinate = ln(rate). Each curve is interpolated with a
   shape-preserving piecewise cubic Hermite polynomial (PCHIP, Fritsch & Carlson 1980;
   slopes by the weighted harmonic mean of the neighbouring secants, zero at a local
   extremum, one-sided three-point slopes at both ends clipped to stay monotone: the slopes
   of MATLAB's ``pchip`` and SciPy's ``PchipInterpolator``). Two points give a line.
3. Both interpolants are integrated exactly (closed form of each cubic piece) over the
   overlapping quality interval ``[max(min q_a, min q_t), min(max q_a, max q_t)]``; no
   extrapolation. The mean log-rate difference ``D`` gives ``BD-rate = 100 (e^D - 1)`` %,
   negative when the tested codec needs fewer bits than the anchor at equal quality.
4. BD-quality (BD-PSNR): the same with abscissa = ln(rate), ordinate = quality, over the
   overlapping log-rate interval; in dB, positive when the tested codec is better.

An empty overlap gives NaN: the curves share no quality range to compare on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BdResult:
    """One Bjontegaard comparison of a tested curve against an anchor.

    Attributes:
        value: BD-rate in percent, or BD-quality in dB; NaN when the curves do not overlap.
        low, high: the overlapping interval integrated over (quality in dB for BD-rate,
            ln(rate) for BD-quality).
        overlap: (high - low) / (span of both curves together), in [0, 1]: how much of the
            curves the number summarises.
    """

    value: float
    low: float
    high: float
    overlap: float


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Shape-preserving PCHIP slopes (Fritsch & Carlson 1980) at each knot.

    Args:
        x: (N,) strictly increasing knots, N >= 2.
        y: (N,) values.

    Returns:
        (N,) derivative of the interpolant at each knot.
    """
    h = np.diff(x)  # (N-1,) interval widths
    delta = np.diff(y) / h  # (N-1,) secant slopes
    n = x.size
    if n == 2:
        return np.array([delta[0], delta[0]])
    slopes = np.zeros(n)
    # Interior: weighted harmonic mean of the secants when they agree in sign, else flat.
    w1 = 2.0 * h[1:] + h[:-1]
    w2 = h[1:] + 2.0 * h[:-1]
    same_sign = (delta[:-1] * delta[1:]) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    slopes[1:-1] = np.where(same_sign, harmonic, 0.0)
    slopes[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    slopes[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return slopes


def _end_slope(h0: float, h1: float, d0: float, d1: float) -> float:
    """One-sided three-point slope at an end knot, clipped so the end piece stays monotone."""
    slope = ((2.0 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if np.sign(slope) != np.sign(d0):
        return 0.0
    if np.sign(d0) != np.sign(d1) and abs(slope) > abs(3.0 * d0):
        return 3.0 * d0
    return float(slope)


def pchip_integral(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Exact integral of the PCHIP interpolant of (x, y) over [low, high] within [x0, xN-1].

    Each piece is ``y_k + d_k s + c2 s^2 + c3 s^3`` with ``s = t - x_k``, integrated in
    closed form over its part of [low, high].
    """
    slopes = pchip_slopes(x, y)
    total = 0.0
    for k in range(x.size - 1):
        a, b = max(low, x[k]), min(high, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        secant = (y[k + 1] - y[k]) / h
        c2 = (3.0 * secant - 2.0 * slopes[k] - slopes[k + 1]) / h
        c3 = (slopes[k] + slopes[k + 1] - 2.0 * secant) / h**2

        def antiderivative(s: float, k: int = k, c2: float = c2, c3: float = c3) -> float:
            return y[k] * s + slopes[k] * s**2 / 2 + c2 * s**3 / 3 + c3 * s**4 / 4

        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return total


def _prepare(abscissa, ordinate, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(abscissa, dtype=np.float64)
    y = np.asarray(ordinate, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"{what}: need two or more (rate, quality) points of equal count")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"{what}: rates and qualities must be finite")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if np.any(np.diff(x) == 0):
        raise ValueError(f"{what}: two points share the same interpolation abscissa")
    return x, y


def _bd(x_a, y_a, x_t, y_t) -> BdResult:
    low, high = max(x_a[0], x_t[0]), min(x_a[-1], x_t[-1])
    span = max(x_a[-1], x_t[-1]) - min(x_a[0], x_t[0])
    if high <= low:
        return BdResult(value=float("nan"), low=float(low), high=float(high), overlap=0.0)
    mean_diff = (pchip_integral(x_t, y_t, low, high) - pchip_integral(x_a, y_a, low, high)) / (
        high - low
    )
    return BdResult(value=float(mean_diff), low=float(low), high=float(high),
                    overlap=float((high - low) / span))


def _check_rates(rates, what: str) -> np.ndarray:
    rates = np.asarray(rates, dtype=np.float64)
    if np.any(~(rates > 0)):
        raise ValueError(f"{what}: rates must be positive")
    return rates


def bd_rate(anchor_rate, anchor_quality, test_rate, test_quality) -> BdResult:
    """Bjontegaard delta rate of ``test`` against ``anchor`` (module docstring: method).

    Args:
        anchor_rate, test_rate: (N,) and (M,) positive rates (bpp or any common unit).
        anchor_quality, test_quality: (N,) and (M,) qualities in dB.

    Returns:
        BdResult with ``value`` in percent (-10.0 means 10 % fewer bits at equal quality).
    """
    xa, ya = _prepare(anchor_quality, np.log(_check_rates(anchor_rate, "anchor")), "anchor")
    xt, yt = _prepare(test_quality, np.log(_check_rates(test_rate, "test")), "test")
    result = _bd(xa, ya, xt, yt)
    return BdResult(value=100.0 * float(np.expm1(result.value)), low=result.low,
                    high=result.high, overlap=result.overlap)


def bd_quality(anchor_rate, anchor_quality, test_rate, test_quality) -> BdResult:
    """Bjontegaard delta quality (BD-PSNR) of ``test`` against ``anchor``, in dB.

    Args: as :func:`bd_rate`. The interval in the result is in ln(rate).
    """
    xa, ya = _prepare(np.log(_check_rates(anchor_rate, "anchor")), anchor_quality, "anchor")
    xt, yt = _prepare(np.log(_check_rates(test_rate, "test")), test_quality, "test")
    return _bd(xa, ya, xt, yt)
