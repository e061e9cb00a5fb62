"""Upsampling of the latent grids to the image resolution.

Each 2x step is a separable 4-tap interpolation with half-pixel alignment and replicated
borders: even outputs read inputs j-2 .. j+1 with 4 taps, odd outputs j-1 .. j+2 with the
taps reversed (a symmetric 8-tap transposed filter). By default the taps are bicubic (Keys'
kernel, a = -0.75: [-9, 67, 225, -27] / 256); a decoder with learned upsampling has its own
taps at each level (Philippe et al., arXiv 2411.19249), integers over 2^UPS_FRAC in the
bitstream, so the same filters run exactly in fixed point in the decoder
(``coolchic.decoder.reconstruct``). Grids are upsampled as a cascade, coarsest first: up
2x, crop to the next grid, stack, repeat (the hierarchical scheme of Cool-chic's later
releases, Leguay et al. 2023).

Each 1-D pass is computed as small dense matrix products: the input is cut into blocks of
BLOCK samples (plus the 4 the filter reaches beyond them) and every block is multiplied by
one (BLOCK + 4, 2 * BLOCK) banded matrix that holds the taps of both output phases. That is
a few times more multiply-adds than the 4-tap filter needs, but they run in one BLAS call
instead of a dozen elementwise passes, forward and backward. In fixed-point mode every
product and partial sum is a multiple of 2^-UPS_FRAC far below 2^53 in magnitude (the
passes are clipped to +-UPS_MAX), so the result is exact whatever order BLAS sums in, on any
CPU or GPU.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from coolchic.decoder.constants import BICUBIC, TAPS, UPS_FRAC, UPS_MAX

TAP_COUNT = len(TAPS)  # even outputs use the taps, odd outputs the taps reversed
BLOCK = 16  # input samples per block of the banded matrix products
_REACH = TAP_COUNT  # extra input samples a block of outputs reads (2 before, 2 after)


def replicate_pad(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Pad axis `dim` by repeating its edge values (an index gather: its backward is a plain
    index_add, which compiles and runs fast for any memory layout)."""
    n = x.shape[dim]
    index = torch.arange(-before, n + after, device=x.device).clamp_(0, n - 1)
    return x.index_select(dim, index)


def replicate_range(x: torch.Tensor, dim: int, start: int, stop: int) -> torch.Tensor:
    """Indices ``start .. stop - 1`` of axis `dim` (-1 or -2) of a 4-D tensor, indices
    outside the axis reading its nearest edge (``0 <= start < n`` or ``0 < stop <= n``).
    A slice and one replication pad: much faster than an index gather along the last axis,
    forward and backward."""
    n = x.shape[dim]
    before, after = max(0, -start), max(0, stop - n)
    x = x.narrow(dim, max(0, start), min(n, stop) - max(0, start))
    if not (before or after):
        return x
    pad = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
    return F.pad(x, pad, mode="replicate")


def taps_tensor(taps, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """A level's 4 taps as real values: integers over 2^UPS_FRAC (a sequence or an int
    array) divided out, exact in float32 and float64; None: the bicubic ones."""
    if taps is None:
        taps = BICUBIC
    return torch.tensor(np.asarray(taps, dtype=np.float64) / (1 << UPS_FRAC), dtype=dtype, device=device)


@functools.cache
def _band_basis() -> np.ndarray:
    """(4, BLOCK + 4, 2 * BLOCK): the band matrix is sum_t taps[t] * basis[t]."""
    basis = np.zeros((TAP_COUNT, BLOCK + _REACH, 2 * BLOCK))
    for i in range(BLOCK):
        for t in range(TAP_COUNT):
            basis[t, i + t, 2 * i] = 1.0
            basis[TAP_COUNT - 1 - t, i + 1 + t, 2 * i + 1] = 1.0
    basis.setflags(write=False)
    return basis


def band_matrix(dtype: torch.dtype, device: torch.device | str = "cpu",
                taps: torch.Tensor | None = None) -> torch.Tensor:
    """(BLOCK + 4, 2 * BLOCK) matrix mapping a padded block of inputs to its outputs.

    Input i of the block (padded index i + 2) gives output 2i from padded inputs i..i+3 with
    the taps and output 2i+1 from padded inputs i+1..i+4 with the taps reversed.

    Args:
        taps: (4,) real taps (`taps_tensor`, or learned ones: the matrix is then
            differentiable w.r.t. them); None: the bicubic ones, exact in float32/64.
    """
    if taps is None:
        taps = taps_tensor(None, torch.float64)
    basis = torch.tensor(_band_basis(), dtype=taps.dtype, device=taps.device)
    band = torch.einsum("t,tij->ij", taps, basis)  # (BLOCK + 4, 2 * BLOCK)
    return band.to(dtype=dtype, device=device)


def _banded_forward(x: torch.Tensor, dim: int, start: int, stop: int, band: torch.Tensor):
    first = start // 2  # input of the first output
    blocks = -(-((stop + 1) // 2 - first) // BLOCK)
    # inputs first - 2 .. first + blocks * BLOCK + 1, edges replicated; those past the last
    # input only feed outputs past `stop`
    xp = replicate_range(x, dim, first - 2, first + blocks * BLOCK + 2)
    if dim == -1:
        u = xp.unfold(-1, BLOCK + _REACH, BLOCK)  # (B, C, h, blocks, K), overlapping view
        y = torch.matmul(u.transpose(-3, -2), band)  # (B, C, blocks, h, 2 * BLOCK)
        y = y.transpose(-3, -2).flatten(-2)  # (B, C, h, 2 * blocks * BLOCK)
    else:
        u = xp.unfold(-2, BLOCK + _REACH, BLOCK).transpose(-1, -2)  # (B, C, blocks, K, w)
        y = torch.matmul(band.t(), u).flatten(-3, -2)  # (B, C, 2 * blocks * BLOCK, w)
    return y.narrow(dim, start - 2 * first, stop - start)


def banded_backward(g: torch.Tensor, shape: torch.Size, dim: int, start: int, stop: int,
                    band: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Adjoint of `upsample_axis` (its outputs ``start .. stop - 1`` of an input of `shape`).

    Returns:
        (gradient of the inputs ``lo .. lo + m - 1`` along `dim`, lo): the only inputs the
        outputs read, edges included.
    """
    n = shape[dim]
    first = start // 2
    blocks = -(-((stop + 1) // 2 - first) // BLOCK)
    before, after = start - 2 * first, 2 * blocks * BLOCK - (stop - 2 * first)
    b_, c_ = g.shape[0], g.shape[1]
    if dim == -1:  # outputs -> (B, C, h, blocks, K) block inputs -> overlap-add
        gy = F.pad(g, (before, after)).unflatten(-1, (blocks, 2 * BLOCK))
        gk = gy @ band.t()
        out = g.new_empty(b_, c_, g.shape[-2], (blocks + 1) * BLOCK)
        out[..., : blocks * BLOCK].view(b_, c_, -1, blocks, BLOCK).copy_(gk[..., :BLOCK])
        out[..., blocks * BLOCK :].zero_()
        out[..., BLOCK:].view(b_, c_, -1, blocks, BLOCK)[..., :_REACH] += gk[..., BLOCK:]
    else:  # outputs -> (B, C, blocks, K, w) block inputs -> overlap-add
        gy = F.pad(g, (0, 0, before, after)).unflatten(-2, (blocks, 2 * BLOCK))
        gk = torch.matmul(band, gy)
        out = g.new_empty(b_, c_, (blocks + 1) * BLOCK, g.shape[-1])
        out[:, :, : blocks * BLOCK].view(b_, c_, blocks, BLOCK, -1).copy_(gk[:, :, :, :BLOCK])
        out[:, :, blocks * BLOCK :].zero_()
        out[:, :, BLOCK:].view(b_, c_, blocks, BLOCK, -1)[:, :, :, :_REACH] += gk[:, :, :, BLOCK:]
    # adjoint of the replicated read of inputs base .. base + length - 1
    base, length = first - 2, blocks * BLOCK + _REACH
    lo, hi = max(0, base), min(n, base + length)
    gx = out.narrow(dim, lo - base, hi - lo).contiguous()
    if base < 0:
        gx.narrow(dim, 0, 1).add_(out.narrow(dim, 0, -base).sum(dim, keepdim=True))
    if base + length > n:
        tail = out.narrow(dim, n - base, base + length - n)
        gx.narrow(dim, hi - lo - 1, 1).add_(tail.sum(dim, keepdim=True))
    return gx, lo


@functools.lru_cache(maxsize=256)
def range_basis(start: int, stop: int, n: int) -> tuple[np.ndarray, int]:
    """(4, stop - start, m) 0/1 arrays whose sum weighted by the taps is `range_matrix`."""
    first = start // 2
    lo, hi = max(0, first - 2), min(n, (stop + 1) // 2 + 2)
    out = np.arange(start, stop)
    phase = out % 2
    # even output 2j reads inputs j-2 .. j+1 with taps 0..3; odd 2j+1 reads j-1 .. j+2 with
    # taps 3..0; indices outside 0 .. n-1 read the nearest edge
    inputs = (out // 2)[:, None] + np.arange(-2, 2)[None, :] + phase[:, None]  # (rows, 4)
    tap = np.where(phase[:, None] == 1, 3 - np.arange(4)[None, :], np.arange(4)[None, :])
    basis = np.zeros((TAP_COUNT, stop - start, hi - lo))
    rows = np.repeat(np.arange(stop - start), TAP_COUNT)
    np.add.at(basis, (tap.ravel(), rows, np.clip(inputs, 0, n - 1).ravel() - lo), 1.0)
    basis.setflags(write=False)
    return basis, lo


def range_matrix(start: int, stop: int, n: int, dtype: torch.dtype,
                 device: torch.device | str, taps: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Outputs ``start .. stop - 1`` of the 2x upsampling of an axis of length n as one
    dense matrix: (stop - start, m) over inputs ``lo .. lo + m - 1``; returns it and lo.

    With exact taps (None: bicubic; or `taps_tensor`) the entries are sums of multiples of
    2^-UPS_FRAC (edges replicated), exact in float32 and float64, so ``matrix @ x[lo : lo + m]``
    equals `upsample_axis` exactly in fixed point. Learned taps make it differentiable
    w.r.t. them. Meant for short ranges (a band of rows), where one small matrix product
    beats the blocked one.
    """
    basis, lo = range_basis(start, stop, n)
    if taps is None:
        taps = taps_tensor(None, torch.float64)
    b = torch.tensor(basis, dtype=taps.dtype, device=taps.device)
    return torch.einsum("t,trm->rm", taps, b).to(dtype=dtype, device=device), lo


def band_gradient(x: torch.Tensor, g: torch.Tensor, dim: int, start: int, stop: int) -> torch.Tensor:
    """Gradient w.r.t. the band matrix of `upsample_axis` (outputs ``start .. stop - 1``
    of x along `dim`), given the outputs' gradient g: (BLOCK + 4, 2 * BLOCK)."""
    first = start // 2
    blocks = -(-((stop + 1) // 2 - first) // BLOCK)
    before, after = start - 2 * first, 2 * blocks * BLOCK - (stop - 2 * first)
    xp = replicate_range(x, dim, first - 2, first + blocks * BLOCK + 2)
    if dim == -1:
        u = xp.unfold(-1, BLOCK + _REACH, BLOCK)  # (B, C, h, blocks, K)
        gy = F.pad(g, (before, after)).unflatten(-1, (blocks, 2 * BLOCK))  # (B, C, h, blocks, 2B)
        return u.reshape(-1, BLOCK + _REACH).t() @ gy.reshape(-1, 2 * BLOCK)
    u = xp.unfold(-2, BLOCK + _REACH, BLOCK)  # (B, C, blocks, w, K)
    gy = F.pad(g, (0, 0, before, after)).unflatten(-2, (blocks, 2 * BLOCK))  # (B, C, blocks, 2B, w)
    return torch.einsum("bcnwk,bcnjw->kj", u, gy)


class _UpsampleAxis(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, start, stop, band):
        ctx.args = (x.shape, dim, start, stop)
        ctx.save_for_backward(band, x if band.requires_grad else None)
        return _banded_forward(x, dim, start, stop, band)

    @staticmethod
    def backward(ctx, g):
        band, x = ctx.saved_tensors
        shape, dim, start, stop = ctx.args
        gx, lo = banded_backward(g, *ctx.args, band)
        if gx.shape[dim] != shape[dim]:
            gx = F.pad(gx, (lo, shape[-1] - lo - gx.shape[-1]) if dim == -1 else
                       (0, 0, lo, shape[-2] - lo - gx.shape[-2]))
        g_band = band_gradient(x, g, dim, start, stop) if ctx.needs_input_grad[4] else None
        return gx, None, None, None, g_band


def upsample_axis(x: torch.Tensor, dim: int, start: int, stop: int, band: torch.Tensor) -> torch.Tensor:
    """Outputs ``start .. stop - 1`` of the 2x upsampling of a 4-D tensor along axis `dim`
    (-1 or -2), no floor; ``stop <= 2 * x.shape[dim]``. Any range gives the same values as
    the whole axis: output 2i and 2i + 1 read inputs i - 2 .. i + 2, edges replicated.
    Differentiable, with a hand-written adjoint (autograd's for the overlapping block view
    was the slowest part of the training step).

    Args:
        band: ``band_matrix(x.dtype, x.device)``.
    """
    if torch.is_grad_enabled() and (x.requires_grad or band.requires_grad):
        return _UpsampleAxis.apply(x, dim, start, stop, band)
    return _banded_forward(x, dim, start, stop, band)


def upsample2x(x: torch.Tensor, out_h: int, out_w: int, *, floor: bool = False,
               band: torch.Tensor | None = None) -> torch.Tensor:
    """Upsample (B, C, h, w) to (B, C, out_h, out_w) with out_h <= 2h, out_w <= 2w.

    Args:
        floor: fixed-point mode (float64 tensors holding integers): floor after each pass,
            which keeps every value an integer, then clip to +-UPS_MAX. The training path
            leaves it False.
        band: ``band_matrix(x.dtype, x.device)``, to reuse it across calls.
    """
    if band is None:
        band = band_matrix(x.dtype, x.device)
    y = upsample_axis(x, -1, 0, out_w, band)
    if floor:
        y = fixed_point(y)
    y = upsample_axis(y, -2, 0, out_h, band)
    return fixed_point(y) if floor else y


def fixed_point(y: torch.Tensor) -> torch.Tensor:
    """A pass's outputs in the decoder's fixed point: floored, clipped to +-UPS_MAX."""
    return torch.floor(y).clamp_(-UPS_MAX, UPS_MAX)


def upsample_cascade(grids: list[torch.Tensor], *, floor: bool = False,
                     taps: torch.Tensor | None = None) -> torch.Tensor:
    """Stack the grids (finest first, each (1, 1, h_k, w_k)) at full resolution.

    Args:
        taps: (n_grids - 1, 4) real taps, row l upsampling into grid l (learned
            upsampling; differentiable); None: the bicubic taps at every level.

    Returns:
        (1, n_grids, H, W): channel k is grid k upsampled; channel 0 is the finest grid.
    """
    dtype, device = grids[0].dtype, grids[0].device
    bicubic = band_matrix(dtype, device) if taps is None else None
    acc = grids[-1]
    for level in range(len(grids) - 2, -1, -1):  # into grid `level`
        grid = grids[level]
        band = bicubic if taps is None else band_matrix(dtype, device, taps[level])
        acc = upsample2x(acc, grid.shape[-2], grid.shape[-1], floor=floor, band=band)
        acc = torch.cat((grid, acc), dim=1)
    return acc
