"""Registry of the amortized models, their codec ids, and their container."""

import numpy as np
import pytest

from coolchic.amortized import registry
from coolchic.amortized.codec import (
    PAYLOAD_VERSION,
    model_input,
    model_output,
    read_stream,
    weights_crc,
    write_stream,
)
from coolchic.bitstream import BitstreamError, CodecId, Header, SectionId, read_bitstream, write_bitstream

# Published ids: never change a line of this table, only append.
PUBLISHED = {"cwic": 2, "ccn": 3, "cpm": 4, "progressive": 5}


def test_model_ids_are_the_published_ones_and_registered_as_codec_ids():
    assert {e.name: e.codec_id for e in registry.MODELS} == PUBLISHED
    for entry in registry.MODELS:
        if entry.codec_id is not None:
            assert CodecId(entry.codec_id).name == entry.name.upper()
            assert registry.by_codec_id(entry.codec_id) is entry
    assert len(set(registry.names())) == len(registry.MODELS)


def test_unknown_names_and_ids_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="expected one of cwic, ccn, cpm, progressive"):
        registry.get("bpg")
    with pytest.raises(ValueError, match="not an amortized codec"):
        registry.by_codec_id(CodecId.COOLCHIC)
    assert all(entry.available for entry in registry.MODELS)
    future = registry.ModelEntry("future", None, "A later paper", "Someone, 2030", None)
    with pytest.raises(ValueError, match="'future' .* is not implemented"):
        future.load()


def test_the_container_round_trips_and_names_the_model():
    entry = registry.get("cwic")
    data = write_stream(entry, height=5, width=7, model_crc=0xDEADBEEF, quality=9, fields=b"\x01\x02",
                        codes=b"abc")
    stream = read_stream(data, model_crc=0xDEADBEEF)
    assert stream.entry is entry and stream.header.codec_id == CodecId.CWIC
    assert (stream.header.height, stream.header.width, stream.header.channels) == (5, 7, 3)
    assert (stream.quality, stream.fields, stream.codes, stream.legacy) == (9, b"\x01\x02", b"abc", False)
    _, sections = read_bitstream(data)
    assert sections[SectionId.CONFIG] == b"\xef\xbe\xad\xde" + bytes((9, PAYLOAD_VERSION)) + b"\x01\x02"
    gray = write_stream(registry.get("ccn"), height=5, width=7, model_crc=0, quality=0, codes=b"",
                        channels=1)
    assert read_stream(gray).header.channels == 1


def test_a_stream_of_other_weights_or_another_codec_or_a_missing_section_is_refused():
    entry = registry.get("ccn")
    data = write_stream(entry, height=5, width=7, model_crc=1, quality=0, codes=b"")
    with pytest.raises(BitstreamError, match="written by ccn weights with CRC 00000001"):
        read_stream(data, model_crc=2)
    coolchic = write_bitstream(Header(CodecId.COOLCHIC, 5, 7, 3, 8), [])
    with pytest.raises(BitstreamError, match="not an amortized codec"):
        read_stream(coolchic)
    no_codes = write_bitstream(Header(CodecId.CPM, 5, 7, 3, 8), [(SectionId.CONFIG, b"\0" * 4)])
    with pytest.raises(BitstreamError, match="LATENTS section is missing"):
        read_stream(no_codes)
    with pytest.raises(ValueError, match="quality must lie in 0..100"):
        write_stream(entry, height=1, width=1, model_crc=0, quality=101, codes=b"")


def test_the_gray_output_is_the_rounded_mean_of_the_decoded_rgb():
    rgb = np.array([[[0, 0, 1], [0, 1, 1], [255, 255, 254], [10, 20, 30]]], dtype=np.uint8)
    assert model_output(rgb, 3) is rgb
    assert model_output(rgb, 1)[..., 0].tolist() == [[0, 1, 255, 20]]
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    rgb_in, channels = model_input(gray)
    assert channels == 1 and rgb_in.shape == (2, 3, 3) and np.all(rgb_in == gray)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(H, W, 1\)"):
        model_input(np.zeros((2, 3, 2), np.uint8))


def test_weights_crc_depends_on_every_value_and_on_the_kind_of_number():
    a = [np.arange(6).reshape(2, 3), np.array([0.5, -1.0])]
    b = [np.arange(6).reshape(2, 3), np.array([0.5, -1.5])]
    assert weights_crc(a) != weights_crc(b)
    assert weights_crc([np.arange(3)]) != weights_crc([np.arange(3.0)])
    assert weights_crc(a) == weights_crc([x.copy() for x in a])
