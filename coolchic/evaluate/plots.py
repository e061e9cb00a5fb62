"""Rate-distortion plot of a run: PSNR and MS-SSIM (dB) against bpp, as one PNG.

Drawn with matplotlib's object API (``Figure``), no pyplot state: safe in workers and tests.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from coolchic.evaluate.published import PublishedCurve
from coolchic.evaluate.report import CurvePoint
from coolchic.io import atomic_write_bytes

_PUBLISHED_STYLE = {"coolchic": ("--", 1.4), "learned": (":", 1.2), "classical": ("-.", 1.0)}


def _db(ms_ssim: Sequence[float]) -> np.ndarray:
    return -10.0 * np.log10(1.0 - np.asarray(ms_ssim, dtype=np.float64))


def rd_figure(
    measured: dict[str, Sequence[CurvePoint]],
    published: Sequence[PublishedCurve] = (),
    *,
    title: str,
    max_bpp: float | None = None,
) -> Figure:
    """Two panels (PSNR, MS-SSIM dB) of bpp against quality.

    Args:
        measured: codec -> its run curve (points sorted by bpp). Codecs whose name starts
            with ``coolchic`` are drawn bold.
        published: reference curves, drawn dashed (Cool-chic releases) or dotted (learned).
        title: figure title; say what the images were (e.g. crops vs full images).
        max_bpp: right end of the rate axis; default: 10 % past our largest measured rate.
    """
    figure = Figure(figsize=(13, 7.5), layout="constrained")
    psnr_axes, ssim_axes = figure.subplots(1, 2)
    ours = [p.bpp for c, pts in measured.items() if c.startswith("coolchic") for p in pts]
    everything = [p.bpp for pts in measured.values() for p in pts]
    if max_bpp is None:
        max_bpp = 1.1 * max(ours or everything or [2.0])
    measured_colours = colormaps["tab10"].colors
    published_colours = colormaps["Dark2"].colors + colormaps["Set1"].colors
    handles: dict[str, object] = {}
    classical = 0
    for codec, points in measured.items():
        if codec.startswith("coolchic"):
            style = {"marker": "o", "linewidth": 2.8, "markersize": 6, "color": "black",
                     "zorder": 4}
        elif codec.startswith("amortized-"):  # ours too, often a single shipped quality
            style = {"marker": "s", "linewidth": 2.0, "markersize": 8, "zorder": 4,
                     "markeredgecolor": "black",
                     "color": measured_colours[classical % len(measured_colours)]}
            classical += 1
        else:
            style = {"marker": ".", "linewidth": 1.3, "markersize": 5, "zorder": 3,
                     "color": measured_colours[classical % len(measured_colours)]}
            classical += 1
        bpp = [p.bpp for p in points]
        handles[codec] = psnr_axes.plot(bpp, [p.psnr_db for p in points], **style)[0]
        ssim_axes.plot(bpp, [p.ms_ssim_db for p in points], **style)
    for index, curve in enumerate(published):
        linestyle, width = _PUBLISHED_STYLE.get(curve.group, (":", 1.0))
        style = {"linestyle": linestyle, "linewidth": width, "alpha": 0.85,
                 "color": published_colours[index % len(published_colours)],
                 "marker": "x" if len(curve.bpp) == 1 else None}
        label = f"{curve.label} [{curve.citation}]"
        if curve.psnr_db is not None:
            handles[label] = psnr_axes.plot(curve.bpp, curve.psnr_db, **style)[0]
        if curve.ms_ssim is not None:
            handles[label] = ssim_axes.plot(curve.bpp, _db(curve.ms_ssim), **style)[0]
    for axes, ylabel in ((psnr_axes, "PSNR RGB (dB), mean over images"),
                         (ssim_axes, "MS-SSIM RGB (dB) = -10 log10(1 - MS-SSIM)")):
        axes.set_xlim(0.0, max_bpp)
        axes.set_xlabel("rate (bits per pixel), mean over images")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        _fit_y(axes, max_bpp)
    figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=3,
                  fontsize=8, frameon=False)
    figure.suptitle(title)
    return figure


def _fit_y(axes, max_bpp: float) -> None:
    """Vertical range of what is drawn left of ``max_bpp``, with a small margin."""
    values = []
    for line in axes.get_lines():
        x, y = (np.asarray(v, dtype=np.float64) for v in line.get_data())
        values.extend(y[(x <= max_bpp) & np.isfinite(y)])
    if values:
        low, high = min(values), max(values)
        margin = 0.05 * max(high - low, 1.0)
        axes.set_ylim(low - margin, high + margin)


def save_rd_plot(path: str | Path, figure: Figure) -> Path:
    """Write the figure as PNG (atomically) and return its path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
