"""Entropy coding of a whole code tensor with an integer context network, in wavefront order.

Shared by every amortized codec: the symbols of a (C, H, W) code, each in 0..A-1, are coded
in `causal.Wavefront` order with the PMFs that `IntegerContextNet.evaluate` and
`probability.pmf_from_logits` give. The encoder evaluates the network once for all positions
(it knows the whole code); the decoder once per wave, then decodes that wave's symbols with
one entropy-decoder call. Positions that are not coded (trimmed by an importance map, or
beyond a coded layer count) have network input 0 on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coolchic.amortized.causal import Wavefront
from coolchic.amortized.intnet import IntegerContextNet
from coolchic.amortized.pmfcoder import PmfDecoder, PmfEncoder, ideal_bits
from coolchic.amortized.probability import binary_pmf, pmf_from_logits


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
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Symbols (N,) of the coded positions in coding order, and their PMFs (N, A)."""
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
    return symbols[front.c[sel], front.y[sel], front.x[sel]], alphabet.pmf(logits[sel])


def encode_codes(net: IntegerContextNet, alphabet: Alphabet, symbols: np.ndarray, *,
                 coded: np.ndarray | None = None, evaluated: np.ndarray | None = None) -> bytes:
    """Entropy-code a (C, H, W) code.

    Args:
        net: the integer context network (C = net.order.channels, outputs = alphabet.outputs).
        alphabet: the symbols' alphabet.
        symbols: int (C, H, W) in 0..A-1 at the coded positions (anything elsewhere).
        coded: bool (C, H, W), the positions to code (default all).
        evaluated: bool (C, H, W), the positions whose features the network computes; must
            contain `coded` and every position whose features a coded one reads (default all).

    Returns:
        The `PmfEncoder` container.
    """
    values, pmf = _encoder_pmfs(net, alphabet, symbols, coded, evaluated)
    encoder = PmfEncoder()
    encoder.encode(values, pmf)
    return encoder.finish()


def code_bits(net: IntegerContextNet, alphabet: Alphabet, symbols: np.ndarray, *,
              coded: np.ndarray | None = None, evaluated: np.ndarray | None = None) -> float:
    """Ideal code length in bits of what `encode_codes` writes (without its flush words)."""
    values, pmf = _encoder_pmfs(net, alphabet, symbols, coded, evaluated)
    return ideal_bits(values, pmf)


def decode_codes(net: IntegerContextNet, alphabet: Alphabet, data: bytes,
                 shape: tuple[int, int, int], *, coded: np.ndarray | None = None,
                 evaluated: np.ndarray | None = None) -> np.ndarray:
    """Inverse of `encode_codes`, one wave at a time.

    Returns:
        int64 (C, H, W): the symbols at the coded positions, -1 elsewhere.

    Raises:
        EntropyError: corrupt or inconsistent data.
    """
    shape = tuple(shape)
    coded, evaluated = _masks(shape, coded, evaluated)
    front = Wavefront.build(net.order, shape, evaluated)
    decoder = PmfDecoder(data)
    state = net.start(shape[1], shape[2])
    inputs = np.asarray(alphabet.inputs)
    out = np.full(shape, -1, dtype=np.int64)
    for k in range(front.n_waves):
        c, y, x = front.wave(k)
        logits = net.evaluate(state, c, y, x)  # (n_k, outputs)
        sel = coded[c, y, x]
        if not sel.any():
            continue
        c, y, x = c[sel], y[sel], x[sel]
        symbols = decoder.decode(alphabet.pmf(logits[sel]))
        net.set_inputs(state, c, y, x, inputs[symbols])
        out[c, y, x] = symbols
    decoder.finish()
    return out
