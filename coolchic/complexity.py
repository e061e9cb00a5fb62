"""Decoder complexity in multiply-accumulates (MAC) per decoded pixel, counted from the
configuration: the ARM over every latent of every grid, the upsampling cascade, and the
synthesis (per-pixel layers and 3x3 convolutions). Additions of biases and activations
are not counted (the usual convention, as in the Cool-chic papers)."""

from __future__ import annotations

from dataclasses import dataclass

from coolchic.config import DecoderConfig, grid_shapes
from coolchic.decoder.constants import TAPS

KODAK_SIZE = (512, 768)  # (H, W) at which configurations are compared


@dataclass(frozen=True)
class MacCount:
    """MAC per decoded pixel, by part."""

    arm: float
    upsampling: float
    synthesis: float

    @property
    def total(self) -> float:
        return self.arm + self.upsampling + self.synthesis


def _mlp_macs(widths: tuple[int, ...]) -> int:
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def mac_per_pixel(config: DecoderConfig, height: int = KODAK_SIZE[0], width: int = KODAK_SIZE[1],
                  channels: int = 3) -> MacCount:
    """MAC per pixel of decoding an image of this size with this configuration."""
    shapes = grid_shapes(height, width, config.latents.n_grids)
    pixels = height * width
    n_latents = sum(h * w for h, w in shapes)
    arm = _mlp_macs((config.arm.context, *config.arm.hidden, 2)) * n_latents
    up = 0
    for k in range(len(shapes) - 2, -1, -1):  # step from grid k+1 to grid k
        stacked = len(shapes) - 1 - k  # channels upsampled in this step
        (h, w), (hc, _) = shapes[k], shapes[k + 1]
        up += stacked * len(TAPS) * (hc * w + h * w)  # horizontal pass, then vertical pass
    syn = _mlp_macs((config.latents.n_grids, *config.synthesis.hidden, channels)) * pixels
    syn += config.synthesis.residual_convs * 9 * channels * channels * pixels
    return MacCount(arm / pixels, up / pixels, syn / pixels)
