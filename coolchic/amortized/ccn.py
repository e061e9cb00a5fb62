"""System (b): context-based convolutional entropy modelling (Li, Ma, You, Zhang, Zuo, IEEE
TIP 2020), reduced to train on 2 CPU cores.

The paper's defining pieces:

* codes quantized to a few levels: the encoder (`autoencoder.analysis`, 8x) ends in a
  sigmoid e in (0, 1)^C, the symbol is s = round((L - 1) e) in 0..L-1 (straight-through
  rounding in training), the decoder (`autoencoder.synthesis`) sees (2s - (L - 1)) / (L - 1);
* the context-based convolutional network (CCN): masked convolutions in the 3-D zig-zag
  order w = c + y + x (`causal.WaveOrder.zigzag`), the input layer with constrain 5 (a
  code sees only codes of earlier waves), hidden and output layers with constrain 6; every
  layer maps group_in features per code to group_out features per code (num_output =
  channels x group_out), its kernel reaching `context_depth` code channels either way;
* a discretized model: the output layer gives L logits per code, a categorical
  distribution over the L levels, used both for the training rate (cross-entropy) and,
  in exact integers (`intnet`, `probability`), for coding;
* parallel decoding: the codes of one zig-zag hyperplane c + y + x = t form a sub-block
  that depends only on earlier sub-blocks, so each is decoded with one network evaluation
  and one entropy-decoder call (`causal.Wavefront`): C + h + w - 2 steps instead of C h w.

The network input of symbol s is 2s + 1 - L (`codes.Alphabet.centered`), in training (with
straight-through rounding) and in coding.

Stream (bitstream_spec.md §5.8, codec CCN): CONFIG = model_crc, ``u8 quality``, ``u8
payload_version`` and no field of its own; LATENTS = one symbol stream of the
(C, ceil(H/8), ceil(W/8)) code in zig-zag wave order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coolchic.amortized import registry
from coolchic.amortized.autoencoder import (
    analysis,
    code_shape,
    config_from,
    image_tensor,
    model_crc,
    straight_through,
    synthesis,
    to_uint8,
)
from coolchic.amortized.causal import WaveOrder
from coolchic.amortized.codec import model_input, model_output, read_stream, write_stream
from coolchic.amortized.codes import Alphabet, code_bits, decode_codes, encode_codes
from coolchic.amortized.intnet import IntegerContextNet, quantize_layers
from coolchic.amortized.masked import ContextConfig, ContextModel
from coolchic.bitstream import BitstreamError
from coolchic.entropy.coder import EntropyError


@dataclass(frozen=True)
class CcnConfig:
    """Sizes of the reduced model."""

    code_channels: int = 16  # C, code channels
    levels: int = 8  # L, quantization levels of a code
    features: int = 48  # width of the encoder and decoder convolutions
    context_hidden: tuple[int, ...] = (4, 4)  # group_out of each hidden layer of the CCN
    context_kernel: int = 3  # spatial kernel of every CCN layer
    context_depth: int | None = 2  # code channels reached either way (None: all)

    def __post_init__(self) -> None:
        if self.code_channels < 1 or self.features < 1:
            raise ValueError("code_channels and features must be >= 1")
        if not 2 <= self.levels <= 255:
            raise ValueError(f"levels must lie in 2..255, got {self.levels}")
        if self.context_kernel < 1 or self.context_kernel % 2 == 0:
            raise ValueError(f"context_kernel must be odd, got {self.context_kernel}")


class Ccn(nn.Module):
    """The model of system (b); implements `codec.AmortizedCodec`."""

    entry = registry.get("ccn")

    def __init__(self, config: CcnConfig = CcnConfig()):
        super().__init__()
        self.config = config
        self.encoder = analysis(config.features, config.code_channels)
        self.decoder = synthesis(config.code_channels, config.features)
        k = config.context_kernel
        self.context = ContextModel(WaveOrder.zigzag(config.code_channels), ContextConfig(
            kernel_size=(k, k), hidden=config.context_hidden, outputs=config.levels,
            depth=config.context_depth))
        self.quality = 0  # written in the stream: the shipped checkpoint's nominal quality

    # -- the float model (training, and the encoder side of coding) -------------------------

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W), H and W multiples of 8 -> levels (B, C, H/8, W/8): integers
        0..L-1 forward, (L - 1) e backward."""
        scaled = torch.sigmoid(self.encoder(x)) * (self.config.levels - 1)
        return straight_through(torch.round(scaled), scaled)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training proxy: x (B, 3, H, W) in [0, 1] -> (x_hat (B, 3, H, W), rate (B,) bits).

        The rate is the CCN's cross-entropy of the symbols, the ideal code length of what
        `compress` codes (up to the integer rounding of the network).
        """
        levels = self.quantize(x)
        top = self.config.levels - 1
        x_hat = self.decoder((2 * levels - top) / top)
        logits = self.context(2 * levels - top)  # (B, C, L, h, w); inputs 2s + 1 - L
        nats = F.cross_entropy(logits.movedim(2, 1), levels.detach().long(), reduction="none")
        return x_hat, nats.flatten(1).sum(1) / np.log(2.0)

    # -- exact coding ----------------------------------------------------------------------

    def alphabet(self) -> Alphabet:
        return Alphabet.centered(self.config.levels)

    def integer_net(self) -> IntegerContextNet:
        """The CCN in exact integers, from the current weights."""
        return IntegerContextNet(self.context.order, quantize_layers(*self.context.export()),
                                 input_max=self.config.levels - 1)

    def model_crc(self) -> int:
        return model_crc(self, self.config)

    def symbols(self, image: np.ndarray) -> np.ndarray:
        """Encoder side: uint8 (H, W, 3) -> int64 (C, h, w) symbols in 0..L-1."""
        with torch.no_grad():
            return self.quantize(image_tensor(image))[0].numpy().astype(np.int64)

    def _synthesize(self, symbols: np.ndarray, height: int, width: int) -> np.ndarray:
        """uint8 (height, width, 3) from symbols (C, h, w)."""
        top = self.config.levels - 1
        z = torch.from_numpy(((2 * symbols - top) / top).astype(np.float32))[None]  # (1, C, h, w)
        with torch.no_grad():
            return to_uint8(self.decoder(z), height, width)

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """The image `decompress(compress(image))` gives, computed on the encoder side."""
        rgb, channels = model_input(image)
        return model_output(self._synthesize(self.symbols(rgb), *rgb.shape[:2]), channels)

    def estimate_bits(self, image: np.ndarray) -> float:
        """Ideal code length in bits of the LATENTS section's symbols (without flush words)."""
        return code_bits(self.integer_net(), self.alphabet(), self.symbols(model_input(image)[0]))

    def compress(self, image: np.ndarray) -> bytes:
        """uint8 (H, W, 3) or gray (H, W, 1) image -> a complete CCN bitstream."""
        rgb, channels = model_input(image)
        codes = encode_codes(self.integer_net(), self.alphabet(), self.symbols(rgb))
        h, w = rgb.shape[:2]
        return write_stream(self.entry, height=h, width=w, channels=channels,
                            model_crc=self.model_crc(), quality=self.quality, codes=codes)

    def decompress(self, data: bytes) -> np.ndarray:
        """A CCN bitstream of this model -> uint8 (H, W, channels of the header).

        Raises:
            BitstreamError: invalid stream, another model's stream, or corrupt codes.
        """
        stream = read_stream(data, model_crc=self.model_crc())
        if stream.entry is not self.entry:
            raise BitstreamError(f"a {stream.entry.name} stream cannot be decoded by {self.entry.name}")
        if stream.fields:
            raise BitstreamError("invalid bitstream: bad CCN CONFIG fields")
        height, width = stream.header.height, stream.header.width
        shape = (self.config.code_channels, *code_shape(height, width))
        try:
            symbols = decode_codes(self.integer_net(), self.alphabet(), stream.codes, shape)
        except EntropyError as error:
            raise BitstreamError(f"corrupt CCN codes: {error}") from None
        return model_output(self._synthesize(symbols, height, width), stream.header.channels)


# The autoencoder and the CCN are trained jointly, in one stage.
STAGES: tuple[tuple[float, dict], ...] = ((1.0, {}),)


# Named sizes (`coolchic amortized train ccn --config NAME`): overrides of `CcnConfig`.
# "small" is the defaults, the size of the shipped ccn-q50 weights. "large" (not "paper":
# it is not the paper's network): Li et al. (TIP 2020) put three CCNs (the parameters of a discretized
# Gaussian mixture) on transforms of their own, neither of which is implemented here. It widens
# what this model has to the scale of the other two papers' (32 code channels, 128
# features, like Mentzer et al.'s), with 16 levels and two hidden CCN layers of 8 features
# per code; these numbers are ours.
CONFIGS: dict[str, dict] = {
    "small": {},
    "large": {"code_channels": 32, "levels": 16, "features": 128, "context_hidden": (8, 8)},
}


def build(config: dict | None = None) -> Ccn:
    """A fresh model; `config` overrides fields of the default `CcnConfig`.

    Raises:
        ValueError: an unknown field.
    """
    return Ccn(config_from(CcnConfig, config, name="CCN"))
