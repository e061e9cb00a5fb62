"""Our amortized codecs beside their papers: ``amortized.md`` of an evaluation run.

For each measured point of an ``amortized-<model>`` codec, the paper's published curve is
read at our mean rate (linear interpolation of quality in ln(bpp) between the two
published points around it; no extrapolation), so the table says how many dB we are
behind the paper at the same rate. The published curves are measured on whole Kodak
images, except Li 2018's CVPR numbers (752x496 centre crops), and most of them come from
models optimized for MS-SSIM (see reference/CITATIONS.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from coolchic.evaluate.published import AMORTIZED_PAPERS, PublishedCurve
from coolchic.evaluate.report import CurvePoint

PREFIX = "amortized-"


def at_rate(bpp: Sequence[float], quality: Sequence[float] | None, rate: float) -> float:
    """A published curve's quality at `rate` bpp, interpolated linearly in ln(bpp); NaN
    outside the published range or where the curve has no such quality."""
    if quality is None or not bpp or not bpp[0] <= rate <= bpp[-1]:
        return math.nan
    return float(np.interp(math.log(rate), np.log(bpp), quality))


def _db(ms_ssim: float) -> float:
    return -10.0 * math.log10(1.0 - ms_ssim) if ms_ssim < 1 else math.inf


def _cell(value: float, fmt: str) -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def comparison_markdown(curve_map: dict[str, Sequence[CurvePoint]],
                        published: Sequence[PublishedCurve], *, what: str) -> str | None:
    """The Markdown table, or None when the run measured no amortized codec."""
    ours = {codec[len(PREFIX):]: points for codec, points in curve_map.items()
            if codec.startswith(PREFIX)}
    if not ours:
        return None
    by_key = {curve.key: curve for curve in published}
    lines = [f"# Amortized codecs beside their papers ({what})", "",
             "Paper values are read on the published curve at our mean rate (linear in ln bpp,"
             " no extrapolation: `-` outside its range). MS-SSIM in dB = -10 log10(1 - MS-SSIM).",
             "", "| codec | quality | bpp | PSNR dB | MS-SSIM dB | paper curve | paper PSNR dB "
             "| paper MS-SSIM dB | PSNR gap dB | MS-SSIM gap dB |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for model, points in ours.items():
        papers = [by_key[key] for key in AMORTIZED_PAPERS.get(model, ()) if key in by_key]
        for point in points:
            for curve in papers or [None]:
                psnr = ssim_db = math.nan
                label = "-"
                if curve is not None:
                    label = f"{curve.label} [{curve.dataset}]"
                    psnr = at_rate(curve.bpp, curve.psnr_db, point.bpp)
                    ssim = at_rate(curve.bpp, curve.ms_ssim, point.bpp)
                    ssim_db = math.nan if math.isnan(ssim) else _db(ssim)
                lines.append(
                    f"| {model} | {point.setting:g} | {point.bpp:.4f} | {point.psnr_db:.2f} | "
                    f"{_cell(point.ms_ssim_db, '.2f')} | {label} | {_cell(psnr, '.2f')} | "
                    f"{_cell(ssim_db, '.2f')} | {_cell(point.psnr_db - psnr, '+.2f')} | "
                    f"{_cell(point.ms_ssim_db - ssim_db, '+.2f')} |")
    return "\n".join(lines) + "\n"
