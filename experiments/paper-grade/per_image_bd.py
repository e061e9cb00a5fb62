"""Per-image BD-rates of a paper-grade run stopped part-way, for the images whose four
lambdas are done, against anchors measured by `coolchic evaluate --only-baselines`, beside
Cool-chic 3.4's and 5.0's published points on the same image and anchors.

    coolchic evaluate ../shared/data/kodak --images kodim01 --baselines hevc444,avif444 \\
        --only-baselines -o results/runs/paper-grade-anchors
    python experiments/paper-grade/per_image_bd.py results/paper-grade/run results/runs/paper-grade-anchors
"""

import argparse
import csv
from pathlib import Path

from coolchic.evaluate.bdrate import bd_rate
from coolchic.evaluate.published import paper_per_image


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the paper-grade run folder (its per_image.tsv)")
    parser.add_argument("anchors", type=Path, help="an evaluation folder holding the anchors' rows")
    parser.add_argument("--lambdas", default="0.0004,0.001,0.004,0.02")
    opts = parser.parse_args()
    lambdas = [float(x) for x in opts.lambdas.split(",")]
    ours = [r for r in _rows(opts.run / "per_image.tsv") if r["codec"].startswith("coolchic")]
    anchors = _rows(opts.anchors / "per_image.tsv")
    releases = {v: paper_per_image(v) for v in ("v3.4", "v5.0")}
    print("| image | anchor | coolchic | Cool-chic 3.4 | Cool-chic 5.0 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for image in sorted({r["image"] for r in ours}):
        points = sorted((float(r["bpp"]), float(r["psnr_db"])) for r in ours if r["image"] == image)
        if len(points) < len(lambdas):
            continue
        for codec in sorted({r["codec"] for r in anchors if r["image"] == image}):
            a = [(float(r["bpp"]), float(r["psnr_db"])) for r in anchors
                 if r["codec"] == codec and r["image"] == image]

            def bd(test, a=a):
                return bd_rate([b for b, _ in a], [p for _, p in a], [b for b, _ in test],
                               [p for _, p in test]).value

            cells = [f"{bd(points):+.2f} %"]
            for v in ("v3.4", "v5.0"):
                cc = [releases[v][(image, lmbda)] for lmbda in lambdas if (image, lmbda) in releases[v]]
                cells.append(f"{bd(cc):+.2f} %" if len(cc) == len(lambdas) else "-")
            print(f"| {image} | {codec} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
