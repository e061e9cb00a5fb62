"""From per-image rows to rate-distortion curves, BD-rate tables and summary files.

Averaging convention (one place, :mod:`coolchic.metrics`): a curve point is the mean over
images of the per-image bpp, the mean of the per-image PSNR (``psnr_db``, the convention
of the classical reference measurements and of most learned-codec papers), and, beside it,
the PSNR of the mean MSE (``psnr_of_mean_mse_db``, the convention of the official
Cool-chic results). MS-SSIM is averaged linearly, then given in dB as
``-10 log10(1 - mean)``. BD-rates are computed between such mean curves
(:mod:`coolchic.evaluate.bdrate`), on mean PSNR and on MS-SSIM dB.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coolchic.evaluate.bdrate import BdResult, bd_quality, bd_rate
from coolchic.evaluate.store import Row
from coolchic.metrics import mean_psnr, ms_ssim_db, psnr_of_mean_mse


@dataclass(frozen=True)
class CurvePoint:
    """One codec setting averaged over the images of a run."""

    setting: float  # lambda (ours) or quality (classical)
    n_images: int
    bpp: float  # mean over images
    psnr_db: float  # mean over images of per-image PSNR
    psnr_of_mean_mse_db: float  # PSNR of the mean over images of the MSE
    ms_ssim: float  # mean over images
    ms_ssim_db: float  # -10 log10(1 - mean MS-SSIM)
    encode_s: float  # mean over images
    decode_s: float  # mean over images
    mac_per_pixel: float | None  # mean over images (ours only)


def curves(rows: Sequence[Row], *, bit_depth: int = 8) -> dict[str, list[CurvePoint]]:
    """Codec -> its points sorted by bpp, each averaged over the images that have it.

    Args:
        rows: per-image rows of one run.
        bit_depth: sample depth the MSE is expressed on (PSNR of the mean MSE).
    """
    groups: dict[tuple[str, float], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.codec, row.setting)].append(row)
    result: dict[str, list[CurvePoint]] = defaultdict(list)
    for (codec, setting), members in groups.items():
        macs = [r.mac_per_pixel for r in members if r.mac_per_pixel is not None]
        mean_ms_ssim = float(np.mean([r.ms_ssim for r in members]))
        result[codec].append(CurvePoint(
            setting=setting, n_images=len(members),
            bpp=float(np.mean([r.bpp for r in members])),
            psnr_db=float(mean_psnr([r.psnr_db for r in members])),
            psnr_of_mean_mse_db=float(
                psnr_of_mean_mse([r.mse for r in members], (1 << bit_depth) - 1)
            ),
            ms_ssim=mean_ms_ssim, ms_ssim_db=float(ms_ssim_db(mean_ms_ssim)),
            encode_s=float(np.mean([r.encode_s for r in members])),
            decode_s=float(np.mean([r.decode_s for r in members])),
            mac_per_pixel=float(np.mean(macs)) if macs else None,
        ))
    return {codec: sorted(points, key=lambda p: p.bpp) for codec, points in sorted(result.items())}


def complete_points(points: Sequence[CurvePoint], n_images: int) -> list[CurvePoint]:
    """Only the points averaged over all ``n_images``: a mean over fewer is not comparable."""
    return [p for p in points if p.n_images == n_images]


@dataclass(frozen=True)
class BdEntry:
    """BD numbers of ``codec`` against ``anchor`` (NaN where the curves do not overlap)."""

    codec: str
    anchor: str
    bd_rate_psnr_pct: float
    bd_psnr_db: float
    psnr_overlap: float
    bd_rate_ms_ssim_pct: float
    ms_ssim_overlap: float


def bd_matrix(curve_map: dict[str, Sequence[CurvePoint]], anchors: Sequence[str]
              ) -> list[BdEntry]:
    """Every codec against every anchor, on mean PSNR and on MS-SSIM dB."""
    entries = []
    for anchor in anchors:
        reference = curve_map[anchor]
        for codec, points in curve_map.items():
            if len(points) < 2 or len(reference) < 2:
                continue
            ra, pa, ma = _columns(reference)
            rt, pt, mt = _columns(points)
            by_psnr = _finite_only(bd_rate, ra, pa, rt, pt)
            by_ms_ssim = _finite_only(bd_rate, ra, ma, rt, mt)
            entries.append(BdEntry(
                codec=codec, anchor=anchor, bd_rate_psnr_pct=by_psnr.value,
                bd_psnr_db=_finite_only(bd_quality, ra, pa, rt, pt).value,
                psnr_overlap=by_psnr.overlap, bd_rate_ms_ssim_pct=by_ms_ssim.value,
                ms_ssim_overlap=by_ms_ssim.overlap,
            ))
    return entries


def bd_rate_rows_markdown(rows: Sequence[Row], codecs: Sequence[str], anchors: Sequence[str],
                          n_images: int, *, label: str = "curve") -> str:
    """A markdown table of the BD-rate (mean PSNR) of each of ``codecs`` against each of
    ``anchors``, from per-image rows; only points averaged over all ``n_images`` count."""
    curve_map = {codec: complete_points(points, n_images) for codec, points in curves(rows).items()}
    entries = {(e.codec, e.anchor): e for e in bd_matrix(curve_map, anchors)}
    lines = [f"| {label} | " + " | ".join(anchors) + " |", "| --- |" + " ---: |" * len(anchors)]
    for codec in codecs:
        cells = [f"{entries[(codec, a)].bd_rate_psnr_pct:+.2f} %" for a in anchors]
        lines.append(f"| {codec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_image_bd_markdown(rows: Sequence[Row], codecs: Sequence[str], anchors: Sequence[str]) -> str | None:
    """A Markdown section: the BD-rate (PSNR) of each of ``codecs`` against each anchor on
    each image where the codec has every one of its settings done and the anchor at least
    two points (a run stopped part-way has these before it has a mean curve); None when
    there is no such image."""
    points: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        points[(row.codec, row.image)].append(row)
    lines = []
    for codec in codecs:
        settings = {r.setting for r in rows if r.codec == codec}
        images = sorted(im for (c, im), got in points.items()
                        if c == codec and len(settings) >= 2 and {r.setting for r in got} == settings)
        for image in images:
            ours = sorted(points[(codec, image)], key=lambda r: r.bpp)
            cells = []
            for anchor in anchors:
                theirs = sorted(points.get((anchor, image), []), key=lambda r: r.bpp)
                value = math.nan
                if len(theirs) >= 2:
                    value = _finite_only(bd_rate, [r.bpp for r in theirs], [r.psnr_db for r in theirs],
                                         [r.bpp for r in ours], [r.psnr_db for r in ours]).value
                cells.append(_number(value, "+.2f") + ("" if math.isnan(value) else " %"))
            lines.append(f"| {codec} | {image} | " + " | ".join(cells) + " |")
    if not lines:
        return None
    return "\n".join([
        "## Per image", "",
        "BD-rate (PSNR) on each image where our codec has all its settings, against each anchor "
        "on the same image (negative = fewer bits).", "",
        "| codec | image | " + " | ".join(anchors) + " |",
        "| --- | --- |" + " ---: |" * len(anchors), *lines, ""])


def _finite_only(bd, *curves: Sequence[float]) -> BdResult:
    """``bd(*curves)``, or NaN when a curve cannot be interpolated: a quality that is not
    finite (MS-SSIM of images too small for 5 scales, PSNR of a lossless point) or two
    points of one curve at the same quality (a codec whose settings saturate)."""
    try:
        return bd(*curves)
    except ValueError:
        return BdResult(value=math.nan, low=math.nan, high=math.nan, overlap=0.0)


def _columns(points: Sequence[CurvePoint]) -> tuple[list[float], list[float], list[float]]:
    return ([p.bpp for p in points], [p.psnr_db for p in points],
            [p.ms_ssim_db for p in points])


def _number(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def summary_tsv(curve_map: dict[str, Sequence[CurvePoint]]) -> str:
    """Per-codec, per-setting means as TSV text (header line included)."""
    lines = ["codec\tsetting\tn_images\tbpp\tpsnr_db\tpsnr_of_mean_mse_db\tms_ssim\tms_ssim_db"
             "\tencode_s\tdecode_s\tmac_per_pixel"]
    for codec, points in curve_map.items():
        for p in points:
            lines.append("\t".join([
                codec, f"{p.setting:g}", str(p.n_images), f"{p.bpp:.6f}", f"{p.psnr_db:.4f}",
                f"{p.psnr_of_mean_mse_db:.4f}", f"{p.ms_ssim:.6f}", f"{p.ms_ssim_db:.4f}",
                f"{p.encode_s:.3f}", f"{p.decode_s:.3f}", _number(p.mac_per_pixel, ".1f"),
            ]))
    return "\n".join(lines) + "\n"


def bdrate_markdown(entries: Sequence[BdEntry], *, title: str, notes: Sequence[str] = ()) -> str:
    """A Markdown page: one table per anchor, codecs sorted by BD-rate on PSNR."""
    out = [f"# {title}", ""]
    out += [f"- {note}" for note in notes]
    out += [
        "- BD-rate: Bjontegaard delta rate, PCHIP interpolation of ln(bpp) over the overlapping"
        " quality range, integrated exactly (coolchic/evaluate/bdrate.py); negative = fewer"
        " bits than the anchor at equal quality.",
        "- Curves: mean over images of bpp and of per-image PSNR (RGB); MS-SSIM dB ="
        " -10 log10(1 - mean MS-SSIM). Overlap: share of the two curves' joint quality span"
        " that the number covers.",
        "",
    ]
    anchors = list(dict.fromkeys(e.anchor for e in entries))
    for anchor in anchors:
        rows = sorted((e for e in entries if e.anchor == anchor),
                      key=lambda e: (math.isnan(e.bd_rate_psnr_pct), e.bd_rate_psnr_pct))
        out += [f"## Anchor: {anchor}", "",
                "| codec | BD-rate PSNR (%) | BD-PSNR (dB) | PSNR overlap "
                "| BD-rate MS-SSIM dB (%) | MS-SSIM overlap |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for e in rows:
            out.append(
                f"| {e.codec} | {_number(e.bd_rate_psnr_pct, '+.2f')} "
                f"| {_number(e.bd_psnr_db, '+.3f')} | {e.psnr_overlap:.2f} "
                f"| {_number(e.bd_rate_ms_ssim_pct, '+.2f')} | {e.ms_ssim_overlap:.2f} |"
            )
        out.append("")
    return "\n".join(out)


def paired_cost_cells(pairs: Sequence[tuple[dict, dict]], *, reference: bool = False) -> str:
    """Markdown cells comparing encodes with their reference on the same images: images,
    mean bpp, mean PSNR, J / J(reference) as geometric mean (range), on how many images J
    is lower ('-' for the reference itself) and the mean encode seconds. Each pair is
    (row, reference row); a row has bpp, psnr_db, j (true RD cost) and encode_s."""
    ratios = np.array([a["j"] / b["j"] for a, b in pairs])
    rows = [a for a, _ in pairs]
    better = "-" if reference else str(sum(a["j"] < b["j"] for a, b in pairs))
    return (f"{len(pairs)} | {np.mean([r['bpp'] for r in rows]):.4f} | "
            f"{mean_psnr([r['psnr_db'] for r in rows]):.2f} dB | "
            f"{np.exp(np.mean(np.log(ratios))):.4f} ({ratios.min():.4f}-{ratios.max():.4f}) | "
            f"{better} | {np.mean([r['encode_s'] for r in rows]):.0f} |")
