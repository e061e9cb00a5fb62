"""Pieces the amortized image codecs share: 8x convolutional transforms, image <-> tensor, the
straight-through estimator, the weights' CRC, and building a model from config overrides.

The transforms are deliberately plain (strided 5x5 convolutions down, 3x3 convolutions and
depth-to-space up): the papers' autoencoders are larger, but what distinguishes the systems
is their quantization, importance maps and context models, not their transforms.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coolchic.amortized.codec import weights_crc

SCALE = 8  # down-sampling factor of the analysis transform: one code position per 8x8 pixels


def analysis(features: int, out_channels: int) -> nn.Sequential:
    """(B, 3, H, W) -> (B, out_channels, H/8, W/8): three stride-2 5x5 convolutions, a 1x1."""
    return nn.Sequential(
        nn.Conv2d(3, features, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(features, features, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(features, features, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(features, out_channels, 1))


def synthesis(in_channels: int, features: int) -> nn.Sequential:
    """(B, in_channels, h, w) -> (B, 3, 8h, 8w): 3x3 convolutions, three depth-to-space x2."""
    up: list[nn.Module] = []
    for _ in range(3):
        up += [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2), nn.ReLU()]
    return nn.Sequential(nn.Conv2d(in_channels, features, 3, padding=1), nn.ReLU(), *up,
                         nn.Conv2d(features, 3, 3, padding=1))


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """`hard` in the forward pass, the gradient of `soft` in the backward pass."""
    return soft + (hard - soft).detach()


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (1, 3, H', W') in [0, 1], edge-replicated to multiples of 8.

    Raises:
        ValueError: not a uint8 RGB image.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]  # (1, 3, H, W)
    return F.pad(x, (0, -w % SCALE, 0, -h % SCALE), mode="replicate")


def code_shape(height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of the code of a height x width image."""
    return -(-height // SCALE), -(-width // SCALE)


def to_uint8(x_hat: torch.Tensor, height: int, width: int) -> np.ndarray:
    """float (1, 3, H', W') in [0, 1] -> uint8 (height, width, 3), cropped and rounded."""
    x = x_hat[0, :, :height, :width].permute(1, 2, 0).double().numpy()  # (height, width, 3)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def model_crc(model: nn.Module, config: Any) -> int:
    """CRC-32 of a model's state dict (in key order, as float64) and of its config's repr."""
    state = model.state_dict()
    arrays = [state[key].detach().double().cpu().numpy() for key in sorted(state)]
    text = repr(sorted(dataclasses.asdict(config).items())).encode()
    return weights_crc([np.frombuffer(text, dtype=np.uint8), *arrays])


def config_from(cls: type, overrides: dict | None, *, name: str) -> Any:
    """An instance of dataclass `cls` with `overrides` (lists become tuples).

    Raises:
        ValueError: an unknown field.
    """
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown {name} config field(s): {', '.join(sorted(unknown))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
