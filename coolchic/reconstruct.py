"""Decoder-side reconstruction in fixed point: upsampling and synthesis.

The encoder calls this same code to compute the image the decoder will produce, so the
PSNR it reports is the PSNR of the decoded file. Values are integers held in float64
tensors (scale 2^-SYN_FRAC); every sum stays below 2^53, so the result is bit-identical on
CPU and CUDA and for any thread count. Convolutions are written as sums of shifted matrix
products, which keeps library algorithms that are not exact (FFT, Winograd) out of the way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from coolchic.entropy.fixedpoint import ACT_MAX, QLayer
from coolchic.model.upsampling import upsample_cascade

SYN_FRAC = 16  # fractional bits of upsampled latents and synthesis activations


def _layer_tensors(layer: QLayer, in_frac: int, device: torch.device):
    acc_frac = layer.w_frac + in_frac
    w = torch.from_numpy(layer.weight.astype(np.float64)).to(device)
    b = np.floor(layer.bias.astype(np.float64) * 2.0 ** (acc_frac - layer.b_frac))
    return w, torch.from_numpy(b).to(device), acc_frac


def _rescale(acc: torch.Tensor, acc_frac: int) -> torch.Tensor:
    return torch.floor(acc * 2.0 ** (SYN_FRAC - acc_frac)).clamp_(-ACT_MAX, ACT_MAX)


def _conv3x3(x: torch.Tensor, layer: QLayer, device: torch.device) -> torch.Tensor:
    """Integer 3x3 convolution with replicated borders: (C, H, W) -> (C_out, H, W)."""
    w, b, acc_frac = _layer_tensors(layer, SYN_FRAC, device)  # w: (out, in, 3, 3)
    c, h, wd = x.shape
    xp = F.pad(x[None], (1, 1, 1, 1), mode="replicate")[0]  # (C, H+2, W+2)
    acc = b[:, None, None].expand(w.shape[0], h, wd).clone()
    for ky in range(3):
        for kx in range(3):
            patch = xp[:, ky : ky + h, kx : kx + wd].reshape(c, h * wd)
            acc += (w[:, :, ky, kx] @ patch).reshape(-1, h, wd)
    return _rescale(acc, acc_frac)


def synthesize(
    grids: Sequence[np.ndarray],
    mlp: Sequence[QLayer],
    residual: Sequence[QLayer],
    *,
    bit_depth: int,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Integer latent grids (finest first) -> image (H, W, C), uint8 or uint16."""
    device = torch.device(device)
    scale = float(1 << SYN_FRAC)
    with torch.no_grad():
        t = [torch.from_numpy(g.astype(np.float64)).to(device)[None, None] * scale for g in grids]
        x = upsample_cascade(t, floor=True)[0]  # (n_grids, H, W) at 2^-SYN_FRAC
        _, h, w = x.shape
        x = x.reshape(x.shape[0], h * w)
        for i, layer in enumerate(mlp):
            wt, b, acc_frac = _layer_tensors(layer, SYN_FRAC, device)
            x = _rescale(wt @ x + b[:, None], acc_frac)  # (out, H*W)
            if i < len(mlp) - 1:
                x = x.clamp_(min=0.0)
        x = x.reshape(-1, h, w)  # (C, H, W)
        for layer in residual:
            x = (x + _conv3x3(x, layer, device)).clamp_(-ACT_MAX, ACT_MAX)
        max_value = float((1 << bit_depth) - 1)
        pixels = torch.floor((x * max_value + scale / 2) / scale).clamp_(0.0, max_value)
        dtype = np.uint8 if bit_depth == 8 else np.uint16
        return pixels.permute(1, 2, 0).cpu().numpy().astype(dtype)
