"""Synthesis: per-pixel MLP from the upsampled latents to the image, then 3x3 residual
convolutions (the synthesis of COOL-CHIC, Ladune et al., ICCV 2023, with the small
convolutions of its successors). Float training version; the decoder runs the same layers
in fixed point (``coolchic.decoder.reconstruct``)."""

from __future__ import annotations

import torch
from torch import nn

from coolchic.config import SynthesisConfig
from coolchic.model.upsampling import replicate_pad


class Synthesis(nn.Module):
    """(1, n_grids, H, W) upsampled latents -> (1, channels, H, W) image in [0, 1]."""

    def __init__(self, config: SynthesisConfig, n_inputs: int, channels: int):
        super().__init__()
        widths = (n_inputs, *config.hidden, channels)
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.residual = nn.ModuleList(
            nn.Conv2d(channels, channels, 3)
            for _ in range(config.residual_convs)
        )
        with torch.no_grad():  # residual branches start as identity; output starts mid-grey
            for conv in self.residual:
                conv.weight.zero_()
                conv.bias.zero_()
            self.mlp[-1].bias.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, n, h, w = x.shape
        x = x[0].reshape(n, h * w).t()  # (H*W, n_grids): per-pixel layers as matrix products
        for i, layer in enumerate(self.mlp):
            x = layer(x)
            if i < len(self.mlp) - 1:
                x = torch.relu(x)
        x = x.t().reshape(1, -1, h, w).contiguous()  # (1, C, H, W)
        for conv in self.residual:  # replicated borders, as in the decoder
            x = x + conv(replicate_pad(replicate_pad(x, -1, 1, 1), -2, 1, 1))
        return x
