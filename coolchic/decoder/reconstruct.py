"""Decoder-side reconstruction in fixed point: upsampling and synthesis, numpy only.

The encoder calls this same code to compute the image the decoder will produce, so the
PSNR it reports is the PSNR of the decoded file. Values are integers held in float64
arrays (scale 2^-SYN_FRAC); every product and partial sum stays below 2^53, so matrix
products give the same result whatever order BLAS sums in, on any CPU and thread count.
That is also why the torch version (`coolchic.decoder.reconstruct_torch`, used for
device="cuda") and the native one (`coolchic.decoder.native`) give the same image bit for
bit; `coolchic.decoder.dispatch.synthesize` chooses between them. On the CPU this module
keeps torch out of the decoder (faster start, about 200 MB less memory).

Each layer's rescaling by 2^(SYN_FRAC - acc_frac) is folded into its weights and bias:
scaling by a power of two is exact, so ``floor(W' @ x + b')`` equals
``floor((W @ x + b) * 2^(SYN_FRAC - acc_frac))`` bit for bit. The upsampling's taps
(bicubic, or a file's learned ones) are multiples of 2^-UPS_FRAC and every pass is clipped
to +-UPS_MAX, so each 2x pass is exact too, as banded matrix products (see
`coolchic.model.upsampling`, which this reproduces without torch).

The work runs over bands of rows: the last vertical 2x pass and the per-pixel layers band
by band into one (C, H + 2, W + 2) array with replicated borders, then each 3x3
convolution band by band into a second one. Every matrix product stays below GEMM_MACS
multiply-adds: larger ones make OpenBLAS wake its worker threads, which on a busy 2-core
machine made this kind of code 10x slower.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from coolchic.decoder.constants import BICUBIC, SYN_FRAC, UPS_FRAC, UPS_MAX, level_taps
from coolchic.entropy.fixedpoint import ACT_MAX, QLayer

BLOCK = 16  # inputs per block of the banded products of the upsampling
BAND_PIXELS = 1 << 14  # pixels per band of rows (the band's working set fits in L2)
GEMM_MACS = 1 << 18  # most multiply-adds per matrix product (OpenBLAS stays on one thread)


def _band_matrix(taps: Sequence[int] = BICUBIC) -> np.ndarray:
    """(BLOCK + 4, 2 * BLOCK): padded inputs i .. i + 3 give output 2i (taps), inputs
    i + 1 .. i + 4 output 2i + 1 (taps reversed); entries tap / 2^UPS_FRAC, exact."""
    band = np.zeros((BLOCK + 4, 2 * BLOCK))
    taps = np.array(taps, dtype=np.float64) / (1 << UPS_FRAC)
    for i in range(BLOCK):
        band[i : i + 4, 2 * i] = taps
        band[i + 1 : i + 5, 2 * i + 1] = taps[::-1]
    return band


def range_matrix(start: int, stop: int, n: int, taps: Sequence[int] = BICUBIC) -> tuple[np.ndarray, int]:
    """Outputs ``start .. stop - 1`` of the 2x upsampling of an axis of length n as one
    dense (stop - start, m) matrix over inputs ``lo .. lo + m - 1``; returns it and lo.

    Output 2j reads inputs j - 2 .. j + 1 with `taps` (integers over 2^UPS_FRAC), output
    2j + 1 inputs j - 1 .. j + 2 with the taps reversed; inputs outside 0 .. n - 1 read the
    nearest edge (their taps add up, still multiples of 2^-UPS_FRAC).
    """
    lo, hi = max(0, start // 2 - 2), min(n, (stop + 1) // 2 + 2)
    out = np.arange(start, stop)
    phase = out % 2
    inputs = (out // 2)[:, None] + np.arange(-2, 2)[None, :] + phase[:, None]  # (rows, 4)
    taps = np.array([taps, taps[::-1]], dtype=np.float64)[phase] / (1 << UPS_FRAC)
    matrix = np.zeros((stop - start, hi - lo))
    np.add.at(matrix, (np.repeat(np.arange(stop - start), 4),
                       np.clip(inputs, 0, n - 1).ravel() - lo), taps.ravel())
    return matrix, lo


def _pad(x: np.ndarray, axis: int, before: int, after: int) -> np.ndarray:
    """Copy of the 3-D array x with axis -1 or -2 extended by replicating its edges."""
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = before + n + after
    out = np.empty(shape)
    inner = [slice(None)] * 3
    inner[axis] = slice(before, before + n)
    out[tuple(inner)] = x
    for index, source in ((slice(0, before), slice(0, 1)), (slice(before + n, None), slice(n - 1, n))):
        inner[axis] = index
        edge = [slice(None)] * 3
        edge[axis] = source
        out[tuple(inner)] = x[tuple(edge)]
    return out


def _upsample_rows(x: np.ndarray, n_out: int, band: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (C, n_out, w): 2x along the rows, floored; n_out is 2h or 2h - 1."""
    c, h, w = x.shape
    blocks = -(-h // BLOCK)
    xp = _pad(x, -2, 2, blocks * BLOCK + 2 - h)  # (C, blocks * BLOCK + 4, w)
    # (C, blocks, BLOCK + 4, w): overlapping row blocks, a view; each slice is BLAS-ready
    view = sliding_window_view(xp, BLOCK + 4, axis=1)[:, ::BLOCK].transpose(0, 1, 3, 2)
    y = np.empty((c, blocks, 2 * BLOCK, w))
    cols = max(1, GEMM_MACS // band.size)
    for c0 in range(0, w, cols):
        np.matmul(band.T, view[..., c0 : c0 + cols], out=y[..., c0 : c0 + cols])
    y = y.reshape(c, blocks * 2 * BLOCK, w)[:, :n_out]
    np.floor(y, out=y)
    return np.clip(y, -UPS_MAX, UPS_MAX, out=y)


def _upsample_cols(x: np.ndarray, n_out: int, band: np.ndarray, pad: int = 0) -> np.ndarray:
    """(C, h, w) -> (C, h, pad + n_out + pad): 2x along the columns, floored, then `pad`
    replicated columns on each side; n_out <= 2w. The rows of the result may be strided."""
    c, h, w = x.shape
    blocks = -(-((n_out + 1) // 2) // BLOCK)
    xp = _pad(x, -1, 2, blocks * BLOCK + 2 - w).reshape(c * h, -1)  # (C * h, padded w)
    # (blocks, C * h, BLOCK + 4): column blocks, a view whose slices are BLAS-ready
    view = sliding_window_view(xp, BLOCK + 4, axis=1)[:, ::BLOCK].transpose(1, 0, 2)
    y = np.empty((c * h, blocks * 2 * BLOCK + 2 * pad))
    # (blocks, C * h, 2 * BLOCK): where each block's outputs go, a view
    out = y[:, pad : pad + blocks * 2 * BLOCK].reshape(c * h, blocks, 2 * BLOCK).transpose(1, 0, 2)
    rows = max(1, GEMM_MACS // band.size)
    for r0 in range(0, c * h, rows):
        np.matmul(view[:, r0 : r0 + rows], band, out=out[:, r0 : r0 + rows])
    y = y[:, : n_out + 2 * pad]
    inner = y[:, pad : pad + n_out]  # the pad columns are still uninitialised here
    np.floor(inner, out=inner)
    np.clip(inner, -UPS_MAX, UPS_MAX, out=inner)
    if pad:
        y[:, :pad] = y[:, pad : pad + 1]
        y[:, pad + n_out :] = y[:, pad + n_out - 1 : pad + n_out]
    return y.reshape(c, h, n_out + 2 * pad)


def _coarse_stack(grids: list[np.ndarray], width: int, taps: np.ndarray) -> np.ndarray:
    """Grids 1.. (each (h_k, w_k) at 2^-SYN_FRAC) upsampled as a cascade to grid 1's size,
    then to `width` columns plus one replicated column on each side:
    (n_grids - 1, h_1, width + 2), all but the last vertical pass. taps: `level_taps`."""
    acc = grids[-1][None]
    for level in range(len(grids) - 2, 0, -1):  # into grid `level`
        h, w = grids[level].shape
        band = _band_matrix(taps[level])
        acc = _upsample_rows(_upsample_cols(acc, w, band), h, band)
        acc = np.concatenate((grids[level][None], acc))
    return _upsample_cols(acc, width, _band_matrix(taps[0]), pad=1)


def folded(layer: QLayer) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias of a layer reading 2^-SYN_FRAC inputs, pre-scaled so that the
    layer's output comes out at 2^-SYN_FRAC before the floor; float64, exact."""
    acc_frac = layer.w_frac + SYN_FRAC
    bias = np.floor(layer.bias.astype(np.float64) * 2.0 ** (acc_frac - layer.b_frac))
    scale = 2.0 ** (SYN_FRAC - acc_frac)
    return layer.weight.astype(np.float64) * scale, bias * scale


def _augmented(layer: QLayer) -> np.ndarray:
    """`folded` as one (out, in + 1) matrix whose last column, the bias, multiplies an
    input row of ones; a 3x3 convolution's (out, in, 3, 3) taps become (out, 9 in + 1)
    columns ordered ky, kx, input channel (the im2col rows of `_residual`)."""
    w, b = folded(layer)
    if w.ndim == 4:
        w = w.transpose(0, 2, 3, 1)  # (out, ky, kx, in)
    return np.concatenate((w.reshape(w.shape[0], -1), b[:, None]), axis=1)


def carrying_layers(mlp: Sequence[QLayer]) -> list[np.ndarray]:
    """The per-pixel layers as `_augmented` matrices, each hidden one with an extra last row
    (0, ..., 0, 1) that carries the constant 1 on to the next layer: (out [+ 1], in + 1)."""
    layers = [_augmented(layer) for layer in mlp]
    for i, m in enumerate(layers[:-1]):
        carry = np.zeros((1, m.shape[1]))
        carry[0, -1] = 1.0
        layers[i] = np.concatenate((m, carry))
    return layers


def _mlp(x: np.ndarray, layers: list[np.ndarray], out: np.ndarray) -> None:
    """Per-pixel layers (`_augmented`) of x (in + 1, n), whose last row is ones, into out
    (C, n); ReLU on the hidden layers, +-ACT_MAX on the last. Runs in chunks of pixels
    small enough for one BLAS thread and for the cache."""
    n = x.shape[1]
    chunk = min(n, max(1, GEMM_MACS // max(m.size for m in layers)))
    hidden = [np.ones((m.shape[0] + 1, chunk)) for m in layers[:-1]]  # ones in the last row
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        a = x[:, s:e]
        for m, h in zip(layers[:-1], hidden):
            z = h[:-1, : e - s]
            np.matmul(m, a, out=z)  # (out, chunk)
            np.floor(z, out=z)
            np.clip(z, 0.0, ACT_MAX, out=z)
            a = h[:, : e - s]
        z = out[:, s:e]
        np.matmul(layers[-1], a, out=z)
        np.floor(z, out=z)
        np.clip(z, -ACT_MAX, ACT_MAX, out=z)


def _residual(src: np.ndarray, dst: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> None:
    """One residual 3x3 convolution, edges replicated, band by band: dst = src + conv(src),
    the convolution floored and both clamped to +-ACT_MAX.

    Args:
        src: (C, (H + 2) * (W + 2) + 2) activations in padded layout (see `synthesize`).
        dst: like src; every position but the padding is written (the caller fills that).
        matrix: (C, 9 C + 1) taps, ky-major then kx then input channel, then the bias.
    """
    c = src.shape[0]
    h, width = shape
    pw = width + 2
    rows = max(1, GEMM_MACS // (matrix.size * pw))
    cols = np.ones((9 * c + 1, rows * pw))  # im2col of one band; the last row stays ones
    for r0 in range(0, h, rows):
        n = (min(h, r0 + rows) - r0) * pw
        for k in range(9):  # tap (ky, kx) of output p (padded-layout row r0) is p + ky pw + kx
            ky, kx = divmod(k, 3)
            start = r0 * pw + ky * pw + kx
            cols[k * c : (k + 1) * c, :n] = src[:, start : start + n]
        base = (r0 + 1) * pw + 1  # output p is the centre tap, padded position p + pw + 1
        out = dst[:, base : base + n]
        np.matmul(matrix, cols[:, :n], out=out)
        np.floor(out, out=out)
        np.clip(out, -ACT_MAX, ACT_MAX, out=out)
        out += src[:, base : base + n]
        np.clip(out, -ACT_MAX, ACT_MAX, out=out)


def _fill_padding(y: np.ndarray, shape: tuple[int, int]) -> None:
    """Replicate the edges of the (C, H, W) image held in padded layout y into its border."""
    h, width = shape
    pw = width + 2
    grid = y[:, : (h + 2) * pw].reshape(y.shape[0], h + 2, pw)
    grid[:, :, 0] = grid[:, :, 1]
    grid[:, :, width + 1] = grid[:, :, width]
    grid[:, 0] = grid[:, 1]
    grid[:, h + 1] = grid[:, h]


def synthesize(
    grids: Sequence[np.ndarray],
    mlp: Sequence[QLayer],
    residual: Sequence[QLayer],
    *,
    bit_depth: int,
    taps: np.ndarray | None = None,
) -> np.ndarray:
    """Integer latent grids (finest first) -> image (H, W, C), uint8 or uint16.

    Args:
        grids: int64 (h_k, w_k) latents, grid 0 at the image size.
        mlp, residual: the synthesis' per-pixel layers and residual 3x3 convolutions.
        taps: (n_grids - 1, 4) int64 upsampling taps over 2^UPS_FRAC, row l into grid l
            (learned upsampling); None: the bicubic taps at every level.
        bit_depth: 8 or 16, the output's.
    """
    taps = level_taps(taps, len(grids) - 1)
    scale = float(1 << SYN_FRAC)
    max_value = float((1 << bit_depth) - 1)
    h, w = grids[0].shape
    pw = w + 2
    scaled = [g.astype(np.float64) * scale for g in grids]
    coarse = _coarse_stack(scaled, w, taps) if len(grids) > 1 else None  # (n - 1, h_1, W + 2)
    finest = _pad(scaled[0][None], -1, 1, 1)[0]  # (H, W + 2)
    layers = [_augmented(layer) for layer in mlp]
    channels = layers[-1].shape[0]
    rows = max(1, BAND_PIXELS // w)
    if coarse is not None:  # (rows, m) @ (m, W + 2) with m <= rows / 2 + 5 within GEMM_MACS
        rows = max(1, min(rows, int(np.sqrt(2 * GEMM_MACS / pw + 25) - 5)))
    # Activations in padded layout: (C, (H + 2) * (W + 2) + 2), the image with one
    # replicated row and column on each side, flat, then 2 cells that only the
    # convolution's dropped outputs read. A 3x3 tap is then a fixed flat offset, and every
    # band is a contiguous slice.
    y = np.zeros((channels, (h + 2) * pw + 2))
    x = np.ones((len(grids) + 1, rows, pw))  # one band of upsampled latents, then ones
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        xb = x[:, : r1 - r0]
        xb[0] = finest[r0:r1]
        if coarse is not None:  # the last vertical pass for these rows: (rows, m) @ (m, W + 2)
            m, lo = range_matrix(r0, r1, coarse.shape[1], taps[0])
            up = xb[1:-1]
            np.floor(np.matmul(m, coarse[:, lo : lo + m.shape[1]], out=up), out=up)
            np.clip(up, -UPS_MAX, UPS_MAX, out=up)
        _mlp(xb.reshape(len(grids) + 1, -1), layers, y[:, (r0 + 1) * pw : (r1 + 1) * pw])
    _fill_padding(y, (h, w))
    spare = np.zeros_like(y) if residual else None  # its last 2 cells stay 0, like y's
    for layer in residual:
        _residual(y, spare, _augmented(layer), (h, w))
        _fill_padding(spare, (h, w))
        y, spare = spare, y
    image = np.empty((h, w, channels), dtype=np.uint8 if bit_depth == 8 else np.uint16)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        out = y[:, (r0 + 1) * pw : (r1 + 1) * pw]  # (C, (r1 - r0) * (W + 2))
        # round to the output's integer levels: floor(x * max / 2^SYN_FRAC + 1/2)
        out = np.floor(out * (max_value / scale) + 0.5)
        np.clip(out, 0.0, max_value, out=out)
        image[r0:r1] = out.reshape(channels, r1 - r0, pw)[:, :, 1 : w + 1].transpose(1, 2, 0)
    return image
