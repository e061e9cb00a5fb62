"""Where a coolchic file's bits go: the ideal code length of each latent grid under the
file's own ARM (the ARM reads within one grid, so a grid's bits depend on that grid alone),
and each grid's most frequent latent values.

    python experiments/paper-grade/grid_bits.py results/paper-grade/bitstreams/kodim07@0.0004.bin ...
"""

import argparse
from pathlib import Path

import numpy as np

from coolchic.bitstream import SectionId, read_bitstream
from coolchic.config import grid_shapes
from coolchic.decoder.dispatch import decode_latents
from coolchic.entropy.fixedpoint import IntegerArm
from coolchic.entropy.latents import buffer_layout, latent_bits, make_schedule
from coolchic.payload import unpack_config, unpack_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    for path in parser.parse_args().files:
        data = path.read_bytes()
        header, sections = read_bitstream(data)
        config = unpack_config(sections[SectionId.CONFIG])
        weights = unpack_weights(sections[SectionId.WEIGHTS], config, header.channels)
        shapes = grid_shapes(header.height, header.width, config.latents.n_grids)
        arm = IntegerArm(weights.arm)
        grids = decode_latents(buffer_layout(shapes, config.arm.context), sections[SectionId.LATENTS], arm)
        pixels = header.height * header.width
        bits = [latent_bits(make_schedule([g.shape], config.arm.context), [g], arm) for g in grids]
        print(f"{path.name}: file {8 * len(data) / pixels:.4f} bpp, latents {sum(bits) / pixels:.4f} bpp")
        for k, (grid, b) in enumerate(zip(grids, bits)):
            values, counts = np.unique(grid, return_counts=True)
            top = sorted(zip(counts, values), reverse=True)[:3]
            common = ", ".join(f"{int(v):+d} {100 * n / grid.size:.0f} %" for n, v in top)
            print(f"  grid {k} {grid.shape[0]}x{grid.shape[1]}: {b / pixels:.4f} bpp "
                  f"({b / grid.size:.3f} bits per latent); most frequent: {common}")


if __name__ == "__main__":
    main()
