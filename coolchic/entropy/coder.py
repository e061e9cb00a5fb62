"""Range coding of latent symbols with exact integer tables (constriction 0.5.0, no torch).

A latent value ``y`` is coded relative to its integer centre ``m`` with the table row
``row`` (see `coolchic.entropy.tables`): the main symbol ``s`` in ``0..ALPHABET-1``, and
for the two escape symbols an extra ``|y - m| - RADIUS >= 0``.

Two range-coded streams:

* main: one symbol per latent, Categorical rows passed per call (constriction model family);
* escape: the extras in coding order, Exp-Golomb order 0 over uniform binary symbols.

Keeping the extras out of the main stream makes the decoder free to decode in any chunking
(e.g. one wavefront at a time) whatever chunking the encoder used.

Exactness: constriction 0.5 takes float weights, but ``Categorical(perfect=False)`` given
``w = q - 1`` with ``sum(q) = 2**24`` codes exactly the integer PMF ``q`` (its internal
scale factor is 1.0 and every partial sum is an integer below 2**24). Tests pin this by
reading the cumulative frequencies back out of the compressed words.

Symbols with their own integer PMF rows (`SymbolEncoder.encode_pmf`): the amortized codecs
(`coolchic.amortized`) compute one PMF per symbol from their context networks, over
alphabets of 2..`MAX_PMF_ALPHABET` symbols; the rows go to the same constriction family
with the same ``q - 1`` convention. They use the one-stream container (``inline_escapes``).

Container (`SymbolEncoder.finish`): ``varint n_main, varint n_escape, n_main words,
n_escape words`` (words little-endian uint32). Format 1 spent two u32 counts; varints take
1-2 bytes each for the files of a few KB where framing matters. Both counts are kept: with
the escape stream's length implied by what remains, a cut at a word boundary decoded
silently to wrong values (measured on 300 latents: 3 of 225 cuts).
"""

from __future__ import annotations

import functools

import constriction
import numpy as np

from coolchic.bitstream import VarintError, pack_uvarint, unpack_uvarint
from coolchic.entropy.tables import ALPHABET, N_ROWS, PROB_BITS, RADIUS, flat_table

MAX_EXTRA = 1 << 20  # largest escape extra |y - m| - RADIUS; bounds decode time on bad data
MAX_PREFIX = MAX_EXTRA.bit_length() - 1  # Exp-Golomb zero-prefix length of MAX_EXTRA + 1
_MAX_WORDS = (1 << 30) - 1  # largest stream, in words (4 GiB)
_VALUE_LIMIT = 1 << 62  # |y| and |m| bound, so that y - m and m + d cannot overflow int64
_LOW_ESCAPE = 0
_HIGH_ESCAPE = 2 * RADIUS
_POW2 = 1 << np.arange(MAX_PREFIX + 2, dtype=np.int64)  # (22,) for floor(log2(v))
# Uniform binary model q = [2**23, 2**23], passed as weights q - 1 like the main table.
_BIT_WEIGHTS = np.full(2, (1 << (PROB_BITS - 1)) - 1, dtype=np.float64)
MAX_PMF_ALPHABET = 1 << 12  # largest alphabet of a row given to `SymbolEncoder.encode_pmf`


class EntropyError(ValueError):
    """Compressed symbol data is corrupt, truncated or inconsistent with the request."""


@functools.cache
def _weight_table() -> np.ndarray:
    """Constriction weights ``q - 1``; float64 (N_ROWS, ALPHABET), read-only."""
    weights = (flat_table() - 1).astype(np.float64)
    weights.setflags(write=False)
    return weights


def _weights(rows: np.ndarray) -> np.ndarray:
    """Constriction weights ``q - 1`` of the table rows `rows`: float64 (N, ALPHABET). Small
    requests (a decoder's waves and weights) convert only their rows: the whole table, 2.3
    MB of floats, cost the first decode of a process 10-30 ms; large ones (an encoder's
    latents) gather from the whole table, converted once."""
    if rows.size > N_ROWS:
        return _weight_table().take(rows, axis=0)
    weights = flat_table().take(rows, axis=0)
    weights -= 1
    return weights.astype(np.float64)


@functools.cache
def _cost_table() -> np.ndarray:
    """Ideal code length ``PROB_BITS - log2(q)`` in bits; float64 (N_ROWS, ALPHABET)."""
    cost = PROB_BITS - np.log2(flat_table().astype(np.float64))
    cost.setflags(write=False)
    return cost


def _int_array(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ValueError(
            f"{name} must be a 1-D integer array, got shape {array.shape} dtype {array.dtype}"
        )
    return array.astype(np.int64, copy=False)


def _bounded(name: str, array: np.ndarray) -> np.ndarray:
    array = _int_array(name, array)
    if array.size and (array.min() <= -_VALUE_LIMIT or array.max() >= _VALUE_LIMIT):
        raise ValueError(f"{name} must lie strictly between -2**62 and 2**62")
    return array


def _checked_rows(rows: np.ndarray, n: int) -> np.ndarray:
    rows = _int_array("rows", rows)
    if rows.shape != (n,):
        raise ValueError(f"rows has shape {rows.shape}, expected ({n},) like the other arrays")
    if n and (rows.min() < 0 or rows.max() >= N_ROWS):
        raise ValueError(f"rows must lie in [0, {N_ROWS}), got [{rows.min()}, {rows.max()}]")
    return rows


def _checked_pair(values: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = _bounded("values", values)
    centers = _bounded("centers", centers)
    if values.shape != centers.shape:
        raise ValueError(f"values {values.shape} and centers {centers.shape} differ in shape")
    return values, centers


def symbols_from_values(values: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map latent values to main symbols and escape extras.

    Args:
        values: int64 (N,) latent values ``y``.
        centers: int64 (N,) integer centres ``m``.

    Returns:
        ``(symbols, extras)``: int32 (N,) symbols in ``0..ALPHABET-1`` and int64 (E,)
        extras ``|y - m| - RADIUS`` of the E escape symbols, in order.

    Raises:
        ValueError: bad shapes or dtypes, or an extra above `MAX_EXTRA`.
    """
    values, centers = _checked_pair(values, centers)
    d = values - centers
    symbols = (np.clip(d, -RADIUS, RADIUS) + RADIUS).astype(np.int32)
    escape = (symbols == _LOW_ESCAPE) | (symbols == _HIGH_ESCAPE)
    extras = np.abs(d[escape]) - RADIUS
    if extras.size and extras.max() > MAX_EXTRA:
        raise ValueError(f"|value - center| exceeds RADIUS + MAX_EXTRA = {RADIUS + MAX_EXTRA}")
    return symbols, extras


def values_from_symbols(symbols: np.ndarray, extras: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Inverse of `symbols_from_values`: int64 (N,) values from symbols, extras, centres.

    Raises:
        ValueError: symbols out of range, or ``len(extras)`` differs from the escape count.
    """
    symbols = _int_array("symbols", symbols)
    extras = _int_array("extras", extras)
    centers = _bounded("centers", centers)
    if symbols.shape != centers.shape:
        raise ValueError(f"symbols {symbols.shape} and centers {centers.shape} differ in shape")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= ALPHABET):
        raise ValueError(f"symbols must lie in [0, {ALPHABET})")
    if extras.size and (extras.min() < 0 or extras.max() > MAX_EXTRA):
        raise ValueError(f"extras must lie in [0, {MAX_EXTRA}]")
    d = symbols - RADIUS
    escape = np.flatnonzero((symbols == _LOW_ESCAPE) | (symbols == _HIGH_ESCAPE))
    if escape.size != extras.size:
        raise ValueError(f"{escape.size} escape symbols but {extras.size} extras")
    d[escape] = np.sign(d[escape]) * (RADIUS + extras)
    return centers + d


def _exp_golomb_lengths(extras: np.ndarray) -> np.ndarray:
    """Exp-Golomb order-0 code lengths ``1 + 2 * floor(log2(e + 1))`` in bits; int64 (E,)."""
    prefix = np.searchsorted(_POW2, extras + 1, side="right") - 1  # floor(log2(e + 1))
    return 2 * prefix + 1


def _exp_golomb_bits(extras: np.ndarray) -> np.ndarray:
    """Concatenated Exp-Golomb order-0 codewords of ``extras``, MSB first; int32 (sum of lengths,).

    Codeword of ``v = e + 1`` with ``z = floor(log2 v)``: z zeros, then the z + 1 bits of v.
    """
    v = extras + 1
    lengths = _exp_golomb_lengths(extras)
    starts = np.cumsum(lengths) - lengths
    pos = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)  # offset in its codeword
    # bit index (from the LSB of v) of every position; >= z + 1 inside the zero prefix
    shift = np.repeat(lengths - 1, lengths) - pos
    return ((np.repeat(v, lengths) >> shift) & 1).astype(np.int32)


def rate_bits(values: np.ndarray, centers: np.ndarray, rows: np.ndarray) -> float:
    """Ideal code length of a batch in bits, without coding it.

    Sum of ``-log2(q_s / 2**24)`` over the main symbols plus the exact Exp-Golomb length of
    every escape extra. The coded size exceeds this only by the streams' flush words and
    the 8-byte container header.

    Args:
        values, centers, rows: int64 (N,) as for `SymbolEncoder.encode`.
    """
    symbols, extras = symbols_from_values(values, centers)
    rows = _checked_rows(rows, symbols.size)
    main = _cost_table()[rows, symbols].sum()  # gather (N,)
    return float(main + _exp_golomb_lengths(extras).sum())


def checked_pmf(pmf: np.ndarray, n: int) -> np.ndarray:
    """Validate N integer PMF rows: int64 (n, A), 2 <= A <= MAX_PMF_ALPHABET, every entry
    >= 1, every row summing to ``2**PROB_BITS``.

    Raises:
        ValueError: another shape, dtype or a row that is not such a PMF.
    """
    pmf = np.asarray(pmf)
    if pmf.ndim != 2 or pmf.shape[0] != n or not 2 <= pmf.shape[1] <= MAX_PMF_ALPHABET:
        raise ValueError(f"pmf must be ({n}, A) with 2 <= A <= {MAX_PMF_ALPHABET}, got {pmf.shape}")
    if not np.issubdtype(pmf.dtype, np.integer):
        raise ValueError(f"pmf must hold integers, got {pmf.dtype}")
    pmf = pmf.astype(np.int64, copy=False)
    if n and (pmf.min() < 1 or np.any(pmf.sum(axis=1) != 1 << PROB_BITS)):
        raise ValueError(f"every pmf row must be >= 1 and sum to 2^{PROB_BITS}")
    return pmf


def pmf_rate_bits(symbols: np.ndarray, pmf: np.ndarray) -> float:
    """Ideal code length ``sum(PROB_BITS - log2 q[s])`` in bits of symbols (N,) under their
    rows pmf (N, A), as `SymbolEncoder.encode_pmf` codes them (without the flush words)."""
    symbols = _int_array("symbols", symbols)
    pmf = checked_pmf(pmf, symbols.size)
    q = pmf[np.arange(symbols.size), symbols]  # gather (N,)
    return float(np.sum(PROB_BITS - np.log2(q.astype(np.float64))))


class SymbolEncoder:
    """Accumulates latent symbols into the main and escape range-coded streams.

    With ``inline_escapes`` there is one stream: each `encode` call's escape extras follow
    its main symbols in the main stream, and `finish` gives ``varint n_words | words``. The
    decoder must then decode in the same batches (the WEIGHTS section: one per tensor).
    """

    def __init__(self, *, inline_escapes: bool = False) -> None:
        self._family = constriction.stream.model.Categorical(perfect=False)
        self._bit_model = constriction.stream.model.Categorical(_BIT_WEIGHTS, perfect=False)
        self._main = constriction.stream.queue.RangeEncoder()
        self._inline = inline_escapes
        self._escape = self._main if inline_escapes else constriction.stream.queue.RangeEncoder()

    def encode(self, values: np.ndarray, centers: np.ndarray, rows: np.ndarray) -> None:
        """Append N latents (one constriction call for the main symbols).

        Args:
            values: int64 (N,) latent values ``y``.
            centers: int64 (N,) integer centres ``m``.
            rows: int64 (N,) flat table rows (see `tables.table_row`).

        Raises:
            ValueError: bad shapes, dtypes, rows, or ``|y - m| > RADIUS + MAX_EXTRA``.
        """
        symbols, extras = symbols_from_values(values, centers)
        rows = _checked_rows(rows, symbols.size)
        if symbols.size == 0:
            return
        weights = _weights(rows)  # (N, ALPHABET)
        self._main.encode(symbols, self._family, weights)
        if extras.size:
            self._escape.encode(_exp_golomb_bits(extras), self._bit_model)

    def encode_bits(self, bits: np.ndarray) -> None:
        """Append raw bits (0 or 1, each with probability 1/2) to the main stream."""
        bits = _int_array("bits", bits)
        if bits.size and (bits.min() < 0 or bits.max() > 1):
            raise ValueError("bits must be 0 or 1")
        if bits.size:
            self._main.encode(bits.astype(np.int32), self._bit_model)

    def encode_pmf(self, symbols: np.ndarray, pmf: np.ndarray) -> None:
        """Append N symbols to the main stream, each coded with its own integer PMF row.

        Args:
            symbols: int (N,) in ``0..A-1``.
            pmf: int64 (N, A), as `checked_pmf` requires.

        Raises:
            ValueError: bad shapes, dtypes, rows, or a symbol outside its alphabet.
        """
        symbols = _int_array("symbols", symbols)
        pmf = checked_pmf(pmf, symbols.size)
        if symbols.size == 0:
            return
        if symbols.min() < 0 or symbols.max() >= pmf.shape[1]:
            raise ValueError(f"symbols must lie in [0, {pmf.shape[1]})")
        self._main.encode(symbols.astype(np.int32), self._family, (pmf - 1).astype(np.float64))

    def finish(self) -> bytes:
        """The container of both streams; may be called again after more `encode` calls."""
        main = self._main.get_compressed().astype("<u4")
        if self._inline:
            return pack_uvarint(main.size) + main.tobytes()
        escape = self._escape.get_compressed().astype("<u4")
        return pack_uvarint(main.size) + pack_uvarint(escape.size) + main.tobytes() + escape.tobytes()


def inline_stream_end(data: bytes, offset: int = 0) -> int:
    """Where the one-stream container (``inline_escapes``) that starts at ``data[offset]``
    ends: the offset after its words. Lets a payload hold several such streams in a row.

    Raises:
        EntropyError: the word count is malformed or runs past the data.
    """
    try:
        count, start = unpack_uvarint(data, offset, len(data), limit=_MAX_WORDS)
    except VarintError as exc:
        raise EntropyError(f"Entropy data has a bad main stream length: {exc}.") from None
    end = start + 4 * count
    if end > len(data):
        raise EntropyError(f"Entropy data is truncated: its stream declares {count} words.")
    return end


def split_streams(data: bytes, *, inline_escapes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The main and escape streams of `SymbolEncoder.finish` bytes, as uint32 word arrays
    (with ``inline_escapes`` the escape array is empty).

    Raises:
        EntropyError: a length prefix disagrees with the size of ``data``.
    """
    data = bytes(data)
    counts, offset = [], 0
    for name in ("main",) if inline_escapes else ("main", "escape"):
        try:
            count, offset = unpack_uvarint(data, offset, len(data), limit=_MAX_WORDS)
        except VarintError as exc:
            raise EntropyError(f"Entropy data has a bad {name} stream length: {exc}.") from None
        counts.append(count)
    n_main, n_escape = (*counts, 0)[:2]
    size = offset + 4 * (n_main + n_escape)
    if len(data) < size:
        raise EntropyError(f"Entropy data is truncated: its streams declare {n_main} + {n_escape}"
                           " words.")
    if len(data) > size:
        raise EntropyError(f"Entropy data has {len(data) - size} bytes after its streams.")
    main = np.frombuffer(data, dtype="<u4", count=n_main, offset=offset)
    escape = np.frombuffer(data, dtype="<u4", count=n_escape, offset=offset + 4 * n_main)
    return main.astype(np.uint32), escape.astype(np.uint32)


class SymbolDecoder:
    """Decodes latents from `SymbolEncoder.finish` bytes, in any chunking of the same order."""

    def __init__(self, data: bytes, *, inline_escapes: bool = False) -> None:
        """Parse the container (``inline_escapes``: as written by such a `SymbolEncoder`).

        Raises:
            EntropyError: a length prefix disagrees with the size of ``data``.
        """
        streams = split_streams(data, inline_escapes=inline_escapes)
        self._family = constriction.stream.model.Categorical(perfect=False)
        self._bit_model = constriction.stream.model.Categorical(_BIT_WEIGHTS, perfect=False)
        self._main = constriction.stream.queue.RangeDecoder(streams[0])
        self._inline = inline_escapes
        self._escape = (self._main if inline_escapes
                        else constriction.stream.queue.RangeDecoder(streams[1]))

    def decode(self, centers: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Decode the next N latents.

        Args:
            centers: int64 (N,) integer centres ``m``.
            rows: int64 (N,) flat table rows, as given to the encoder.

        Returns:
            int64 (N,) latent values ``y``.

        Raises:
            ValueError: bad shapes, dtypes or rows.
            EntropyError: the data cannot have come from `SymbolEncoder`.
        """
        centers = _bounded("centers", centers)
        rows = _checked_rows(rows, centers.size)
        if centers.size == 0:
            return centers.copy()
        return self.decode_trusted(centers, rows).astype(np.int64)

    def decode_one(self, center: int, row: int) -> int:
        """`decode` of one latent given as Python integers (|center| < 2**52, exact in the
        float64 arithmetic of `decode_trusted`), checked as plain numbers: the WEIGHTS
        payload's single symbols (precisions, scale indices), for which the array checks
        of `decode` cost more than the decoding.

        Raises:
            ValueError: `center` or `row` out of range.
            EntropyError: the data cannot have come from `SymbolEncoder`.
        """
        if not -(1 << 52) < center < 1 << 52:
            raise ValueError("decode_one takes centres strictly between -2**52 and 2**52")
        if not 0 <= row < N_ROWS:
            raise ValueError(f"rows must lie in [0, {N_ROWS}), got [{row}, {row}]")
        return int(self.decode_trusted(np.array([center]), np.array([row]))[0])

    def decode_trusted(self, centers: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """`decode` without checking its arguments: the latent decoder's hot loop, one call
        per wave, where the checks cost more than the decoding.

        The caller guarantees what `decode` checks, as `IntegerArm.table_rows_augmented`
        does by construction: centers and rows are int64 (N,) with N >= 1, ``|centers| <=
        LATENT_MAX`` and rows in ``[0, N_ROWS)``. The data itself is still checked.

        Returns:
            float64 (N,) latent values ``y`` (integers; the latent decoder's buffer type).
        """
        weights = _weights(rows)  # (N, ALPHABET)
        try:
            symbols = self._main.decode(self._family, weights)
        except Exception as error:  # constriction reports invalid data as AssertionError
            raise EntropyError("Entropy data is corrupt: the main stream is invalid.") from error
        if symbols.min() == _LOW_ESCAPE or symbols.max() == _HIGH_ESCAPE:  # rare
            escape = (symbols == _LOW_ESCAPE) | (symbols == _HIGH_ESCAPE)
            extras = self._decode_extras(int(np.count_nonzero(escape)))
            return values_from_symbols(symbols, extras, centers).astype(np.float64)
        values = centers - float(RADIUS)  # (N,) float64: exact, |centers| < 2**53
        values += symbols
        return values

    def decode_pmf(self, pmf: np.ndarray) -> np.ndarray:
        """The next N symbols of the main stream, coded with rows pmf (N, A) as given to
        `SymbolEncoder.encode_pmf`; int64 (N,).

        Raises:
            ValueError: pmf is not N valid rows.
            EntropyError: the data cannot have come from `SymbolEncoder`.
        """
        pmf = checked_pmf(pmf, len(pmf) if np.ndim(pmf) == 2 else -1)
        if pmf.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            symbols = self._main.decode(self._family, (pmf - 1).astype(np.float64))
        except Exception as error:  # constriction reports invalid data as AssertionError
            raise EntropyError("Entropy data is corrupt: the main stream is invalid.") from error
        return symbols.astype(np.int64)

    def decode_bits(self, count: int) -> np.ndarray:
        """The next ``count`` raw bits of the main stream (see `SymbolEncoder.encode_bits`);
        int64 (count,)."""
        if count == 0:
            return np.zeros(0, np.int64)
        try:
            return self._main.decode(self._bit_model, count).astype(np.int64)
        except Exception as error:
            raise EntropyError("Entropy data is corrupt: the main stream is invalid.") from error

    def _decode_extras(self, count: int) -> np.ndarray:
        """The next ``count`` Exp-Golomb order-0 extras from the escape stream; int64 (count,).

        Reads bits in batches, each the fewest bits the pending codewords certainly still
        hold (1 per codeword, more once a prefix is seen), so it never reads past the last
        codeword: the stream stays exact for any later chunk and for `finish`.
        """
        bits = b""  # decoded bits as ASCII '0'/'1', for fast find and int(..., 2)
        pos = 0
        extras: list[int] = []
        need = count
        while need:
            try:
                new = self._escape.decode(self._bit_model, need)
            except Exception as error:
                raise EntropyError(
                    "Entropy data is corrupt: the escape stream is invalid."
                ) from error
            bits += (new.astype(np.uint8) + ord("0")).tobytes()
            need = 0
            while len(extras) < count:
                later = count - len(extras) - 1  # codewords after this one, >= 1 bit each
                one = bits.find(b"1", pos)
                zeros = (len(bits) if one < 0 else one) - pos
                if zeros > MAX_PREFIX:
                    raise EntropyError("Entropy data is corrupt: an escape code is too long.")
                if one < 0:
                    need = 1 + zeros + later  # the terminating 1, then >= zeros suffix bits
                    break
                end = one + zeros + 1
                if end > len(bits):
                    need = end - len(bits) + later
                    break
                extras.append(int(bits[one:end], 2) - 1)
                pos = end
        result = np.array(extras, dtype=np.int64)
        if result.size and result.max() > MAX_EXTRA:
            raise EntropyError("Entropy data is corrupt: an escape value is out of range.")
        return result

    def finish(self) -> None:
        """Check that both streams were read to their end.

        Uses constriction's ``maybe_exhausted``: it is always true after decoding exactly
        what was encoded, and false while whole words remain unread. A range decoder cannot
        locate the end of its data exactly, so decoding a few symbols too few or too many
        (or corrupt data) is caught only most of the time; the bitstream checksum is what
        guarantees integrity.

        Raises:
            EntropyError: a stream still holds unread data.
        """
        coders = (("main", self._main),) if self._inline else (("main", self._main), ("escape", self._escape))
        for name, coder in coders:
            if not coder.maybe_exhausted():
                raise EntropyError(
                    f"Entropy data is inconsistent: the {name} stream has unread data."
                )
