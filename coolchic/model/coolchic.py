"""The COOL-CHIC model of one image: latent grids, ARM and synthesis (Ladune et al., ICCV
2023). ``forward`` is the training proxy: it returns the reconstruction and the rate of the
latents in bits under the ARM's discretized Laplace."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from coolchic.config import DecoderConfig, grid_shapes
from coolchic.entropy.tables import LOG_SCALE_MAX, LOG_SCALE_MIN
from coolchic.model.arm import Arm, gather_contexts
from coolchic.model.fused import EAGER, MIN_PROB, Kernels, arm_rate, synthesis_mse, upsample_stack
from coolchic.model.synthesis import Synthesis
from coolchic.model.upsampling import taps_tensor, upsample_cascade

Quantizer = Callable[[torch.Tensor], torch.Tensor]


def laplace_cdf(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.sign(x) * (1.0 - torch.exp(-x.abs() / scale))


def laplace_bits(y: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Bits of each integer-valued y under a Laplace(mu, exp(log_scale)) discretized to
    unit bins, with the same scale range as the integer tables."""
    scale = torch.exp(log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))
    d = y - mu
    # evaluate on the side where the CDF difference does not cancel
    s = torch.where(d > 0, -d, d)
    p = laplace_cdf(s + 0.5, scale) - laplace_cdf(s - 0.5, scale)
    return -torch.log2(p.clamp_min(MIN_PROB))


# Learned taps move at this fraction of the networks' learning rate: at the full rate the
# levels' gains drifted and some crops lost 5 dB (results/kodak-quick-upsampling/).
TAP_STEP = 0.1


class LearnedTaps(nn.Module):
    """The 4 upsampling taps of each cascade level (row l upsamples into grid l), trained
    (the learned upsampling of Cool-chic, Philippe et al., arXiv 2411.19249, in our 4-tap
    symmetric form): taps = (bicubic + TAP_STEP * p) / their sum, p from 0. Each level so
    starts bicubic and keeps unit gain at DC, as the decoder's integer taps do."""

    def __init__(self, levels: int):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(levels, 4))
        self.register_buffer("base", taps_tensor(None, torch.float32).repeat(levels, 1))

    def forward(self) -> torch.Tensor:
        """(levels, 4) real taps."""
        t = self.base + TAP_STEP * self.p
        return t / t.sum(dim=1, keepdim=True)


class CoolChic(nn.Module):
    """One image's decoder: latents (ParameterList, finest first), ARM, synthesis, and the
    learned upsampling taps when the configuration has them."""

    def __init__(self, config: DecoderConfig, height: int, width: int, channels: int, *,
                 synthesis_gain: float = 1.0):
        """`synthesis_gain`: a factor on the first synthesis layer's initial weights (a
        training recipe's, `coolchic.presets.Preset.synthesis_gain`)."""
        super().__init__()
        self.config = config
        self.height, self.width, self.channels = height, width, channels
        shapes = grid_shapes(height, width, config.latents.n_grids)
        self.latents = nn.ParameterList(nn.Parameter(torch.zeros(1, 1, h, w)) for h, w in shapes)
        self.arm = Arm(config.arm)
        self.synthesis = Synthesis(config.synthesis, config.latents.n_grids, channels)
        if synthesis_gain != 1.0:
            with torch.no_grad():
                self.synthesis.mlp[0].weight.mul_(synthesis_gain)
        learned = config.upsampling.learned and config.latents.n_grids > 1
        self.upsampling = LearnedTaps(config.latents.n_grids - 1) if learned else None

    def taps(self) -> torch.Tensor | None:
        """(n_grids - 1, 4) real upsampling taps, or None: the bicubic ones."""
        return None if self.upsampling is None else self.upsampling()

    def forward(self, quantize: Quantizer) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (x_hat (1, C, H, W), rate in bits (scalar))."""
        q = [quantize(y) for y in self.latents]
        flat = torch.cat([g.reshape(-1) for g in q])  # (N,) grid order, raster order
        params = self.arm(gather_contexts(q, self.config.arm.context))  # (N, 2)
        rate = laplace_bits(flat, params[:, 0], params[:, 1]).sum()
        x_hat = self.synthesis(upsample_cascade(q, taps=self.taps()))
        return x_hat, rate

    def loss_terms(self, quantize: Quantizer, image: torch.Tensor, *,
                   kernels: Kernels = EAGER) -> tuple[torch.Tensor, torch.Tensor]:
        """(MSE against `image` (1, C, H, W), rate in bits) of the training proxy: the same
        values and gradients as ``forward`` followed by the MSE, computed by the hand-fused
        kernels of ``coolchic.model.fused`` (several times faster on CPU)."""
        q = [quantize(y) for y in self.latents]
        layers = [(m.weight, m.bias) for m in self.arm.layers]
        rate = arm_rate(q, layers, self.config.arm.context, kernels=kernels)
        syn = self.synthesis
        taps = self.taps()
        mse = synthesis_mse(q[0], upsample_stack(q, kernels=kernels, taps=taps), image,
                            [(m.weight, m.bias) for m in syn.mlp],
                            [(m.weight, m.bias) for m in syn.residual], kernels=kernels,
                            vtaps=None if taps is None else taps[0])
        return mse, rate

    def n_latents(self) -> int:
        return sum(y.numel() for y in self.latents)

    def n_pixels(self) -> int:
        return self.height * self.width

