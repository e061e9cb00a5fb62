"""More iterations at 2e-2 only: the quick protocol's lowest point at 10500 iterations.

At 2e-2 the quick protocol's crops use the `lite-noconv` decoder, whose encodes take
about 33 s at 7000 iterations against 50 s for the other points. 10500 iterations there
cost about what the other points cost. This prints the J ratio at 2e-2 and the BD-rates
of the curve with its 2e-2 point replaced (anchors from the 7000 run).

    coolchic evaluate ../shared/data/kodak --crop 256 --lmbda 2e-2 --preset quick \
        --iterations 10500 --baselines none --jobs 2 -o results/runs/quick-2e2-10500
    cp results/runs/quick-2e2-10500/per_image.tsv results/kodak-quick-7000/it10500-2e-2.tsv
    python experiments/kodak-quick-7000/low_rate.py
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from coolchic.evaluate.report import bd_rate_rows_markdown
from coolchic.evaluate.store import read_tsv

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-7000"  # the run's data
ANCHORS = ("hevc444", "avif444", "jxl")


def _cost(row) -> float:
    return row.mse / 255.0**2 + row.lmbda * row.bpp


def main() -> None:
    base = read_tsv(HERE / "per_image.tsv")
    longer = {r.image: r for r in read_tsv(HERE / "it10500-2e-2.tsv")}
    ours = [r for r in base if r.codec == "coolchic-quick-it7000"]
    low = [r for r in ours if r.lmbda == 0.02]
    ratio = np.array([_cost(longer[r.image]) / _cost(r) for r in low])
    print(f"2e-2, 10500 against 7000 iterations on {len(low)} crops: J ratio "
          f"{np.exp(np.mean(np.log(ratio))):.4f} ({ratio.min():.4f}-{ratio.max():.4f}), "
          f"better on {int(np.sum(ratio < 1))}; encode "
          f"{np.mean([r.encode_s for r in longer.values()]):.0f} s against "
          f"{np.mean([r.encode_s for r in low]):.0f} s")
    mixed = [dataclasses.replace(longer[r.image] if r.lmbda == 0.02 else r, codec="2e-2 at 10500")
             for r in ours]
    anchors = [r for r in base if r.codec in ANCHORS]
    print()
    codecs = ("coolchic-quick-it7000", "2e-2 at 10500")
    print(bd_rate_rows_markdown(anchors + ours + mixed, codecs, ANCHORS, 24))


if __name__ == "__main__":
    main()
