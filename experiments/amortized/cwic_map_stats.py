"""Statistics of cwic's importance map on a few images: is the map content-adaptive?

Usage: .venv/bin/python experiments/amortized/cwic_map_stats.py [--checkpoint model.pt] IMAGE...
Prints a TSV: per image, the mean, standard deviation, minimum and maximum of the map's
integer levels (0..L-1) over the code positions, the fraction of the code's bits kept
((level + 1) / L averaged), and the histogram of levels; then the same over all images.
"""

import argparse

import numpy as np
import torch

from coolchic.amortized import checkpoints
from coolchic.amortized.api import rgb8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("images", nargs="+")
    parser.add_argument("--checkpoint", help="a cwic model.pt [the shipped cwic]")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = (checkpoints.load_shipped("cwic") if args.checkpoint is None
             else checkpoints.load(args.checkpoint, name="cwic"))
    levels = model.config.levels
    print(f"# cwic crc {model.model_crc():08x}, use_map {model.use_map}, L = {levels}")
    print("image\tmean_level\tstd_level\tmin_level\tmax_level\tkept_fraction\thistogram")
    every = []
    for path in args.images:
        _, level = model._codes(rgb8(path, "cwic"))  # int64 (h, w)
        every.append(level.ravel())
        print(_row(path.rsplit("/", 1)[-1], level.ravel(), levels))
    print(_row(f"all {len(every)}", np.concatenate(every), levels))


def _row(name: str, level: np.ndarray, levels: int) -> str:
    histogram = np.bincount(level, minlength=levels)
    return (f"{name}\t{level.mean():.3f}\t{level.std():.3f}\t{level.min()}\t{level.max()}\t"
            f"{((level + 1) / levels).mean():.4f}\t{','.join(map(str, histogram))}")


if __name__ == "__main__":
    main()
