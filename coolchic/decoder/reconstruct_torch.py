"""The fixed-point upsampling and synthesis of `coolchic.decoder.reconstruct` in torch, for
GPUs.

`coolchic.decoder.dispatch.synthesize` runs this module when asked for a device other than
the CPU; on the CPU it runs the numpy or the native version, so that decoding never imports
torch. All compute the same integers (held in float64, scale 2^-SYN_FRAC, every sum below
2^53), so the image is bit-identical on CPU and CUDA and for any thread count (tested).
Convolutions are written as matrix products over shifted copies of the input, which keeps
library algorithms that are not exact (FFT, Winograd) out of the way.

Each layer's rescaling by 2^(SYN_FRAC - acc_frac) is folded into its weights and bias:
scaling by a power of two is exact, so ``floor(W' @ x + b')`` equals
``floor((W @ x + b) * 2^(SYN_FRAC - acc_frac))`` bit for bit. On the CPU, the per-pixel
layers and the 3x3 convolutions run over bands of rows (with the rows the convolutions
reach above and below), which bounds the memory and keeps each band's working set in cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from coolchic.decoder.constants import SYN_FRAC, level_taps
from coolchic.entropy.fixedpoint import ACT_MAX, QLayer
from coolchic.model.upsampling import (
    band_matrix,
    fixed_point,
    range_matrix,
    taps_tensor,
    upsample_axis,
    upsample_cascade,
)

BAND_PIXELS = 1 << 15  # pixels per band of rows on the CPU (the working set fits in L2)


def _folded(layer: QLayer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a layer reading 2^-SYN_FRAC inputs, pre-scaled so that the
    layer's output comes out at 2^-SYN_FRAC before the floor; float64, exact."""
    acc_frac = layer.w_frac + SYN_FRAC
    bias = np.floor(layer.bias.astype(np.float64) * 2.0 ** (acc_frac - layer.b_frac))
    scale = 2.0 ** (SYN_FRAC - acc_frac)
    w = torch.from_numpy(layer.weight.astype(np.float64) * scale).to(device)
    return w, torch.from_numpy(bias * scale).to(device)


def _conv_taps(layer: QLayer, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The 9 (out, in) matrices of a 3x3 convolution, ky-major, and its bias; folded."""
    w, b = _folded(layer, device)  # w: (out, in, 3, 3)
    return [w[:, :, ky, kx].contiguous() for ky in range(3) for kx in range(3)], b


def _conv3x3(x: torch.Tensor, taps: list[torch.Tensor], b: torch.Tensor, top: int,
             bottom: int) -> torch.Tensor:
    """Integer 3x3 convolution of rows of an image, columns replicated at both borders.

    Args:
        x: (C, rows, W) float64 integers.
        top, bottom: 1 to replicate the first (last) row, i.e. this band touches the
            image's top (bottom) border; 0 where the next rows of the image are missing,
            in which case the output has one row fewer on that side.

    Returns:
        (C_out, rows - 2 + top + bottom, W), floored and clamped to +-ACT_MAX.
    """
    c, _, width = x.shape
    xp = F.pad(x[None], (1, 1, top, bottom), mode="replicate")[0]  # (C, rows', W + 2)
    pw = width + 2
    out_rows = xp.shape[1] - 2
    n = out_rows * pw - 2  # outputs in the padded-width layout; the last row's 2 spares dropped
    flat = xp.reshape(c, -1)
    acc = b[:, None].expand(b.shape[0], out_rows * pw).clone()  # (C_out, out_rows * (W + 2))
    for k, w in enumerate(taps):  # shift (ky, kx) is one contiguous slice of the flat rows
        ky, kx = divmod(k, 3)
        acc[:, :n].addmm_(w, flat[:, ky * pw + kx : ky * pw + kx + n])
    acc = acc.reshape(-1, out_rows, pw)[:, :, :width]
    return torch.floor(acc).clamp_(-ACT_MAX, ACT_MAX)


def _synthesize_band(x: torch.Tensor, mlp: list, convs: list) -> torch.Tensor:
    """Per-pixel layers then residual convolutions of one band: (n_grids, rows, W) ->
    (C, rows', W) where rows' drops the rows that lack neighbours (see `synthesize`)."""
    _, rows, width = x.shape
    x = x.reshape(x.shape[0], -1)
    for i, (w, b) in enumerate(mlp):
        x = torch.floor(torch.addmm(b[:, None], w, x))  # (out, n)
        x = x.clamp_(0.0 if i < len(mlp) - 1 else -ACT_MAX, ACT_MAX)  # ReLU on hidden layers
    x = x.reshape(-1, rows, width)
    for taps, b, top, bottom in convs:
        conv = _conv3x3(x, taps, b, top, bottom)
        x = x.narrow(1, 1 - top, conv.shape[1])
        x = (x + conv).clamp_(-ACT_MAX, ACT_MAX)
    return x


@contextmanager
def _cpu_threads(device: torch.device) -> Iterator[None]:
    """One intra-op thread on the CPU, restored afterwards: the bands are small, and on a
    busy 2-core machine two OpenMP threads made this code 20x slower (workers waiting for a
    core), while one thread loses little on an idle one."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def synthesize(
    grids: Sequence[np.ndarray],
    mlp: Sequence[QLayer],
    residual: Sequence[QLayer],
    *,
    bit_depth: int,
    taps: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Integer latent grids (finest first) -> image (H, W, C), uint8 or uint16; `taps` as
    in `coolchic.decoder.reconstruct.synthesize`.

    The coarser grids are upsampled together to the finest grid's rows and the full width;
    the last vertical 2x pass, the per-pixel layers and the convolutions then run band by
    band, so no full-resolution stack of upsampled latents is ever held.
    """
    device = torch.device(device)
    scale = float(1 << SYN_FRAC)
    max_value = float((1 << bit_depth) - 1)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    h, w = grids[0].shape
    with torch.no_grad(), _cpu_threads(device):
        t = [torch.from_numpy(g.astype(np.float64)).to(device)[None, None] * scale for g in grids]
        taps_t = torch.stack([taps_tensor(row, torch.float64, device)
                              for row in level_taps(taps, len(grids) - 1)]) if len(grids) > 1 else None
        coarse = None
        if len(t) > 1:  # (1, n_grids - 1, h_1, W): grids 1.. upsampled but for one vertical pass
            coarse = upsample_cascade(t[1:], floor=True, taps=taps_t[1:])
            band_m = band_matrix(torch.float64, device, taps_t[0])
            coarse = fixed_point(upsample_axis(coarse, -1, 0, w, band_m))
        mlp_t = [_folded(layer, device) for layer in mlp]
        conv_t = [_conv_taps(layer, device) for layer in residual]
        reach = len(conv_t)  # rows a band needs above and below its own
        rows = h if device.type != "cpu" else max(1, BAND_PIXELS // w)
        image = np.empty((h, w, mlp_t[-1][0].shape[0]), dtype=dtype)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a, b = max(0, r0 - reach), min(h, r1 + reach)
            x = t[0][0, :, a:b]  # (1, b - a, W)
            if coarse is not None:  # the last vertical pass for these rows: one small product
                m, lo = range_matrix(a, b, coarse.shape[-2], torch.float64, device, taps_t[0])
                up = fixed_point(torch.matmul(m, coarse[0, :, lo : lo + m.shape[1]]))
                x = torch.cat((x, up))  # (n_grids, b - a, W) at 2^-SYN_FRAC
            convs = []
            lo, hi = a, b  # rows of the image the band holds before each convolution
            for cw, cb in conv_t:
                top, bottom = int(lo == 0), int(hi == h)
                convs.append((cw, cb, top, bottom))
                lo, hi = lo + 1 - top, hi - 1 + bottom
            y = _synthesize_band(x, mlp_t, convs)[:, r0 - lo : r1 - lo]  # (C, r1 - r0, W)
            # round to the output's integer levels: floor(x * max / 2^SYN_FRAC + 1/2)
            y = torch.floor(y * (max_value / scale) + 0.5).clamp_(0.0, max_value)
            image[r0:r1] = y.permute(1, 2, 0).cpu().numpy()
        return image
