"""Entropy coding of a whole code tensor with an integer context network, in wavefront order.

Shared by every amortized codec: the symbols of a (C, H, W) code, each in 0..A-1, are coded
in `causal.Wavefront` order with the PMFs that `IntegerContextNet.evaluate` and
`probability.pmf_from_logits` give. The encoder evaluates the network once for all positions
(it knows the whole code); the decoder once per wave, then decodes that wave's symbols with
one entropy-decoder call. Positions that are not coded (trimmed by an importance map, or
beyond a coded layer count) have network input 0 on both sides. The symbols go to
`coolchic.entropy.coder` (`SymbolEncoder.encode_pmf`), the main codec's coder and container.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coolchic.amortized.causal import Wavefront
from coolchic.amortized.intnet import IntegerContextNet
from coolchic.amortized.probability import binary_pmf, pmf_from_logits
from coolchic.entropy.coder import SymbolDecoder, SymbolEncoder, pmf_rate_bits


@dataclass(frozen=True)
class Alphabet:
    """Symbols 0..A-1 of a code and the integer network input of each."""

    inputs: tuple[int, ...]  # network input of symbol k (0 is reserved for "no code")

    def __post_init__(self) -> None:
        if len(self.inputs) < 2:
            raise ValueError("an alphabet needs at least 2 symbols")

    @classmethod
    def binary(cls) -> Alphabet:
        """Bits: 0 -> -1, 1 -> +1."""
        return cls((-1, 1))

    @classmethod
    def centered(cls, size: int) -> Alphabet:
        """size symbols -> odd inputs 1 - size, 3 - size, ..., size - 1 (none is 0)."""
        return cls(tuple(2 * k + 1 - size for k in range(size)))

    @property
    def size(self) -> int:
        return len(self.inputs)

    @property
    def outputs(self) -> int:
        """Logits per code the network must give: 1 for bits (logit of a 1), else size."""
        return 1 if self.size == 2 else self.size

    def pmf(self, logits: np.ndarray) -> np.ndarray:
        """Integer PMFs (N, size) of integer logits (N, outputs)."""
        if logits.shape[1:] != (self.outputs,):
            raise ValueError(f"logits must be (N, {self.outputs}), got {logits.shape}")
        return binary_pmf(logits[:, 0]) if self.size == 2 else pmf_from_logits(logits)


def _masks(shape: tuple[int, int, int], coded: np.ndarray | None,
           evaluated: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    coded = np.ones(shape, dtype=bool) if coded is None else np.asarray(coded, dtype=bool)
    evaluated = np.ones(shape, dtype=bool) if evaluated is None else np.asarray(evaluated, dtype=bool)
    if coded.shape != shape or evaluated.shape != shape:
        raise ValueError(f"coded and evaluated masks must have the code's shape {shape}")
    if np.any(coded & ~evaluated):
        raise ValueError("every coded position must also be evaluated")
    return coded, evaluated


def _encoder_pmfs(net: IntegerContextNet, alphabet: Alphabet, symbols: np.ndarray,
                  coded: np.ndarray | None, evaluated: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symbols (N,) of the coded positions in coding order, their PMFs (N, A) and channels (N,)."""
    symbols = np.asarray(symbols)
    if symbols.ndim != 3 or not np.issubdtype(symbols.dtype, np.integer):
        raise ValueError(f"symbols must be a (C, H, W) integer array, got {symbols.shape} {symbols.dtype}")
    shape = symbols.shape
    coded, evaluated = _masks(shape, coded, evaluated)
    if np.any(coded & ((symbols < 0) | (symbols >= alphabet.size))):
        raise ValueError(f"coded symbols must lie in [0, {alphabet.size})")
    front = Wavefront.build(net.order, shape, evaluated)
    state = net.start(shape[1], shape[2])
    inputs = np.where(coded, np.asarray(alphabet.inputs)[np.clip(symbols, 0, alphabet.size - 1)], 0)
    net.set_inputs(state, *np.nonzero(coded), inputs[coded])
    logits = net.evaluate(state, front.c, front.y, front.x)  # (N_evaluated, outputs)
    sel = coded[front.c, front.y, front.x]
    c, y, x = front.c[sel], front.y[sel], front.x[sel]
    return symbols[c, y, x], alphabet.pmf(logits[sel]), c


def _parts(parts: np.ndarray | None, channels: int) -> np.ndarray:
    """int64 (C,) stream of every code channel (all 0 when None)."""
    if parts is None:
        return np.zeros(channels, dtype=np.int64)
    parts = np.asarray(parts)
    if parts.shape != (channels,) or not np.issubdtype(parts.dtype, np.integer) or parts.min() < 0:
        raise ValueError(f"parts must give a stream index >= 0 for each of the {channels} channels")
    return parts.astype(np.int64)


def encode_parts(net: IntegerContextNet, alphabet: Alphabet, symbols: np.ndarray, *,
                 parts: np.ndarray | None = None, coded: np.ndarray | None = None,
                 evaluated: np.ndarray | None = None) -> list[bytes]:
    """Entropy-code a (C, H, W) code into one symbol stream per part.

    The symbols of channel c go to stream ``parts[c]``, each stream in the coding order of
    its own symbols. The streams are independent: a decoder given the first k of them
    decodes the channels of parts < k alone, provided no code of those channels depends
    on a code of a later part (as the layers of `causal.WaveOrder.progressive`).

    Args:
        net: the integer context network (C = net.order.channels, outputs = alphabet.outputs).
        alphabet: the symbols' alphabet.
        symbols: int (C, H, W) in 0..A-1 at the coded positions (anything elsewhere).
        parts: int (C,), the stream of each channel (default: one stream).
        coded: bool (C, H, W), the positions to code (default all).
        evaluated: bool (C, H, W), the positions whose features the network computes; must
            contain `coded` and every position whose features a coded one reads (default all).

    Returns:
        ``max(parts) + 1`` containers of `coolchic.entropy.coder` (one stream each:
        ``varint n_words | words``).
    """
    values, pmf, channel = _encoder_pmfs(net, alphabet, symbols, coded, evaluated)
    parts = _parts(parts, np.asarray(symbols).shape[0])
    part = parts[channel]  # (N,) stream of every coded symbol
    streams = []
    for p in range(int(parts.max()) + 1):
        encoder = SymbolEncoder(inline_escapes=True)
        mine = part == p
        encoder.encode_pmf(values[mine], pmf[mine])
        streams.append(encoder.finish())
    return streams


def encode_codes(net: IntegerContextNet, alphabet: Alphabet, symbols: np.ndarray, *,
                 coded: np.ndarray | None = None, evaluated: np.ndarray | None = None) -> bytes:
    """`encode_parts` with one stream: the container of `coolchic.entropy.coder`."""
    return encode_parts(net, alphabet, symbols, coded=coded, evaluated=evaluated)[0]


def code_bits(net: IntegerContextNet, alphabet: Alphabet, symbols: np.ndarray, *,
              coded: np.ndarray | None = None, evaluated: np.ndarray | None = None) -> float:
    """Ideal code length in bits of what `encode_codes` writes (without its flush words)."""
    values, pmf, _ = _encoder_pmfs(net, alphabet, symbols, coded, evaluated)
    return pmf_rate_bits(values, pmf)


def decode_parts(net: IntegerContextNet, alphabet: Alphabet, streams: Sequence[bytes],
                 shape: tuple[int, int, int], *, parts: np.ndarray | None = None,
                 coded: np.ndarray | None = None,
                 evaluated: np.ndarray | None = None) -> np.ndarray:
    """Inverse of `encode_parts`, one wave at a time, from the first ``len(streams)`` streams.

    Every coded position must belong to a part below ``len(streams)``.

    Returns:
        int64 (C, H, W): the symbols at the coded positions, -1 elsewhere.

    Raises:
        ValueError: a coded position of a part without a stream.
        EntropyError: corrupt or inconsistent data.
    """
    shape = tuple(shape)
    coded, evaluated = _masks(shape, coded, evaluated)
    parts = _parts(parts, shape[0])
    if np.any(coded & (parts >= len(streams))[:, None, None]):
        raise ValueError(f"coded positions of parts beyond the {len(streams)} stream(s) given")
    front = Wavefront.build(net.order, shape, evaluated)
    decoders = [SymbolDecoder(data, inline_escapes=True) for data in streams]
    state = net.start(shape[1], shape[2])
    inputs = np.asarray(alphabet.inputs)
    out = np.full(shape, -1, dtype=np.int64)
    for k in range(front.n_waves):
        c, y, x = front.wave(k)
        logits = net.evaluate(state, c, y, x)  # (n_k, outputs)
        sel = coded[c, y, x]
        if not sel.any():
            continue
        c, y, x, logits = c[sel], y[sel], x[sel], logits[sel]
        part = parts[c]  # (n,)
        if part[0] == part[-1] and np.all(part == part[0]):
            symbols = decoders[part[0]].decode_pmf(alphabet.pmf(logits))
        else:  # a wave across parts (layers of a progressive order overlap in waves)
            symbols = np.empty(c.size, dtype=np.int64)
            for p in np.unique(part):
                mine = part == p
                symbols[mine] = decoders[p].decode_pmf(alphabet.pmf(logits[mine]))
        net.set_inputs(state, c, y, x, inputs[symbols])
        out[c, y, x] = symbols
    for decoder in decoders:
        decoder.finish()
    return out


def decode_codes(net: IntegerContextNet, alphabet: Alphabet, data: bytes,
                 shape: tuple[int, int, int], *, coded: np.ndarray | None = None,
                 evaluated: np.ndarray | None = None) -> np.ndarray:
    """Inverse of `encode_codes` (`decode_parts` with one stream).

    Returns:
        int64 (C, H, W): the symbols at the coded positions, -1 elsewhere.

    Raises:
        EntropyError: corrupt or inconsistent data.
    """
    return decode_parts(net, alphabet, [data], shape, coded=coded, evaluated=evaluated)
