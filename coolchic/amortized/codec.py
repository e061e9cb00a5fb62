"""The one protocol of the amortized image codecs, and their container.

`AmortizedCodec` is the interface every amortized image codec implements (and the one the
main codec's model follows too): ``forward`` for training, ``compress`` and ``decompress``
for real bytes. The container is coolchic's (`coolchic.bitstream`): the header's codec id
names the model (`registry`), the CONFIG section starts with the CRC-32 of the model's
weights so that a stream is never decoded with other weights, the LATENTS section holds
the entropy-coded codes (bitstream_spec.md §5.8) in `coolchic.entropy.coder`'s framing.

CONFIG is ``u32 model_crc | u8 quality | u8 payload_version | codec fields``. The first
layout (coolchic before payload version 2) had no payload_version byte and framed its symbol
streams with u32 word counts; `read_stream` still reads it, through `legacy.upgrade`.

A gray image is coded as its three copies and decoded as the rounded mean of the decoded
RGB (`model_input`, `model_output`); the header's channel count says which.
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
PAYLOAD_VERSION = 2  # CONFIG byte after the quality; the first layout (1) had none
MAX_QUALITY = 100  # largest nominal quality of shipped weights


@runtime_checkable
class AmortizedCodec(Protocol):
    """What every amortized image codec offers."""

    entry: ModelEntry

    def forward(self, x):
        """Training proxy: x (B, 3, H, W) float in [0, 1] -> (x_hat like x, rate (B,) in bits)."""

    def compress(self, image: np.ndarray) -> bytes:
        """uint8 (H, W, 3) or gray (H, W, 1) image -> a complete coolchic bitstream."""

    def decompress(self, data: bytes) -> np.ndarray:
        """A bitstream from `compress` -> the uint8 image (channels as the input) the
        encoder reconstructed."""

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """The image `decompress(compress(image))` gives, computed on the encoder side."""


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
    """A parsed amortized bitstream (a stream of the first layout is read upgraded: its
    symbol streams in the current framing)."""

    entry: ModelEntry
    header: Header
    model_crc: int  # CRC-32 of the weights that wrote it
    quality: int  # nominal quality of the shipped weights that wrote it, 0..MAX_QUALITY
    fields: bytes  # the codec's own CONFIG fields, after the payload version
    codes: bytes  # the LATENTS section
    legacy: bool  # written in the first payload layout (`legacy`), read upgraded


def model_input(image: np.ndarray) -> tuple[np.ndarray, int]:
    """What an amortized model codes for a uint8 (H, W, 3) or (H, W, 1) image: the RGB image
    (gray repeated to 3 channels) and the channel count written in the header.

    Raises:
        ValueError: not uint8 with 1 or 3 channels.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"amortized codecs code uint8 (H, W, 3) or (H, W, 1) images, got "
                         f"{image.shape} {image.dtype}")
    channels = image.shape[2]
    return (np.repeat(image, 3, axis=2) if channels == 1 else image), channels


def model_output(rgb: np.ndarray, channels: int) -> np.ndarray:
    """The decoded image of a stream whose header has `channels`: the model's uint8 RGB
    (H, W, 3) itself, or for gray (H, W, 1) the rounded mean floor((R + G + B + 1) / 3),
    exact integers so that encoder and decoder agree."""
    if channels == 3:
        return rgb
    total = rgb.astype(np.int32).sum(axis=2, keepdims=True)  # (H, W, 1)
    return ((total + 1) // 3).astype(np.uint8)


def write_stream(entry: ModelEntry, *, height: int, width: int, model_crc: int, quality: int,
                 codes: bytes, fields: bytes = b"", channels: int = 3) -> bytes:
    """A complete bitstream of an 8-bit image coded by `entry`'s model.

    CONFIG is ``u32 model_crc | u8 quality | u8 PAYLOAD_VERSION | fields``; LATENTS is
    `codes`. `channels` (1 or 3) is what the decoder outputs (`model_output`).
    """
    if entry.codec_id is None:
        raise ValueError(f"model {entry.name!r} is not an image codec")
    if not 0 <= quality <= MAX_QUALITY:
        raise ValueError(f"quality must lie in 0..{MAX_QUALITY}, got {quality}")
    header = Header(codec_id=entry.codec_id, height=height, width=width, channels=channels,
                    bit_depth=8)
    config = _CRC.pack(model_crc) + bytes((quality, PAYLOAD_VERSION)) + fields
    return write_bitstream(header, [(SectionId.CONFIG, config), (SectionId.LATENTS, codes)])


def parse_config(entry: ModelEntry, config: bytes, *, model_crc: int | None = None
                 ) -> tuple[int, int, bytes]:
    """(model_crc, quality, fields) of a current-layout CONFIG section.

    Raises:
        BitstreamError: too short, another payload version, a quality above MAX_QUALITY,
            or (when `model_crc` is given) weights other than the ones that wrote it.
    """
    if len(config) < _CRC.size + 2:
        raise BitstreamError(f"invalid bitstream: the {entry.name.upper()} CONFIG section is too short")
    (crc,) = _CRC.unpack_from(config)
    quality, version = config[_CRC.size], config[_CRC.size + 1]
    if version != PAYLOAD_VERSION:
        raise BitstreamError(f"the {entry.name.upper()} CONFIG has amortized payload version "
                             f"{version}; this coolchic reads {PAYLOAD_VERSION} and the first layout")
    if quality > MAX_QUALITY:
        raise BitstreamError(f"invalid bitstream: the {entry.name.upper()} CONFIG has quality {quality}")
    if model_crc is not None and crc != model_crc:
        raise BitstreamError(f"the stream was written by {entry.name} weights with CRC "
                             f"{crc:08x}; this coolchic has {model_crc:08x}")
    return crc, quality, config[_CRC.size + 2 :]


def read_stream(data: bytes, *, model_crc: int | None = None) -> AmortizedStream:
    """Validate and split an amortized bitstream, of the current layout or the first one.

    Args:
        data: the whole bitstream.
        model_crc: when given, the CRC of the decoder's weights, which must match.

    Raises:
        BitstreamError: not a valid coolchic stream, not an amortized codec, a missing
            section, or weights other than the ones that wrote it.
    """
    from coolchic.amortized import legacy

    header, sections = read_bitstream(data)
    try:
        entry = by_codec_id(header.codec_id)
    except ValueError as error:
        raise BitstreamError(str(error)) from None
    for section in (SectionId.CONFIG, SectionId.LATENTS):
        if section not in sections:
            raise BitstreamError(f"invalid bitstream: the {section.name} section is missing")
    old = legacy.is_legacy(entry, sections[SectionId.CONFIG])
    if old:
        header, sections = read_bitstream(legacy.upgrade(data))
    crc, quality, fields = parse_config(entry, sections[SectionId.CONFIG], model_crc=model_crc)
    return AmortizedStream(entry, header, crc, quality, fields, sections[SectionId.LATENTS], old)
