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

import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from coolchic.amortized.layout import CRC, MAX_QUALITY, PAYLOAD_VERSION, parse_config
from coolchic.amortized.registry import ModelEntry, by_codec_id
from coolchic.bitstream import BitstreamError, Header, SectionId, read_bitstream, write_bitstream

MAX_PIXELS = 1 << 26  # beyond, the code tensors and context features grow past a few GB


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
    config = CRC.pack(model_crc) + bytes((quality, PAYLOAD_VERSION)) + fields
    return write_bitstream(header, [(SectionId.CONFIG, config), (SectionId.LATENTS, codes)])


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


def image8(image: np.ndarray | str | os.PathLike, codec: str) -> np.ndarray:
    """uint8 (H, W, C), C = 3 (RGB) or 1 (gray), of an 8-bit image (array or file) for
    amortized codec `codec`.

    Raises:
        ValueError: unreadable, not 8-bit, not RGB/gray, or too large (one line).
    """
    if isinstance(image, (str, os.PathLike)):
        from coolchic.io import read_image

        image, bit_depth = read_image(image)
        if bit_depth != 8:
            raise ValueError(f"the {codec} codec codes 8-bit images, this one is {bit_depth}-bit")
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"the {codec} codec codes uint8 RGB or gray images, got {image.shape} "
                         f"{image.dtype}")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ValueError(f"images above {MAX_PIXELS} pixels are not supported by the amortized codecs")
    return image


def rgb8(image: np.ndarray | str | os.PathLike, codec: str) -> np.ndarray:
    """`image8` with gray repeated to 3 channels: uint8 (H, W, 3), what the models see."""
    array = image8(image, codec)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
