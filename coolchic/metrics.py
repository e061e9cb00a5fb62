"""Distortion and rate metrics, and the one place where averaging conventions live.

Conventions:

- PSNR is computed over all samples of all channels at once (for RGB: "RGB PSNR", from
  the MSE over R, G and B), with peak ``2^bit_depth - 1`` on integer images. It is in dB
  and is ``inf`` for identical images.
- MS-SSIM is the 5-scale MS-SSIM of Wang, Simoncelli and Bovik (2003), with an 11-tap
  Gaussian window (sigma 1.5) and the standard weights, computed by ``pytorch_msssim`` on
  images scaled to [0, 1], per channel and then averaged over channels. Its 4
  downsamplings need a shorter side of more than 160 pixels; for smaller images
  ``ms_ssim`` returns ``nan`` instead of a number with a different definition (fewer
  scales), so results stay comparable with published ones.
- Rates are in bits per pixel of the whole file: ``8 * bytes / (height * width)``.
- Averages over a data set: ``mean_psnr`` is the mean over images of per-image PSNR
  (what coolchic reports); ``psnr_of_mean_mse`` is the PSNR of the mean per-image MSE
  (what the official Cool-chic reports). The second is never larger than the first
  (Jensen); state which one a table uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

MS_SSIM_MIN_SIDE = 161  # smallest shorter side for 5-scale MS-SSIM with an 11-tap window


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("images must not be empty")
    return a.astype(np.float64), b.astype(np.float64)


def _peak(bit_depth: int) -> int:
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    return (1 << bit_depth) - 1


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over every element, computed in float64."""
    a, b = _pair(a, b)
    return float(np.mean(np.square(a - b)))


def _psnr_from_mse(value: float, max_value: float) -> float:
    if value == 0:
        return math.inf
    return 10.0 * math.log10(max_value * max_value / value)


def psnr(a: np.ndarray, b: np.ndarray, *, max_value: float) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(max_value^2 / MSE); inf when a == b."""
    if not max_value > 0:
        raise ValueError(f"max_value must be > 0, got {max_value!r}")
    return _psnr_from_mse(mse(a, b), max_value)


def psnr_images(ref: np.ndarray, test: np.ndarray, bit_depth: int) -> float:
    """PSNR in dB of two integer images (H, W, C), peak 2^bit_depth - 1, over all channels."""
    return psnr(ref, test, max_value=_peak(bit_depth))


def ms_ssim(ref: np.ndarray, test: np.ndarray, bit_depth: int) -> float:
    """5-scale MS-SSIM of two integer images (H, W, C) or (H, W), in [0, 1].

    Returns:
        The MS-SSIM averaged over channels, or nan when the shorter side is below
        MS_SSIM_MIN_SIDE pixels (see the module docstring).
    """
    ref, test = _pair(ref, test)
    peak = _peak(bit_depth)
    if ref.ndim == 2:
        ref, test = ref[:, :, None], test[:, :, None]
    if ref.ndim != 3:
        raise ValueError(f"images must be (H, W) or (H, W, C), got {ref.shape}")
    if min(ref.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan
    import torch  # here, so that PSNR and bpp users do not pay for importing torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x / peak).permute(2, 0, 1)[None]  # (1, C, H, W) float64

    return float(_ms_ssim(tensor(ref), tensor(test), data_range=1.0))


def ms_ssim_db(v: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - v): inf for v == 1, nan for nan."""
    if math.isnan(v):
        return math.nan
    if v >= 1.0:
        return math.inf
    return -10.0 * math.log10(1.0 - v)


def bpp(n_bytes: int, height: int, width: int) -> float:
    """Bits per pixel of a file of `n_bytes` bytes for a height x width image."""
    if height < 1 or width < 1 or n_bytes < 0:
        raise ValueError(f"need n_bytes >= 0 and a positive size, got {n_bytes}, "
                         f"{height}x{width}")
    return 8.0 * n_bytes / (height * width)


def mean_psnr(psnrs: Iterable[float]) -> float:
    """Mean over images of per-image PSNR (dB): coolchic's data-set average."""
    values = list(psnrs)
    if not values:
        raise ValueError("mean_psnr needs at least one value")
    return float(np.mean(values))


def psnr_of_mean_mse(mses: Iterable[float], max_value: float) -> float:
    """PSNR (dB) of the mean over images of per-image MSE: the official Cool-chic average.

    `max_value` is the peak in the unit of the MSEs (1.0 for images in [0, 1], 255 for
    8-bit integers).
    """
    values = list(mses)
    if not values:
        raise ValueError("psnr_of_mean_mse needs at least one value")
    if not max_value > 0:
        raise ValueError(f"max_value must be > 0, got {max_value!r}")
    return _psnr_from_mse(float(np.mean(values)), max_value)
