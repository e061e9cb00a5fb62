"""The auto-regressive probability model (ARM) of the latents, float training version.

An MLP reads the causal neighbours of a latent in its own grid (``config.CONTEXT_OFFSETS``)
and returns the mean and the log-scale of a Laplace distribution (COOL-CHIC, Ladune et al.,
ICCV 2023). The contexts of all latents of all grids are gathered into one (N, context)
matrix (shifted views of the zero-padded grids), so the whole ARM is a few matrix products;
that is much faster on CPU than masked convolutions, forward and backward. The decoder
evaluates the same network in exact integer arithmetic (``coolchic.entropy.fixedpoint``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coolchic.config import CONTEXT_COLS, CONTEXT_ROWS, ArmConfig, context_offsets


def gather_contexts(grids: list[torch.Tensor], context: int) -> torch.Tensor:
    """(N, context) neighbours of every latent (grids finest first, each (1, 1, h, w);
    latents in grid order then raster order). Neighbours outside a grid read as 0."""
    blocks = []
    for grid in grids:
        h, w = grid.shape[-2:]
        padded = F.pad(grid[0, 0], (CONTEXT_COLS, CONTEXT_COLS, CONTEXT_ROWS, 0))  # (h+2, w+4)
        views = [
            padded[CONTEXT_ROWS + dr : CONTEXT_ROWS + dr + h, CONTEXT_COLS + dc : CONTEXT_COLS + dc + w]
            for dr, dc in context_offsets(context)
        ]
        blocks.append(torch.stack(views, dim=-1).reshape(h * w, context))
    return torch.cat(blocks, dim=0)


class Arm(nn.Module):
    """Context MLP: (N, context) neighbours -> (N, 2) Laplace mean and log-scale."""

    def __init__(self, config: ArmConfig):
        super().__init__()
        self.config = config
        widths = (config.context, *config.hidden, 2)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        with torch.no_grad():  # start from a near-constant, wide distribution
            self.layers[-1].weight.mul_(0.1)
            self.layers[-1].bias.copy_(torch.tensor([0.0, 1.0]))

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        x = contexts
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)
