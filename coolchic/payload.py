"""Payloads of the COOL-CHIC sections: the decoder configuration (CONFIG) and the
quantized network weights (WEIGHTS), format 3.0. Used by both the encoder and the decoder; the formats
are normative and described in ``bitstream_spec.md`` (section payloads)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from coolchic.bitstream import BitstreamError
from coolchic.config import ArmConfig, DecoderConfig, LatentConfig, SynthesisConfig
from coolchic.entropy.coder import (
    EntropyError,
    SymbolDecoder,
    SymbolEncoder,
    _cost_table,
    _exp_golomb_lengths,
    rate_bits,
)
from coolchic.entropy.fixedpoint import MAX_FRAC, WEIGHT_MAX, QLayer
from coolchic.entropy.tables import ALPHABET, N_MU, N_SCALE, RADIUS

ZERO_MEAN_ROW = (N_MU // 2) * N_SCALE  # table rows of a Laplace centred on an integer


# ---- CONFIG ---------------------------------------------------------------------------
# The fields as one mixed-radix integer, first field least significant: (radix, offset).
_N_GRIDS, _CONTEXT, _N_HIDDEN, _WIDTH, _RESIDUAL = (12, 1), (12, 1), (5, 0), (64, 1), (5, 0)


def pack_config(config: DecoderConfig) -> bytes:
    """n_grids, arm context, n, n ARM hidden widths, n, n synthesis hidden widths, residual
    convolutions, as one mixed-radix integer in the fewest little-endian bytes."""
    arm, syn = config.arm, config.synthesis
    fields = [(config.latents.n_grids, _N_GRIDS), (arm.context, _CONTEXT),
              (len(arm.hidden), _N_HIDDEN), *((w, _WIDTH) for w in arm.hidden),
              (len(syn.hidden), _N_HIDDEN), *((w, _WIDTH) for w in syn.hidden),
              (syn.residual_convs, _RESIDUAL)]
    value, weight = 0, 1
    for field, (radix, offset) in fields:
        if not 0 <= field - offset < radix:
            raise ValueError(f"configuration field {field} outside its range")
        value += (field - offset) * weight
        weight *= radix
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "little")


def unpack_config(data: bytes) -> DecoderConfig:
    if not data:
        raise BitstreamError("CONFIG section is empty")
    if len(data) > 1 and data[-1] == 0:
        raise BitstreamError("CONFIG section is not minimal (it ends with a zero byte)")
    value = int.from_bytes(data, "little")

    def take(kind: tuple[int, int]) -> int:
        nonlocal value
        value, digit = divmod(value, kind[0])
        return digit + kind[1]

    n_grids, context = take(_N_GRIDS), take(_CONTEXT)
    arm_hidden = tuple(take(_WIDTH) for _ in range(take(_N_HIDDEN)))
    syn_hidden = tuple(take(_WIDTH) for _ in range(take(_N_HIDDEN)))
    residual = take(_RESIDUAL)
    if value:
        raise BitstreamError("CONFIG section has trailing data")
    try:
        return DecoderConfig(
            latents=LatentConfig(n_grids=n_grids),
            arm=ArmConfig(context=context, hidden=arm_hidden),
            synthesis=SynthesisConfig(hidden=syn_hidden, residual_convs=residual),
        )
    except ValueError as exc:  # out-of-range fields from DecoderConfig validation
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


# Each tensor of integers v is coded at a log-scale index S (0..S_MAX, the Laplace scale
# exp((S - 72) / 16) of the integers themselves). Wide tensors (S above COARSE_MAX_SCALE)
# drop their k = shift_of(S) low bits to raw bits and code the coarse part v >> k with the
# scale index S - SHIFT_SCALE[k] (SHIFT_SCALE[k] = round(16 k ln 2): dividing by 2^k) and the
# mean offset -1/2 + 2^-(k+1) that flooring gives; the table's alphabet then covers nearly
# every value, where format 2 sent every weight beyond +-30 as an Exp-Golomb escape.
S_MAX = 255
COARSE_MAX_SCALE = 99  # coarse Laplace scale up to exp(27 / 16) = 5.4
SHIFT_SCALE = (0, 11, 22, 33, 44, 55, 67, 78, 89, 100, 111, 122, 133, 144, 155, 166)


@dataclass(frozen=True)
class ParamCode:
    """How one header parameter is coded in the WEIGHTS stream: value - centre with the
    zero-mean table column `scale` (centre None: the layer's w_frac)."""

    centre: int | None
    scale: int


# Fitted on the 96 bitstreams of the quick protocol (results/kodak-quick-4500).
W_FRAC_CODE = ParamCode(7, 78)
B_FRAC_CODE = ParamCode(None, 71)
W_SCALE_CODE = ParamCode(119, 107)
B_SCALE_CODE = ParamCode(119, 121)


def shift_of(scale: int) -> int:
    """Low bits sent raw by a tensor coded at log-scale index `scale`."""
    return next(k for k, off in enumerate(SHIFT_SCALE) if scale - off <= COARSE_MAX_SCALE)


def coarse_row(scale: int) -> int:
    """Table row coding the coarse integers of a tensor at log-scale index `scale`."""
    k = shift_of(scale)
    mean_index = 1 << (4 - k) if k <= 4 else 0  # -1/2 + 2^-(k+1) in steps of 1/32
    return mean_index * N_SCALE + scale - SHIFT_SCALE[k]


_SHIFTS = np.array([shift_of(s) for s in range(S_MAX + 1)])
_N_SHIFTS = len(SHIFT_SCALE)


@functools.cache
def _scale_value_costs() -> np.ndarray:
    """(S_MAX + 1, ALPHABET) bits of each coarse main symbol at every log-scale index."""
    rows = np.array([coarse_row(s) for s in range(S_MAX + 1)])
    return _cost_table()[rows]


@functools.cache
def _param_costs(code: ParamCode, centre: int, size: int) -> np.ndarray:
    """(size,) bits of coding each value 0..size-1 of a header parameter."""
    values = np.arange(size, dtype=np.int64)
    return np.array([rate_bits(values[i : i + 1], np.array([centre]),
                               np.array([ZERO_MEAN_ROW + code.scale])) for i in range(size)])


def tensor_plan(values: np.ndarray, code: ParamCode = W_SCALE_CODE) -> tuple[int, float]:
    """The log-scale index S that codes these integers (and S itself) in the fewest bits,
    and that number of bits."""
    v = values.reshape(-1).astype(np.int64)
    ks = np.arange(_N_SHIFTS)
    coarse = v[None, :] >> ks[:, None]  # (shifts, n)
    symbols = np.clip(coarse, -RADIUS, RADIUS) + RADIUS
    hist = np.bincount((symbols + ALPHABET * ks[:, None]).ravel(),
                       minlength=ALPHABET * _N_SHIFTS).reshape(_N_SHIFTS, ALPHABET)
    extra = np.abs(coarse) - RADIUS  # >= 0: an escape, with an Exp-Golomb coded extra
    lengths = _exp_golomb_lengths(np.maximum(extra, 0).ravel()).reshape(extra.shape)
    escape = np.where(extra >= 0, lengths, 0).sum(1)  # (shifts,)
    fixed = escape + ks * v.size  # (shifts,) escape extras and raw low bits
    bits = (_scale_value_costs() * hist[_SHIFTS]).sum(1) + fixed[_SHIFTS]
    bits += _param_costs(code, code.centre, S_MAX + 1)
    best = int(np.argmin(bits))
    return best, float(bits[best])


def layer_bits(layer: QLayer) -> float:
    """Coded bits of one layer's parameters and integers (stream flush excluded)."""
    bits = _param_costs(W_FRAC_CODE, W_FRAC_CODE.centre, MAX_FRAC + 1)[layer.w_frac]
    bits += _param_costs(B_FRAC_CODE, layer.w_frac, MAX_FRAC + 1)[layer.b_frac]
    bits += tensor_plan(layer.weight, W_SCALE_CODE)[1] + tensor_plan(layer.bias, B_SCALE_CODE)[1]
    return float(bits)


def weights_bits(layers: tuple[QLayer, ...] | list[QLayer]) -> float:
    """Bits of these layers in the WEIGHTS stream (the stream's framing excluded)."""
    return sum(layer_bits(layer) for layer in layers)


def _put(encoder: SymbolEncoder, value: int, centre: int, scale: int) -> None:
    encoder.encode(np.array([value]), np.array([centre]), np.array([ZERO_MEAN_ROW + scale]))


def _get(decoder: SymbolDecoder, centre: int, scale: int, limit: int, name: str) -> int:
    value = int(decoder.decode(np.array([centre]), np.array([ZERO_MEAN_ROW + scale]))[0])
    if not 0 <= value <= limit:
        raise BitstreamError(f"WEIGHTS section holds an out-of-range {name} ({value})")
    return value


def _put_tensor(encoder: SymbolEncoder, values: np.ndarray, code: ParamCode) -> None:
    v = values.reshape(-1).astype(np.int64)
    if np.abs(v).max(initial=0) > WEIGHT_MAX:
        raise ValueError("quantized weight outside [-WEIGHT_MAX, WEIGHT_MAX]")
    scale = tensor_plan(v, code)[0]
    _put(encoder, scale, code.centre, code.scale)
    k = shift_of(scale)
    coarse = v >> k
    encoder.encode(coarse, np.zeros_like(coarse), np.full(v.size, coarse_row(scale)))
    if k:
        low = v - (coarse << k)
        encoder.encode_bits(((low[:, None] >> np.arange(k - 1, -1, -1)) & 1).ravel())


def _get_tensor(decoder: SymbolDecoder, shape: tuple, code: ParamCode) -> np.ndarray:
    scale = _get(decoder, code.centre, code.scale, S_MAX, "scale index")
    n, k = int(np.prod(shape)), shift_of(scale)
    coarse = decoder.decode(np.zeros(n, np.int64), np.full(n, coarse_row(scale)))
    if np.abs(coarse).max(initial=0) > WEIGHT_MAX:  # before shifting: no overflow
        raise BitstreamError("WEIGHTS section decodes to out-of-range weights")
    v = coarse << k
    if k:
        bits = decoder.decode_bits(n * k).reshape(n, k)
        v += bits @ (1 << np.arange(k - 1, -1, -1))
    if np.abs(v).max(initial=0) > WEIGHT_MAX:
        raise BitstreamError("WEIGHTS section decodes to out-of-range weights")
    return v.reshape(shape)


def pack_weights(weights: NetworkWeights) -> bytes:
    """One symbol stream: per layer its w_frac and b_frac, then the weight tensor (its
    log-scale index, coarse integers, raw low bits), then the bias tensor likewise."""
    encoder = SymbolEncoder(inline_escapes=True)
    for layer in weights.layers():
        if not (0 <= layer.w_frac <= MAX_FRAC and 0 <= layer.b_frac <= MAX_FRAC):
            raise ValueError("fractional bits outside [0, MAX_FRAC]")
        _put(encoder, layer.w_frac, W_FRAC_CODE.centre, W_FRAC_CODE.scale)
        _put(encoder, layer.b_frac, layer.w_frac, B_FRAC_CODE.scale)
        _put_tensor(encoder, layer.weight, W_SCALE_CODE)
        _put_tensor(encoder, layer.bias, B_SCALE_CODE)
    return encoder.finish()


def unpack_weights(data: bytes, config: DecoderConfig, channels: int) -> NetworkWeights:
    shapes = layer_shapes(config, channels)
    try:
        decoder = SymbolDecoder(data, inline_escapes=True)
        groups: dict[str, list[QLayer]] = {}
        for name, group in shapes.items():
            groups[name] = []
            for w_shape, b_shape in group:
                w_frac = _get(decoder, W_FRAC_CODE.centre, W_FRAC_CODE.scale, MAX_FRAC, "w_frac")
                b_frac = _get(decoder, w_frac, B_FRAC_CODE.scale, MAX_FRAC, "b_frac")
                weight = _get_tensor(decoder, w_shape, W_SCALE_CODE)
                bias = _get_tensor(decoder, b_shape, B_SCALE_CODE)
                groups[name].append(QLayer(weight, bias, w_frac, b_frac))
        decoder.finish()
    except EntropyError as exc:
        raise BitstreamError(f"corrupt WEIGHTS section: {exc}") from None
    return NetworkWeights(tuple(groups["arm"]), tuple(groups["mlp"]), tuple(groups["residual"]))
