"""The container format: round trips, frozen bytes, every kind of bad input, spec agreement."""

from __future__ import annotations

import ast
import re
import struct
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coolchic import bitstream as bs
from coolchic.bitstream import (
    HEADER_FIELDS,
    MAGIC,
    BitstreamError,
    CodecId,
    Field,
    Header,
    SectionId,
    pack_fields,
    read_bitstream,
    unpack_fields,
    write_bitstream,
)

ROOT = Path(__file__).resolve().parents[1]
HEADER = Header(codec_id=CodecId.COOLCHIC, height=3, width=5, channels=3, bit_depth=8)
SECTIONS = [(SectionId.CONFIG, b"\x01\x02"), (SectionId.WEIGHTS, b""),
            (SectionId.LATENTS, b"xyz")]


def forge(sections=(), *, magic=MAGIC, crc=True, **overrides) -> bytes:
    """A stream with arbitrary (unvalidated) header values and, by default, a valid CRC."""
    values = {"format_major": bs.FORMAT_MAJOR, "format_minor": 0, "codec_id": 1, "height": 3, "width": 5,
              "channels": 3, "bit_depth": 8, "section_count": len(sections)}
    values.update(overrides)
    out = bytearray(magic)
    out += b"".join(struct.pack(f.code, values[f.name]) for f in HEADER_FIELDS)
    for section_id, payload in sections:
        out += struct.pack("<B", section_id) + bs.pack_uvarint(len(payload)) + payload
    return bytes(out) + (struct.pack("<I", zlib.crc32(out)) if crc else b"")


def test_a_stream_round_trips_header_and_sections():
    header, sections = read_bitstream(write_bitstream(HEADER, SECTIONS))
    assert header == HEADER
    assert sections == dict(SECTIONS)
    assert all(type(k) is SectionId for k in sections)
    assert type(header.codec_id) is CodecId


def test_the_bytes_of_a_reference_stream_are_frozen():
    golden = bytes.fromhex(
        "43434843" "05" "00" "01" "0300" "0500" "03" "08" "03"
        "01" "02" "0102" "02" "00" "03" "03" "78797a"
    )
    data = write_bitstream(HEADER, SECTIONS)
    assert data[:-4] == golden
    assert data[-4:] == struct.pack("<I", zlib.crc32(golden))
    assert bs.HEADER_BYTES == 14


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, bs.MAX_SIDE), width=st.integers(1, bs.MAX_SIDE),
    channels=st.sampled_from([1, 3]), bit_depth=st.sampled_from([8, 16]),
    payloads=st.lists(st.binary(max_size=40), min_size=0, max_size=3),
)
def test_any_valid_header_and_payloads_round_trip(height, width, channels, bit_depth, payloads):
    if height * width > bs.MAX_PIXELS:
        height = bs.MAX_PIXELS // width
    header = Header(CodecId.COOLCHIC, height, width, channels, bit_depth)
    sections = list(zip(list(SectionId)[: len(payloads)], payloads, strict=False))
    assert read_bitstream(write_bitstream(header, sections)) == (header, dict(sections))


def test_bad_magic_is_refused_first():
    data = write_bitstream(HEADER, SECTIONS)
    with pytest.raises(BitstreamError, match=r"not a coolchic bitstream \(bad magic\)"):
        read_bitstream(b"\x89PNG" + data[4:])
    with pytest.raises(BitstreamError, match="bad magic"):
        read_bitstream(b"hello world, this is a text file")


def test_every_truncation_of_a_stream_raises_a_bitstream_error():
    data = write_bitstream(HEADER, SECTIONS)
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            read_bitstream(data[:n])


def test_a_truncated_section_is_reported_as_truncation():
    data = write_bitstream(HEADER, [(SectionId.CONFIG, b"a" * 1200)])
    with pytest.raises(BitstreamError, match="section 1 declares 1200 bytes, 17 remain"):
        read_bitstream(data[: bs.HEADER_BYTES + 3 + 17 + 4])  # id, 2-byte length, 17 bytes


def test_every_single_byte_corruption_raises_a_bitstream_error():
    data = write_bitstream(HEADER, SECTIONS)
    for i in range(len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x20
        with pytest.raises(BitstreamError):
            read_bitstream(bytes(corrupt))


def test_a_corrupt_payload_gives_a_checksum_mismatch():
    data = bytearray(write_bitstream(HEADER, SECTIONS))
    data[-5] ^= 1
    with pytest.raises(BitstreamError, match="checksum mismatch: the file is corrupt"):
        read_bitstream(bytes(data))


def test_a_newer_major_version_is_refused_with_an_upgrade_message():
    newer = bs.FORMAT_MAJOR + 1
    with pytest.raises(BitstreamError, match=rf"version {newer}\.0 is newer .* upgrade coolchic"):
        read_bitstream(forge(format_major=newer))
    with pytest.raises(BitstreamError, match=r"version 0\.3 is not supported"):
        read_bitstream(forge(format_major=0, format_minor=3))


def test_older_format_streams_are_refused_with_the_version_that_reads_them():
    with pytest.raises(BitstreamError, match=r"version 1\.0 is not supported .*coolchic 0\.1"):
        read_bitstream(forge(format_major=1))
    with pytest.raises(BitstreamError, match=r"version 2\.0 is not supported .*coolchic 0\.2"):
        read_bitstream(forge(format_major=2))


def test_the_version_is_checked_before_the_checksum():
    with pytest.raises(BitstreamError, match="newer"):
        read_bitstream(forge(format_major=7, crc=False) + b"junk")


def test_a_newer_minor_version_is_accepted_and_its_unknown_sections_skipped():
    header, sections = read_bitstream(forge([(1, b"c"), (200, b"new")], format_minor=5))
    assert header == HEADER
    assert sections == {SectionId.CONFIG: b"c"}


def test_unknown_section_ids_are_refused_in_a_stream_of_this_minor_version():
    with pytest.raises(BitstreamError, match="unknown section id 200"):
        read_bitstream(forge([(1, b"c"), (200, b"new")]))


def test_a_repeated_section_is_refused():
    with pytest.raises(BitstreamError, match="section CONFIG appears twice"):
        read_bitstream(forge([(1, b"a"), (1, b"b")]))


def test_bytes_after_the_last_section_are_refused():
    with pytest.raises(BitstreamError, match="5 bytes after the last section"):
        read_bitstream(forge([(1, b"abc")], section_count=0))


@pytest.mark.parametrize("field,value,message", [
    ("height", 0, "'height' is 0, outside 1..65535"),
    ("width", 0, "'width' is 0, outside 1..65535"),
    ("channels", 2, "'channels' is 2, expected one of 1, 3"),
    ("bit_depth", 12, "'bit_depth' is 12, expected one of 8, 16"),
    ("codec_id", 9, "unknown codec id 9"),
    ("codec_id", 0, "'codec_id' is 0, outside"),
])
def test_invalid_header_values_are_refused(field, value, message):
    with pytest.raises(BitstreamError, match=re.escape(message)):
        read_bitstream(forge(**{field: value}))


def test_an_absurd_pixel_count_is_refused_even_when_both_sides_are_allowed():
    with pytest.raises(BitstreamError, match="exceeds the limit of 268435456 pixels"):
        read_bitstream(forge(height=65535, width=65535))


def test_the_writer_refuses_what_the_reader_would_refuse():
    with pytest.raises(ValueError, match="'channels' is 4"):
        write_bitstream(Header(1, 3, 5, 4, 8), [])
    with pytest.raises(ValueError, match="exceeds the limit"):
        write_bitstream(Header(1, 65535, 65535, 3, 8), [])
    with pytest.raises(ValueError, match="unknown codec id 9"):
        write_bitstream(Header(9, 3, 5, 3, 8), [])
    with pytest.raises(ValueError, match="unknown section id 9"):
        write_bitstream(HEADER, [(9, b"")])
    with pytest.raises(ValueError, match="CONFIG is given twice"):
        write_bitstream(HEADER, [(SectionId.CONFIG, b""), (SectionId.CONFIG, b"")])


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32 - 1])
def test_varints_round_trip_in_the_fewest_bytes(value):
    data = bs.pack_uvarint(value)
    assert len(data) == max(1, -(-value.bit_length() // 7))
    assert bs.unpack_uvarint(b"x" + data + b"y", 1, len(data) + 2, limit=2**32 - 1) == (
        value, len(data) + 1)


def test_bad_varints_are_refused():
    limit = bs.MAX_SECTION_BYTES
    with pytest.raises(bs.VarintError, match="ends inside"):
        bs.unpack_uvarint(b"\x80\x80", 0, 2, limit=limit)
    with pytest.raises(bs.VarintError, match="minimal"):
        bs.unpack_uvarint(b"\x81\x00", 0, 2, limit=limit)
    with pytest.raises(bs.VarintError, match="above the limit"):
        bs.unpack_uvarint(bs.pack_uvarint(2**32), 0, 5, limit=limit)
    with pytest.raises(bs.VarintError, match="longer than"):
        bs.unpack_uvarint(b"\xff" * 9 + b"\x01", 0, 10, limit=limit)


def test_a_section_length_that_is_not_a_minimal_varint_is_refused():
    body = bytearray(forge([(1, b"")], crc=False))
    body[-1:] = b"\x80\x00"  # the length 0 in two bytes
    with pytest.raises(BitstreamError, match="length of section 1: a varint is not in its minimal"):
        read_bitstream(bytes(body) + struct.pack("<I", zlib.crc32(body)))


def test_bitstream_errors_are_value_errors_with_one_line_messages():
    assert issubclass(BitstreamError, ValueError)
    with pytest.raises(BitstreamError) as info:
        read_bitstream(forge([(1, b"x" * 10)], crc=False)[:-3])
    assert "\n" not in str(info.value)


RECORD = (Field("a", "<B", 0, 9), Field("b", "<i", -5, 5), Field("c", "<H", 0, 4, (0, 2, 4)))


def test_field_records_round_trip_at_an_offset():
    data = b"pre" + pack_fields(RECORD, {"a": 9, "b": -5, "c": 2}) + b"post"
    assert unpack_fields(RECORD, data, 3) == ({"a": 9, "b": -5, "c": 2}, 3 + 1 + 4 + 2)


def test_field_records_validate_on_write_and_on_read():
    with pytest.raises(ValueError, match="'b' is 6, outside -5..5"):
        pack_fields(RECORD, {"a": 0, "b": 6, "c": 0})
    with pytest.raises(ValueError, match="missing value for field 'c'"):
        pack_fields(RECORD, {"a": 0, "b": 0})
    with pytest.raises(ValueError, match="unknown field"):
        pack_fields(RECORD, {"a": 0, "b": 0, "c": 0, "d": 1})
    with pytest.raises(ValueError, match="must be an integer"):
        pack_fields(RECORD, {"a": 1.0, "b": 0, "c": 0})
    with pytest.raises(BitstreamError, match="'c' is 3, expected one of 0, 2, 4"):
        unpack_fields(RECORD, struct.pack("<BiH", 0, 0, 3))
    with pytest.raises(BitstreamError, match="field 'c' needs 2 bytes, 1 remain"):
        unpack_fields(RECORD, struct.pack("<Bi", 0, 0) + b"\x00")


def test_field_tables_reject_malformed_definitions():
    with pytest.raises(ValueError, match="struct code"):
        Field("x", ">H", 0, 1)
    with pytest.raises(struct.error):
        Field("x", "<B", 0, 256)
    with pytest.raises(ValueError, match="low 3 > high 2"):
        Field("x", "<B", 3, 2)


def test_the_bitstream_module_needs_only_the_standard_library():
    tree = ast.parse((ROOT / "coolchic" / "bitstream.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def _spec_tables() -> dict[str, list[list[str]]]:
    """The first table under each heading of bitstream_spec.md, as rows of cells."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in (ROOT / "bitstream_spec.md").read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not re.fullmatch(r"\|[-| ]+\|", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables.setdefault(heading, []).append(cells)
    return {h: rows[1:] for h, rows in tables.items()}  # drop the column titles


_TYPES = {"u8": "<B", "u16": "<H", "u32": "<I", "i32": "<i"}


def _check_field_rows(rows: list[list[str]], fields: tuple[Field, ...], first: int, prefix: str):
    offset = first
    for row, field in zip(rows, fields, strict=False):
        assert row[0] == f"{prefix}{offset}" and row[1] == field.name, row
        assert _TYPES[row[2]] == field.code, row
        if field.choices is not None:
            assert tuple(int(v) for v in row[3].split(",")) == field.choices, row
        else:
            assert row[3] == f"{field.low}..{field.high}", row
        offset += field.size
    return offset


def test_spec_constants_match_the_code():
    spec = (ROOT / "bitstream_spec.md").read_text()
    tables = _spec_tables()
    assert f"version {bs.FORMAT_MAJOR}.{bs.FORMAT_MINOR}" in spec.splitlines()[0]

    constants = {row[0]: ast.literal_eval(row[1].strip("`")) for row in tables["1.1 Constants"]}
    names = {"MAGIC", "FORMAT_MAJOR", "FORMAT_MINOR", "MAX_SIDE", "MAX_PIXELS", "MAX_SECTIONS",
             "MAX_SECTION_BYTES", "CRC_BYTES"}
    assert set(constants) == names
    for name, value in constants.items():
        assert getattr(bs, name) == value, name

    rows = tables["2.1 Fixed header"]
    assert len(rows) == len(HEADER_FIELDS)
    end = _check_field_rows(rows, HEADER_FIELDS, len(MAGIC), "")
    assert end == bs.HEADER_BYTES
    assert f"magic and header together are {bs.HEADER_BYTES} bytes" in " ".join(spec.split())
    sections = tables["2.2 Sections"]
    end = _check_field_rows(sections[:1], bs.SECTION_FIELDS, 0, "+")
    assert sections[1][:3] == [f"+{end}", "length", "varint"]
    assert sections[1][3] == f"0..{bs.MAX_SECTION_BYTES}"

    assert {r[0]: int(r[1]) for r in tables["3.1 Codec ids"]} == {c.name: c.value for c in CodecId}
    assert {r[0]: int(r[1]) for r in tables["3.2 Section ids"]} == {
        s.name: s.value for s in SectionId}
    for section in SectionId:
        assert re.search(rf"^### 5\.\d+ {section.name}$", spec, re.MULTILINE), section.name
