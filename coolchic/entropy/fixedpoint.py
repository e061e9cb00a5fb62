"""THE decoder-side probability code: the quantized ARM in exact integer arithmetic.

The encoder and the decoder both call :meth:`IntegerArm.table_rows`; nothing else decides
which probability table a latent is coded with. Values are integers held in float64 arrays:
every product and partial sum stays below 2^51 (weights |w| <= 2^15, activations clipped to
2^30, fan-in <= 64), so BLAS computes them exactly in any order, on any CPU and thread count.
Rescaling is a multiplication by a power of two followed by floor, which is exact too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coolchic.entropy.tables import (
    LOG_SCALE_FRAC_BITS,
    LOG_SCALE_MIN_FP,
    MU_FRAC_BITS,
    N_SCALE,
)

ARM_FRAC = 8  # fractional bits of the ARM's hidden activations
ACT_MAX = 1 << 30  # activations are clipped to [-ACT_MAX, ACT_MAX]
WEIGHT_MAX = 1 << 15  # integer weights and biases lie in [-WEIGHT_MAX, WEIGHT_MAX]
LATENT_MAX = (1 << 15) - 1  # integer latents lie in [-LATENT_MAX, LATENT_MAX]
MAX_FRAC = 24  # largest allowed fractional-bit count of a weight or bias step


@dataclass(frozen=True)
class QLayer:
    """A quantized layer: real weight = weight * 2^-w_frac, real bias = bias * 2^-b_frac.

    weight is (out, in) for a linear layer or (out, in, 3, 3) for a convolution; int64.
    """

    weight: np.ndarray
    bias: np.ndarray
    w_frac: int
    b_frac: int


def scaled_bias(layer: QLayer, acc_frac: int) -> np.ndarray:
    """The bias as an integer at the accumulator's scale 2^-acc_frac (floored), float64."""
    return np.floor(layer.bias.astype(np.float64) * 2.0 ** (acc_frac - layer.b_frac))


def rescale(acc: np.ndarray, from_frac: int, to_frac: int) -> np.ndarray:
    """floor(acc * 2^(to_frac - from_frac)), exact for integer-valued float64 arrays."""
    return np.floor(acc * 2.0 ** (to_frac - from_frac))


class IntegerArm:
    """The ARM with integer weights, prepared once for fast repeated evaluation."""

    def __init__(self, layers: Sequence[QLayer]):
        self.layers = list(layers)
        self._weights = [layer.weight.astype(np.float64).T.copy() for layer in self.layers]

    def table_rows(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map contexts to coding parameters.

        Args:
            contexts: (N, context) float64 holding the integer latents of the neighbours.

        Returns:
            centers: (N,) int64, the integer part m of the Laplace mean mu = m + delta.
            rows: (N,) int64, the row of the flat probability table (delta, scale).
        """
        a, frac = contexts, 0
        last = len(self.layers) - 1
        for i, (layer, w) in enumerate(zip(self.layers, self._weights)):
            acc_frac = layer.w_frac + frac
            acc = a @ w + scaled_bias(layer, acc_frac)  # (N, out)
            if i == last:
                break
            a = np.clip(rescale(acc, acc_frac, ARM_FRAC), 0.0, ACT_MAX)  # ReLU, bounded
            frac = ARM_FRAC
        mu_fp = rescale(acc[:, 0], acc_frac, MU_FRAC_BITS)  # mean in units of 2^-5
        ls_fp = rescale(acc[:, 1], acc_frac, LOG_SCALE_FRAC_BITS)  # ln-scale in 2^-4
        half = 1 << (MU_FRAC_BITS - 1)
        centers = np.floor((mu_fp + half) * 2.0**-MU_FRAC_BITS)
        delta_index = (mu_fp + half - centers * (1 << MU_FRAC_BITS)).astype(np.int64)
        centers = np.clip(centers, -LATENT_MAX, LATENT_MAX).astype(np.int64)
        scale_index = np.clip(ls_fp - LOG_SCALE_MIN_FP, 0, N_SCALE - 1).astype(np.int64)
        return centers, delta_index * N_SCALE + scale_index
