"""Streams of the first amortized payload layout (payload version 1): read, and written for tests.

The first CWIC, CCN and CPM streams differ from the current ones (bitstream_spec.md §5.8)
only in their framing, never in their coded words:

* CONFIG had no payload_version byte: ``u32 model_crc | u8 quality | codec fields``;
* every symbol stream was ``u32 n_words | n_words words`` instead of the
  `coolchic.entropy.coder` container ``varint n_words | n_words words``;
* CWIC's importance-map stream, when present, was preceded by its length as a u32.

So `upgrade` rewrites such a stream in the current layout losslessly (same words, same
decoded image), and `codec.read_stream` decodes old files through it; `downgrade` is the
first layout's writer, kept so that tests can make old files from new ones. A stream is of
the first layout when its CONFIG has exactly the first layout's length (the current layout
is one byte longer for every codec).
"""

from __future__ import annotations

import struct

from coolchic.amortized.layout import MAX_QUALITY, PAYLOAD_VERSION, parse_config
from coolchic.amortized.registry import ModelEntry, by_codec_id
from coolchic.bitstream import (
    BitstreamError,
    SectionId,
    pack_uvarint,
    read_bitstream,
    unpack_uvarint,
    write_bitstream,
)
from coolchic.entropy.coder import EntropyError, inline_stream_end

_U32 = struct.Struct("<I")
# Codec fields of the first layout after u32 model_crc and u8 quality, in bytes.
LEGACY_FIELDS = {"cwic": 1, "ccn": 0, "cpm": 0}  # cwic: u8 use_map


def is_legacy(entry: ModelEntry, config: bytes) -> bool:
    """Whether a CONFIG section of `entry`'s codec has the first layout."""
    fields = LEGACY_FIELDS.get(entry.name)
    return fields is not None and len(config) == _U32.size + 1 + fields


def _stream_count(entry: ModelEntry, fields: bytes) -> int:
    """Symbol streams in LATENTS: 2 for CWIC with its importance map, else 1."""
    if entry.name != "cwic":
        return 1
    if fields[0] > 1:
        raise BitstreamError(f"invalid bitstream: CWIC use_map is {fields[0]}")
    return 1 + fields[0]


def _old_words(data: bytes, what: str) -> bytes:
    """The words of one whole first-layout stream ``u32 n | n words``."""
    if len(data) < _U32.size:
        raise BitstreamError(f"invalid bitstream: the {what} ends inside its word count")
    (count,) = _U32.unpack_from(data)
    if len(data) != _U32.size + 4 * count:
        raise BitstreamError(f"invalid bitstream: the {what} declares {count} words in "
                             f"{len(data) - _U32.size} bytes")
    return data[_U32.size :]


def upgrade(data: bytes) -> bytes:
    """Rewrite a first-layout CWIC, CCN or CPM stream in the current layout (same words).

    Raises:
        BitstreamError: not a valid first-layout amortized stream.
    """
    header, sections = read_bitstream(data)
    try:
        entry = by_codec_id(header.codec_id)
    except ValueError as error:
        raise BitstreamError(str(error)) from None
    config, latents = sections.get(SectionId.CONFIG, b""), sections.get(SectionId.LATENTS)
    if latents is None or not is_legacy(entry, config):
        raise BitstreamError(f"not a {entry.name} stream of the first amortized layout")
    fields = config[_U32.size + 1 :]
    if config[_U32.size] > MAX_QUALITY:
        raise BitstreamError(f"invalid bitstream: the {entry.name.upper()} CONFIG has quality "
                             f"{config[_U32.size]}")
    if _stream_count(entry, fields) == 2:
        if len(latents) < _U32.size:
            raise BitstreamError("invalid bitstream: the importance map's length is missing")
        (n,) = _U32.unpack_from(latents)
        if n > len(latents) - _U32.size:
            raise BitstreamError("invalid bitstream: the importance map's stream is truncated")
        streams = [latents[_U32.size : _U32.size + n], latents[_U32.size + n :]]
    else:
        streams = [latents]
    codes = b""
    for index, stream in enumerate(streams):
        words = _old_words(stream, f"symbol stream {index + 1}")
        codes += pack_uvarint(len(words) // 4) + words
    new_config = config[: _U32.size + 1] + bytes((PAYLOAD_VERSION,)) + fields
    return write_bitstream(header, [(SectionId.CONFIG, new_config), (SectionId.LATENTS, codes)])


def downgrade(data: bytes) -> bytes:
    """The first layout's writer: a current CWIC, CCN or CPM stream rewritten as coolchic
    wrote it before payload version 2 (same words).

    Raises:
        BitstreamError: not a valid current-layout stream of those codecs.
    """
    header, sections = read_bitstream(data)
    try:
        entry = by_codec_id(header.codec_id)
    except ValueError as error:
        raise BitstreamError(str(error)) from None
    if entry.name not in LEGACY_FIELDS or SectionId.LATENTS not in sections:
        raise BitstreamError(f"{entry.name} streams have no first layout")
    crc, quality, fields = parse_config(entry, sections.get(SectionId.CONFIG, b""))
    if len(fields) != LEGACY_FIELDS[entry.name]:
        raise BitstreamError(f"invalid bitstream: the {entry.name} CONFIG fields have the wrong size")
    latents, offset, streams = sections[SectionId.LATENTS], 0, []
    try:
        for _ in range(_stream_count(entry, fields)):
            end = inline_stream_end(latents, offset)
            count, start = unpack_uvarint(latents, offset, end, limit=end)  # checked just above
            streams.append(_U32.pack(count) + latents[start:end])
            offset = end
    except EntropyError as error:
        raise BitstreamError(f"invalid bitstream: {error}") from None
    if offset != len(latents):
        raise BitstreamError("invalid bitstream: bytes after the last symbol stream")
    codes = (_U32.pack(len(streams[0])) + b"".join(streams)) if len(streams) == 2 else streams[0]
    old_config = _U32.pack(crc) + bytes((quality,)) + fields
    return write_bitstream(header, [(SectionId.CONFIG, old_config), (SectionId.LATENTS, codes)])
