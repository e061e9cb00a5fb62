"""Range coding of symbols with exact integer PMF rows (constriction 0.5.0, no torch).

The same convention as the main codec's `coolchic.entropy.coder`: constriction's
``Categorical(perfect=False)`` given weights ``w = q - 1`` with ``sum(q) = 2^24`` codes exactly
the integer PMF q (see NOTES-entropy and that module). Here each symbol has its own PMF row
from `probability.pmf_from_logits`, over any alphabet of 2..4096 symbols.

Container (`PmfEncoder.finish`): ``u32 n_words`` then ``n_words`` little-endian u32 words.
"""

from __future__ import annotations

import constriction
import numpy as np

from coolchic.amortized.probability import PROB_BITS
from coolchic.entropy.coder import EntropyError


def _check_rows(pmf: np.ndarray, n: int) -> np.ndarray:
    pmf = np.asarray(pmf)
    if pmf.ndim != 2 or pmf.shape[0] != n or pmf.shape[1] < 2:
        raise ValueError(f"pmf must be ({n}, A) with A >= 2, got {pmf.shape}")
    if n and (pmf.min() < 1 or np.any(pmf.sum(axis=1) != 1 << PROB_BITS)):
        raise ValueError(f"every pmf row must be >= 1 and sum to 2^{PROB_BITS}")
    return pmf


def ideal_bits(symbols: np.ndarray, pmf: np.ndarray) -> float:
    """Ideal code length sum(-log2 q_s / 2^24) of symbols (N,) under rows (N, A), in bits."""
    symbols = np.asarray(symbols, dtype=np.int64)
    pmf = _check_rows(pmf, symbols.size)
    q = pmf[np.arange(symbols.size), symbols]  # (N,)
    return float(np.sum(PROB_BITS - np.log2(q.astype(np.float64))))


class PmfEncoder:
    """Accumulates symbols, each coded with its own integer PMF row."""

    def __init__(self) -> None:
        self._family = constriction.stream.model.Categorical(perfect=False)
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, pmf: np.ndarray) -> None:
        """Append symbols (N,) (integers in 0..A-1) coded with rows pmf (N, A) int64."""
        symbols = np.asarray(symbols)
        if symbols.ndim != 1 or not np.issubdtype(symbols.dtype, np.integer):
            raise ValueError(f"symbols must be a 1-D integer array, got {symbols.shape} {symbols.dtype}")
        pmf = _check_rows(pmf, symbols.size)
        if symbols.size == 0:
            return
        if symbols.min() < 0 or symbols.max() >= pmf.shape[1]:
            raise ValueError(f"symbols must lie in [0, {pmf.shape[1]})")
        self._coder.encode(symbols.astype(np.int32), self._family, (pmf - 1).astype(np.float64))

    def finish(self) -> bytes:
        words = self._coder.get_compressed().astype("<u4")
        return np.uint32(words.size).astype("<u4").tobytes() + words.tobytes()


class PmfDecoder:
    """Decodes `PmfEncoder.finish` bytes in any chunking of the encoder's order."""

    def __init__(self, data: bytes) -> None:
        """Raises EntropyError when the length prefix disagrees with the data size."""
        data = bytes(data)
        if len(data) < 4:
            raise EntropyError("Entropy data ends inside its length field.")
        n_words = int(np.frombuffer(data, dtype="<u4", count=1)[0])
        if len(data) != 4 + 4 * n_words:
            raise EntropyError(f"Entropy data has {len(data) - 4} bytes of words, its length "
                               f"field declares {4 * n_words}.")
        words = np.frombuffer(data, dtype="<u4", offset=4).astype(np.uint32)
        self._family = constriction.stream.model.Categorical(perfect=False)
        self._coder = constriction.stream.queue.RangeDecoder(words)

    def decode(self, pmf: np.ndarray) -> np.ndarray:
        """The next N symbols, coded with rows pmf (N, A) int64; int64 (N,)."""
        pmf = np.asarray(pmf)
        pmf = _check_rows(pmf, len(pmf) if pmf.ndim == 2 else -1)
        if pmf.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            symbols = self._coder.decode(self._family, (pmf - 1).astype(np.float64))
        except Exception as error:  # constriction reports invalid data as AssertionError
            raise EntropyError("Entropy data is corrupt.") from error
        return symbols.astype(np.int64)

    def finish(self) -> None:
        """Raises EntropyError when whole words remain unread (see `coder.SymbolDecoder.finish`)."""
        if not self._coder.maybe_exhausted():
            raise EntropyError("Entropy data is inconsistent: it has unread data.")
