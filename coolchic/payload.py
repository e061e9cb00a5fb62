"""Payloads of the COOL-CHIC sections: the decoder configuration (CONFIG) and the
quantized network weights (WEIGHTS). Used by both the encoder and the decoder; the formats
are normative and described in ``bitstream_spec.md`` (section payloads)."""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np

from coolchic.bitstream import BitstreamError
from coolchic.config import ArmConfig, DecoderConfig, LatentConfig, SynthesisConfig
from coolchic.entropy.coder import (
    EntropyError,
    SymbolDecoder,
    SymbolEncoder,
    rate_bits,
    symbols_from_values,
)
from coolchic.entropy.fixedpoint import MAX_FRAC, WEIGHT_MAX, QLayer
from coolchic.entropy.tables import ALPHABET, N_MU, N_SCALE, PROB_BITS, flat_table

ZERO_MEAN_ROW = (N_MU // 2) * N_SCALE  # table rows of a Laplace centred on an integer


# ---- CONFIG ---------------------------------------------------------------------------
def pack_config(config: DecoderConfig) -> bytes:
    """u8 n_grids, u8 arm context, u8 n, n x u8 ARM hidden widths, u8 n, n x u8 synthesis
    hidden widths, u8 residual convolutions."""
    arm, syn = config.arm, config.synthesis
    fields = [config.latents.n_grids, arm.context, len(arm.hidden), *arm.hidden,
              len(syn.hidden), *syn.hidden, syn.residual_convs]
    return bytes(fields)


def unpack_config(data: bytes) -> DecoderConfig:
    try:
        pos = 0

        def take(n: int) -> tuple[int, ...]:
            nonlocal pos
            if pos + n > len(data):
                raise BitstreamError("CONFIG section is truncated")
            pos += n
            return tuple(data[pos - n : pos])

        n_grids, context, n_arm = take(3)
        arm_hidden = take(n_arm)
        (n_syn,) = take(1)
        syn_hidden = take(n_syn)
        (residual,) = take(1)
        if pos != len(data):
            raise BitstreamError("CONFIG section has trailing bytes")
        return DecoderConfig(
            latents=LatentConfig(n_grids=n_grids),
            arm=ArmConfig(context=context, hidden=arm_hidden),
            synthesis=SynthesisConfig(hidden=syn_hidden, residual_convs=residual),
        )
    except ValueError as exc:  # out-of-range fields from DecoderConfig validation
        if isinstance(exc, BitstreamError):
            raise
        raise BitstreamError(f"invalid decoder configuration: {exc}") from None


# ---- WEIGHTS ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkWeights:
    """All quantized layers of a decoder, in bitstream order: ARM, synthesis MLP, residual."""

    arm: tuple[QLayer, ...]
    mlp: tuple[QLayer, ...]
    residual: tuple[QLayer, ...]

    def layers(self) -> tuple[QLayer, ...]:
        return (*self.arm, *self.mlp, *self.residual)


def layer_shapes(config: DecoderConfig, channels: int) -> dict[str, list[tuple[tuple, tuple]]]:
    """(weight shape, bias shape) of every layer, grouped as in NetworkWeights."""
    arm_w = (config.arm.context, *config.arm.hidden, 2)
    syn_w = (config.latents.n_grids, *config.synthesis.hidden, channels)
    return {
        "arm": [((b, a), (b,)) for a, b in zip(arm_w[:-1], arm_w[1:])],
        "mlp": [((b, a), (b,)) for a, b in zip(syn_w[:-1], syn_w[1:])],
        "residual": [((channels, channels, 3, 3), (channels,))] * config.synthesis.residual_convs,
    }


@functools.cache
def _zero_mean_costs() -> np.ndarray:
    """(N_SCALE, ALPHABET) bits of each main symbol under each zero-mean table row."""
    q = flat_table()[ZERO_MEAN_ROW : ZERO_MEAN_ROW + N_SCALE].astype(np.float64)
    return PROB_BITS - np.log2(q)


def best_scale_index(values: np.ndarray) -> tuple[int, float]:
    """The Laplace scale (table column) that codes these zero-centred integers in the fewest
    bits, and that number of bits (escape extras cost the same under every scale)."""
    values = values.reshape(-1).astype(np.int64)
    centers = np.zeros_like(values)
    symbols, _ = symbols_from_values(values, centers)
    histogram = np.bincount(symbols, minlength=ALPHABET).astype(np.float64)
    scale = int(np.argmin(_zero_mean_costs() @ histogram))
    return scale, rate_bits(values, centers, np.full_like(values, ZERO_MEAN_ROW + scale))


def weights_bits(layers: tuple[QLayer, ...] | list[QLayer]) -> float:
    """Bits of the coded integers of these layers (header bytes excluded)."""
    return sum(best_scale_index(t)[1] for layer in layers for t in (layer.weight, layer.bias))


def pack_weights(weights: NetworkWeights) -> bytes:
    """Per layer: u8 w_frac, u8 b_frac, u8 weight scale index, u8 bias scale index; then one
    range-coded stream of all integers (weights then bias, layer by layer, C order)."""
    header = bytearray()
    encoder = SymbolEncoder()
    for layer in weights.layers():
        tensors = (layer.weight.reshape(-1), layer.bias.reshape(-1))
        if any(np.abs(t).max(initial=0) > WEIGHT_MAX for t in tensors):
            raise ValueError("quantized weight outside [-WEIGHT_MAX, WEIGHT_MAX]")
        scales = [best_scale_index(t)[0] for t in tensors]
        header += struct.pack("<4B", layer.w_frac, layer.b_frac, *scales)
        for t, s in zip(tensors, scales):
            encoder.encode(t.astype(np.int64), np.zeros_like(t, dtype=np.int64),
                           np.full(t.size, ZERO_MEAN_ROW + s, dtype=np.int64))
    return bytes(header) + encoder.finish()


def unpack_weights(data: bytes, config: DecoderConfig, channels: int) -> NetworkWeights:
    shapes = layer_shapes(config, channels)
    n_layers = sum(len(v) for v in shapes.values())
    if len(data) < 4 * n_layers:
        raise BitstreamError("WEIGHTS section is truncated")
    params = [struct.unpack_from("<4B", data, 4 * i) for i in range(n_layers)]
    try:
        decoder = SymbolDecoder(data[4 * n_layers :])
        groups: dict[str, list[QLayer]] = {}
        i = 0
        for name, group in shapes.items():
            groups[name] = []
            for w_shape, b_shape in group:
                w_frac, b_frac, w_scale, b_scale = params[i]
                i += 1
                if w_frac > MAX_FRAC or b_frac > MAX_FRAC or max(w_scale, b_scale) >= N_SCALE:
                    raise BitstreamError("WEIGHTS section holds out-of-range parameters")
                tensors = []
                for shape, s in ((w_shape, w_scale), (b_shape, b_scale)):
                    n = int(np.prod(shape))
                    v = decoder.decode(np.zeros(n, np.int64), np.full(n, ZERO_MEAN_ROW + s))
                    if np.abs(v).max(initial=0) > WEIGHT_MAX:
                        raise BitstreamError("WEIGHTS section decodes to out-of-range weights")
                    tensors.append(v.reshape(shape))
                groups[name].append(QLayer(tensors[0], tensors[1], w_frac, b_frac))
        decoder.finish()
    except EntropyError as exc:
        raise BitstreamError(f"corrupt WEIGHTS section: {exc}") from None
    return NetworkWeights(tuple(groups["arm"]), tuple(groups["mlp"]), tuple(groups["residual"]))
