"""How much a prior on the decoder weights could save: the weights of this run's 3.0 files
coded as they are, as the difference from the seed-0 initialization the training starts
from, and as the difference from the leave-one-out mean of the other crops' weights at
the same lambda (same decoder configuration; the mean is taken on the real values and
rounded to each tensor's own step). Bytes of the coded integers, means over the crops.

    python experiments/kodak-quick-4500/weight_prior.py

An estimate only: a normative prior would have to ship with the decoder and be learned on
other images than the test set (BSDS500, say), not on the other Kodak crops.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from coolchic.bitstream import SectionId, read_bitstream
from coolchic.evaluate.report import bd_matrix, complete_points, curves
from coolchic.evaluate.store import job_stem, read_tsv
from coolchic.legacy import upgrade
from coolchic.model.coolchic import CoolChic
from coolchic.payload import B_SCALE_CODE, W_SCALE_CODE, tensor_plan, unpack_config, unpack_weights

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-4500"  # the run's data
OURS = "coolchic-quick-it4500"
ANCHORS = ("hevc444", "avif444")


def _bytes(tensors) -> float:
    """Coded bytes of (integers, code) pairs."""
    return sum(tensor_plan(t, code)[1] for t, code in tensors) / 8


def main() -> None:
    saving: dict[str, float] = {}  # "image@lambda" -> bytes the leave-one-out prior saves
    print("| lambda | crops | as they are | minus the seed-0 init | minus the leave-one-out mean |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for lmbda in ("0.0001", "0.0005", "0.004", "0.02"):
        files = []
        for path in sorted((HERE / "bitstreams").glob(f"*@{lmbda}.bin")):
            # the current reader refuses 3.0; the lossless rewrite holds the same integers
            header, sections = read_bitstream(upgrade(path.read_bytes()))
            config = unpack_config(sections[SectionId.CONFIG])
            weights = unpack_weights(sections[SectionId.WEIGHTS], config, header.channels)
            files.append((path, header, config, weights))
        config = files[0][2]
        files = [f for f in files if f[2] == config]  # one decoder configuration per lambda here
        real = [[(q.weight * 2.0 ** -q.w_frac, q.bias * 2.0 ** -q.b_frac) for q in w.layers()]
                for *_, w in files]
        plain = init = loo = 0.0
        for i, (path, header, _, weights) in enumerate(files):
            before = plain - loo
            torch.manual_seed(0)  # what overfit() does before building the model
            model = CoolChic(config, header.height, header.width, header.channels)
            start = [(m.weight, m.bias) for m in (*model.arm.layers, *model.synthesis.mlp,
                                                   *model.synthesis.residual)]
            for j, q in enumerate(weights.layers()):
                for k, (t, frac, code) in enumerate(((q.weight, q.w_frac, W_SCALE_CODE),
                                                     (q.bias, q.b_frac, B_SCALE_CODE))):
                    first = np.round(start[j][k].detach().double().numpy() * 2.0 ** frac)
                    mean = np.mean([real[o][j][k] for o in range(len(files)) if o != i], axis=0)
                    plain += _bytes([(t, code)])
                    init += _bytes([(t - first.astype(np.int64).reshape(t.shape), code)])
                    loo += _bytes([(t - np.round(mean * 2.0 ** frac).astype(np.int64), code)])
            saving[path.stem] = plain - loo - before
        n = len(files)
        print(f"| {float(lmbda):g} | {n} | {plain / n:.1f} | {init / n:.1f} | {loo / n:.1f} |")
    rows = read_tsv(HERE / "per_image.tsv")
    ours = []
    for r in rows:
        if r.codec == OURS:
            stem = job_stem(r.image, r.lmbda)
            n_bytes = (HERE / "bitstreams" / f"{stem}.bin").stat().st_size
            for name, size in (("format 3.0", n_bytes),
                               ("3.0, weights against the mean", n_bytes - saving[stem])):
                bpp = 8.0 * size / (r.width * r.height)
                ours.append(dataclasses.replace(r, codec=name, bytes=round(size), bpp=bpp))
    others = [r for r in rows if r.codec in ANCHORS]
    curve_map = {c: complete_points(p, 24) for c, p in curves(others + ours).items()}
    entries = {(e.codec, e.anchor): e.bd_rate_psnr_pct for e in bd_matrix(curve_map, ANCHORS)}
    print("\n| files | " + " | ".join(ANCHORS) + " |\n| --- |" + " ---: |" * len(ANCHORS))
    for name in ("format 3.0", "3.0, weights against the mean"):
        print(f"| {name} | " + " | ".join(f"{entries[(name, a)]:+.2f} %" for a in ANCHORS) + " |")


if __name__ == "__main__":
    main()
