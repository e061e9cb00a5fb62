"""Coding of the latent grids in wavefront order.

A latent at (row, col) of any grid belongs to wave t = slope*row + col, where the slope
(3 for the 12-neighbour context) makes every context neighbour belong to an earlier wave
(see ``config.wavefront_slope``). Grids are independent (the ARM looks only within a grid),
so one wave holds the latents of every grid with that t: the decoder runs one integer-ARM
evaluation and one entropy-decoder call per wave for all grids together. The encoder codes
all symbols in that same order with one call.

All grids live in one flat float64 buffer of rows of one common width (the widest grid's plus
CONTEXT_COLS zeros on each side), each grid below CONTEXT_ROWS rows of zeros, so that a
context is the same set of flat offsets in every grid. The buffer ends with one cell holding
1.0, gathered as the last context column (the bias input of
`IntegerArm.table_rows_augmented`). The schedule is shared: this module codes the
latents in its order (encoder side), and the decoder (`coolchic.decoder.latents`, and the
native one in `coolchic.decoder.native`) decodes them in the same order, into the same
buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coolchic.config import CONTEXT_COLS, CONTEXT_ROWS, context_offsets, wavefront_slope
from coolchic.entropy.coder import SymbolEncoder, rate_bits
from coolchic.entropy.fixedpoint import IntegerArm


@dataclass(frozen=True)
class Layout:
    """Where each latent lives in the flat buffer (what the native decoder needs: it
    computes the decoding order itself)."""

    shapes: tuple[tuple[int, int], ...]
    context: int  # context latents of the ARM
    starts: np.ndarray  # (n_grids,) int64: flat start of each grid's block (its zero rows first)
    row_width: int  # cells per buffer row: widest grid + 2 * CONTEXT_COLS
    buffer_size: int  # cells, the final 1.0 included
    offsets: np.ndarray  # (context,) int32 (int64 for huge buffers): flat offsets of the
    # context neighbours

    def new_buffer(self) -> np.ndarray:
        """(buffer_size,) float64 zeros but for the final 1.0 cell."""
        buffer = np.zeros(self.buffer_size, dtype=np.float64)
        buffer[-1] = 1.0
        return buffer

    def grid_view(self, buffer: np.ndarray, k: int) -> np.ndarray:
        """The (h, w) interior of grid k in the flat buffer."""
        h, w = self.shapes[k]
        block = buffer[self.starts[k] : self.starts[k] + (h + CONTEXT_ROWS) * self.row_width]
        block = block.reshape(h + CONTEXT_ROWS, self.row_width)
        return block[CONTEXT_ROWS:, CONTEXT_COLS : CONTEXT_COLS + w]


@dataclass(frozen=True)
class Schedule(Layout):
    """The layout, and when each latent is decoded."""

    order: np.ndarray  # (N,) offsets' dtype: flat index of each latent, in decoding order
    wave_bounds: np.ndarray  # (n_waves + 1,): wave w is order[wave_bounds[w]:wave_bounds[w+1]]

    def context_index(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, context + 1) flat index of the neighbours of latents
        order[start:stop], then of the final 1.0 cell; intp, what `take` indexes with."""
        index = np.empty((stop - start, len(self.offsets) + 1), dtype=np.intp)
        np.add(self.order[start:stop, None], self.offsets, out=index[:, :-1])
        index[:, -1] = self.buffer_size - 1
        return index

    def contexts(self, buffer: np.ndarray, start: int, stop: int) -> np.ndarray:
        """(stop - start, context + 1) neighbour values of latents order[start:stop], then 1."""
        return buffer.take(self.context_index(start, stop))


def buffer_layout(shapes: list[tuple[int, int]] | tuple[tuple[int, int], ...], context: int) -> Layout:
    """The flat buffer of grids of these shapes (cheap: no decoding order)."""
    row_width = max(w for _, w in shapes) + 2 * CONTEXT_COLS
    size = sum(h + CONTEXT_ROWS for h, _ in shapes) * row_width
    itype = np.int32 if size < (1 << 31) - 1 else np.int64  # int32: half the memory traffic
    starts = np.cumsum([0] + [(h + CONTEXT_ROWS) * row_width for h, _ in shapes[:-1]], dtype=np.int64)
    offsets = np.array([dr * row_width + dc for dr, dc in context_offsets(context)], dtype=itype)
    return Layout(shapes=tuple(shapes), context=context, starts=starts, row_width=row_width,
                  buffer_size=size + 1, offsets=offsets)


def make_schedule(shapes: list[tuple[int, int]], context: int) -> Schedule:
    """The decoding order of grids of these shapes: by wave, then grid, then row.

    Built without sorting: grid k's latents in wave t are its rows ``lo_k(t) .. hi_k(t)``
    (column ``t - slope * row``), so counting them per (wave, grid) gives where each wave
    and grid starts, and every latent's place follows from its row.
    """
    slope = wavefront_slope(context)
    layout = buffer_layout(shapes, context)
    row_width, itype = layout.row_width, layout.offsets.dtype
    n_waves = max(slope * (h - 1) + w - 1 for h, w in shapes) + 1
    t = np.arange(n_waves, dtype=np.int64)
    first_row, counts = [], []  # per grid, (n_waves,): first row in wave t and row count
    for h, w in shapes:
        lo = np.maximum(0, -((w - 1 - t) // slope))  # ceil((t - w + 1) / slope)
        hi = np.minimum(h - 1, t // slope)
        first_row.append(lo)
        counts.append(np.maximum(0, hi - lo + 1))
    # (n_waves, n_grids): where grid k's part of wave t starts in the decoding order
    count = np.stack(counts, axis=1)
    start_of = (np.cumsum(count.ravel()) - count.ravel()).reshape(count.shape)
    order = np.empty(int(count.sum()), dtype=itype)
    for k, (h, w) in enumerate(shapes):
        start = int(layout.starts[k])
        rows = np.arange(h, dtype=itype)[:, None]  # (h, 1)
        cols = np.arange(w, dtype=itype)[None, :]  # (1, w)
        place = (start_of[:, k] - first_row[k]).astype(itype)[slope * rows + cols]  # (h, w)
        place += rows
        order[place] = start + (rows + CONTEXT_ROWS) * row_width + cols + CONTEXT_COLS
    bounds = np.append(start_of[:, 0], len(order))  # wave t starts with grid 0's part
    return Schedule(**vars(layout), order=order, wave_bounds=bounds)


def fill_buffer(schedule: Schedule, grids: list[np.ndarray]) -> np.ndarray:
    buffer = schedule.new_buffer()
    for k, grid in enumerate(grids):
        schedule.grid_view(buffer, k)[...] = grid
    return buffer


def coding_parameters(
    schedule: Schedule, buffer: np.ndarray, arm: IntegerArm
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, centres and table rows of every latent in decoding order (encoder side:
    all latents are known, so contexts are gathered in chunks of `arm.batch_rows`)."""
    n = len(schedule.order)
    chunk = arm.batch_rows
    values = buffer[schedule.order].astype(np.int64)
    centers = np.empty(n, dtype=np.int64)
    rows = np.empty(n, dtype=np.int64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        centers[s:e], rows[s:e] = arm.table_rows_augmented(schedule.contexts(buffer, s, e))
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
