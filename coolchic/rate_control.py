"""Quality knobs on top of lambda: a 0-100 quality scale, and a search of lambda for a
target rate (bpp) or quality (PSNR).

The search works on (ln lambda, ln bpp) or (ln lambda, PSNR), in which an overfitted codec's
operating points are close to straight lines: each step is a secant through the two
nearest encodes bracketing the target (a guessed slope before there are two). Every step
is a full encode, so the search costs ``max_encodes`` encodes at most; it returns the
encode that meets the target most closely from the right side (at most the target bpp,
at least the target PSNR), or the closest one when none does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from coolchic.encode import EncodeResult

QUALITY_MIN, QUALITY_MAX = 0.0, 100.0
LMBDA_AT_QUALITY_MIN = 5e-2  # quality 0: the smallest files
LMBDA_AT_QUALITY_MAX = 2e-5  # quality 100: the largest files
# Measured slopes (Kodak 256x256 crops, quick preset): ln bpp falls by about 0.38 per unit
# of ln lambda, and PSNR by about 1.5 dB; used for the first step of the search only.
GUESS_LN_BPP_SLOPE = -0.38
GUESS_PSNR_SLOPE = -1.5
TargetKind = Literal["bpp", "psnr"]


def lmbda_from_quality(quality: float) -> float:
    """Lambda for a quality in [0, 100], log-linear from 5e-2 (0) to 2e-5 (100)."""
    if not (isinstance(quality, (int, float)) and QUALITY_MIN <= quality <= QUALITY_MAX):
        raise ValueError(f"quality must be a number in [0, 100], got {quality}")
    t = quality / QUALITY_MAX
    return math.exp((1 - t) * math.log(LMBDA_AT_QUALITY_MIN) + t * math.log(LMBDA_AT_QUALITY_MAX))


@dataclass(frozen=True)
class Trial:
    lmbda: float
    bpp: float
    psnr_db: float


def _value(result: EncodeResult, kind: TargetKind) -> float:
    """The searched quantity, increasing with ln(1 / lambda): ln bpp or PSNR."""
    return math.log(result.report.bpp) if kind == "bpp" else result.report.psnr_db


def search_lmbda(
    encode_at: Callable[[float], EncodeResult],
    *,
    kind: TargetKind,
    target: float,
    start_lmbda: float = 1e-3,
    max_encodes: int = 4,
    tolerance: float = 0.03,
    on_trial: Callable[[Trial], None] | None = None,
) -> tuple[EncodeResult, list[Trial]]:
    """Find lambda whose encode meets `target` (bpp or PSNR dB).

    Args:
        encode_at: encodes the image at a lambda.
        tolerance: stop when the bpp is within this relative distance below the target
            (kind "bpp") or the PSNR within 10 * tolerance dB above it (kind "psnr").
    Returns:
        The chosen encode and every trial made, in order.
    """
    if kind not in ("bpp", "psnr"):
        raise ValueError(f"unknown target {kind!r}; choose bpp or psnr")
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"the target {kind} must be a finite number > 0, got {target}")
    if max_encodes < 1:
        raise ValueError("max_encodes must be >= 1")
    goal = math.log(target) if kind == "bpp" else target
    slack = tolerance if kind == "bpp" else 10 * tolerance
    guess_slope = GUESS_LN_BPP_SLOPE if kind == "bpp" else GUESS_PSNR_SLOPE
    points: list[tuple[float, float, EncodeResult]] = []  # (ln lambda, value, result)
    trials: list[Trial] = []
    ln_l = math.log(start_lmbda)
    for _ in range(max_encodes):
        result = encode_at(math.exp(ln_l))
        value = _value(result, kind)
        points.append((ln_l, value, result))
        trials.append(Trial(math.exp(ln_l), result.report.bpp, result.report.psnr_db))
        if on_trial is not None:
            on_trial(trials[-1])
        if _meets(value, goal, kind) and abs(value - goal) <= slack:
            break
        ln_l = _next_ln_lmbda(points, goal, guess_slope)
        if any(abs(ln_l - p[0]) < 1e-3 for p in points):
            break  # the search has converged on a lambda already tried
    return _best(points, goal, kind), trials


def _meets(value: float, goal: float, kind: TargetKind) -> bool:
    return value <= goal if kind == "bpp" else value >= goal


def _next_ln_lmbda(points: list[tuple[float, float, EncodeResult]], goal: float, guess_slope: float) -> float:
    below = [p for p in points if p[1] < goal]
    above = [p for p in points if p[1] >= goal]
    if below and above:  # secant through the two nearest points that bracket the goal
        a = max(below, key=lambda p: p[1])
        b = min(above, key=lambda p: p[1])
    elif len(points) >= 2:  # secant through the two nearest points, extrapolated
        a, b = sorted(points, key=lambda p: abs(p[1] - goal))[:2]
    else:
        ln_l, value, _ = points[0]
        return ln_l + (goal - value) / guess_slope
    if abs(b[1] - a[1]) < 1e-9:
        return a[0] + (goal - a[1]) / guess_slope
    slope = (b[1] - a[1]) / (b[0] - a[0])
    if slope >= 0:  # not monotone (noise): fall back on the guessed slope
        slope = guess_slope
    step = (goal - a[1]) / slope
    return a[0] + max(-3.0, min(3.0, step))  # at most a factor e^3 per step


def _best(points: list[tuple[float, float, EncodeResult]], goal: float, kind: TargetKind) -> EncodeResult:
    meeting = [p for p in points if _meets(p[1], goal, kind)]
    pool = meeting or points
    return min(pool, key=lambda p: abs(p[1] - goal))[2]
