"""The self-describing coolchic container: magic, version, fixed header, sections, CRC-32.

``bitstream_spec.md`` is the normative description; this module implements it and a test
checks that the two agree. Every integer is little-endian. The fixed header is written and
parsed from one declarative table, ``HEADER_FIELDS``; the same small machinery
(``Field``, ``pack_fields``, ``unpack_fields``) serializes the records inside section
payloads.

Reading checks, in this order, and stops at the first failure with a one-sentence
``BitstreamError``: magic, format version, lengths and checksum, header field ranges,
codec id, image size, section ids. Nothing is allocated from a header value before it has
been validated. This module is pure stdlib: the decoder can parse a header without torch.

Format 2 is format 1 made compact (a file of the quick protocol's lowest rate is about
1 KB, so every framing byte is about 0.1 % of its rate): u8 codec id and u16 sizes in the
fixed header, section lengths as unsigned LEB128 varints (`pack_uvarint`), 14 bytes of
magic and header instead of 19. Symbol streams (`coolchic.entropy.coder`) shrank the same
way.
"""

from __future__ import annotations

import operator
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"CCHC"
FORMAT_MAJOR = 5  # bumped for incompatible changes: older decoders refuse the stream
# Older majors read as they are: a 4.0 stream is a 5.0 stream without learned upsampling.
READ_AS_CURRENT = (4,)
FORMAT_MINOR = 0  # bumped for backward-compatible additions (new optional sections)
MAX_SIDE = 65535  # largest height or width, in pixels
MAX_PIXELS = 1 << 28  # largest height * width
MAX_SECTIONS = 255  # the section count is a u8
MAX_SECTION_BYTES = (1 << 32) - 1  # largest section length (a varint of at most 5 bytes)
CRC_BYTES = 4  # trailing zlib.crc32 of every preceding byte, u32


class BitstreamError(ValueError):
    """The data is not a valid coolchic bitstream; the message is one sentence."""


class VarintError(ValueError):
    """A varint runs past its data, is not minimal, or exceeds its limit; one sentence."""


def pack_uvarint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant group first; every byte but the
    last has its high bit set. 0..127 take 1 byte, up to 16383 2 bytes, up to 2^32 - 1 5."""
    if value < 0:
        raise ValueError(f"a varint holds a non-negative integer, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def unpack_uvarint(data: bytes, offset: int, end: int, *, limit: int) -> tuple[int, int]:
    """Read a `pack_uvarint` value from ``data[offset:end]``; returns (value, new offset).

    Only the minimal encoding is accepted (no final 0x00 byte after the first), so each
    value has exactly one encoding; at most ``limit.bit_length()`` bits are read.

    Raises:
        VarintError: the data ends inside the varint, it is not minimal, or value > limit.
    """
    value, shift, start = 0, 0, offset
    while True:
        if offset >= end:
            raise VarintError("the data ends inside a varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= limit.bit_length() + 7:
            raise VarintError(f"a varint is longer than a value up to {limit} needs")
    if byte == 0 and offset - start > 1:
        raise VarintError("a varint is not in its minimal encoding")
    if value > limit:
        raise VarintError(f"a varint holds {value}, above the limit {limit}")
    return value, offset


class CodecId(IntEnum):
    """Registry of codecs; an id, once published, keeps its meaning forever."""

    COOLCHIC = 1
    CWIC = 2  # amortized: content-weighted image compression (Li et al., CVPR 2018)
    CCN = 3  # amortized: context-based convolutional entropy model (Li et al., TIP 2020)
    CPM = 4  # amortized: conditional probability models (Mentzer et al., CVPR 2018)
    PROGRESSIVE = 5  # amortized: CWIC's codes in embedded layers (Johnston et al., CVPR 2018)


class SectionId(IntEnum):
    """Registry of sections; payload formats are defined by the codec modules."""

    CONFIG = 1
    WEIGHTS = 2
    LATENTS = 3


_INT_CODES = frozenset("bBhHiIqQ")


@dataclass(frozen=True)
class Field:
    """One little-endian integer of a record, with the values a valid record may hold.

    ``code`` is a ``struct`` format such as ``"<B"`` (u8), ``"<H"`` (u16), ``"<I"`` (u32)
    or ``"<i"`` (i32). The value must lie in ``low..high`` and, when ``choices`` is given,
    be one of them.
    """

    name: str
    code: str
    low: int
    high: int
    choices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.code) != 2 or self.code[0] != "<" or self.code[1] not in _INT_CODES:
            raise ValueError(f"field {self.name!r}: struct code must be '<' + one of "
                             f"{''.join(sorted(_INT_CODES))}, got {self.code!r}")
        struct.pack(self.code, self.low)  # the limits must fit the integer type
        struct.pack(self.code, self.high)
        if self.low > self.high:
            raise ValueError(f"field {self.name!r}: low {self.low} > high {self.high}")

    @property
    def size(self) -> int:
        return struct.calcsize(self.code)

    def problem(self, value: int) -> str | None:
        """Why `value` is not allowed in this field, or None when it is."""
        if not self.low <= value <= self.high:
            return f"field {self.name!r} is {value}, outside {self.low}..{self.high}"
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            return f"field {self.name!r} is {value}, expected one of {allowed}"
        return None


def _n_bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


def pack_fields(fields: Sequence[Field], values: Mapping[str, int]) -> bytes:
    """Serialize `values` in the order of `fields`.

    Raises:
        ValueError: a value is missing, unknown, not an integer or out of its field's range.
    """
    unknown = set(values) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    out = bytearray()
    for f in fields:
        if f.name not in values:
            raise ValueError(f"missing value for field {f.name!r}")
        try:
            if isinstance(values[f.name], bool):
                raise TypeError
            value = operator.index(values[f.name])
        except TypeError:
            raise ValueError(f"field {f.name!r} must be an integer, "
                             f"got {type(values[f.name]).__name__}") from None
        problem = f.problem(value)
        if problem:
            raise ValueError(problem)
        out += struct.pack(f.code, value)
    return bytes(out)


def _decode_fields(fields: Sequence[Field], data: bytes, offset: int) -> tuple[dict[str, int], int]:
    values = {}
    for f in fields:
        if offset + f.size > len(data):
            remain = max(0, len(data) - offset)
            raise BitstreamError(f"truncated bitstream: field {f.name!r} needs {_n_bytes(f.size)}, "
                                 f"{remain} remain")
        (values[f.name],) = struct.unpack_from(f.code, data, offset)
        offset += f.size
    return values, offset


def unpack_fields(
    fields: Sequence[Field], data: bytes, offset: int = 0
) -> tuple[dict[str, int], int]:
    """Parse one record of `fields` from `data` at `offset`; returns (values, new offset).

    Raises:
        BitstreamError: the data ends inside the record or a value is out of range.
    """
    values, end = _decode_fields(fields, data, offset)
    for f in fields:
        problem = f.problem(values[f.name])
        if problem:
            raise BitstreamError(f"invalid bitstream: {problem}")
    return values, end


# The fixed header after the magic; bitstream_spec.md lists the same table.
HEADER_FIELDS: tuple[Field, ...] = (
    Field("format_major", "<B", 0, 255),
    Field("format_minor", "<B", 0, 255),
    Field("codec_id", "<B", 1, 255),  # must also be registered in CodecId
    Field("height", "<H", 1, MAX_SIDE),  # pixels
    Field("width", "<H", 1, MAX_SIDE),  # pixels
    Field("channels", "<B", 1, 3, choices=(1, 3)),  # gray or RGB
    Field("bit_depth", "<B", 8, 16, choices=(8, 16)),  # bits per sample
    Field("section_count", "<B", 0, MAX_SECTIONS),
)
# A section: these fields, then its length (payload bytes that follow, up to
# MAX_SECTION_BYTES) as a varint, then the payload.
SECTION_FIELDS: tuple[Field, ...] = (
    Field("section_id", "<B", 1, 255),  # must also be registered in SectionId
)
HEADER_BYTES = len(MAGIC) + sum(f.size for f in HEADER_FIELDS)
_SECTION_HEADER_BYTES = sum(f.size for f in SECTION_FIELDS) + 1  # shortest: a 1-byte length
_CODEC_IDS = frozenset(CodecId)
_SECTION_IDS = frozenset(SectionId)
_VERSION_FIELDS = HEADER_FIELDS[:2]
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class Header:
    """What a decoder must know before reading any section."""

    codec_id: int  # a CodecId
    height: int  # pixels
    width: int  # pixels
    channels: int  # 1 (gray) or 3 (RGB)
    bit_depth: int  # 8 or 16 bits per sample


def peek_codec(data: bytes | str | os.PathLike) -> int | None:
    """The codec id in a stream's fixed header, read without any check (a progressive
    stream cut at a layer boundary is no complete container); None when the data or file
    does not start like a coolchic stream."""
    if isinstance(data, (str, os.PathLike)):
        try:
            with open(data, "rb") as f:
                data = f.read(HEADER_BYTES)
        except OSError:
            return None
    offset = len(MAGIC) + 2  # after the magic and the version bytes
    if not bytes(data).startswith(MAGIC) or len(data) <= offset:
        return None
    return data[offset]


def _header_problem(values: Mapping[str, int]) -> str | None:
    if values["codec_id"] not in _CODEC_IDS:
        known = ", ".join(f"{c.value} ({c.name.lower()})" for c in CodecId)
        return f"unknown codec id {values['codec_id']}; this version of coolchic knows {known}"
    pixels = values["height"] * values["width"]
    if pixels > MAX_PIXELS:
        return (f"image of {values['height']}x{values['width']} pixels exceeds the limit of "
                f"{MAX_PIXELS} pixels")
    return None


def write_bitstream(header: Header, sections: Sequence[tuple[int, bytes]]) -> bytes:
    """Assemble a complete bitstream: magic, header, sections in the given order, CRC-32.

    Args:
        header: image size and codec; validated against the header field table.
        sections: (SectionId, payload) pairs; ids must be registered and distinct.

    Raises:
        ValueError: an invalid header, unknown or repeated section id, or oversized payload.
    """
    values = {"format_major": FORMAT_MAJOR, "format_minor": FORMAT_MINOR,
              "codec_id": int(header.codec_id), "height": header.height,
              "width": header.width, "channels": header.channels,
              "bit_depth": header.bit_depth, "section_count": len(sections)}
    out = bytearray(MAGIC)
    out += pack_fields(HEADER_FIELDS, values)
    problem = _header_problem(values)
    if problem:
        raise ValueError(problem)
    seen: set[int] = set()
    for section_id, payload in sections:
        if section_id not in _SECTION_IDS:
            raise ValueError(f"unknown section id {section_id}")
        if section_id in seen:
            raise ValueError(f"section {SectionId(section_id).name} is given twice")
        seen.add(section_id)
        if len(payload) > MAX_SECTION_BYTES:
            raise ValueError(f"section {SectionId(section_id).name} holds {len(payload)} bytes, "
                             f"above the limit of {MAX_SECTION_BYTES}")
        out += pack_fields(SECTION_FIELDS, {"section_id": int(section_id)})
        out += pack_uvarint(len(payload))
        out += payload
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


def _check_version(data: bytes, expected: int = FORMAT_MAJOR) -> int:
    """Refuse streams of another major version; returns the stream's minor version."""
    version, _ = _decode_fields(_VERSION_FIELDS, data, len(MAGIC))
    major, minor = version["format_major"], version["format_minor"]
    if major > FORMAT_MAJOR:
        raise BitstreamError(f"bitstream version {major}.{minor} is newer than this decoder "
                             f"({FORMAT_MAJOR}.x); upgrade coolchic")
    if major != expected and not (expected == FORMAT_MAJOR and major in READ_AS_CURRENT):
        hint = {1: "; decode it with coolchic 0.1",
                2: "; rewrite it losslessly with `coolchic upgrade`, or decode it with coolchic 0.2",
                3: "; rewrite it losslessly with `coolchic upgrade`, or decode it with coolchic 0.3",
                }.get(major, "") if expected == FORMAT_MAJOR else ""
        raise BitstreamError(f"bitstream version {major}.{minor} is not supported by this "
                             f"{'decoder' if expected == FORMAT_MAJOR else 'reader'} "
                             f"({expected}.x){hint}")
    return minor


def _split_sections(data: bytes, count: int) -> list[tuple[int, bytes]]:
    """Section (id, payload) pairs between the header and the CRC, checking lengths only."""
    end = len(data) - CRC_BYTES
    offset, sections = HEADER_BYTES, []
    for index in range(1, count + 1):
        if offset + _SECTION_HEADER_BYTES > end:
            raise BitstreamError(f"truncated bitstream: section {index} of {count} is missing")
        raw, offset = _decode_fields(SECTION_FIELDS, data, offset)
        try:
            length, offset = unpack_uvarint(data, offset, end, limit=MAX_SECTION_BYTES)
        except VarintError as exc:
            raise BitstreamError(f"invalid bitstream: the length of section {index}: {exc}") from None
        if length > end - offset:
            raise BitstreamError(f"truncated bitstream: section {index} declares "
                                 f"{_n_bytes(length)}, {end - offset} remain")
        sections.append((raw["section_id"], data[offset : offset + length]))
        offset += length
    if offset != end:
        raise BitstreamError(f"invalid bitstream: {_n_bytes(end - offset)} after the last "
                             "section")
    return sections


def read_bitstream(data: bytes, *, major: int = FORMAT_MAJOR) -> tuple[Header, dict[int, bytes]]:
    """Validate and split a bitstream (of major version `major`: the container of §2 is
    the same since 2.0, so `coolchic.legacy` reads 2.0 files with it).

    Sections with an unknown id are refused, except in a stream of a newer minor version,
    where the version policy makes them optional additions: they are skipped.

    Returns:
        The header and a mapping SectionId -> payload bytes.

    Raises:
        BitstreamError: the first problem found, in the order given in the module docstring.
    """
    data = bytes(data)
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise BitstreamError(f"truncated bitstream: {_n_bytes(len(data))}, shorter than "
                                 "the magic")
        raise BitstreamError("not a coolchic bitstream (bad magic)")
    minor = _check_version(data, major)
    if len(data) < HEADER_BYTES + CRC_BYTES:
        raise BitstreamError(f"truncated bitstream: {_n_bytes(len(data))}, the header and "
                             f"checksum need {HEADER_BYTES + CRC_BYTES}")
    raw, _ = _decode_fields(HEADER_FIELDS, data, len(MAGIC))
    if zlib.crc32(data[:-CRC_BYTES]) != _CRC.unpack_from(data, len(data) - CRC_BYTES)[0]:
        _split_sections(data, raw["section_count"])  # a truncated file says so
        raise BitstreamError("checksum mismatch: the file is corrupt")

    values, _ = unpack_fields(HEADER_FIELDS, data, len(MAGIC))
    problem = _header_problem(values)
    if problem:
        raise BitstreamError(f"invalid bitstream: {problem}")
    sections: dict[int, bytes] = {}
    for section_id, payload in _split_sections(data, values["section_count"]):
        if section_id not in _SECTION_IDS:
            if minor > FORMAT_MINOR:
                continue
            raise BitstreamError(f"invalid bitstream: unknown section id {section_id}")
        if section_id in sections:
            raise BitstreamError(f"invalid bitstream: section {SectionId(section_id).name} "
                                 "appears twice")
        sections[SectionId(section_id)] = payload
    header = Header(codec_id=CodecId(values["codec_id"]), height=values["height"],
                    width=values["width"], channels=values["channels"],
                    bit_depth=values["bit_depth"])
    return header, sections
