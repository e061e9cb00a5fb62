"""The CONFIG section of the amortized codecs' streams (spec §5.8): the CRC of the
weights that wrote the stream, the quality, the payload version, then codec fields. Its
own module so that the reader of the first layout (`legacy`) and the current reader
(`codec`) share it without importing each other."""

from __future__ import annotations

import struct

from coolchic.amortized.registry import ModelEntry
from coolchic.bitstream import BitstreamError

CRC = struct.Struct("<I")  # the weights' CRC-32, little-endian
PAYLOAD_VERSION = 2  # CONFIG byte after the quality; the first layout (1) had none
MAX_QUALITY = 100  # largest nominal quality of shipped weights


def parse_config(entry: ModelEntry, config: bytes, *, model_crc: int | None = None
                 ) -> tuple[int, int, bytes]:
    """(model_crc, quality, fields) of a current-layout CONFIG section.

    Raises:
        BitstreamError: too short, another payload version, a quality above MAX_QUALITY,
            or (when `model_crc` is given) weights other than the ones that wrote it.
    """
    if len(config) < CRC.size + 2:
        raise BitstreamError(f"invalid bitstream: the {entry.name.upper()} CONFIG section is too short")
    (crc,) = CRC.unpack_from(config)
    quality, version = config[CRC.size], config[CRC.size + 1]
    if version != PAYLOAD_VERSION:
        raise BitstreamError(f"the {entry.name.upper()} CONFIG has amortized payload version "
                             f"{version}; this coolchic reads {PAYLOAD_VERSION} and the first layout")
    if quality > MAX_QUALITY:
        raise BitstreamError(f"invalid bitstream: the {entry.name.upper()} CONFIG has quality {quality}")
    if model_crc is not None and crc != model_crc:
        raise BitstreamError(f"the stream was written by {entry.name} weights with CRC "
                             f"{crc:08x}; this coolchic has {model_crc:08x}")
    return crc, quality, config[CRC.size + 2 :]
