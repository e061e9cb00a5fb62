"""Format 4.0's weight priors on the quick protocol: the 96 format 3.0 files of the
quick-4500 run (results/kodak-quick-4500/bitstreams, committed) rewritten by
`coolchic upgrade` (lossless: the rewrite must read back to the same integers), with the
weight bytes, the prior each file names and the BD-rates of both formats against the
classical codecs measured in the same run.

    python experiments/weight-prior/quick.py [--check ../shared/data/kodak]

--check decodes every 4.0 file and compares its PSNR on the 256x256 centre crop with the
row's, which it must equal.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np

from coolchic.bitstream import SectionId, read_bitstream
from coolchic.decode import decode
from coolchic.evaluate.datasets import load_image
from coolchic.evaluate.report import bd_rate_rows_markdown
from coolchic.evaluate.store import job_stem, read_tsv
from coolchic.legacy import upgrade
from coolchic.metrics import psnr_images
from coolchic.payload import prior_id_of

RUN = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-4500"
OURS = "coolchic-quick-it4500"
ANCHORS = ("hevc444", "avif444", "jxl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, metavar="KODAK", help="decode and check PSNRs")
    args = parser.parse_args()
    rows = read_tsv(RUN / "per_image.tsv")
    ours = [r for r in rows if r.codec == OURS]
    v3, v4, weights3, weights4, named = [], [], {}, {}, {}
    for r in ours:
        stem = job_stem(r.image, r.lmbda)
        old = (RUN / "bitstreams" / f"{stem}.bin").read_bytes()
        new = upgrade(old)
        if args.check:
            source = load_image(args.check / f"{r.image}.png", crop=256).pixels
            psnr = psnr_images(source, decode(new), 8)
            assert abs(psnr - r.psnr_db) < 1e-4, (r.image, r.lmbda, psnr, r.psnr_db)
        weights3[stem] = len(read_bitstream(old, major=3)[1][SectionId.WEIGHTS])
        weights4[stem] = len(read_bitstream(new)[1][SectionId.WEIGHTS])
        named[stem] = prior_id_of(read_bitstream(new)[1][SectionId.WEIGHTS])
        for out, codec, data in ((v3, "format 3.0", old), (v4, "format 4.0", new)):
            out.append(dataclasses.replace(r, codec=codec, bytes=len(data),
                                           bpp=8.0 * len(data) / (r.width * r.height)))
    if args.check:
        print(f"checked: {len(ours)} files decode to their rows' PSNR")
    print("| lambda | mean bytes 3.0 | mean bytes 4.0 | saving | WEIGHTS 3.0 -> 4.0 | priors named |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    for lmbda in sorted({r.lmbda for r in ours}):
        stems = [job_stem(r.image, r.lmbda) for r in ours if r.lmbda == lmbda]
        a = np.mean([r.bytes for r in v3 if r.lmbda == lmbda])
        b = np.mean([r.bytes for r in v4 if r.lmbda == lmbda])
        w3, w4 = np.mean([weights3[s] for s in stems]), np.mean([weights4[s] for s in stems])
        ids = ", ".join(f"{k}: {n}" for k, n in sorted(Counter(named[s] for s in stems).items()))
        print(f"| {lmbda:g} | {a:,.1f} | {b:,.1f} | {100 * (a - b) / a:.2f} % | "
              f"{w3:.1f} -> {w4:.1f} | {ids} |")
    others = [r for r in rows if r.codec in ANCHORS]
    print()
    print(bd_rate_rows_markdown(others + v3 + v4, ("format 3.0", "format 4.0"), ANCHORS, 24, label="format"))


if __name__ == "__main__":
    main()
