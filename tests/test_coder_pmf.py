"""Symbols with their own integer PMF rows through `coolchic.entropy.coder` (the amortized
codecs' entry points): exact round trips in any chunking, the one-stream container, the
ideal rate, concatenated streams, and bad input."""

import numpy as np
import pytest

from coolchic.amortized.probability import pmf_from_logits
from coolchic.bitstream import pack_uvarint
from coolchic.entropy.coder import (
    MAX_PMF_ALPHABET,
    EntropyError,
    SymbolDecoder,
    SymbolEncoder,
    checked_pmf,
    inline_stream_end,
    pmf_rate_bits,
)
from coolchic.entropy.tables import PROB_BITS


def _rows(rng, n: int, alphabet: int) -> np.ndarray:
    return pmf_from_logits(rng.integers(-120, 120, (n, alphabet)))


def _draw(rng, pmf: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(pmf, axis=1)
    u = rng.integers(0, 1 << PROB_BITS, pmf.shape[0])[:, None]
    return (u >= cdf).sum(axis=1)


@pytest.mark.parametrize("alphabet", [2, 7, 300])
def test_pmf_symbols_round_trip_exactly_in_any_chunking_and_cost_their_ideal_length(alphabet):
    rng = np.random.default_rng(alphabet)
    pmf = _rows(rng, 500, alphabet)
    symbols = _draw(rng, pmf)
    encoder = SymbolEncoder(inline_escapes=True)
    for part in np.array_split(np.arange(500), 3):
        encoder.encode_pmf(symbols[part], pmf[part])
    data = encoder.finish()
    decoder = SymbolDecoder(data, inline_escapes=True)
    out = np.concatenate([decoder.decode_pmf(pmf[part]) for part in np.array_split(np.arange(500), 7)])
    decoder.finish()
    assert np.array_equal(out, symbols) and out.dtype == np.int64
    ideal = pmf_rate_bits(symbols, pmf)
    assert ideal <= 8 * len(data) <= ideal + 8 * (4 + len(pack_uvarint(len(data) // 4)))


def test_the_container_is_a_varint_word_count_then_the_words():
    rng = np.random.default_rng(0)
    pmf = _rows(rng, 300, 5)
    encoder = SymbolEncoder(inline_escapes=True)
    encoder.encode_pmf(_draw(rng, pmf), pmf)
    data = encoder.finish()
    words = (len(data) - 1) // 4
    assert data[:1] == pack_uvarint(words) and len(data) == 1 + 4 * words
    assert SymbolEncoder(inline_escapes=True).finish() == b"\x00"


def test_concatenated_streams_are_split_by_their_word_counts_and_a_cut_one_is_refused():
    rng = np.random.default_rng(1)
    streams = []
    for n in (0, 40, 900):
        pmf = _rows(rng, n, 3)
        encoder = SymbolEncoder(inline_escapes=True)
        encoder.encode_pmf(_draw(rng, pmf), pmf)
        streams.append(encoder.finish())
    data = b"".join(streams)
    offset, found = 0, []
    while offset < len(data):
        end = inline_stream_end(data, offset)
        found.append(data[offset:end])
        offset = end
    assert found == streams
    with pytest.raises(EntropyError, match="truncated"):
        inline_stream_end(data[:-1], len(streams[0]) + len(streams[1]))
    with pytest.raises(EntropyError, match="bad main stream length"):
        inline_stream_end(b"\x80", 0)


def test_bad_rows_or_symbols_raise_value_error_and_bad_data_entropy_error():
    good = pmf_from_logits(np.zeros((2, 4), np.int64))
    encoder = SymbolEncoder(inline_escapes=True)
    cases = [
        (np.array([0, 1]), good[:, :3], "sum to 2"),
        (np.array([0, 1]), good.astype(np.float64), "integers"),
        (np.array([0, 4]), good, r"lie in \[0, 4\)"),
        (np.array([0]), good, r"\(1, A\)"),
        (np.array([0, 0]), np.full((2, MAX_PMF_ALPHABET + 1), 1), "2 <= A"),
    ]
    for symbols, pmf, message in cases:
        with pytest.raises(ValueError, match=message):
            encoder.encode_pmf(symbols, pmf)
    with pytest.raises(ValueError, match="sum to 2"):
        checked_pmf(good - 1, 2)
    decoder = SymbolDecoder(pack_uvarint(2) + b"\xff" * 8, inline_escapes=True)
    with pytest.raises((EntropyError, ValueError)):
        decoder.decode_pmf(good)
        decoder.finish()
    assert SymbolDecoder(b"\x00", inline_escapes=True).decode_pmf(good[:0]).shape == (0,)
