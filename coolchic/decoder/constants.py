"""The fixed-point constants of upsampling and synthesis, read by every twin: the numpy
decoder (`coolchic.decoder.reconstruct`), the torch one (`coolchic.decoder.reconstruct_torch`),
the training model (`coolchic.model.upsampling`), weight quantization and the payload. The C++
decoder and training kernels repeat them (a C++ file cannot import Python); tests compare
their images and gradients with these (docs/architecture.md lists the twins and tests).
"""

from __future__ import annotations

import numpy as np

SYN_FRAC = 16  # fractional bits of upsampled latents and synthesis activations
TAPS = (-9, 67, 225, -27)  # the bicubic taps over 2^TAP_SHIFT (format 4.0's only filter)
TAP_SHIFT = 8
UPS_FRAC = 10  # a level's taps are integers over 2^UPS_FRAC (spec §5.6)
BICUBIC = tuple(t << (UPS_FRAC - TAP_SHIFT) for t in TAPS)  # (-36, 268, 900, -108)
UPS_TAP_MAX = 1 << (UPS_FRAC + 1)  # every learned tap lies in [-2, 2]
# Each pass's outputs are clipped to +-UPS_MAX, which bounds learned taps' cascades and keeps
# every sum exact. The bicubic taps never reach it: their gain is at most 328/256 per pass,
# and 12 passes from |latent| <= 2^15 (2^31 at SYN_FRAC) stay below 2^35.3, so format 4.0
# files decode exactly as before.
UPS_MAX = float(1 << 36)


def level_taps(taps: np.ndarray | None, n_levels: int) -> np.ndarray:
    """(n_levels, 4) int64 taps over 2^UPS_FRAC, row l upsampling into grid l: `taps`
    itself, or the bicubic ones at every level when it is None."""
    if taps is None:
        return np.tile(np.array(BICUBIC, dtype=np.int64), (n_levels, 1))
    taps = np.asarray(taps, dtype=np.int64)
    if taps.shape != (n_levels, 4):
        raise ValueError(f"upsampling taps of shape {taps.shape}, expected ({n_levels}, 4)")
    return taps
