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
    N_MU,
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


class IntegerArm:
    """The ARM with integer weights, prepared once for fast repeated evaluation.

    Each layer is stored as one float64 matrix that also carries its bias and its rescaling:
    the input rows end with a constant 1 (the bias row of the matrix multiplies it), every
    hidden layer passes that 1 on in an extra output column, and the power-of-two rescale
    to the next layer's scale (or to the table's mean and log-scale steps, with the table's
    offsets added) is folded into the matrix. Scaling by a power of two is exact, so
    ``floor(a @ M)`` is bit for bit ``floor((a @ W + b) * 2^k)`` of the plain formulation;
    one BLAS call and three in-place ufuncs per hidden layer is what makes a decoding wave
    cheap.
    """

    def __init__(self, layers: Sequence[QLayer]):
        self.layers = list(layers)
        self.context = self.layers[0].weight.shape[1]
        self._matrices = []
        frac, last = 0, len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            acc_frac = layer.w_frac + frac
            n_out, n_in = layer.weight.shape
            if i < last:  # rescale to ARM_FRAC; column n_out carries the constant 1 on
                scale = np.full(n_out, 2.0 ** (ARM_FRAC - acc_frac))
                offset = np.zeros(n_out)
                m = np.zeros((n_in + 1, n_out + 1))
                m[n_in, n_out] = 1.0
            else:  # column 0: mean + half a step in 2^-MU_FRAC_BITS; 1: ln-scale index
                scale = 2.0 ** (np.array([MU_FRAC_BITS, LOG_SCALE_FRAC_BITS]) - acc_frac)
                offset = np.array([1 << (MU_FRAC_BITS - 1), -LOG_SCALE_MIN_FP], dtype=np.float64)
                m = np.zeros((n_in + 1, n_out))
            m[:n_in, :n_out] = layer.weight.astype(np.float64).T * scale
            m[n_in, :n_out] = scaled_bias(layer, acc_frac) * scale + offset
            self._matrices.append(m)
            frac = ARM_FRAC
        # Rows per call for large batches: below OpenBLAS's threading threshold
        # (rows * in * out < 2^18), since its worker threads slowed this code down 10x on a
        # busy 2-core machine; chunks of this size also stay in cache.
        self.batch_rows = max(16, (1 << 18) // max(m.size for m in self._matrices))

    @property
    def matrices(self) -> tuple[np.ndarray, ...]:
        """The folded float64 layer matrices, (inputs + 1, outputs [+ 1]) each, in order (the
        native latent decoder runs the same arithmetic on them)."""
        return tuple(self._matrices)

    def table_rows(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map contexts to coding parameters.

        Args:
            contexts: (N, context) float64 holding the integer latents of the neighbours.

        Returns:
            centers: (N,) int64, the integer part m of the Laplace mean mu = m + delta.
            rows: (N,) int64, the row of the flat probability table (delta, scale).
        """
        ones = np.ones((contexts.shape[0], 1))
        return self.table_rows_augmented(np.concatenate((contexts, ones), axis=1))

    def table_rows_augmented(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`table_rows` of (N, context + 1) contexts whose last column is 1.0 (the decoder
        gathers that 1 along with the neighbours, saving a copy per wave)."""
        a = contexts
        for m in self._matrices[:-1]:
            a = a @ m  # (N, width + 1)
            np.floor(a, out=a)
            a.clip(0.0, ACT_MAX, out=a)  # ReLU, bounded
        out = np.floor(a @ self._matrices[-1])  # (N, 2): mean + half a step, ln-scale index
        v = out.astype(np.int64)
        scale_index = v[:, 1]
        np.maximum(scale_index, 0, out=scale_index)
        np.minimum(scale_index, N_SCALE - 1, out=scale_index)
        rows = v[:, 0] & (N_MU - 1)  # mean offset index
        rows *= N_SCALE
        rows += scale_index
        centers = v[:, 0] >> MU_FRAC_BITS  # floor(mu + 1/2)
        np.maximum(centers, -LATENT_MAX, out=centers)
        np.minimum(centers, LATENT_MAX, out=centers)
        return centers, rows
