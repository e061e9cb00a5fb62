"""The embedded progressive image codec (codec PROGRESSIVE): cwic's codes coded by (d) in layers.

After Johnston et al. (arXiv 1703.10114): one stream whose first k layers decode alone. The
bits of a `cwic.Cwic` encoder (every bit, without its importance map; `progressive_cwic`)
are cut into layers of `layer_depth` channels; the progressive coder (d) codes each layer
in its own symbol stream (`progressive.encode_layers`), with probabilities that read the
earlier layers only; cwic's decoder turns the first k layers (the later ones trimmed, read
as 0) into the k-layer image. Every further layer refines it.

Stream (bitstream_spec.md §5.9), a coolchic container:

* header: codec PROGRESSIVE, 8-bit, channels 1 (gray, `codec.model_output`) or 3;
* CONFIG: ``u32 model_crc | u8 quality | u8 payload_version | u8 layer_depth | u8
  layer_count``; model_crc is the CRC-32 of ``u32 coder_crc | u32 cwic_crc``;
* LATENTS: one record per layer, ``varint n_words | n_words words | u32 crc``, where crc is
  the CRC-32 of every byte of the file before it;
* the container's CRC-32.

Any prefix that ends after the record of layer k >= 1 is a stream of k layers: each
record's CRC checks everything before it, so the decoder trusts the header and CONFIG once
the first record's CRC matches, and a cut anywhere else is refused (`read`), never decoded
into a wrong image. The whole file is also a valid container for every other tool.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coolchic.amortized import registry
from coolchic.amortized.autoencoder import code_shape, model_crc
from coolchic.amortized.codec import model_input, model_output
from coolchic.amortized.layout import PAYLOAD_VERSION, parse_config
from coolchic.amortized.progressive import decode_layers, encode_layers, integer_net
from coolchic.amortized.progressive_cwic import check_pair, layered_code
from coolchic.bitstream import (
    CRC_BYTES,
    FORMAT_MAJOR,
    HEADER_FIELDS,
    MAGIC,
    MAX_SECTION_BYTES,
    SECTION_FIELDS,
    BitstreamError,
    CodecId,
    Header,
    SectionId,
    VarintError,
    unpack_fields,
    unpack_uvarint,
    write_bitstream,
)
from coolchic.entropy.coder import EntropyError, inline_stream_end

_U32 = struct.Struct("<I")
_FIELDS = struct.Struct("<BB")  # layer_depth, layer_count


@dataclass(frozen=True)
class LayeredStream:
    """The checked parts of a PROGRESSIVE stream or of a prefix of one."""

    header: Header
    model_crc: int  # CRC-32 of the coder's and cwic's CRCs
    quality: int  # the coder's nominal quality
    layer_depth: int  # code channels per layer
    layer_count: int  # layers the encoder wrote
    layers: tuple[bytes, ...]  # symbol streams of the complete layers read, in order
    ends: tuple[int, ...]  # k-th: bytes of the prefix that holds the first k layers
    complete: bool  # the whole container, its own CRC checked


def write(header: Header, config: bytes, layers: Sequence[bytes]) -> bytes:
    """A PROGRESSIVE container: CONFIG, then one record per layer stream, each with its CRC."""
    size = sum(len(layer) + _U32.size for layer in layers)
    draft = write_bitstream(header, [(SectionId.CONFIG, config), (SectionId.LATENTS, bytes(size))])
    start = len(draft) - CRC_BYTES - size  # where the LATENTS payload begins
    out = bytearray(draft[:start])
    for layer in layers:
        out += layer
        out += _U32.pack(zlib.crc32(out))
    return write_bitstream(header, [(SectionId.CONFIG, config), (SectionId.LATENTS, bytes(out[start:]))])


def _cut(data: bytes, layer: int, ends: list[int]) -> BitstreamError:
    where = ", ".join(map(str, ends)) if ends else "none before it"
    return BitstreamError(f"the progressive stream is cut at byte {len(data)}, inside layer {layer}; "
                          f"it decodes only when cut at a layer boundary (bytes {where})")


def _head(data: bytes) -> tuple[dict[str, int], bytes, int, int]:
    """Header values, CONFIG payload, and the start and declared end of LATENTS: the
    framing only, nothing trusted yet."""
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise BitstreamError("truncated bitstream: shorter than the magic")
        raise BitstreamError("not a coolchic bitstream (bad magic)")
    values, offset = unpack_fields(HEADER_FIELDS, data, len(MAGIC))
    if values["format_major"] != FORMAT_MAJOR:
        raise BitstreamError(f"progressive stream of version {values['format_major']}."
                             f"{values['format_minor']}; this decoder reads {FORMAT_MAJOR}.x")
    if values["codec_id"] != CodecId.PROGRESSIVE:
        raise BitstreamError(f"codec id {values['codec_id']} is not the progressive codec")
    if values["section_count"] != 2:
        raise BitstreamError("invalid bitstream: a progressive stream has 2 sections")
    payloads = []
    for expected in (SectionId.CONFIG, SectionId.LATENTS):
        section, offset = unpack_fields(SECTION_FIELDS, data, offset)
        if section["section_id"] != expected:
            raise BitstreamError(f"invalid bitstream: the progressive stream's sections must be "
                                 f"CONFIG then LATENTS, found id {section['section_id']}")
        try:
            length, offset = unpack_uvarint(data, offset, len(data), limit=MAX_SECTION_BYTES)
        except VarintError as exc:
            raise BitstreamError(f"truncated bitstream: the {expected.name} length: {exc}") from None
        payloads.append((offset, offset + length))
        offset += length
    (config_start, config_end), (latents_start, latents_end) = payloads
    return values, data[config_start:config_end], latents_start, latents_end


def read(data: bytes, *, layers: int | None = None) -> LayeredStream:
    """Check a PROGRESSIVE stream, or a prefix of one that ends at a layer boundary, and
    split it.

    Args:
        data: the stream or the prefix.
        layers: read only the first `layers` layers (the rest is not looked at); default:
            every complete layer, and the data must end at a layer boundary or be the whole
            container.

    Raises:
        BitstreamError: a cut inside the header, CONFIG or a layer, a layer whose CRC does
            not match, fewer layers than asked for, or invalid fields (one sentence).
    """
    data = bytes(data)
    if layers is not None and layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    values, config, start, end = _head(data)
    pos, crc, streams, ends = start, zlib.crc32(data[:start]), [], []
    stop = min(end, len(data))
    while pos < stop and (layers is None or len(streams) < layers):
        try:
            record_end = inline_stream_end(data[:stop], pos) + _U32.size
        except EntropyError:
            record_end = stop + 1
        if record_end > stop:
            if len(data) < end:  # a prefix: cut inside this layer
                raise _cut(data, len(streams) + 1, ends)
            raise BitstreamError(f"invalid bitstream: layer {len(streams) + 1} overruns LATENTS")
        words_end = record_end - _U32.size
        crc = zlib.crc32(data[pos:words_end], crc)
        if crc != _U32.unpack_from(data, words_end)[0]:
            raise BitstreamError(f"checksum mismatch in layer {len(streams) + 1}: the stream is corrupt")
        crc = zlib.crc32(data[words_end:record_end], crc)
        streams.append(data[pos:words_end])
        ends.append(record_end)
        pos = record_end
    if not streams:
        raise BitstreamError("the progressive stream holds no complete layer")
    # Layer 1's CRC covered the header and CONFIG: from here on their values are trusted.
    entry = registry.get("progressive")
    quality_crc, quality, fields = parse_config(entry, config)
    if len(fields) != _FIELDS.size:
        raise BitstreamError("invalid bitstream: bad PROGRESSIVE CONFIG fields")
    depth, count = _FIELDS.unpack(fields)
    if values["bit_depth"] != 8 or depth < 1 or count < 1 or len(streams) > count:
        raise BitstreamError(f"invalid bitstream: {len(streams)} layer(s) of {depth} channels, "
                             f"{count} declared, {values['bit_depth']}-bit")
    complete = False
    if layers is not None:
        if len(streams) < layers:
            raise BitstreamError(f"the progressive stream holds {len(streams)} complete layer(s) "
                                 f"of {count}; {layers} were asked for")
    elif pos != len(data):  # the whole LATENTS section was read: the container's CRC follows
        rest = len(data) - pos
        if rest < CRC_BYTES:
            raise BitstreamError("the progressive stream is cut inside its final checksum")
        if rest > CRC_BYTES:
            raise BitstreamError(f"invalid bitstream: {rest - CRC_BYTES} bytes after the checksum")
        if zlib.crc32(data[:pos]) != _U32.unpack_from(data, pos)[0]:
            raise BitstreamError("checksum mismatch: the file is corrupt")
        complete = True
    if pos == end and len(streams) != count:
        raise BitstreamError(f"invalid bitstream: LATENTS holds {len(streams)} layers, CONFIG "
                             f"declares {count}")
    header = Header(codec_id=CodecId.PROGRESSIVE, height=values["height"], width=values["width"],
                    channels=values["channels"], bit_depth=values["bit_depth"])
    return LayeredStream(header, quality_crc, quality, depth, count, tuple(streams), tuple(ends),
                         complete)


class LayeredCodec:
    """The PROGRESSIVE image codec: a fitted progressive coder (d) and the cwic model whose
    codes it was fitted on. Follows `codec.AmortizedCodec` for coding (it is not trained as
    one model: cwic and (d) are trained apart), with a layer count for the image."""

    entry = registry.get("progressive")

    def __init__(self, coder, cwic):
        """Raises ValueError when `coder` was not fitted on `cwic`'s codes."""
        check_pair(coder, cwic)
        self.coder, self.cwic = coder, cwic
        self.config = coder.config
        self.quality = coder.quality

    def model_crc(self) -> int:
        """CRC-32 of ``u32 coder_crc | u32 cwic_crc``: names both sets of weights."""
        pair = _U32.pack(model_crc(self.coder, self.coder.config)) + _U32.pack(self.cwic.model_crc())
        return zlib.crc32(pair)

    def _kept(self, layers: int, height: int, width: int) -> np.ndarray:
        """bool (n, h, w) of the first `layers` layers' channels."""
        keep = np.arange(self.config.channels) < layers * self.config.layer_depth
        return np.broadcast_to(keep[:, None, None], (self.config.channels, height, width))

    def _layers(self, layers: int | None) -> int:
        if layers is None:
            return self.config.layer_count
        if not 1 <= layers <= self.config.layer_count:
            raise ValueError(f"layers must lie in 1..{self.config.layer_count}, got {layers}")
        return layers

    def reconstruct(self, image: np.ndarray, *, layers: int | None = None) -> np.ndarray:
        """The image the first `layers` layers (default all) of `compress(image)` decode to."""
        rgb, channels = model_input(image)
        bits = layered_code(self.cwic, rgb)
        kept = self._kept(self._layers(layers), *bits.shape[1:])
        return model_output(self.cwic._synthesize(bits, kept, *rgb.shape[:2]), channels)

    def compress(self, image: np.ndarray) -> bytes:
        """uint8 (H, W, 3) or gray (H, W, 1) image -> a PROGRESSIVE stream of every layer."""
        rgb, channels = model_input(image)
        bits = layered_code(self.cwic, rgb)
        streams = encode_layers(integer_net(self.coder), self.config, bits, layers=self.config.layer_count)
        h, w = rgb.shape[:2]
        header = Header(codec_id=CodecId.PROGRESSIVE, height=h, width=w, channels=channels, bit_depth=8)
        config = (_U32.pack(self.model_crc()) + bytes((self.quality, PAYLOAD_VERSION))
                  + _FIELDS.pack(self.config.layer_depth, self.config.layer_count))
        return write(header, config, streams)

    def decompress(self, data: bytes, *, layers: int | None = None) -> np.ndarray:
        """A PROGRESSIVE stream, or a prefix of one ending at a layer boundary -> the uint8
        image of its first `layers` layers (default: all it holds).

        Raises:
            BitstreamError: see `read`; other weights; corrupt codes.
        """
        stream = read(data, layers=layers)
        if stream.model_crc != self.model_crc():
            raise BitstreamError(f"the stream was written by progressive weights with CRC "
                                 f"{stream.model_crc:08x}; this coolchic has {self.model_crc():08x}")
        if (stream.layer_depth, stream.layer_count) != (self.config.layer_depth, self.config.layer_count):
            raise BitstreamError(f"the stream has {stream.layer_count} layers of {stream.layer_depth} "
                                 f"channels; this coder {self.config.layer_count} of "
                                 f"{self.config.layer_depth}")
        height, width = stream.header.height, stream.header.width
        shape = code_shape(height, width)
        try:
            bits = decode_layers(integer_net(self.coder), self.config, stream.layers, *shape)
        except EntropyError as error:
            raise BitstreamError(f"corrupt progressive codes: {error}") from None
        kept = self._kept(len(stream.layers), *shape)
        return model_output(self.cwic._synthesize(bits, kept, height, width), stream.header.channels)
