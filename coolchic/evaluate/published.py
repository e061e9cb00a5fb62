"""Published rate-distortion curves, loaded from the CSV files in ``reference/``.

The numbers live in the data files (sources in ``reference/CITATIONS.md``); this module
only says which rows and columns make each curve. Every curve is a mean over the images of
its dataset as published (bpp; PSNR as the mean of per-image PSNR where the source says
so; MS-SSIM linear).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

PAPER_VERSION = "v1.0"  # the Cool-chic release that is the ICCV 2023 COOL-CHIC paper


@dataclass(frozen=True)
class PublishedCurve:
    """One published curve.

    Attributes:
        key: short identifier (``coolchic-v1.0``, ``mbt2018``, ...).
        label: legend text.
        citation: the paper, short form (full references in reference/CITATIONS.md).
        dataset: what the numbers were measured on.
        group: ``coolchic`` (overfitted, ours' ancestors), ``learned`` or ``classical``.
        bpp: (N,) mean rates, sorted increasing.
        psnr_db: (N,) mean PSNR, or None where the source gives none.
        ms_ssim: (N,) mean MS-SSIM, or None where the source gives none.
    """

    key: str
    label: str
    citation: str
    dataset: str
    group: str
    bpp: tuple[float, ...]
    psnr_db: tuple[float, ...] | None
    ms_ssim: tuple[float, ...] | None


def read_reference_csv(name: str) -> list[dict[str, str]]:
    """Rows of one packaged reference file (see reference/CITATIONS.md)."""
    text = resources.files("coolchic.evaluate").joinpath("reference", name).read_text()
    return list(csv.DictReader(text.splitlines()))


def _floats(rows, column: str) -> tuple[float, ...] | None:
    values = [r.get(column, "") for r in rows]
    if not column or any(v in ("", "nan", None) for v in values):
        return None
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class _Source:
    key: str
    label: str
    citation: str
    dataset: str
    group: str
    file: str
    keep: Callable[[dict[str, str]], bool]
    bpp: str
    psnr: str
    ms_ssim: str


def _release(version: str, label: str, citation: str) -> _Source:
    return _Source(
        f"coolchic-{version}", label, citation, "Kodak", "coolchic", "ALL_image_avg.csv",
        lambda r: r["version"] == version and r["dataset"] == "image-kodak",
        "mean_rate_bpp", "mean_psnr_db", "",
    )


def _compressai(codec: str, label: str, citation: str) -> _Source:
    return _Source(
        codec, label, citation, "Kodak", "learned", "compressai_kodak_main.csv",
        lambda r: r["codec"] == codec and r["optimized_for"] == "mse", "bpp", "psnr_rgb",
        "ms_ssim_rgb",
    )


_SOURCES: tuple[_Source, ...] = (
    _release(PAPER_VERSION, "COOL-CHIC (ICCV 2023)", "Ladune et al., ICCV 2023"),
    _release("v2.0", "Cool-chic v2 (MMSP 2023)", "Leguay et al., MMSP 2023"),
    _release("v3.4", "Cool-chic v3.4", "Cool-chic release v3.4 (Orange, 2024)"),
    _release("v5.0", "Cool-chic v5.0", "Cool-chic release v5.0 (Orange, 2025)"),
    _compressai("bmshj2018-factorized", "Balle 2018 factorized", "Balle et al., ICLR 2018"),
    _compressai("bmshj2018-hyperprior", "Balle 2018 hyperprior", "Balle et al., ICLR 2018"),
    _compressai("mbt2018", "Minnen 2018", "Minnen et al., NeurIPS 2018"),
    _compressai("cheng2020-anchor", "Cheng 2020 anchor", "Cheng et al., CVPR 2020"),
    _compressai("cheng2020-attn", "Cheng 2020 attention", "Cheng et al., CVPR 2020"),
    _Source("li2018-cwic", "Li 2018 CWIC (TPAMI ext.)", "Li et al., CVPR 2018 / TPAMI 2021",
            "Kodak", "learned", "li2020_cwic_tpami_results.csv",
            lambda r: r["dataset"] == "kodak" and r["optimized_for"] == "mse",
            "bpp", "psnr", "ms_ssim"),
    _Source("li2018-cwic-cvpr", "Li 2018 CWIC (CVPR, crops)", "Li et al., CVPR 2018",
            "Kodak 752x496 centre crops", "learned", "li2018_cwic_cvpr_kodak.csv",
            lambda r: r["image"] == "MEAN" and r["psnr_rgb"] != "",
            "bpp_final(binary+map, after conv. entropy coder)", "psnr_rgb", "ms_ssim_rgb"),
    _Source("li2020-ccn", "Li 2020 CCN", "Li et al., IEEE TIP 2020", "Kodak", "learned",
            "li2020_ccn_tip_results.csv",
            lambda r: r["dataset"] == "kodak" and r["optimized_for"] == "mse",
            "bpp", "psnr", "ms_ssim"),
    _Source("mentzer2018", "Mentzer 2018", "Mentzer et al., CVPR 2018", "Kodak", "learned",
            "mentzer2018_kodak.csv", lambda r: r["method"] == "mentzer2018_cvpr_fig1_curve",
            "bpp", "", "ms_ssim"),
)


# The published curves of each amortized codec's paper (keys of _SOURCES), for comparisons.
AMORTIZED_PAPERS: dict[str, tuple[str, ...]] = {
    "cwic": ("li2018-cwic-cvpr", "li2018-cwic"),
    "ccn": ("li2020-ccn",),
    "cpm": ("mentzer2018",),
}


def published_curves(groups: tuple[str, ...] = ("coolchic", "learned")) -> list[PublishedCurve]:
    """The published Kodak curves of the given groups, in a fixed order."""
    curves = []
    for source in _SOURCES:
        if source.group not in groups:
            continue
        rows = [r for r in read_reference_csv(source.file) if source.keep(r)]
        rows.sort(key=lambda r: float(r[source.bpp]))
        curves.append(PublishedCurve(
            key=source.key, label=source.label, citation=source.citation,
            dataset=source.dataset, group=source.group, bpp=_floats(rows, source.bpp),
            psnr_db=_floats(rows, source.psnr), ms_ssim=_floats(rows, source.ms_ssim),
        ))
    return curves


def classical_reference_curves() -> list[PublishedCurve]:
    """Classical codecs measured for this project on the full Kodak images (mean PSNR)."""
    rows = read_reference_csv("classical_kodak_summary.csv")
    curves = []
    for codec in dict.fromkeys(r["codec"] for r in rows):
        mine = sorted((r for r in rows if r["codec"] == codec), key=lambda r: float(r["bpp"]))
        curves.append(PublishedCurve(
            key=f"kodak-{codec}", label=f"{codec} (full Kodak)",
            citation="measured for this project, reference/CITATIONS.md", dataset="Kodak",
            group="classical", bpp=_floats(mine, "bpp"), psnr_db=_floats(mine, "psnr_rgb"),
            ms_ssim=_floats(mine, "msssim_rgb"),
        ))
    return curves


@dataclass(frozen=True)
class PaperPoint:
    """COOL-CHIC (ICCV 2023) on Kodak at one lambda: per-lambda means as published."""

    lmbda: float
    bpp: float
    psnr_db: float  # mean over images of per-image PSNR
    psnr_of_mean_mse_db: float


def paper_points() -> list[PaperPoint]:
    """The published per-lambda Kodak means of the COOL-CHIC paper (release v1.0)."""
    rows = [r for r in read_reference_csv("ALL_image_avg.csv")
            if r["version"] == PAPER_VERSION and r["dataset"] == "image-kodak"]
    return sorted(
        (PaperPoint(float(r["lmbda"]), float(r["mean_rate_bpp"]), float(r["mean_psnr_db"]),
                    float(r["psnr_of_mean_mse_db"])) for r in rows),
        key=lambda p: p.lmbda,
    )


def paper_lambdas() -> tuple[float, ...]:
    """The lambdas of the COOL-CHIC paper's Kodak results, smallest first."""
    return tuple(p.lmbda for p in paper_points())


PER_IMAGE_VERSIONS = (PAPER_VERSION, "v3.4", "v5.0")  # releases with per-image Kodak files


def paper_per_image(version: str = PAPER_VERSION) -> dict[tuple[str, float], tuple[float, float]]:
    """(image, lambda) -> (bpp, PSNR dB) of a Cool-chic release on full Kodak images (the
    COOL-CHIC paper by default)."""
    if version not in PER_IMAGE_VERSIONS:
        raise ValueError(f"no per-image Kodak results of {version!r}; packaged: "
                         f"{', '.join(PER_IMAGE_VERSIONS)}")
    return {
        (r["seq"], float(r["lambda"])): (float(r["rate_bpp"]), float(r["psnr_db"]))
        for r in read_reference_csv(f"image-kodak_{version}_per_image.csv")
    }
