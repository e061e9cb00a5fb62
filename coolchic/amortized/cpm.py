"""System (c): conditional probability models (Mentzer, Agustsson, Tschannen, Timofte,
Van Gool, CVPR 2018), reduced to train on 2 CPU cores.

The paper's defining pieces:

* a convolutional autoencoder (`autoencoder.analysis` / `synthesis`, 8x); the encoder emits
  K code channels z and one more channel, the importance map ("heatmap") y = sigmoid(.);
* quantization to L learned centres c_0..c_{L-1}: forward, the nearest centre (the symbol
  is the centre's index); backward, the soft assignment
  sum_j softmax_j(-sigma (z - c_j)^2) c_j;
* the heatmap masks channels: with Y = K y, channel k is kept where k < ceil(Y) (forward)
  and weighted by clamp((Y - k + 1) / 2, 0, 1) in the backward pass; masked codes are 0;
* a 3-D masked-convolution context model ("probability classifier") over the masked code,
  a true 3-D convolution (one kernel for all channels, `ContextConfig.shared`) of 3x3x3
  taps, causal in the channel-major raster order (a code sees all 9 taps of the previous
  channel and the causal half of its own: `causal.WaveOrder.channel_major`, depth 1);
  it predicts a categorical distribution over L + 1 symbols: the L centres and "masked";
* the masked code is coded whole, masked positions as their own symbol L; the model learns
  that a masked channel is followed by masked channels, so the heatmap costs almost
  nothing and is not sent separately;
* the rate of training is the context model's cross-entropy (Mentzer et al. train the
  autoencoder and the context model jointly with it); its gradient reaches the encoder
  through the context model's input (the soft-quantized code) and through the mask;
* decoding one wavefront at a time: the logits of every symbol of a wave in one evaluation
  of the integer network (`intnet`), as the paper recommends for parallel decoding.

The context model's input of a code is round(2^INPUT_BITS * value) (value = its centre, or 0
where masked), in training (straight-through rounding) and in coding, so that the integer
network sees exactly the inputs its float model was trained on.

Stream (bitstream_spec.md §5.8, codec CPM): CONFIG = model_crc, ``u8 quality``, ``u8
payload_version`` and no field of its own; LATENTS = one symbol stream of the
(K, ceil(H/8), ceil(W/8)) code over L + 1 symbols.
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

INPUT_BITS = 4  # fractional bits of a code value as the context model's integer input


@dataclass(frozen=True)
class CpmConfig:
    """Sizes of the reduced model (the paper: K = 32 channels at 8x, L = 6, 128 features)."""

    code_channels: int = 16  # K, code channels
    centres: int = 6  # L, learned quantization centres (the paper's value)
    features: int = 48  # width of the encoder and decoder convolutions
    sigma: float = 1.0  # softness of the soft assignment (the paper: 1)
    context_hidden: tuple[int, ...] = (12,)  # features per code of the context model's hidden layers
    context_kernel: int = 3  # spatial kernel of the 3-D context model (3x3x3 in the paper)

    def __post_init__(self) -> None:
        if self.code_channels < 1 or self.features < 1:
            raise ValueError("code_channels and features must be >= 1")
        if not 2 <= self.centres <= 255:
            raise ValueError(f"centres must lie in 2..255, got {self.centres}")
        if self.context_kernel < 1 or self.context_kernel % 2 == 0:
            raise ValueError(f"context_kernel must be odd, got {self.context_kernel}")


class Cpm(nn.Module):
    """The model of system (c); implements `codec.AmortizedCodec`."""

    entry = registry.get("cpm")

    def __init__(self, config: CpmConfig = CpmConfig()):
        super().__init__()
        self.config = config
        k, n = config.code_channels, config.centres
        self.encoder = analysis(config.features, k + 1)  # K code channels, then the heatmap
        self.decoder = synthesis(k, config.features)
        self.centres = nn.Parameter(torch.linspace(-2.0, 2.0, n))  # the paper draws them in [-2, 2]
        r = config.context_kernel
        order = WaveOrder.channel_major(k, radius=r // 2)
        self.context = ContextModel(order, ContextConfig(
            kernel_size=(r, r), hidden=config.context_hidden, outputs=n + 1, depth=1, shared=True))
        self.quality = 0  # written in the stream: the shipped checkpoint's nominal quality

    @property
    def masked_symbol(self) -> int:
        """The symbol of a masked code: L."""
        return self.config.centres

    # -- the float model (training, and the encoder side of coding) -------------------------

    def analyse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W), H and W multiples of 8 -> z (B, K, H/8, W/8), y (B, 1, H/8, W/8)."""
        out = self.encoder(x)
        return out[:, :-1], torch.sigmoid(out[:, -1:])

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, K, h, w) -> (z_hat like z: nearest centre forward, soft assignment backward;
        index (B, K, h, w) int64 of the nearest centre)."""
        distance = (z[..., None] - self.centres).square()  # (B, K, h, w, L)
        soft = (torch.softmax(-self.config.sigma * distance, dim=-1) * self.centres).sum(-1)
        index = distance.argmin(dim=-1)
        return straight_through(self.centres[index], soft), index

    def mask(self, y: torch.Tensor) -> torch.Tensor:
        """Channel mask (B, K, h, w) of a heatmap y (B, 1, h, w) in (0, 1): 1 where
        k < ceil(K y), i.e. K y > k, forward; backward, the gradient of
        clamp((K y - k + 1) / 2, 0, 1), a ramp centred on channel k's step, so that the first
        masked channel learns what keeping it would give (channel 0, always kept, passes
        none). The ramp clamp(K y - k, 0, 1) of the step's kept side alone let a retrain
        drift to one kept channel of 16, its loss rising (results/amortized/README.md)."""
        k = torch.arange(self.config.code_channels, dtype=y.dtype, device=y.device)[None, :, None, None]
        steps = self.config.code_channels * y - k  # (B, K, h, w)
        soft = torch.where(k > 0, torch.clamp((steps + 1) / 2, 0.0, 1.0), 1.0)
        return straight_through((steps > 0).to(y.dtype), soft)

    def context_inputs(self, z_hat: torch.Tensor) -> torch.Tensor:
        """The context model's inputs: round(2^INPUT_BITS z_hat), rounding straight-through."""
        v = z_hat * (1 << INPUT_BITS)
        return straight_through(torch.round(v), v)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training proxy: x (B, 3, H, W) in [0, 1] -> (x_hat (B, 3, H, W), rate (B,) bits).

        The rate is the context model's cross-entropy of the symbols `compress` codes (kept
        codes as their centre index, masked ones as the masked symbol), the mask mixing the
        two terms so that the heatmap learns what a masked code saves.
        """
        z, y = self.analyse(x)
        z_q, index = self.quantize(z)
        mask = self.mask(y)
        z_hat = z_q * mask  # (B, K, h, w), 0 where masked
        x_hat = self.decoder(z_hat)
        logits = self.context(self.context_inputs(z_hat))  # (B, K, L + 1, h, w)
        log_p = F.log_softmax(logits, dim=2)
        kept_bits = -log_p.gather(2, index[:, :, None]).squeeze(2)  # (B, K, h, w), nats
        masked_bits = -log_p[:, :, self.masked_symbol]
        rate = (mask * kept_bits + (1 - mask) * masked_bits).flatten(1).sum(1) / np.log(2.0)
        return x_hat, rate

    # -- exact coding ----------------------------------------------------------------------

    def alphabet(self) -> Alphabet:
        """L + 1 symbols; the integer input of centre j is round(2^INPUT_BITS c_j), masked 0."""
        with torch.no_grad():
            scaled = np.rint(self.centres.detach().double().cpu().numpy() * (1 << INPUT_BITS))
        return Alphabet((*(int(v) for v in scaled), 0))

    def integer_net(self, alphabet: Alphabet) -> IntegerContextNet:
        """The context model in exact integers, from the current weights."""
        bound = max(1, max(abs(v) for v in alphabet.inputs))
        return IntegerContextNet(self.context.order, quantize_layers(*self.context.export()),
                                 input_max=bound)

    def model_crc(self) -> int:
        return model_crc(self, self.config)

    def symbols(self, image: np.ndarray) -> np.ndarray:
        """Encoder side: uint8 (H, W, 3) -> int64 (K, h, w) symbols (L where masked)."""
        x = image_tensor(image)
        with torch.no_grad():
            z, y = self.analyse(x)
            _, index = self.quantize(z)
            kept = self.mask(y) > 0
        return torch.where(kept, index, self.masked_symbol)[0].numpy().astype(np.int64)

    def kept_counts(self, image: np.ndarray) -> np.ndarray:
        """int64 (h, w): code channels kept by the heatmap at each position, ceil(K y)."""
        return (self.symbols(image) != self.masked_symbol).sum(axis=0)

    def _synthesize(self, symbols: np.ndarray, height: int, width: int) -> np.ndarray:
        """uint8 (height, width, 3) from symbols (K, h, w)."""
        with torch.no_grad():
            values = torch.cat([self.centres.detach(), self.centres.new_zeros(1)])  # (L + 1,)
            z_hat = values[torch.from_numpy(symbols)][None]  # (1, K, h, w)
            return to_uint8(self.decoder(z_hat), height, width)

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """The image `decompress(compress(image))` gives, computed on the encoder side."""
        rgb, channels = model_input(image)
        return model_output(self._synthesize(self.symbols(rgb), *rgb.shape[:2]), channels)

    def estimate_bits(self, image: np.ndarray) -> float:
        """Ideal code length in bits of the LATENTS section's symbols (without flush words)."""
        alphabet = self.alphabet()
        return code_bits(self.integer_net(alphabet), alphabet, self.symbols(model_input(image)[0]))

    def compress(self, image: np.ndarray) -> bytes:
        """uint8 (H, W, 3) or gray (H, W, 1) image -> a complete CPM bitstream."""
        rgb, channels = model_input(image)
        alphabet = self.alphabet()
        codes = encode_codes(self.integer_net(alphabet), alphabet, self.symbols(rgb))
        h, w = rgb.shape[:2]
        return write_stream(self.entry, height=h, width=w, channels=channels,
                            model_crc=self.model_crc(), quality=self.quality, codes=codes)

    def decompress(self, data: bytes) -> np.ndarray:
        """A CPM bitstream of this model -> uint8 (H, W, channels of the header).

        Raises:
            BitstreamError: invalid stream, another model's stream, or corrupt codes.
        """
        stream = read_stream(data, model_crc=self.model_crc())
        if stream.entry is not self.entry:
            raise BitstreamError(f"a {stream.entry.name} stream cannot be decoded by {self.entry.name}")
        if stream.fields:
            raise BitstreamError("invalid bitstream: bad CPM CONFIG fields")
        height, width = stream.header.height, stream.header.width
        alphabet = self.alphabet()
        shape = (self.config.code_channels, *code_shape(height, width))
        try:
            symbols = decode_codes(self.integer_net(alphabet), alphabet, stream.codes, shape)
        except EntropyError as error:
            raise BitstreamError(f"corrupt CPM codes: {error}") from None
        return model_output(self._synthesize(symbols, height, width), stream.header.channels)


# Mentzer et al. train the autoencoder and the context model jointly from the start.
STAGES: tuple[tuple[float, dict], ...] = ((1.0, {}),)


# Named sizes (`coolchic amortized train cpm --config NAME`): overrides of `CpmConfig`.
# "small" is the defaults, the size of the shipped cpm-q50 weights. "paper": Mentzer et al.
# (CVPR 2018) use K = 32 code channels at 8x down-sampling, L = 6 centres, encoder and
# decoder convolutions of 128 filters, and a context model of 3x3x3 masked 3-D
# convolutions with 24 filters (as we read the paper). What differs: their transforms have
# residual blocks (plain convolutions here, `autoencoder`) and their context model a
# residual block (two hidden layers of 24 here).
CONFIGS: dict[str, dict] = {
    "small": {},
    "paper": {"code_channels": 32, "centres": 6, "features": 128, "context_hidden": (24, 24)},
}


def build(config: dict | None = None) -> Cpm:
    """A fresh model; `config` overrides fields of the default `CpmConfig`.

    Raises:
        ValueError: an unknown field.
    """
    return Cpm(config_from(CpmConfig, config, name="CPM"))
