"""The design check behind the registered weight priors, on the training files only
(leave-one-out over the BSDS500 encodes, never Kodak): mean weight bytes per file at each
lambda coded as they are, against the mean of the other files at the same lambda, against
the mean pooled over every lambda of the same decoder, and against the best of the
per-lambda means (what an encoder choosing among registered priors gets).

    python experiments/weight-prior/design.py results/runs/bsds-prior/bitstreams/coolchic-quick
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from coolchic.bitstream import FORMAT_MAJOR, MAGIC, SectionId, read_bitstream
from coolchic.legacy import upgrade
from coolchic.payload import B_SCALE_CODE, W_SCALE_CODE, tensor_plan, unpack_config, unpack_weights

Tensors = list[tuple[np.ndarray, int]]  # (integers, fractional bits) of every tensor


def load(folder: Path) -> dict[str, list[Tensors]]:
    """{lambda: the tensors of every file}."""
    out: dict[str, list[Tensors]] = defaultdict(list)
    for path in sorted(folder.glob("*@*.bin")):
        data = path.read_bytes()
        if data[len(MAGIC)] != FORMAT_MAJOR:
            data = upgrade(data)
        header, sections = read_bitstream(data)
        config = unpack_config(sections[SectionId.CONFIG])
        tensors: Tensors = []
        for q in unpack_weights(sections[SectionId.WEIGHTS], config, header.channels).layers():
            tensors += [(q.weight, q.w_frac), (q.bias, q.b_frac)]
        out[path.stem.split("@")[1]].append(tensors)
    return out


def real(tensors: Tensors) -> list[np.ndarray]:
    return [v * 2.0**-frac for v, frac in tensors]


def mean_of(files: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.mean([f[t] for f in files], axis=0) for t in range(len(files[0]))]


def bits(tensors: Tensors, mean: list[np.ndarray] | None) -> float:
    total = 0.0
    for t, (v, frac) in enumerate(tensors):
        code = (W_SCALE_CODE, B_SCALE_CODE)[t % 2]
        total += tensor_plan(v if mean is None else v - np.round(mean[t] * 2.0**frac), code)[1]
    return total


def main() -> None:
    data = load(Path(sys.argv[1]))
    lambdas = sorted(data, key=float)
    shapes = {lmbda: [v.shape for v, _ in data[lmbda][0]] for lmbda in lambdas}
    print("| lambda | files | as they are | same-lambda mean | pooled mean | best per-lambda mean |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for lmbda in lambdas:
        files, acc = data[lmbda], np.zeros(4)
        kin = [other for other in lambdas if other != lmbda and shapes[other] == shapes[lmbda]]
        for i, tensors in enumerate(files):
            rest = [real(f) for j, f in enumerate(files) if j != i]
            same = bits(tensors, mean_of(rest))
            pooled = bits(tensors, mean_of(rest + [real(f) for o in kin for f in data[o]]))
            best = min([same] + [bits(tensors, mean_of([real(f) for f in data[o]])) for o in kin])
            acc += [bits(tensors, None), same, pooled, best]
        print(f"| {float(lmbda):g} | {len(files)} | "
              + " | ".join(f"{a / 8 / len(files):.1f}" for a in acc) + " |")


if __name__ == "__main__":
    main()
