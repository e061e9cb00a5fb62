"""The one protocol of the amortized image codecs, and their container.

`AmortizedCodec` is the interface every amortized image codec implements (and the one the
main codec's model follows too): ``forward`` for training, ``compress`` and ``decompress``
for real bytes. The container is coolchic's (`coolchic.bitstream`): the header's codec id
names the model (`registry`), the CONFIG section starts with the CRC-32 of the model's
weights so that a stream is never decoded with other weights, the LATENTS section holds
the entropy-coded codes (bitstream_spec.md §5.8).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from coolchic.amortized.registry import ModelEntry, by_codec_id
from coolchic.bitstream import BitstreamError, Header, SectionId, read_bitstream, write_bitstream

_CRC = struct.Struct("<I")


@runtime_checkable
class AmortizedCodec(Protocol):
    """What every amortized image codec offers."""

    entry: ModelEntry

    def forward(self, x):
        """Training proxy: x (B, 3, H, W) float in [0, 1] -> (x_hat like x, rate (B,) in bits)."""

    def compress(self, image: np.ndarray) -> bytes:
        """uint8 (H, W, 3) image -> a complete coolchic bitstream."""

    def decompress(self, data: bytes) -> np.ndarray:
        """A bitstream from `compress` -> the uint8 (H, W, 3) image the encoder reconstructed."""


def weights_crc(arrays: Iterable[np.ndarray]) -> int:
    """CRC-32 of arrays' canonical bytes: each as little-endian int64 (integers) or float64
    (floats), in C order, one after the other. Identifies a model's weights."""
    crc = 0
    for a in arrays:
        a = np.asarray(a)
        dtype = "<i8" if np.issubdtype(a.dtype, np.integer) or a.dtype == bool else "<f8"
        crc = zlib.crc32(np.ascontiguousarray(a, dtype=dtype).tobytes(), crc)
    return crc


@dataclass(frozen=True)
class AmortizedStream:
    """A parsed amortized bitstream."""

    entry: ModelEntry
    header: Header
    model_crc: int  # CRC-32 of the weights that wrote it
    config: bytes  # the codec's own CONFIG fields, after model_crc
    codes: bytes  # the LATENTS section


def write_stream(entry: ModelEntry, *, height: int, width: int, model_crc: int, config: bytes,
                 codes: bytes) -> bytes:
    """A complete bitstream of an 8-bit RGB image coded by `entry`'s model."""
    if entry.codec_id is None:
        raise ValueError(f"model {entry.name!r} is not an image codec")
    header = Header(codec_id=entry.codec_id, height=height, width=width, channels=3, bit_depth=8)
    return write_bitstream(header, [(SectionId.CONFIG, _CRC.pack(model_crc) + config),
                                    (SectionId.LATENTS, codes)])


def read_stream(data: bytes, *, model_crc: int | None = None) -> AmortizedStream:
    """Validate and split an amortized bitstream.

    Args:
        data: the whole bitstream.
        model_crc: when given, the CRC of the decoder's weights, which must match.

    Raises:
        BitstreamError: not a valid coolchic stream, not an amortized codec, a missing
            section, or weights other than the ones that wrote it.
    """
    header, sections = read_bitstream(data)
    try:
        entry = by_codec_id(header.codec_id)
    except ValueError as error:
        raise BitstreamError(str(error)) from None
    for section in (SectionId.CONFIG, SectionId.LATENTS):
        if section not in sections:
            raise BitstreamError(f"invalid bitstream: the {section.name} section is missing")
    config = sections[SectionId.CONFIG]
    if len(config) < _CRC.size:
        raise BitstreamError("invalid bitstream: the CONFIG section is shorter than its model CRC")
    (crc,) = _CRC.unpack_from(config)
    if model_crc is not None and crc != model_crc:
        raise BitstreamError(f"the stream was written by {entry.name} weights with CRC "
                             f"{crc:08x}; this coolchic has {model_crc:08x}")
    return AmortizedStream(entry, header, crc, config[_CRC.size:], sections[SectionId.LATENTS])
