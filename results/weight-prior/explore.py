"""Exploration: how many weight bytes a prior mean learned on one set of bitstreams saves on
another. Prints, per lambda, the mean weight bytes of the test files as they are and coded
as the difference from the training files' mean (or median) at each lambda.

    python results/weight-prior/explore.py TRAIN_DIR TEST_DIR
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from coolchic.bitstream import SectionId, read_bitstream
from coolchic.payload import B_SCALE_CODE, W_SCALE_CODE, tensor_plan, unpack_config, unpack_weights

CODES = (W_SCALE_CODE, B_SCALE_CODE)


def load(folder: Path):
    """{(config, lambda): [list of (tensor ints, frac) per tensor]} of every file."""
    out = defaultdict(list)
    for path in sorted(folder.glob("*.bin")):
        header, sections = read_bitstream(path.read_bytes())
        config = unpack_config(sections[SectionId.CONFIG])
        weights = unpack_weights(sections[SectionId.WEIGHTS], config, header.channels)
        tensors = []
        for q in weights.layers():
            tensors += [(q.weight, q.w_frac), (q.bias, q.b_frac)]
        out[(config, path.stem.split("@")[1])].append(tensors)
    return out


def bits(t, code):
    return tensor_plan(t, code)[1]


def table(files, how):
    real = [[v * 2.0 ** -f for v, f in tensors] for tensors in files]
    agg = np.mean if how == "mean" else np.median
    return [agg([r[i] for r in real], axis=0) for i in range(len(real[0]))]


def coded(tensors, prior):
    """Bits per tensor: plain and as the difference from the prior."""
    plain, delta = [], []
    for i, (v, f) in enumerate(tensors):
        code = CODES[i % 2]
        plain.append(bits(v, code))
        if prior is None:
            delta.append(np.inf)
        else:
            p = np.round(prior[i] * 2.0 ** f).astype(np.int64)
            delta.append(bits(v - p, code))
    return np.array(plain), np.array(delta)


def main() -> None:
    train, test = load(Path(sys.argv[1])), load(Path(sys.argv[2]))
    for how in ("mean", "median"):
        tables = {key: table(files, how) for key, files in train.items()}
        print(f"\n## {how}: test files' weight bytes")
        print("| config lambda | n | plain | same-lambda table, whole file | best table, whole file"
              " | same table, per tensor | best, per tensor |")
        for (config, lmbda), files in sorted(test.items(), key=lambda kv: float(kv[0][1])):
            same = tables.get((config, lmbda))
            others = [t for (c, _), t in tables.items() if c == config]
            acc = np.zeros(5)
            for tensors in files:
                plain, d_same = coded(tensors, same)
                ds = [coded(tensors, t)[1] for t in others] or [np.full_like(plain, np.inf)]
                whole = min(plain.sum(), d_same.sum())
                best_whole = min([plain.sum()] + [d.sum() for d in ds])
                per = np.minimum(plain, d_same).sum() + len(plain)
                best_per = min([plain.sum()] + [np.minimum(plain, d).sum() + len(plain) for d in ds])
                acc += [plain.sum(), whole, best_whole, per, best_per]
            acc /= 8 * len(files)
            name = "lite" if config.synthesis.residual_convs == 0 else "default"
            print(f"| {name} {lmbda} | {len(files)} | " + " | ".join(f"{a:.1f}" for a in acc) + " |")


if __name__ == "__main__":
    main()
