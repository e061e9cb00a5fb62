"""System (d): a progressive entropy coder for layered binary codes, and a synthetic code source.

After Johnston et al., "Improved Lossy Image Compression with Priming and Spatially Adaptive
Bit Rates for Recurrent Networks" (arXiv 1703.10114): a recurrent image coder emits, at every
position of an H x W grid, one group of K bits per iteration, each group adding detail; its
entropy coder codes the code H x W x (N groups of K bits) layer by layer, the bits of layer l
conditioned on every earlier layer and on the causal part of layer l. Here:

* the code is a (C, H, W) bit tensor, C = layer_count * layer_depth, channel c = l * K + j
  (layer l, bit j);
* the context model is a stack of masked 3-D convolutions (`masked.ContextModel`) in
  `WaveOrder.progressive`: a bit sees the whole kernel window of the earlier layers and the
  3-D zig-zag causal part of its own layer (the paper's line LSTM for long-range context is
  left out: the receptive field comes from stacked convolutions only);
* only the first `coded_layer_count` layers are coded (a truncated, lower-rate code); they
  never depend on later layers, so decoding stops there;
* probabilities come from the exact integer network (`intnet`) and `probability.binary_pmf`.

`SyntheticCodes` draws codes from a known causal model, so the entropy of a sample (the
bound no coder beats on average) is known exactly; `synthetic_report` fits the coder on
samples and reports bits per bit against that bound. `progressive_cwic` applies (d) to the
binary codes of system (a). A fitted coder is a `ProgressiveModel`; `build` makes one from a
config dict, so `checkpoints.load` reads its ``model.pt`` and shipped ``progressive-q*.pt``.

Each layer is coded in its own symbol stream (`encode_layers`, `coolchic.entropy.coder`'s
container), so that the first k streams decode alone (`decode_layers`): the embedded
progressive image codec (`layered`) is built on this. Standalone stream of (d)
(`compress`): ``u16 height, u16 width, u8 layer_depth, u8 layer_count, u8
coded_layer_count`` (little-endian), then the coded layers' streams one after another.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coolchic.amortized.autoencoder import config_from
from coolchic.amortized.causal import Wavefront, WaveOrder
from coolchic.amortized.codes import Alphabet, code_bits, decode_parts, encode_parts
from coolchic.amortized.intnet import IntegerContextNet, quantize_layers
from coolchic.amortized.masked import ContextConfig, ContextModel
from coolchic.entropy.coder import EntropyError, inline_stream_end

_HEADER = struct.Struct("<HHBBB")
MAX_SIDE = 65535  # rows or columns of a code


@dataclass(frozen=True)
class ProgressiveConfig:
    """Shape of the codes and of the context model of (d)."""

    layer_depth: int = 8  # K, bits per layer and position (the paper's codes: 32)
    layer_count: int = 4  # N, layers (the paper: 16 iterations)
    coded_layer_count: int | None = None  # layers actually coded; None: all
    kernel_size: int = 3  # spatial kernel of every masked convolution (odd)
    hidden: tuple[int, ...] = ()  # features per code position of each hidden layer
    depth: int | None = None  # reach along channels; None: layer_depth (same bit, last layer)

    def __post_init__(self) -> None:
        if not (1 <= self.layer_depth <= 255 and 1 <= self.layer_count <= 255):
            raise ValueError("layer_depth and layer_count must lie in 1..255")
        if self.coded_layer_count is not None and not 1 <= self.coded_layer_count <= self.layer_count:
            raise ValueError(f"coded_layer_count must lie in 1..layer_count={self.layer_count}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")

    @property
    def channels(self) -> int:
        return self.layer_depth * self.layer_count

    @property
    def coded_channels(self) -> int:
        return self.layer_depth * (self.coded_layer_count or self.layer_count)

    @property
    def order(self) -> WaveOrder:
        return WaveOrder.progressive(layer_count=self.layer_count, layer_depth=self.layer_depth,
                                     radius=self.kernel_size // 2)

    def coded_mask(self, height: int, width: int) -> np.ndarray:
        """bool (C, height, width): the channels of the coded layers."""
        mask = np.zeros((self.channels, height, width), dtype=bool)
        mask[: self.coded_channels] = True
        return mask


@dataclass(frozen=True)
class SyntheticSample:
    codes: np.ndarray  # uint8 (C, H, W) bits
    entropy_bits: float  # sum over the coded bits of h(p), p the true P(bit = 1 | context)
    information_bits: float  # sum over the coded bits of -log2 P(the drawn bit | context)


@dataclass(frozen=True)
class SyntheticCodes:
    """A causal source of layered binary codes with a known probability for every bit.

    With s = 2b - 1 (and s = 0 outside the grid), bit (l, j, y, x) at channel c = l*K + j is 1
    with probability sigmoid(z), where

        z = bias[c] + a_prev[c] s(c - K, y, x) + a_bit[c] s(c - 1, y, x)
                    + a_left[c] s(c, y, x - 1) + a_up[c] s(c, y - 1, x),

    the a_prev term only for l >= 1 and the a_bit term only for j >= 1. Every term reads an
    earlier code of `WaveOrder.progressive`, so the bits are drawn wave by wave. Coupling to
    the earlier layer weakens with l (later layers add less predictable detail). Parameters
    are drawn from `seed`.
    """

    layer_depth: int = 8
    layer_count: int = 4
    seed: int = 0
    params: np.ndarray = field(init=False, repr=False, compare=False)  # (5, C) bias, a_*

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        n_c = self.layer_depth * self.layer_count
        layer = np.arange(n_c) // self.layer_depth
        sign = lambda: rng.choice([-1.0, 1.0], n_c)  # noqa: E731
        params = np.stack([
            rng.normal(0.0, 0.5, n_c),  # bias
            sign() * rng.uniform(1.0, 2.5, n_c) * 0.75 ** layer * (layer > 0),  # a_prev
            rng.uniform(-1.0, 1.0, n_c) * (np.arange(n_c) % self.layer_depth > 0),  # a_bit
            sign() * rng.uniform(0.3, 1.2, n_c),  # a_left
            sign() * rng.uniform(0.3, 1.2, n_c),  # a_up
        ])
        object.__setattr__(self, "params", params)

    def sample(self, height: int, width: int, *, seed: int, coded_layer_count: int | None = None
               ) -> SyntheticSample:
        """Draw one (C, height, width) code; the bounds count the first coded_layer_count layers."""
        k, n_c = self.layer_depth, self.layer_depth * self.layer_count
        rng = np.random.default_rng(seed)
        s = np.zeros((n_c + 1, height + 1, width + 1))  # index -1 reads the zero border/channel
        front = Wavefront.build(WaveOrder.progressive(layer_count=self.layer_count, layer_depth=k,
                                                      radius=1), (n_c, height, width))
        bias, a_prev, a_bit, a_left, a_up = self.params
        prob = np.empty((n_c, height, width))
        for w in range(front.n_waves):
            c, y, x = front.wave(w)
            prev = np.where(c >= k, c - k, -1)
            z = (bias[c] + a_prev[c] * s[prev, y, x] + a_bit[c] * s[c - 1, y, x]
                 + a_left[c] * s[c, y, x - 1] + a_up[c] * s[c, y - 1, x])
            p = 1.0 / (1.0 + np.exp(-z))
            prob[c, y, x] = p
            s[c, y, x] = np.where(rng.random(c.size) < p, 1.0, -1.0)
        codes = (s[:n_c, :height, :width] > 0).astype(np.uint8)
        coded = k * (coded_layer_count or self.layer_count)
        p, b = prob[:coded], codes[:coded]
        entropy = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
        information = -np.log2(np.where(b == 1, p, 1 - p))
        return SyntheticSample(codes, float(entropy.sum()), float(information.sum()))


class ProgressiveModel(nn.Module):
    """The float context model of (d) with its `ProgressiveConfig`.

    Attributes:
        config: the code layout and the model's shape.
        context: the masked 3-D convolutions, bits (B, C, H, W) as +-1 (0: not coded) ->
            logits (B, C, 1, H, W) of P(bit = 1).
        source_crc: CRC-32 of the model whose codes the coder was fitted on (e.g.
            `Cwic.model_crc`); None when it was not fitted on a model's codes.
        quality: nominal quality of a shipped checkpoint (set by `checkpoints.load`).
    """

    def __init__(self, config: ProgressiveConfig):
        super().__init__()
        self.config = config
        k = config.kernel_size
        depth = config.layer_depth if config.depth is None else config.depth
        self.context = ContextModel(config.order, ContextConfig(
            kernel_size=(k, k), hidden=config.hidden, outputs=1, depth=depth))
        self.source_crc: int | None = None
        self.quality = 0

    @property
    def order(self) -> WaveOrder:
        return self.context.order

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.context(inputs)

    def export(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return self.context.export()


def build_model(config: ProgressiveConfig) -> ProgressiveModel:
    """A fresh float context model of (d), one logit per bit."""
    return ProgressiveModel(config)


def build(config: dict | None = None) -> ProgressiveModel:
    """A fresh model; `config` overrides fields of the default `ProgressiveConfig` (the
    entry point of `checkpoints.load`).

    Raises:
        ValueError: an unknown or invalid field.
    """
    return build_model(config_from(ProgressiveConfig, config, name="progressive"))


def cross_entropy(model: ProgressiveModel, config: ProgressiveConfig, bits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in bits per coded bit of float 0/1 bits (B, C, H, W) (the model's
    ideal code length of the coded layers, without the entropy coder's rounding)."""
    coded = bits[:, : config.coded_channels]
    inputs = torch.zeros_like(bits)
    inputs[:, : config.coded_channels] = 2 * coded - 1
    logits = model(inputs)[:, : config.coded_channels, 0]  # (B, C_coded, H, W)
    return F.binary_cross_entropy_with_logits(logits, coded) / np.log(2.0)


def fit(model, config: ProgressiveConfig, codes: Sequence[np.ndarray], *, steps: int,
        lr: float = 0.02, callback: Callable[[int, float], None] | None = None) -> float:
    """Train the context model on bit codes by cross-entropy (bits per coded bit).

    Args:
        codes: uint8 (C, H, W) bit codes, all of one shape.
        steps: full-batch Adam steps.
        callback: called with (step, bits per bit) after every step.

    Returns:
        The final training loss in bits per coded bit.
    """
    bits = torch.from_numpy(np.stack(codes).astype(np.float32))  # (B, C, H, W)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss = torch.tensor(0.0)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = cross_entropy(model, config, bits)
        loss.backward()
        optimizer.step()
        if callback is not None:
            callback(step, float(loss.detach()))
    return float(loss.detach())


def integer_net(model) -> IntegerContextNet:
    """The exact integer network of a trained float model (inputs are +-1 or 0)."""
    return IntegerContextNet(model.order, quantize_layers(*model.export()), input_max=1)


def _checked_codes(config: ProgressiveConfig, codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 3 or codes.shape[0] != config.channels:
        raise ValueError(f"codes must be ({config.channels}, H, W), got {codes.shape}")
    if np.any(codes > 1):
        raise ValueError("codes must be bits (0 or 1)")
    _, h, w = codes.shape
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"codes must have 1..{MAX_SIDE} rows and columns")
    return codes


def encode_layers(net: IntegerContextNet, config: ProgressiveConfig, codes: np.ndarray, *,
                  layers: int | None = None) -> list[bytes]:
    """One independent symbol stream per layer of a uint8 (C, H, W) bit code, for its first
    `layers` layers (default: coded_layer_count, else all).

    Layer l's stream holds its bits in wavefront order, coded with probabilities that read
    layers <= l only (`WaveOrder.progressive`), so the first k streams decode alone
    (`decode_layers`) and the stream of a layer is the same whatever follows it.
    """
    codes = _checked_codes(config, codes)
    count = layers or config.coded_layer_count or config.layer_count
    if not 1 <= count <= config.layer_count:
        raise ValueError(f"layers must lie in 1..{config.layer_count}, got {count}")
    coded = dataclasses.replace(config, coded_layer_count=count).coded_mask(*codes.shape[1:])
    streams = encode_parts(net, Alphabet.binary(), codes.astype(np.int64), parts=layer_parts(config),
                           coded=coded, evaluated=coded)
    return streams[:count]


def decode_layers(net: IntegerContextNet, config: ProgressiveConfig, streams: Sequence[bytes],
                  height: int, width: int) -> np.ndarray:
    """Inverse of `encode_layers` from the streams of the first k layers: uint8 (C, height,
    width), zero in the layers after k.

    Raises:
        EntropyError: a corrupt stream.
    """
    count = len(streams)
    if not 1 <= count <= config.layer_count:
        raise ValueError(f"give the streams of 1..{config.layer_count} layers, got {count}")
    coded = dataclasses.replace(config, coded_layer_count=count).coded_mask(height, width)
    out = decode_parts(net, Alphabet.binary(), streams, coded.shape, parts=layer_parts(config),
                       coded=coded, evaluated=coded)
    return np.maximum(out, 0).astype(np.uint8)


def layer_parts(config: ProgressiveConfig) -> np.ndarray:
    """int64 (C,): the layer of every code channel (the stream it is coded in)."""
    return np.arange(config.channels, dtype=np.int64) // config.layer_depth


def compress(net: IntegerContextNet, config: ProgressiveConfig, codes: np.ndarray) -> bytes:
    """Code the first coded_layer_count layers of a uint8 (C, H, W) bit code: the header,
    then `encode_layers`' streams one after another."""
    codes = _checked_codes(config, codes)
    _, h, w = codes.shape
    header = _HEADER.pack(h, w, config.layer_depth, config.layer_count,
                          config.coded_layer_count or config.layer_count)
    return header + b"".join(encode_layers(net, config, codes))


def decompress(net: IntegerContextNet, config: ProgressiveConfig, data: bytes) -> np.ndarray:
    """Inverse of `compress`: uint8 (C, H, W), zero in the layers that were not coded.

    Raises:
        EntropyError: data too short, for another configuration, or corrupt.
    """
    if len(data) < _HEADER.size:
        raise EntropyError("Progressive code data is shorter than its header.")
    h, w, depth, count, coded_count = _HEADER.unpack_from(data)
    expected = (config.layer_depth, config.layer_count, config.coded_layer_count or config.layer_count)
    if (depth, count, coded_count) != expected or h == 0 or w == 0:
        raise EntropyError(f"Progressive code data is for layers {depth}x{count} (coded "
                           f"{coded_count}) of {h}x{w}; this coder has {expected[0]}x{expected[1]} "
                           f"(coded {expected[2]}).")
    streams, offset = [], _HEADER.size
    for _ in range(coded_count):
        end = inline_stream_end(data, offset)
        streams.append(data[offset:end])
        offset = end
    if offset != len(data):
        raise EntropyError(f"Progressive code data has {len(data) - offset} bytes after its layers.")
    return decode_layers(net, config, streams, h, w)


@dataclass(frozen=True)
class ProgressiveReport:
    """Real and ideal sizes of a coded sample against its source's entropy."""

    coded_bits: int  # binary codes coded
    n_bytes: int  # the whole stream of `compress`
    bits_per_bit: float  # 8 * n_bytes / coded_bits
    ideal_bits_per_bit: float  # the integer model's ideal code length / coded_bits
    bound_bits_per_bit: float  # the source's entropy / coded_bits
    information_bits_per_bit: float  # -log2 P(sample) under the source / coded_bits
    train_bits_per_bit: float  # final training loss
    round_trip: bool  # decompress(compress(codes)) gave the coded layers back
    fit_seconds: float
    encode_seconds: float
    decode_seconds: float

    @property
    def ratio(self) -> float:
        """Real size over the entropy bound (1.05 = 5% above it)."""
        return self.bits_per_bit / self.bound_bits_per_bit


def synthetic_report(config: ProgressiveConfig = ProgressiveConfig(), *, height: int = 32,
                     width: int = 32, train_samples: int = 16, steps: int = 300,
                     source_seed: int = 0, seed: int = 0,
                     callback: Callable[[int, float], None] | None = None) -> ProgressiveReport:
    """Fit (d) on samples of `SyntheticCodes`, code a fresh sample, compare with its entropy.

    Args:
        config: codes and model; the source has the same layer_depth and layer_count.
        height, width: code size of every sample.
        train_samples: samples to fit on (seeds seed+1 ..); the coded one has seed `seed`.
        steps: training steps (full batch).
        source_seed: parameters of the source.
    """
    source = SyntheticCodes(config.layer_depth, config.layer_count, source_seed)
    draw = lambda s: source.sample(height, width, seed=s,  # noqa: E731
                                   coded_layer_count=config.coded_layer_count)
    train = [draw(seed + 1 + i).codes for i in range(train_samples)]
    test = draw(seed)
    torch.manual_seed(seed)
    model = build_model(config)
    start = time.perf_counter()
    train_loss = fit(model, config, train, steps=steps, callback=callback)
    fitted = time.perf_counter()
    net = integer_net(model)
    data = compress(net, config, test.codes)
    encoded = time.perf_counter()
    decoded = decompress(net, config, data)
    done = time.perf_counter()
    n = config.coded_channels * height * width
    coded = config.coded_mask(height, width)
    ideal = code_bits(net, Alphabet.binary(), test.codes.astype(np.int64), coded=coded, evaluated=coded)
    return ProgressiveReport(
        coded_bits=n, n_bytes=len(data), bits_per_bit=8 * len(data) / n,
        ideal_bits_per_bit=ideal / n, bound_bits_per_bit=test.entropy_bits / n,
        information_bits_per_bit=test.information_bits / n, train_bits_per_bit=train_loss,
        round_trip=bool(np.array_equal(decoded[: config.coded_channels],
                                       test.codes[: config.coded_channels])),
        fit_seconds=fitted - start, encode_seconds=encoded - fitted, decode_seconds=done - encoded)
