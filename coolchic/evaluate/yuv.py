"""RGB <-> Y'CbCr conversion for the video-codec baselines (HEVC, VVC).

One fixed convention, the one written in the streams' VUI by the shared reference
measurements (``range=full``, ``colormatrix=smpte170m``): full-range BT.601, i.e. the JFIF
equations. Metrics are always computed on the 8-bit RGB image that comes back, so the
conversion's own loss is charged to the codec, as it is for JPEG and AVIF.

4:2:0 chroma is a 2x2 box average (chroma sited at the centre of each 2x2 block,
``chromaloc=1``) and is upsampled back by centre-sited bilinear interpolation (weights
3/4, 1/4 along each axis, edges replicated).
"""

from __future__ import annotations

import numpy as np

# Rows: Y, Cb, Cr; columns: R, G, B (ITU-R BT.601 luma weights, full range).
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.299 / 1.772, -0.587 / 1.772, 0.5],
        [0.5, -0.587 / 1.402, -0.114 / 1.402],
    ]
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float64 full-range Y'CbCr, chroma centred on 128."""
    planes = np.einsum("ij,hwj->ihw", _RGB_TO_YCBCR, rgb.astype(np.float64))  # (3, H, W)
    planes[1:] += 128.0
    return planes


def ycbcr_to_rgb(planes: np.ndarray) -> np.ndarray:
    """(3, H, W) float full-range Y'CbCr on the 8-bit scale -> (H, W, 3) uint8 RGB, rounded."""
    centred = planes.astype(np.float64)
    centred[1:] -= 128.0
    rgb = np.einsum("ij,jhw->hwi", _YCBCR_TO_RGB, centred)  # (H, W, 3)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def to_uint8(planes: np.ndarray) -> np.ndarray:
    """Round and clip float planes to 8-bit samples."""
    return np.clip(np.rint(planes), 0, 255).astype(np.uint8)


def pad_even(rgb: np.ndarray) -> np.ndarray:
    """Replicate the last row/column so both sides are even (4:2:0 needs it)."""
    height, width = rgb.shape[:2]
    return np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def downsample_chroma(plane: np.ndarray) -> np.ndarray:
    """(H, W) with H, W even -> (H/2, W/2) mean of each 2x2 block."""
    height, width = plane.shape
    blocks = plane.reshape(height // 2, 2, width // 2, 2)  # (H/2, 2, W/2, 2)
    return blocks.mean(axis=(1, 3))


def _upsample_axis(plane: np.ndarray, axis: int) -> np.ndarray:
    """Double one axis: sample 2i = 3/4 c[i] + 1/4 c[i-1], 2i+1 = 3/4 c[i] + 1/4 c[i+1]."""
    moved = np.moveaxis(plane, axis, 0)
    previous = np.concatenate([moved[:1], moved[:-1]])
    following = np.concatenate([moved[1:], moved[-1:]])
    out = np.empty((2 * moved.shape[0],) + moved.shape[1:], dtype=np.float64)
    out[0::2] = 0.75 * moved + 0.25 * previous
    out[1::2] = 0.75 * moved + 0.25 * following
    return np.moveaxis(out, 0, axis)


def upsample_chroma(plane: np.ndarray) -> np.ndarray:
    """(h, w) -> (2h, 2w) centre-sited bilinear interpolation."""
    return _upsample_axis(_upsample_axis(plane.astype(np.float64), 0), 1)
