"""Payloads of the COOL-CHIC sections: the decoder configuration (CONFIG) and the
quantized network weights (WEIGHTS), format 5.0 (4.0 plus learned upsampling taps). Used
by both the encoder and the decoder; the formats are normative and described in
``bitstream_spec.md`` (section payloads)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from coolchic.bitstream import BitstreamError
from coolchic.config import ArmConfig, DecoderConfig, LatentConfig, SynthesisConfig, UpsamplingConfig
from coolchic.decoder.constants import BICUBIC, UPS_FRAC, UPS_TAP_MAX
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
_FLAG = (2, 0)  # 0 or 1; the last field, so a 4.0 payload (without it) reads as 0


def pack_config(config: DecoderConfig) -> bytes:
    """n_grids, arm context, n, n ARM hidden widths, n, n synthesis hidden widths, residual
    convolutions, learned upsampling (format 5.0), as one mixed-radix integer in the fewest
    little-endian bytes."""
    arm, syn = config.arm, config.synthesis
    fields = [(config.latents.n_grids, _N_GRIDS), (arm.context, _CONTEXT),
              (len(arm.hidden), _N_HIDDEN), *((w, _WIDTH) for w in arm.hidden),
              (len(syn.hidden), _N_HIDDEN), *((w, _WIDTH) for w in syn.hidden),
              (syn.residual_convs, _RESIDUAL), (int(config.upsampling.learned), _FLAG)]
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
    learned = take(_FLAG)
    if value:
        raise BitstreamError("CONFIG section has trailing data")
    try:
        return DecoderConfig(
            latents=LatentConfig(n_grids=n_grids),
            arm=ArmConfig(context=context, hidden=arm_hidden),
            synthesis=SynthesisConfig(hidden=syn_hidden, residual_convs=residual),
            upsampling=UpsamplingConfig(learned=bool(learned)),
        )
    except ValueError as exc:  # out-of-range fields from DecoderConfig validation
        raise BitstreamError(f"invalid decoder configuration: {exc}") from None


# ---- WEIGHTS ---------------------------------------------------------------------------
PRIOR_FRAC = 16  # fractional bits of a weight prior's mean values
PRIOR_ID_BITS = 4  # raw bits of the prior id that opens the WEIGHTS stream (0: no prior)
PRIORS_PATH = Path(__file__).with_name("weight_priors.json")  # normative; hash in the spec


@dataclass(frozen=True)
class WeightPrior:
    """Mean decoder weights learned on training images, for one decoder configuration; a
    file that names it codes each weight as its difference from the mean rounded to the
    weight's own step (format 4.0, spec §5.2)."""

    id: int  # 1..15, the value written in the stream
    config: DecoderConfig
    channels: int
    lmbda: float  # the lambda its training files were encoded at (the encoder's first pick)
    means: tuple[tuple[np.ndarray, np.ndarray], ...]  # per layer (weight, bias), int64 at PRIOR_FRAC

    def matches(self, config: DecoderConfig, channels: int) -> bool:
        """Whether it predicts the layers of this configuration (the upsampling's taps are
        not layers: a prior serves a decoder with or without learned taps)."""
        layers_of = replace(config, upsampling=UpsamplingConfig())
        return self.config == layers_of and self.channels == channels


@functools.cache
def weight_priors() -> dict[int, WeightPrior]:
    """The registered weight priors by id, read from PRIORS_PATH."""
    data = json.loads(PRIORS_PATH.read_text())
    if data["frac"] != PRIOR_FRAC:
        raise ValueError(f"{PRIORS_PATH.name}: frac {data['frac']} is not {PRIOR_FRAC}")
    out: dict[int, WeightPrior] = {}
    for entry in data["priors"]:
        config = unpack_config(bytes.fromhex(entry["config"]))
        shapes = [s for group in layer_shapes(config, entry["channels"]).values() for s in group]
        flat = [np.asarray(m, dtype=np.int64) for m in entry["means"]]
        if len(flat) != 2 * len(shapes) or not 1 <= entry["id"] < 1 << PRIOR_ID_BITS:
            raise ValueError(f"{PRIORS_PATH.name}: prior {entry['id']} does not fit its configuration")
        means = tuple((flat[2 * i].reshape(w), flat[2 * i + 1].reshape(b))
                      for i, (w, b) in enumerate(shapes))
        out[entry["id"]] = WeightPrior(entry["id"], config, entry["channels"], entry["lmbda"], means)
    return out


def priors_for(config: DecoderConfig, channels: int) -> list[WeightPrior]:
    """The registered priors a file of this configuration may name."""
    return [p for p in weight_priors().values() if p.matches(config, channels)]


def predict(mean: np.ndarray, frac: int) -> np.ndarray:
    """A prior's means (int64 at PRIOR_FRAC) at step 2^-frac, rounded half up, clipped to
    [-WEIGHT_MAX, WEIGHT_MAX]: the integers a tensor is coded as the difference from."""
    if frac >= PRIOR_FRAC:
        p = mean << (frac - PRIOR_FRAC)
    else:
        s = PRIOR_FRAC - frac
        p = (mean + (1 << (s - 1))) >> s
    return np.clip(p, -WEIGHT_MAX, WEIGHT_MAX)


@dataclass(frozen=True)
class NetworkWeights:
    """All quantized layers of a decoder, in bitstream order: ARM, synthesis MLP, residual;
    then the learned upsampling taps, if the configuration has them."""

    arm: tuple[QLayer, ...]
    mlp: tuple[QLayer, ...]
    residual: tuple[QLayer, ...]
    taps: np.ndarray | None = None  # (n_grids - 1, 4) int64 over 2^UPS_FRAC, row l into grid l

    def layers(self) -> tuple[QLayer, ...]:
        return (*self.arm, *self.mlp, *self.residual)


# ---- learned upsampling taps (format 5.0) -----------------------------------------------
# Each level sends taps 0, 1 and 3 as their difference from the bicubic ones, in one tensor
# coded like a layer's weights; tap 2 (the largest) is 2^UPS_FRAC minus the others, so every
# level passes a constant through unchanged.
_SENT_TAPS = (0, 1, 3)


def taps_from_sent(sent: np.ndarray) -> np.ndarray:
    """(levels, 3) sent taps -> (levels, 4), the unit-gain tap 2 restored."""
    sent = np.asarray(sent, dtype=np.int64)
    taps = np.empty((sent.shape[0], 4), dtype=np.int64)
    taps[:, _SENT_TAPS] = sent
    taps[:, 2] = (1 << UPS_FRAC) - sent.sum(axis=1)
    return taps


def check_taps(taps: np.ndarray, error: type[Exception]) -> None:
    """Every tap in [-UPS_TAP_MAX, UPS_TAP_MAX] and every level of unit gain, else `error`."""
    if np.abs(taps).max(initial=0) > UPS_TAP_MAX:
        raise error(f"upsampling taps outside [-{UPS_TAP_MAX}, {UPS_TAP_MAX}]")
    if (taps.sum(axis=1) != 1 << UPS_FRAC).any():
        raise error(f"upsampling taps whose sum is not {1 << UPS_FRAC}")


def _taps_residual(taps: np.ndarray) -> np.ndarray:
    """The integers the taps are coded as: the sent ones less the bicubic ones."""
    return taps[:, _SENT_TAPS] - np.array(BICUBIC, dtype=np.int64)[list(_SENT_TAPS)]


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


LayerMeans = tuple[np.ndarray, np.ndarray]  # a prior's (weight, bias) means of one layer


def _coded(layer: QLayer, means: LayerMeans | None) -> tuple[np.ndarray, np.ndarray]:
    """The integers a layer's weight and bias tensors are coded as: themselves, or their
    difference from the prior's prediction."""
    if means is None:
        return layer.weight, layer.bias
    return (layer.weight - predict(means[0], layer.w_frac),
            layer.bias - predict(means[1], layer.b_frac))


def layer_bits(layer: QLayer, means: LayerMeans | None = None) -> float:
    """Coded bits of one layer's parameters and integers (stream flush excluded)."""
    weight, bias = _coded(layer, means)
    bits = _param_costs(W_FRAC_CODE, W_FRAC_CODE.centre, MAX_FRAC + 1)[layer.w_frac]
    bits += _param_costs(B_FRAC_CODE, layer.w_frac, MAX_FRAC + 1)[layer.b_frac]
    bits += tensor_plan(weight, W_SCALE_CODE)[1] + tensor_plan(bias, B_SCALE_CODE)[1]
    return float(bits)


def weights_bits(layers: tuple[QLayer, ...] | list[QLayer],
                 means: tuple[LayerMeans, ...] | None = None) -> float:
    """Bits of these layers in the WEIGHTS stream (the prior id and the stream's framing
    excluded), coded against a prior's `means` for the same layers when given."""
    if means is None:
        return sum(layer_bits(layer) for layer in layers)
    return sum(layer_bits(layer, m) for layer, m in zip(layers, means, strict=True))


def _put(encoder: SymbolEncoder, value: int, centre: int, scale: int) -> None:
    encoder.encode(np.array([value]), np.array([centre]), np.array([ZERO_MEAN_ROW + scale]))


def _get(decoder: SymbolDecoder, centre: int, scale: int, limit: int, name: str) -> int:
    value = decoder.decode_one(centre, ZERO_MEAN_ROW + scale)
    if not 0 <= value <= limit:
        raise BitstreamError(f"WEIGHTS section holds an out-of-range {name} ({value})")
    return value


def _put_tensor(encoder: SymbolEncoder, values: np.ndarray, code: ParamCode) -> None:
    v = values.reshape(-1).astype(np.int64)  # the weights, or their difference from a prior
    scale = tensor_plan(v, code)[0]
    _put(encoder, scale, code.centre, code.scale)
    k = shift_of(scale)
    coarse = v >> k
    encoder.encode(coarse, np.zeros_like(coarse), np.full(v.size, coarse_row(scale)))
    if k:
        low = v - (coarse << k)
        encoder.encode_bits(((low[:, None] >> np.arange(k - 1, -1, -1)) & 1).ravel())


def _get_tensor(decoder: SymbolDecoder, shape: tuple, code: ParamCode,
                prediction: np.ndarray | None) -> np.ndarray:
    scale = _get(decoder, code.centre, code.scale, S_MAX, "scale index")
    n, k = int(np.prod(shape)), shift_of(scale)
    # centres 0 and one valid row (scale <= S_MAX): what decode_trusted asks of its caller
    coarse = decoder.decode_trusted(np.zeros(n, np.int64), np.full(n, coarse_row(scale))).astype(np.int64)
    if np.abs(coarse).max(initial=0) > 2 * WEIGHT_MAX:  # before shifting: no overflow
        raise BitstreamError("WEIGHTS section decodes to out-of-range weights")
    v = coarse << k
    if k:
        bits = decoder.decode_bits(n * k).reshape(n, k)
        v += bits @ (1 << np.arange(k - 1, -1, -1))
    v = v.reshape(shape)
    if prediction is not None:
        v = v + prediction
    if np.abs(v).max(initial=0) > WEIGHT_MAX:
        raise BitstreamError("WEIGHTS section decodes to out-of-range weights")
    return v


def best_prior(weights: NetworkWeights, config: DecoderConfig, channels: int) -> int:
    """The prior id (0: none) that codes these weights in the fewest bits."""
    layers = weights.layers()
    best, best_bits = 0, weights_bits(layers)
    for prior in priors_for(config, channels):
        bits = weights_bits(layers, prior.means)
        if bits < best_bits:
            best, best_bits = prior.id, bits
    return best


def pack_weights(weights: NetworkWeights, config: DecoderConfig, channels: int, *,
                 prior_id: int | None = None) -> bytes:
    """One symbol stream: the prior id (PRIOR_ID_BITS raw bits; `None`: the best one for
    these weights), then per layer its w_frac and b_frac, the weight tensor (its log-scale
    index, coarse integers, raw low bits; less the prior's prediction when there is one),
    then the bias tensor likewise."""
    if prior_id is None:
        prior_id = best_prior(weights, config, channels)
    means = _prior_means(prior_id, config, channels, ValueError)
    layers = weights.layers()
    encoder = SymbolEncoder(inline_escapes=True)
    encoder.encode_bits((prior_id >> np.arange(PRIOR_ID_BITS - 1, -1, -1)) & 1)
    for i, layer in enumerate(layers):
        if not (0 <= layer.w_frac <= MAX_FRAC and 0 <= layer.b_frac <= MAX_FRAC):
            raise ValueError("fractional bits outside [0, MAX_FRAC]")
        if max(np.abs(layer.weight).max(initial=0), np.abs(layer.bias).max(initial=0)) > WEIGHT_MAX:
            raise ValueError("quantized weight outside [-WEIGHT_MAX, WEIGHT_MAX]")
        weight, bias = _coded(layer, None if means is None else means[i])
        _put(encoder, layer.w_frac, W_FRAC_CODE.centre, W_FRAC_CODE.scale)
        _put(encoder, layer.b_frac, layer.w_frac, B_FRAC_CODE.scale)
        _put_tensor(encoder, weight, W_SCALE_CODE)
        _put_tensor(encoder, bias, B_SCALE_CODE)
    if config.upsampling.learned and config.latents.n_grids > 1:  # one grid: nothing to upsample
        if weights.taps is None or weights.taps.shape != (config.latents.n_grids - 1, 4):
            raise ValueError("a learned upsampling needs (n_grids - 1, 4) taps")
        check_taps(weights.taps, ValueError)
        _put_tensor(encoder, _taps_residual(weights.taps), W_SCALE_CODE)
    return encoder.finish()


def _prior_means(prior_id: int, config: DecoderConfig, channels: int,
                 error: type[Exception]) -> tuple[LayerMeans, ...] | None:
    if prior_id == 0:
        return None
    prior = weight_priors().get(prior_id)
    if prior is None:
        raise error(f"WEIGHTS section names weight prior {prior_id}, which is not registered")
    if not prior.matches(config, channels):
        raise error(f"WEIGHTS section names weight prior {prior_id}, which belongs to "
                    "another decoder configuration")
    return prior.means


def _read_prior_id(decoder: SymbolDecoder) -> int:
    bits = decoder.decode_bits(PRIOR_ID_BITS)
    return int(bits @ (1 << np.arange(PRIOR_ID_BITS - 1, -1, -1)))


def prior_id_of(data: bytes) -> int:
    """The weight prior id a WEIGHTS payload names (0: none), without decoding the rest."""
    try:
        return _read_prior_id(SymbolDecoder(data, inline_escapes=True))
    except EntropyError as exc:
        raise BitstreamError(f"corrupt WEIGHTS section: {exc}") from None


def unpack_weights(data: bytes, config: DecoderConfig, channels: int, *,
                   has_prior_id: bool = True) -> NetworkWeights:
    """The layers of a WEIGHTS payload (`has_prior_id` False: a format 3.0 payload, which
    has no prior id and no prior)."""
    shapes = layer_shapes(config, channels)
    try:
        decoder = SymbolDecoder(data, inline_escapes=True)
        means = None
        if has_prior_id:
            means = _prior_means(_read_prior_id(decoder), config, channels, BitstreamError)
        groups: dict[str, list[QLayer]] = {}
        index = 0
        for name, group in shapes.items():
            groups[name] = []
            for w_shape, b_shape in group:
                w_mean, b_mean = (None, None) if means is None else means[index]
                w_frac = _get(decoder, W_FRAC_CODE.centre, W_FRAC_CODE.scale, MAX_FRAC, "w_frac")
                b_frac = _get(decoder, w_frac, B_FRAC_CODE.scale, MAX_FRAC, "b_frac")
                weight = _get_tensor(decoder, w_shape, W_SCALE_CODE,
                                     None if w_mean is None else predict(w_mean, w_frac))
                bias = _get_tensor(decoder, b_shape, B_SCALE_CODE,
                                   None if b_mean is None else predict(b_mean, b_frac))
                groups[name].append(QLayer(weight, bias, w_frac, b_frac))
                index += 1
        taps = None
        if config.upsampling.learned and config.latents.n_grids > 1:
            levels = config.latents.n_grids - 1
            sent = _get_tensor(decoder, (levels, len(_SENT_TAPS)), W_SCALE_CODE,
                               np.array(BICUBIC, dtype=np.int64)[list(_SENT_TAPS)])
            taps = taps_from_sent(sent)
            check_taps(taps, BitstreamError)
        decoder.finish()
    except EntropyError as exc:
        raise BitstreamError(f"corrupt WEIGHTS section: {exc}") from None
    return NetworkWeights(tuple(groups["arm"]), tuple(groups["mlp"]), tuple(groups["residual"]), taps)
