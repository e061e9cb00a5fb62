"""The native decoder (``decoder_kernels.cpp``): the wave loop of
`coolchic.decoder.latents.decode_waves` and the fixed-point synthesis of
`coolchic.decoder.reconstruct.synthesize`, each as one C++ call, bit-exact with the numpy
paths (`coolchic.decoder.dispatch` chooses).

The numpy latent decoder pays about 100 us of Python and call overhead per wave, and a
768x512 image has 2301 waves; the numpy synthesis makes a dozen passes over memory per
layer. The native code does the same arithmetic without either (its design:
docs/speed.md). It is built when the package is installed (`coolchic.nativebuild`; no
-ffast-math and no contraction into fused multiply-adds, since floor and the clips must
see the IEEE result of each operation; only the ARM's sums, exact for any input, are
fused explicitly) and is optional: where it is missing, or with COOLCHIC_NATIVE=0,
decoding runs the numpy paths and gives the same image. No torch here.

The latent decoder reads the buffer of `coolchic.entropy.latents.Layout` (grids in blocks
of rows with 2 zero rows and 2 zero cells on either side) and computes the decoding order
of `coolchic.entropy.latents.Schedule` (by wave, then grid, then row) from the grids'
shapes, so a decode never builds the order array (7 ms of numpy for a Kodak image).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from coolchic import nativebuild
from coolchic.entropy.coder import MAX_EXTRA, MAX_PREFIX, EntropyError, split_streams
from coolchic.entropy.fixedpoint import ACT_MAX, LATENT_MAX, IntegerArm
from coolchic.entropy.latents import Layout
from coolchic.entropy.tables import ALPHABET, MU_FRAC_BITS, N_SCALE, PROB_BITS, RADIUS, flat_table

SOURCE = Path(__file__).with_name("decoder_kernels.cpp")
VERSION = 4  # coolchic_decoder_kernels_version() of SOURCE
FLAGS = nativebuild.SOURCES["decoder/decoder_kernels.cpp"]
_I64, _F64, _PTR = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
_ERRORS = {
    1: "Entropy data is corrupt: the main stream is invalid.",
    2: "Entropy data is corrupt: the escape stream is invalid.",
    3: "Entropy data is corrupt: an escape code is too long.",
    4: "Entropy data is corrupt: an escape value is out of range.",
    5: "Entropy data is inconsistent: the main stream has unread data.",
    6: "Entropy data is inconsistent: the escape stream has unread data.",
}
_BAD_ARGUMENTS = 7  # the schedule or the ARM does not have the layout the native code reads
_OUT_OF_MEMORY = 100  # kOutOfMemory of SOURCE


@functools.cache
def _cdf_table() -> np.ndarray:
    """Cumulative frequencies of every table row: uint32 (N_ROWS, ALPHABET + 1), 0 .. 2^24."""
    q = flat_table()
    cdf = np.zeros((q.shape[0], ALPHABET + 1), dtype=np.uint32)
    np.cumsum(q, axis=1, out=cdf[:, 1:])
    if not (cdf[:, -1] == 1 << PROB_BITS).all():
        raise AssertionError("probability table rows must sum to 2**PROB_BITS")
    cdf.setflags(write=False)
    return cdf


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def _packed_layers(matrices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The augmented layer matrices of the numpy paths as the native code takes them.

    Each matrix is (inputs + 1, outputs [+ 1]): its last row is the bias (it multiplies a
    constant 1 input), and every hidden one has an extra last column (0, ..., 0, 1) that
    carries that 1 on. Returns (inputs, outputs) per layer as int64 (2 * L,), and for each
    layer its (inputs, outputs) weights input-major then its (outputs,) biases, float64,
    concatenated.

    Raises:
        ValueError: a hidden matrix whose last column does not carry the constant.
    """
    dims, params = [], []
    for i, m in enumerate(matrices):
        m = np.asarray(m, dtype=np.float64)
        n_out = m.shape[1] - (1 if i + 1 < len(matrices) else 0)
        if n_out < m.shape[1]:
            carry = np.zeros(m.shape[0])
            carry[-1] = 1.0
            if not np.array_equal(m[:, -1], carry):
                raise ValueError("a hidden layer's last column must carry the constant 1")
        dims += [m.shape[0] - 1, n_out]
        params += [m[:-1, :n_out].ravel(), m[-1, :n_out]]
    return np.array(dims, dtype=np.int64), np.concatenate(params)


class DecoderKernels:
    """The loaded `decoder_kernels.cpp`."""

    def __init__(self, cdll: ctypes.CDLL):
        self._decode = cdll.coolchic_decode_latents
        self._decode.argtypes = [_PTR, _I64, _PTR, _I64, _PTR, _I64, _I64, _I64, _PTR, _PTR,
                                 _I64, _PTR, _PTR, _F64, _PTR, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _PTR]
        self._decode.restype = ctypes.c_int
        self._synthesize = cdll.coolchic_synthesize
        self._synthesize.argtypes = [_I64, _PTR, _PTR, _I64, _PTR, _PTR, _I64, _PTR, _PTR, _F64, _I64, _PTR]
        self._synthesize.restype = ctypes.c_int

    def decode_latents(self, layout: Layout, buffer: np.ndarray, data: bytes, arm: IntegerArm) -> None:
        """Decode every latent into `buffer` (float64, the layout's flat buffer), in the
        order of `coolchic.entropy.latents.Schedule` (computed by the native code).

        Raises:
            EntropyError: the data cannot have come from the encoder (same tests as the
                numpy path's `SymbolDecoder`).
            ValueError: the layout or the ARM is not one the native code reads.
        """
        main, escape = split_streams(data)
        offsets = np.ascontiguousarray(layout.offsets, dtype=np.int64)
        starts = np.append(np.asarray(layout.starts, dtype=np.int64), buffer.size - 1)
        widths = np.array([w for _, w in layout.shapes], dtype=np.int64)
        matrices = arm.matrices
        dims, packed = _packed_layers(matrices)
        cdf = _cdf_table()
        if buffer.dtype != np.float64 or not buffer.flags.c_contiguous or buffer.size != layout.buffer_size:
            raise ValueError("buffer must be the layout's contiguous float64 buffer")
        if offsets.size + 1 != matrices[0].shape[0]:
            raise ValueError("the ARM's input width does not match the context")
        status = self._decode(
            _ptr(main), main.size, _ptr(escape), escape.size, _ptr(offsets), offsets.size, layout.row_width,
            len(layout.shapes), _ptr(starts), _ptr(widths), len(matrices), _ptr(dims), _ptr(packed),
            float(ACT_MAX), _ptr(cdf), ALPHABET, RADIUS, MU_FRAC_BITS, N_SCALE, LATENT_MAX, MAX_PREFIX,
            MAX_EXTRA, _ptr(buffer))
        if status == _OUT_OF_MEMORY:
            raise MemoryError("not enough memory to decode the latents")
        if status == _BAD_ARGUMENTS:
            raise ValueError("the native latent decoder cannot read this layout or ARM")
        if status:
            raise EntropyError(_ERRORS.get(status, f"native latent decoder failed ({status})"))

    def synthesize(self, grids: Sequence[np.ndarray], mlp: Sequence[np.ndarray], conv: Sequence[np.ndarray],
                   *, bit_depth: int, taps: np.ndarray) -> np.ndarray:
        """The image of `coolchic.decoder.reconstruct.synthesize`, bit for bit.

        Args:
            grids: int64 (h_k, w_k) latents, finest first.
            mlp: the per-pixel layers as (inputs + 1, outputs [+ 1]) float64 matrices at
                2^-SYN_FRAC (the numpy path's folded matrices, transposed; the hidden ones
                carry the constant 1 on in their last column).
            conv: the residual 3x3 convolutions, each (C * C * 9 + C,) float64: folded taps
                (out, in, ky, kx), then biases.
            bit_depth: 8 or 16.
            taps: (n_grids - 1, 4) upsampling taps over 2^UPS_FRAC (`coolchic.decoder.constants.level_taps`).

        Returns:
            (H, W, C) uint8 or uint16.
        """
        grids = [np.ascontiguousarray(g, dtype=np.int64) for g in grids]
        pointers = np.array([g.ctypes.data for g in grids], dtype=np.uintp)
        shapes = np.array([s for g in grids for s in g.shape], dtype=np.int64)
        dims, packed = _packed_layers(mlp)
        channels = int(dims[-1])
        conv_taps = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in conv] or [np.zeros(1)])
        up_taps = np.ascontiguousarray(np.asarray(taps, dtype=np.float64).reshape(-1))
        if up_taps.size != 4 * (len(grids) - 1):
            raise ValueError("the upsampling taps do not match the latent grids")
        up_taps = np.concatenate((up_taps, np.zeros(1)))  # never empty
        h, w = grids[0].shape
        image = np.empty((h, w, channels), dtype=np.uint8 if bit_depth == 8 else np.uint16)
        status = self._synthesize(len(grids), _ptr(pointers), _ptr(shapes), len(mlp), _ptr(dims),
                                  _ptr(packed), len(conv), _ptr(conv_taps), _ptr(up_taps), float(ACT_MAX),
                                  bit_depth, _ptr(image))
        if status == _OUT_OF_MEMORY:
            raise MemoryError("not enough memory to synthesize the image")
        if status:
            raise ValueError("the synthesis' layer sizes do not match the latent grids")
        return image


@functools.cache
def _load() -> DecoderKernels | str:
    cdll = nativebuild.load(SOURCE, flags=FLAGS, version_symbol="coolchic_decoder_kernels_version",
                            version=VERSION)
    return DecoderKernels(cdll) if isinstance(cdll, ctypes.CDLL) else cdll


def kernels() -> DecoderKernels | None:
    """The native decoder, or None when none is installed (or built) for this CPU."""
    lib = _load()
    return lib if isinstance(lib, DecoderKernels) else None


def unavailable_reason() -> str | None:
    """Why `kernels` returns None (None when it does not)."""
    lib = _load()
    return None if isinstance(lib, DecoderKernels) else lib

