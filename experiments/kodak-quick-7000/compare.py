"""Quick protocol at 7000 iterations against 4500 (issue 5): the same 96 crop-lambda pairs.

The 4500 side is the committed quick-4500 run (coolchic 0.2, AMD EPYC) with its files
rewritten to format 4.0 by `coolchic upgrade` (lossless, same decoded images), i.e. what
coolchic 0.4 writes for those models. The 7000 side is this folder's run (coolchic 0.4,
Intel Xeon). Prints, per lambda, the mean rate and PSNR, the geometric mean of the true
RD cost ratio J(7000) / J(4500) with J = MSE on [0, 1] + lambda * bpp, the pairs where
7000 is better and the mean encode time; then both curves' BD-rates against the classical
codecs, each side against the anchors of its own run and, as a check, the anchors of the
other run.

    python experiments/kodak-quick-7000/compare.py
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from coolchic.evaluate.report import bd_rate_rows_markdown
from coolchic.evaluate.store import job_stem, read_tsv
from coolchic.legacy import upgrade
from coolchic.metrics import mean_psnr

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-7000"  # the run's data
OLD = HERE.parent / "kodak-quick-4500"
ANCHORS = ("hevc444", "avif444", "jxl")


def _cost(row) -> float:
    return row.mse / 255.0**2 + row.lmbda * row.bpp


def _point(rows) -> str:
    return f"{np.mean([r.bpp for r in rows]):.4f} / {mean_psnr([r.psnr_db for r in rows]):.2f} dB"


def main() -> None:
    old_rows = read_tsv(OLD / "per_image.tsv")
    new_rows = read_tsv(HERE / "per_image.tsv")
    old = {}
    for r in old_rows:
        if r.codec == "coolchic-quick-it4500":
            data = upgrade((OLD / "bitstreams" / f"{job_stem(r.image, r.lmbda)}.bin").read_bytes())
            old[(r.image, r.lmbda)] = dataclasses.replace(
                r, codec="4500 (format 4.0)", bytes=len(data), bpp=8.0 * len(data) / (r.width * r.height))
    new = {(r.image, r.lmbda): dataclasses.replace(r, codec="7000")
           for r in new_rows if r.codec == "coolchic-quick-it7000"}
    pairs = sorted(set(old) & set(new))
    print(f"{len(pairs)} crop-lambda pairs in both runs\n")
    print("| lambda | 4500: bpp / PSNR | 7000: bpp / PSNR | J 7000 / J 4500 (range) | better on | "
          "encode s 4500 (AMD) / 7000 (Xeon) |")
    print("| ---: | --- | --- | --- | ---: | --- |")
    for lmbda in sorted({k[1] for k in pairs}):
        keys = [k for k in pairs if k[1] == lmbda]
        a, b = [old[k] for k in keys], [new[k] for k in keys]
        ratio = np.array([_cost(y) / _cost(x) for x, y in zip(a, b)])
        print(f"| {lmbda:g} | {_point(a)} | {_point(b)} | "
              f"{np.exp(np.mean(np.log(ratio))):.4f} ({ratio.min():.4f}-{ratio.max():.4f}) | "
              f"{int(np.sum(ratio < 1))} of {len(keys)} | "
              f"{np.mean([r.encode_s for r in a]):.0f} / {np.mean([r.encode_s for r in b]):.0f} |")
    n_images = len({k[0] for k in pairs})
    ours = [old[k] for k in pairs] + [new[k] for k in pairs]
    print("\nBD-rate (mean RGB PSNR), negative = fewer bits than the anchor:\n")
    for source, rows in (("4500 run", old_rows), ("7000 run", new_rows)):
        anchors = [r for r in rows if r.codec in ANCHORS and r.image in {k[0] for k in pairs}]
        print(f"Anchors from the {source}:\n")
        print(bd_rate_rows_markdown(anchors + ours, ("4500 (format 4.0)", "7000"), ANCHORS, n_images) + "\n")


if __name__ == "__main__":
    main()
