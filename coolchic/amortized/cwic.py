"""System (a): content-weighted image compression (Li, Zuo, Gu, Zhao, Zhang, CVPR 2018), reduced.

The paper's defining pieces, at a size that trains on 2 CPU cores:

* a convolutional encoder (8x down-sampling) whose last layer is a sigmoid e in (0, 1)^n;
* a binarizer b = 1 if e > 0.5 else 0, with the identity as gradient in the backward pass;
* an importance-map network on the encoder's intermediate (1/4-resolution) features giving
  p in (0, 1) per code position, quantized to L levels, level = min(floor(L p), L - 1);
* a mask keeping the first (level + 1) * n / L code channels at each position (more bits
  where the content needs them; our convention keeps at least n / L channels);
* a convolutional decoder (8x up-sampling by depth-to-space);
* trained in two stages: without the importance map (every bit kept), then with it and
  with the paper's rate loss on the map: a penalty on the kept fraction of the code above a
  threshold (`Cwic.training_terms`), the gradient reaching the map through a ramp over
  the two levels around each step of the mask (`Cwic.mask`);
* a convolutional context model (masked 3-D convolutions in the 3-D zig-zag order,
  `causal.WaveOrder.zigzag`) giving the probability of every kept bit; trimmed bits are
  not coded and read as 0 in the context (kept bits as +-1). The importance map levels are
  coded first, with their own 2-D masked context model over the L symbols.

Everything that decides a probability runs in exact integers (`intnet`, `probability`); the
decoder's float convolutions run after all codes are decoded.

Stream (bitstream_spec.md §5.8, codec CWIC): CONFIG = model_crc, ``u8 quality`` (0..100,
the nominal quality of the shipped weights; 0 when unspecified), ``u8 payload_version`` and
``u8 use_map`` (1 when the importance map is coded; 0 keeps every bit); LATENTS = the map's
symbol stream (absent when use_map is 0), then the bits' symbol stream, each in the framing
of `coolchic.entropy.coder` (its word count tells where the map's stream ends). The code
has ceil(H / 8) x ceil(W / 8) positions; the image is padded by edge replication to a
multiple of 8 and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coolchic.amortized import registry
from coolchic.amortized.autoencoder import (
    code_shape,
    config_from,
    image_tensor,
    model_crc,
    straight_through,
    to_uint8,
)
from coolchic.amortized.causal import WaveOrder
from coolchic.amortized.codec import model_input, model_output, read_stream, write_stream
from coolchic.amortized.codes import Alphabet, decode_codes, encode_codes
from coolchic.amortized.intnet import IntegerContextNet, quantize_layers
from coolchic.amortized.masked import ContextConfig, ContextModel
from coolchic.bitstream import BitstreamError
from coolchic.entropy.coder import EntropyError, inline_stream_end

# Loss (MSE units) per unit of kept fraction above the target: 10x what all the bits'
# distortion gain is worth, so that the target binds (Li et al. choose their weight likewise).
MAP_WEIGHT = 0.1


@dataclass(frozen=True)
class CwicConfig:
    """Sizes of the reduced model (the paper: n = 64 or 128 channels, L = 16, 128+ features)."""

    code_channels: int = 32  # n, bits per code position
    levels: int = 16  # L, importance levels; must divide code_channels
    features: int = 64  # width of the encoder and decoder convolutions
    context_hidden: tuple[int, ...] = (8,)  # features per code of the bits' context model
    context_kernel: int = 3  # spatial kernel of the context models
    context_depth: int | None = 4  # channel reach of the bits' context model (None: all)
    map_hidden: tuple[int, ...] = (8,)  # features of the importance map's context model

    def __post_init__(self) -> None:
        if self.code_channels % self.levels:
            raise ValueError(f"levels ({self.levels}) must divide code_channels ({self.code_channels})")


class _Binarize(torch.autograd.Function):
    """Forward: 1 where e > 0.5, else 0. Backward: the identity (Li et al., 2018)."""

    @staticmethod
    def forward(ctx, e):
        return (e > 0.5).to(e.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


class Cwic(nn.Module):
    """The model of system (a); implements `codec.AmortizedCodec`."""

    entry = registry.get("cwic")

    def __init__(self, config: CwicConfig = CwicConfig()):
        super().__init__()
        self.config = config
        n, f = config.code_channels, config.features
        self.encoder_head = nn.Sequential(
            nn.Conv2d(3, f, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(f, f, 5, stride=2, padding=2), nn.ReLU())
        self.encoder_tail = nn.Sequential(
            nn.Conv2d(f, f, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(f, n, 1))
        self.importance = nn.Sequential(
            nn.Conv2d(f, f // 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(f // 2, 1, 1))
        up = []
        for _ in range(3):
            up += [nn.Conv2d(f, 4 * f, 3, padding=1), nn.PixelShuffle(2), nn.ReLU()]
        self.decoder = nn.Sequential(nn.Conv2d(n, f, 3, padding=1), nn.ReLU(), *up,
                                     nn.Conv2d(f, 3, 3, padding=1))
        k = config.context_kernel
        self.bit_model = ContextModel(WaveOrder.zigzag(n), ContextConfig(
            kernel_size=(k, k), hidden=config.context_hidden, outputs=1, depth=config.context_depth))
        self.map_model = ContextModel(WaveOrder.zigzag(1), ContextConfig(
            kernel_size=(k, k), hidden=config.map_hidden, outputs=config.levels))
        self.use_map = False  # stage 1 (Li et al.): train without the importance map
        self.kept_target = 1.0  # stage 2: fraction of the code's bits kept without penalty
        self.map_weight = MAP_WEIGHT  # stage 2: loss per unit of kept fraction above the target
        self.quality = 0  # written in the stream: the shipped checkpoint's nominal quality

    # -- the float model (training, and the encoder side of coding) -------------------------

    def analyse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W), H and W multiples of 8 -> e (B, n, H/8, W/8), p (B, 1, H/8, W/8)."""
        features = self.encoder_head(x)  # (B, f, H/4, W/4)
        e = torch.sigmoid(self.encoder_tail(features))
        p = torch.sigmoid(self.importance(features))
        return e, p

    def mask(self, p: torch.Tensor) -> torch.Tensor:
        """Kept-channel mask (B, n, h, w) of an importance map p (B, 1, h, w).

        Forward: group g (channels [g n/L, (g+1) n/L)) is kept where g <= level =
        min(floor(L p), L - 1), i.e. where L p >= g. Backward (after Li et al., 2018): the
        gradient of clamp((L p - g + 1) / 2, 0, 1), a ramp over the two levels around each
        step with unit area, so that every p in [0, 1) passes a gradient to the groups it can
        switch; group 0, always kept, passes none. (A ramp of one channel's width left the
        top level without any gradient: once there, the map could never leave it.)
        """
        n, levels = self.config.code_channels, self.config.levels
        level = torch.clamp(torch.floor(p * levels), max=levels - 1)
        group = torch.div(torch.arange(n, device=p.device), n // levels, rounding_mode="floor")
        group = group.to(p.dtype)[None, :, None, None]  # (1, n, 1, 1)
        hard = (group <= level).to(p.dtype)
        soft = torch.where(group > 0, torch.clamp((levels * p - group + 1) / 2, 0.0, 1.0), 1.0)
        return straight_through(hard, soft)

    def kept_fraction(self, mask: torch.Tensor) -> torch.Tensor:
        """Mean of a kept-channel mask over a batch: the trimmed code's size over the full one."""
        return mask.mean()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training proxy: x (B, 3, H, W) in [0, 1] -> (x_hat (B, 3, H, W), rate (B,) bits).

        The rate is the context models' cross-entropy of the kept bits (and, in stage 2, of
        the importance levels), i.e. the ideal code length of what `compress` codes.
        """
        x_hat, rate, _ = self.training_terms(x)
        return x_hat, rate

    def training_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward`, and the rate loss of the importance map (a scalar added to the training
        loss; 0 in stage 1).

        Li et al. (2018) penalise the sum of the importance map above a threshold r; ours is
        `map_weight` x max(0, f - `kept_target`), f the fraction of the code's bits the
        masks of the batch keep. Below the target the map is free: it moves bits to where
        they lower the distortion most, against the coded rate of the kept bits. Without it
        the coded rate alone (bits of flat regions are cheap once the context model predicts
        them) never paid for trimming at lambda 1e-3, and the map kept every bit.
        """
        e, p = self.analyse(x)
        bits = _Binarize.apply(e)
        if self.use_map:
            mask = self.mask(p)
            penalty = self.map_weight * torch.relu(self.kept_fraction(mask) - self.kept_target)
        else:
            mask = torch.ones_like(bits)
            penalty = torch.zeros((), dtype=x.dtype)
        z = (2 * bits - 1) * mask  # +-1 kept, 0 trimmed
        x_hat = self.decoder(z)
        logits = self.bit_model(z)[:, :, 0]  # (B, n, h, w)
        ce = F.binary_cross_entropy_with_logits(logits, bits.detach(), reduction="none")
        rate = (ce * mask).flatten(1).sum(1) / np.log(2.0)
        if self.use_map:
            level = torch.clamp(torch.floor(p.detach() * self.config.levels), max=self.config.levels - 1)
            inputs = 2 * level + 1 - self.config.levels  # Alphabet.centered
            map_logits = self.map_model(inputs)[:, 0]  # (B, L, h, w)
            map_ce = F.cross_entropy(map_logits, level[:, 0].long(), reduction="none")
            rate = rate + map_ce.flatten(1).sum(1) / np.log(2.0)
        return x_hat, rate, penalty

    # -- exact coding ----------------------------------------------------------------------

    def integer_nets(self) -> tuple[IntegerContextNet, IntegerContextNet]:
        """(bits, importance map) integer context networks, from the current weights."""
        bit_net = IntegerContextNet(self.bit_model.order, quantize_layers(*self.bit_model.export()),
                                    input_max=1)
        map_net = IntegerContextNet(self.map_model.order, quantize_layers(*self.map_model.export()),
                                    input_max=self.config.levels - 1)
        return bit_net, map_net

    def model_crc(self) -> int:
        """CRC-32 of the weights (state dict in key order, as float64) and of the config."""
        return model_crc(self, self.config)

    def _kept(self, level: np.ndarray) -> np.ndarray:
        """bool (n, h, w) kept bits of integer levels (h, w)."""
        n = self.config.code_channels
        return np.arange(n)[:, None, None] < (level[None] + 1) * (n // self.config.levels)

    def _synthesize(self, bits: np.ndarray, kept: np.ndarray, height: int, width: int) -> np.ndarray:
        """uint8 (height, width, 3) image from bits and kept mask (n, h, w)."""
        z = torch.from_numpy(np.where(kept, 2.0 * bits - 1.0, 0.0).astype(np.float32))[None]
        with torch.no_grad():
            return to_uint8(self.decoder(z), height, width)

    def _codes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoder side: uint8 (H, W, 3) -> bits uint8 (n, h, w), levels int64 (h, w)."""
        with torch.no_grad():
            e, p = self.analyse(image_tensor(image))
        bits = (e[0] > 0.5).numpy().astype(np.uint8)
        if self.use_map:
            level = np.minimum(np.floor(p[0, 0].double().numpy() * self.config.levels),
                               self.config.levels - 1).astype(np.int64)
        else:
            level = np.full(bits.shape[1:], self.config.levels - 1, dtype=np.int64)
        return bits, level

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """The image `decompress(compress(image))` gives, computed on the encoder side."""
        rgb, channels = model_input(image)
        bits, level = self._codes(rgb)
        return model_output(self._synthesize(bits, self._kept(level), *rgb.shape[:2]), channels)

    def compress(self, image: np.ndarray) -> bytes:
        """uint8 (H, W, 3) or gray (H, W, 1) image -> a complete CWIC bitstream."""
        rgb, channels = model_input(image)
        bits, level = self._codes(rgb)
        bit_net, map_net = self.integer_nets()
        kept = self._kept(level)
        payload = b""
        if self.use_map:
            payload = encode_codes(map_net, Alphabet.centered(self.config.levels), level[None])
        payload += encode_codes(bit_net, Alphabet.binary(), bits.astype(np.int64), coded=kept)
        h, w = rgb.shape[:2]
        return write_stream(self.entry, height=h, width=w, channels=channels,
                            model_crc=self.model_crc(), quality=self.quality,
                            fields=bytes((int(self.use_map),)), codes=payload)

    def decompress(self, data: bytes) -> np.ndarray:
        """A CWIC bitstream of this model -> uint8 (H, W, channels of the header).

        Raises:
            BitstreamError: invalid stream, another model's stream, or corrupt codes.
        """
        stream = read_stream(data, model_crc=self.model_crc())
        if stream.entry is not self.entry:
            raise BitstreamError(f"a {stream.entry.name} stream cannot be decoded by {self.entry.name}")
        if len(stream.fields) != 1 or stream.fields[0] > 1:
            raise BitstreamError("invalid bitstream: bad CWIC CONFIG fields")
        use_map = stream.fields[0]
        height, width = stream.header.height, stream.header.width
        shape = code_shape(height, width)
        bit_net, map_net = self.integer_nets()
        payload = stream.codes
        try:
            if use_map:
                end = inline_stream_end(payload)
                level = decode_codes(map_net, Alphabet.centered(self.config.levels), payload[:end],
                                     (1, *shape))[0]
                payload = payload[end:]
            else:
                level = np.full(shape, self.config.levels - 1, dtype=np.int64)
            kept = self._kept(level)
            bits = decode_codes(bit_net, Alphabet.binary(), payload,
                                (self.config.code_channels, *shape), coded=kept)
        except EntropyError as error:
            raise BitstreamError(f"corrupt CWIC codes: {error}") from None
        rgb = self._synthesize(np.maximum(bits, 0), kept, height, width)
        return model_output(rgb, stream.header.channels)


# Training stages of Li et al.: first without, then with the importance map, whose rate loss
# lets half the code's bits through without penalty. Each entry is (fraction of the training
# steps, attributes set on the model for that stage).
STAGES: tuple[tuple[float, dict], ...] = (
    (0.5, {"use_map": False}), (0.5, {"use_map": True, "kept_target": 0.5}))


# Named sizes (`coolchic amortized train cwic --config NAME`): overrides of `CwicConfig`.
# "small" is the defaults, the size of the shipped cwic-q50 weights. "paper": Li et al.
# (CVPR 2018; the network table of the paper) code n = 64 binary channels (128 for their higher
# rates) at 1/8 resolution with L = 16 importance levels; their encoder is 128 then 256
# features with residual blocks, which the plain transforms here (`autoencoder`, one width,
# no residual blocks) stand in for with 128 features. The context models keep the small
# widths: the paper's convolutional entropy encoder is not reproduced layer for layer.
CONFIGS: dict[str, dict] = {
    "small": {},
    "paper": {"code_channels": 64, "levels": 16, "features": 128},
}


def build(config: dict | None = None) -> Cwic:
    """A fresh model; `config` overrides fields of the default `CwicConfig`.

    Raises:
        ValueError: an unknown field.
    """
    return Cwic(config_from(CwicConfig, config, name="CWIC"))
