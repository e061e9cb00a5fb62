"""Coding of the latent grids in wavefront order.

A latent at (row, col) of any grid belongs to wave t = slope*row + col, where the slope
(3 for the 12-neighbour context) makes every context neighbour belong to an earlier wave
(see ``config.wavefront_slope``). Grids are independent (the ARM looks only within a grid),
so one wave holds the latents of every grid with that t: the decoder runs one integer-ARM
evaluation and one entropy-decoder call per wave for all grids together. The encoder codes
all symbols in that same order with one call.

All grids live in one flat float64 buffer, each padded with zeros (CONTEXT_ROWS rows above,
CONTEXT_COLS columns left and right) so that a context is a fixed set of flat offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coolchic.config import CONTEXT_COLS, CONTEXT_ROWS, context_offsets, wavefront_slope
from coolchic.entropy.coder import SymbolDecoder, SymbolEncoder, rate_bits
from coolchic.entropy.fixedpoint import IntegerArm


@dataclass(frozen=True)
class Schedule:
    """Where each latent lives in the flat buffer and when it is decoded."""

    shapes: tuple[tuple[int, int], ...]
    starts: np.ndarray  # (n_grids,) int64: flat start of each padded grid
    buffer_size: int
    order: np.ndarray  # (N,) int64: flat buffer index of each latent, in decoding order
    grid_of: np.ndarray  # (N,) int64: grid of each latent, in decoding order
    offsets: np.ndarray  # (n_grids, context) int64: flat offsets of the context neighbours
    wave_bounds: np.ndarray  # (n_waves + 1,): wave w is order[wave_bounds[w]:wave_bounds[w+1]]

    def contexts(self, buffer: np.ndarray, start: int, stop: int) -> np.ndarray:
        """(stop - start, context) neighbour values of latents order[start:stop]."""
        index = self.order[start:stop, None] + self.offsets[self.grid_of[start:stop]]
        return buffer[index]

    def padded_width(self, k: int) -> int:
        return self.shapes[k][1] + 2 * CONTEXT_COLS

    def grid_view(self, buffer: np.ndarray, k: int) -> np.ndarray:
        """The (h, w) interior of grid k in the flat buffer."""
        h, w = self.shapes[k]
        pw = self.padded_width(k)
        block = buffer[self.starts[k] : self.starts[k] + (h + CONTEXT_ROWS) * pw]
        return block.reshape(h + CONTEXT_ROWS, pw)[CONTEXT_ROWS:, CONTEXT_COLS : CONTEXT_COLS + w]


def make_schedule(shapes: list[tuple[int, int]], context: int) -> Schedule:
    slope = wavefront_slope(context)
    starts, size = [], 0
    waves, grids, flat = [], [], []
    for k, (h, w) in enumerate(shapes):
        pw = w + 2 * CONTEXT_COLS
        starts.append(size)
        rows, cols = np.divmod(np.arange(h * w, dtype=np.int64), w)
        waves.append(slope * rows + cols)
        grids.append(np.full(h * w, k, dtype=np.int64))
        flat.append(size + (rows + CONTEXT_ROWS) * pw + cols + CONTEXT_COLS)
        size += (h + CONTEXT_ROWS) * pw
    wave, grid, index = np.concatenate(waves), np.concatenate(grids), np.concatenate(flat)
    perm = np.lexsort((index, wave))  # by wave, then grid and raster position
    wave = wave[perm]
    n_waves = int(wave[-1]) + 1
    bounds = np.searchsorted(wave, np.arange(n_waves + 1), side="left")
    offsets = np.array(
        [[dr * (w + 2 * CONTEXT_COLS) + dc for dr, dc in context_offsets(context)]
         for _, w in shapes],
        dtype=np.int64,
    )  # (n_grids, context)
    return Schedule(
        shapes=tuple(shapes), starts=np.array(starts, dtype=np.int64), buffer_size=size,
        order=index[perm], grid_of=grid[perm], offsets=offsets, wave_bounds=bounds,
    )


def fill_buffer(schedule: Schedule, grids: list[np.ndarray]) -> np.ndarray:
    buffer = np.zeros(schedule.buffer_size, dtype=np.float64)
    for k, grid in enumerate(grids):
        schedule.grid_view(buffer, k)[...] = grid
    return buffer


def coding_parameters(
    schedule: Schedule, buffer: np.ndarray, arm: IntegerArm, chunk: int = 1 << 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, centres and table rows of every latent in decoding order (encoder side:
    all latents are known, so contexts are gathered in large chunks)."""
    n = len(schedule.order)
    values = buffer[schedule.order].astype(np.int64)
    centers = np.empty(n, dtype=np.int64)
    rows = np.empty(n, dtype=np.int64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        centers[s:e], rows[s:e] = arm.table_rows(schedule.contexts(buffer, s, e))
    return values, centers, rows


def latent_bits(schedule: Schedule, grids: list[np.ndarray], arm: IntegerArm) -> float:
    """Exact ideal code length of the latents in bits (no coding performed)."""
    values, centers, rows = coding_parameters(schedule, fill_buffer(schedule, grids), arm)
    return rate_bits(values, centers, rows)


def encode_latents(schedule: Schedule, grids: list[np.ndarray], arm: IntegerArm) -> bytes:
    """Entropy-code integer grids (finest first, int64 (h_k, w_k)) to bytes."""
    values, centers, rows = coding_parameters(schedule, fill_buffer(schedule, grids), arm)
    encoder = SymbolEncoder()
    encoder.encode(values, centers, rows)
    return encoder.finish()


def decode_latents(schedule: Schedule, data: bytes, arm: IntegerArm) -> list[np.ndarray]:
    """Decode the grids wave by wave; raises EntropyError on corrupt data."""
    buffer = np.zeros(schedule.buffer_size, dtype=np.float64)
    decoder = SymbolDecoder(data)
    bounds = schedule.wave_bounds
    for w in range(len(bounds) - 1):
        s, e = int(bounds[w]), int(bounds[w + 1])
        centers, rows = arm.table_rows(schedule.contexts(buffer, s, e))
        buffer[schedule.order[s:e]] = decoder.decode(centers, rows)
    decoder.finish()
    return [schedule.grid_view(buffer, k).astype(np.int64) for k in range(len(schedule.shapes))]
