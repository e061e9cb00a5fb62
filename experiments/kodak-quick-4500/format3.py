"""Bitstream format 3.0 on the quick protocol: this run's 96 files as format 2.0 wrote them
(per_image.tsv) and as `coolchic upgrade` rewrote them (bitstreams/, committed; each decodes
to the image of its 2.0 file, checked when they were rewritten), with the BD-rates of both
against the classical codecs measured in the same run.

    python experiments/kodak-quick-4500/format3.py [--check ../shared/data/kodak]

--check decodes every 3.0 file (through its lossless 4.0 rewrite, as coolchic 0.4 reads
only 4.0) and compares its PSNR on the 256x256 centre crop with the row's (the 2.0
file's), which it must equal.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from coolchic.decode import decode
from coolchic.evaluate.datasets import load_image
from coolchic.evaluate.report import bd_rate_rows_markdown
from coolchic.evaluate.store import job_stem, read_tsv
from coolchic.legacy import upgrade
from coolchic.metrics import psnr_images

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-4500"  # the run's data
OURS = "coolchic-quick-it4500"
ANCHORS = ("hevc444", "avif444", "jxl", "webp", "jpeg2000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, metavar="KODAK", help="decode and check PSNRs")
    args = parser.parse_args()
    rows = read_tsv(HERE / "per_image.tsv")
    ours = [r for r in rows if r.codec == OURS]
    rewritten = []
    for r in ours:
        data = (HERE / "bitstreams" / f"{job_stem(r.image, r.lmbda)}.bin").read_bytes()
        if args.check:
            source = load_image(args.check / f"{r.image}.png", crop=256).pixels
            psnr = psnr_images(source, decode(upgrade(data)), 8)
            assert abs(psnr - r.psnr_db) < 1e-4, (r.image, r.lmbda, psnr, r.psnr_db)
        rewritten.append(dataclasses.replace(r, codec="format 3.0", bytes=len(data),
                                             bpp=8.0 * len(data) / (r.width * r.height)))
    if args.check:
        print(f"checked: {len(ours)} files decode to their rows' PSNR")
    print("| lambda | mean bytes, 2.0 | mean bytes, 3.0 | saving |")
    print("| ---: | ---: | ---: | ---: |")
    for lmbda in sorted({r.lmbda for r in ours}):
        old = np.mean([r.bytes for r in ours if r.lmbda == lmbda])
        new = np.mean([r.bytes for r in rewritten if r.lmbda == lmbda])
        print(f"| {lmbda:g} | {old:,.1f} | {new:,.1f} | {100 * (old - new) / old:.2f} % |")
    renamed = [dataclasses.replace(r, codec="format 2.0") for r in ours]
    others = [r for r in rows if r.codec in ANCHORS]
    print()
    print(bd_rate_rows_markdown(others + renamed + rewritten, ("format 2.0", "format 3.0"), ANCHORS, 24,
                                label="format"))


if __name__ == "__main__":
    main()
