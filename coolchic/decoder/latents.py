"""The numpy latent decoder: the latents of a `coolchic.entropy.latents.Schedule`, decoded
wave by wave with the integer ARM and constriction.

A decoding wave is one gather of contexts, one integer-ARM evaluation, one entropy-decoder
call and one scatter, for the latents of every grid in that wave. The flat indices of the
contexts are computed for runs of waves at once. The native decoder
(`coolchic.decoder.native`) runs the same loop in one C++ call and gives the same latents
bit for bit; `coolchic.decoder.dispatch.decode_latents` chooses between them.
"""

from __future__ import annotations

import numpy as np

from coolchic.entropy.coder import SymbolDecoder
from coolchic.entropy.fixedpoint import IntegerArm
from coolchic.entropy.latents import Schedule

WAVES_PER_INDEX = 64  # waves whose context indices the decoder computes at once


def decode_waves(schedule: Schedule, buffer: np.ndarray, data: bytes, arm: IntegerArm) -> None:
    """Fill `buffer` (`Schedule.new_buffer`) with the latents coded in `data`, wave by wave.

    Raises:
        EntropyError: the data cannot have come from the encoder.
    """
    decoder = SymbolDecoder(data)
    bounds = schedule.wave_bounds.tolist()
    table_rows, decode = arm.table_rows_augmented, decoder.decode_trusted
    for w0 in range(0, len(bounds) - 1, WAVES_PER_INDEX):
        # the context indices of a run of waves at once: vectorized, and small enough to stay
        # in cache (a whole image's would be tens of MB)
        waves = bounds[w0 : w0 + WAVES_PER_INDEX + 1]
        base = waves[0]
        index = schedule.context_index(base, waves[-1])  # (n, context + 1)
        targets = schedule.order[base : waves[-1]].astype(np.intp)  # (n,)
        for s, e in zip(waves[:-1], waves[1:]):  # the hot loop: one wave of every grid
            if s == e:  # images narrower than the wavefront slope have empty waves
                continue
            contexts = buffer.take(index[s - base : e - base])  # (e - s, context + 1)
            # table_rows_augmented gives what decode_trusted needs: int64 centres within
            # +-LATENT_MAX and rows within the table
            buffer[targets[s - base : e - base]] = decode(*table_rows(contexts))
    decoder.finish()
