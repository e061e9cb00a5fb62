"""The masked 3-D convolution (float, for training) and a stack of them as a context model.

`MaskedConv3d` is a 2-D convolution over C * group features whose weight is multiplied by
`causal.conv_mask`, so that the feature of a code position depends only on codes of earlier
waves (see `coolchic.amortized.causal` for the order and the exact mask). Weights are not
shared along the code channels: each code channel has its own kernel, as in the grouped
formulation of Li et al. (TIP 2020). With ``shared=True`` one 3-D kernel of depth
2 * depth + 1 along the code channels serves every code channel, a true 3-D convolution as
in Mentzer et al. (CVPR 2018): the weight is the same for every pair of code channels at the
same channel offset.

The integer evaluation of the same network, used for coding, is
`coolchic.amortized.intnet.IntegerContextNet`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coolchic.amortized.causal import CONSTRAIN_HIDDEN, CONSTRAIN_INPUT, Constrain, WaveOrder, conv_mask


class MaskedConv3d(nn.Module):
    """Masked convolution: (B, C * group_in, H, W) -> (B, C * group_out, H, W), zero padded.

    Args:
        order: causal order of the code (C = order.channels).
        kernel_size: (kh, kw), odd.
        constrain: 5 for the input layer, 6 for the others.
        group_in, group_out: features per code position in and out.
        depth: reach along the code channels (None: all).
        shared: one 3-D kernel for every code channel (needs a depth); the weight parameter
            is then (group_out, group_in, 2 * depth + 1, kh, kw), slice depth + c_i - c_o
            connecting code channel c_i to c_o.
    """

    def __init__(self, order: WaveOrder, kernel_size: tuple[int, int], *, constrain: Constrain,
                 group_in: int = 1, group_out: int = 1, depth: int | None = None,
                 shared: bool = False):
        super().__init__()
        mask = conv_mask(order, kernel_size, constrain=constrain, group_in=group_in,
                         group_out=group_out, depth=depth)
        self.order, self.kernel_size, self.constrain = order, tuple(kernel_size), constrain
        self.group_in, self.group_out, self.depth, self.shared = group_in, group_out, depth, shared
        self.register_buffer("mask", torch.from_numpy(mask.astype("float32")), persistent=False)
        n_out, n_in = mask.shape[:2]
        fan_in = mask.sum(axis=(1, 2, 3)).clip(min=1)  # (n_out,) live taps per output
        if shared:
            if depth is None:
                raise ValueError("a shared 3-D kernel needs a finite depth")
            c = np.arange(order.channels)
            offset = c[None, :] - c[:, None]  # (C_out, C_in) c_i - c_o
            # slice of the 3-D kernel per channel pair; 2 * depth + 1 is an all-zero slice
            index = np.where(np.abs(offset) <= depth, offset + depth, 2 * depth + 1)
            self.register_buffer("slice_index", torch.from_numpy(index), persistent=False)
            bound = float(np.sqrt(1.0 / fan_in.mean()))
            shape = (group_out, group_in, 2 * depth + 1, *kernel_size)
            self.weight = nn.Parameter((torch.rand(shape) * 2 - 1) * bound)
        else:
            bound = torch.from_numpy(1.0 / fan_in.astype("float32")).sqrt()[:, None, None, None]
            self.weight = nn.Parameter((torch.rand(n_out, n_in, *kernel_size) * 2 - 1) * bound)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def masked_weight(self) -> torch.Tensor:
        """The effective weight, zero outside the mask; (C*group_out, C*group_in, kh, kw)."""
        weight = self.weight
        if self.shared:
            g_out, g_in, _, kh, kw = weight.shape
            n_c = self.order.channels
            padded = torch.cat([weight, weight.new_zeros(g_out, g_in, 1, kh, kw)], dim=2)
            full = padded[:, :, self.slice_index]  # (g_out, g_in, C_out, C_in, kh, kw)
            # -> (C_out, g_out, C_in, g_in, kh, kw) -> (C_out * g_out, C_in * g_in, kh, kw)
            weight = full.permute(2, 0, 3, 1, 4, 5).reshape(n_c * g_out, n_c * g_in, kh, kw)
        return weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        return F.conv2d(x, self.masked_weight(), self.bias, padding=(kh // 2, kw // 2))


@dataclass(frozen=True)
class ContextConfig:
    """Shape of a context model: masked conv, then ReLU and masked conv, `len(hidden)` times."""

    kernel_size: tuple[int, int] = (3, 3)  # spatial kernel of every layer
    hidden: tuple[int, ...] = (8,)  # group (features per code position) of each hidden layer
    outputs: int = 1  # logits per code: 1 for a binary code (logit of 1), A for A symbols
    depth: int | None = None  # reach along the code channels (None: all)
    shared: bool = False  # one 3-D kernel for all code channels (Mentzer et al.); needs depth


class ContextModel(nn.Module):
    """Stack of masked 3-D convolutions: codes (B, C, H, W) -> logits (B, C, outputs, H, W).

    The input holds one integer-valued feature per code (e.g. +-1 for bits, 0 where a code
    is absent); the first layer has constrain 5, the others 6.
    """

    def __init__(self, order: WaveOrder, config: ContextConfig):
        super().__init__()
        self.order, self.config = order, config
        groups = (1, *config.hidden, config.outputs)
        self.layers = nn.ModuleList(
            MaskedConv3d(order, config.kernel_size,
                         constrain=CONSTRAIN_INPUT if i == 0 else CONSTRAIN_HIDDEN,
                         group_in=g_in, group_out=g_out, depth=config.depth,
                         shared=config.shared)
            for i, (g_in, g_out) in enumerate(zip(groups[:-1], groups[1:]))
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        b, c, h, w = codes.shape
        x = codes
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        logits = self.layers[-1](x)  # (B, C * outputs, H, W), channel c*outputs + k
        return logits.reshape(b, c, self.config.outputs, h, w)

    def export(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Masked weights and biases of every layer as float64 numpy arrays, for
        `intnet.quantize_layers`."""
        with torch.no_grad():
            weights = [layer.masked_weight().double().cpu().numpy() for layer in self.layers]
            biases = [layer.bias.double().cpu().numpy() for layer in self.layers]
        return weights, biases
