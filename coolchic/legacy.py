"""Format 2.0 and 3.0 files rewritten as the current format, losslessly (`coolchic upgrade`).

Formats 3.0 and 4.0 changed only how the COOLCHIC CONFIG and WEIGHTS payloads are written
(spec §4.2, §4.3); the integers they hold and the LATENTS section are the same, so an old
file becomes a 4.0 file that decodes to the same image, without the original image or any
training.
Amortized streams keep their payloads; only their version byte and checksum change.
"""

from __future__ import annotations

import numpy as np

from coolchic.bitstream import (
    FORMAT_MAJOR,
    MAGIC,
    READ_AS_CURRENT,
    BitstreamError,
    CodecId,
    SectionId,
    read_bitstream,
    write_bitstream,
)
from coolchic.config import ArmConfig, DecoderConfig, LatentConfig, SynthesisConfig
from coolchic.entropy.coder import EntropyError, SymbolDecoder
from coolchic.entropy.fixedpoint import MAX_FRAC, WEIGHT_MAX, QLayer
from coolchic.entropy.tables import N_SCALE
from coolchic.payload import (
    ZERO_MEAN_ROW,
    NetworkWeights,
    layer_shapes,
    pack_config,
    pack_weights,
    unpack_config,
    unpack_weights,
)

V2_MAJOR = 2
V3_MAJOR = 3


def config_v2(data: bytes) -> DecoderConfig:
    """Format 2.0 CONFIG: one byte a field (n_grids, context, n, ARM widths, n, synthesis
    widths, residual convolutions)."""
    fields = list(data)
    try:
        n_grids, context, n_arm = fields[:3]
        arm = tuple(fields[3 : 3 + n_arm])
        n_syn = fields[3 + n_arm]
        syn = tuple(fields[4 + n_arm : 4 + n_arm + n_syn])
        residual = fields[4 + n_arm + n_syn]
    except (ValueError, IndexError):
        raise BitstreamError("format 2.0 CONFIG section is truncated") from None
    if len(fields) != 5 + n_arm + n_syn or len(arm) != n_arm or len(syn) != n_syn:
        raise BitstreamError("format 2.0 CONFIG section has a bad length")
    try:
        return DecoderConfig(LatentConfig(n_grids), ArmConfig(context, arm),
                             SynthesisConfig(syn, residual))
    except ValueError as exc:
        raise BitstreamError(f"invalid decoder configuration: {exc}") from None


def weights_v2(data: bytes, config: DecoderConfig, channels: int) -> NetworkWeights:
    """Format 2.0 WEIGHTS: per layer 4 bytes (w_frac, b_frac, weight and bias scale
    indices), then one two-stream symbol stream of every integer, each tensor coded with
    the zero-mean table column of its scale index."""
    shapes = layer_shapes(config, channels)
    n_layers = sum(len(group) for group in shapes.values())
    if len(data) < 4 * n_layers:
        raise BitstreamError("format 2.0 WEIGHTS section is truncated")
    params = iter(np.frombuffer(data[: 4 * n_layers], np.uint8).reshape(n_layers, 4).tolist())
    groups: dict[str, list[QLayer]] = {}
    try:
        decoder = SymbolDecoder(data[4 * n_layers :])
        for name, group in shapes.items():
            groups[name] = []
            for w_shape, b_shape in group:
                w_frac, b_frac, w_scale, b_scale = next(params)
                if max(w_frac, b_frac) > MAX_FRAC or max(w_scale, b_scale) >= N_SCALE:
                    raise BitstreamError("format 2.0 WEIGHTS section holds out-of-range parameters")
                tensors = []
                for shape, scale in ((w_shape, w_scale), (b_shape, b_scale)):
                    n = int(np.prod(shape))
                    v = decoder.decode(np.zeros(n, np.int64), np.full(n, ZERO_MEAN_ROW + scale))
                    if np.abs(v).max(initial=0) > WEIGHT_MAX:
                        raise BitstreamError("format 2.0 WEIGHTS section holds out-of-range weights")
                    tensors.append(v.reshape(shape))
                groups[name].append(QLayer(tensors[0], tensors[1], w_frac, b_frac))
        decoder.finish()
    except EntropyError as exc:
        raise BitstreamError(f"corrupt format 2.0 WEIGHTS section: {exc}") from None
    return NetworkWeights(tuple(groups["arm"]), tuple(groups["mlp"]), tuple(groups["residual"]))


def _same(a: NetworkWeights, b: NetworkWeights) -> bool:
    return all(np.array_equal(x.weight, y.weight) and np.array_equal(x.bias, y.bias)
               and (x.w_frac, x.b_frac) == (y.w_frac, y.b_frac)
               for x, y in zip(a.layers(), b.layers(), strict=True))


def upgrade(data: bytes) -> bytes:
    """The current-format rewrite of a format 2.0, 3.0 or 4.0 bitstream (any codec).

    Raises:
        BitstreamError: `data` is not a valid 2.0, 3.0 or 4.0 bitstream.
    """
    found = data[len(MAGIC)] if len(data) > len(MAGIC) and data.startswith(MAGIC) else None
    if found == FORMAT_MAJOR:
        raise BitstreamError(f"bitstream is already format {FORMAT_MAJOR}.x; nothing to upgrade")
    if found in READ_AS_CURRENT:  # its sections are valid as they are: only the version changes
        header, sections = read_bitstream(data)
        return write_bitstream(header, list(sections.items()))
    major = V3_MAJOR if found == V3_MAJOR else V2_MAJOR  # anything else: 2.0's reader says why
    header, sections = read_bitstream(data, major=major)
    if header.codec_id == CodecId.COOLCHIC:
        if SectionId.CONFIG not in sections or SectionId.WEIGHTS not in sections:
            raise BitstreamError(f"format {major}.x bitstream lacks its CONFIG or WEIGHTS section")
        if major == V2_MAJOR:
            config = config_v2(sections[SectionId.CONFIG])
            weights = weights_v2(sections[SectionId.WEIGHTS], config, header.channels)
        else:
            config = unpack_config(sections[SectionId.CONFIG])
            weights = unpack_weights(sections[SectionId.WEIGHTS], config, header.channels,
                                     has_prior_id=False)
        new = {SectionId.CONFIG: pack_config(config),
               SectionId.WEIGHTS: pack_weights(weights, config, header.channels)}
        # the rewrite must hold the same integers: read it back before handing it out
        if unpack_config(new[SectionId.CONFIG]) != config or not _same(
                unpack_weights(new[SectionId.WEIGHTS], config, header.channels), weights):
            raise AssertionError("format rewrite does not read back")  # a bug, not bad input
        sections = {**sections, **new}
    return write_bitstream(header, list(sections.items()))
