"""Upsampling of the latent grids to the image resolution.

Each 2x step is a separable 4-tap bicubic interpolation (Keys' kernel, a = -0.75) with
half-pixel alignment and replicated borders. At a factor of two the kernel's taps are exact
multiples of 1/256 ([-9, 67, 225, -27] / 256 for even outputs, reversed for odd ones), so the
same filter runs exactly in fixed point in the decoder (``coolchic.reconstruct``). Grids are
upsampled as a cascade, coarsest first: up 2x, crop to the next grid, stack, repeat
(the hierarchical scheme of Cool-chic's later releases, Leguay et al. 2023).
"""

from __future__ import annotations

import torch

TAPS = (-9, 67, 225, -27)  # even outputs; odd outputs use the reversed taps
TAP_SHIFT = 8  # taps are integers over 2^TAP_SHIFT
TAP_COUNT = len(TAPS)


def replicate_pad(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Pad axis `dim` by repeating its edge values (an index gather: its backward is a plain
    index_add, which compiles and runs fast for any memory layout)."""
    n = x.shape[dim]
    index = torch.arange(-before, n + after, device=x.device).clamp_(0, n - 1)
    return x.index_select(dim, index)


def _upsample_axis(x: torch.Tensor, dim: int, out_len: int, floor: bool) -> torch.Tensor:
    """2x along axis `dim` (-1 or -2) of a 4-D tensor, cropped to `out_len`."""
    n = x.shape[dim]
    xp = replicate_pad(x, dim, 2, 2)
    even = sum(t * xp.narrow(dim, k, n) for k, t in enumerate(TAPS))
    odd = sum(t * xp.narrow(dim, k + 1, n) for k, t in enumerate(reversed(TAPS)))
    out = torch.stack((even, odd), dim=dim if dim == -1 else -2)  # interleave outputs
    out = out.flatten(-2) if dim == -1 else out.flatten(-3, -2)
    out = out.narrow(dim, 0, out_len) * (1.0 / (1 << TAP_SHIFT))
    return torch.floor(out) if floor else out


def upsample2x(x: torch.Tensor, out_h: int, out_w: int, *, floor: bool = False) -> torch.Tensor:
    """Upsample (B, C, h, w) to (B, C, out_h, out_w) with out_h <= 2h, out_w <= 2w.

    Args:
        floor: fixed-point mode (float64 tensors holding integers): floor after each pass,
            which keeps every value an integer. The training path leaves it False.
    """
    return _upsample_axis(_upsample_axis(x, -1, out_w, floor), -2, out_h, floor)


def upsample_cascade(grids: list[torch.Tensor], *, floor: bool = False) -> torch.Tensor:
    """Stack the grids (finest first, each (1, 1, h_k, w_k)) at full resolution.

    Returns:
        (1, n_grids, H, W): channel k is grid k upsampled; channel 0 is the finest grid.
    """
    acc = grids[-1]
    for grid in reversed(grids[:-1]):
        acc = upsample2x(acc, grid.shape[-2], grid.shape[-1], floor=floor)
        acc = torch.cat((grid, acc), dim=1)
    return acc
