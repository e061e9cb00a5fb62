"""Format 2.0's framing on the quick protocol: the curve of this folder (layer+refine60 rows,
the 2e-2 point from arch-rows/lite-noconv@2e-2) with each file's bytes lowered by what
format 2.0 saves, and its BD-rates against the classical codecs of ../kodak-quick.

The saving is a function of the file's structure only (the payload bytes are unchanged):
5 bytes of fixed header, 3 + 2 + 2 of section headers (CONFIG under 128 bytes, WEIGHTS and
LATENTS of 128..16383), 6 + 5 of symbol-stream counts (weight stream under 128 words, latent
stream of 128..16383 words, no escape word) = 23 bytes; one byte less for a LATENTS section
of 16384 bytes or more. The lower bound row takes 21 bytes off every file.

    python experiments/kodak-quick-quant/framing.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from coolchic.evaluate.bdrate import bd_rate
from coolchic.metrics import mean_psnr

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-quant"  # the run's data
ANCHORS = HERE.parent / "kodak-quick" / "per_image.tsv"
VARIANT = "layer+refine60"
PIXELS = 256 * 256


def _rows() -> list[dict]:
    rows = [json.loads(p.read_text()) for p in (HERE / "rows").glob("*.json")]
    low = [json.loads(p.read_text()) for p in (HERE / "arch-rows" / "lite-noconv@2e-2").glob("*.json")]
    return [r for r in rows if r["lmbda"] != 0.02] + low


def _anchors() -> dict[str, np.ndarray]:
    """codec -> (points, 2) of (mean bpp, mean PSNR) over the 24 crops, by quality."""
    lines = [line for line in ANCHORS.read_text().splitlines() if not line.startswith("#")]
    names = lines[0].split("\t")
    table: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for line in lines[1:]:
        row = dict(zip(names, line.split("\t"), strict=True))
        table.setdefault(row["codec"], {}).setdefault(row["quality"], []).append(
            (float(row["bpp"]), float(row["psnr_db"])))
    return {codec: np.array(sorted((np.mean([b for b, _ in v]), mean_psnr([p for _, p in v]))
                                   for v in by_quality.values() if len(v) == 24))
            for codec, by_quality in table.items() if not codec.startswith("coolchic")}


def curve(rows: list[dict], saving) -> np.ndarray:
    """(4, 2) of (mean bpp, mean PSNR) per lambda, each file `saving(bytes)` bytes smaller."""
    points = []
    for lmbda in sorted({r["lmbda"] for r in rows}):
        same = [r[VARIANT] for r in rows if r["lmbda"] == lmbda]
        assert len(same) == 24, (lmbda, len(same))
        points.append((np.mean([(r["bytes"] - saving(r["bytes"])) * 8 / PIXELS for r in same]),
                       mean_psnr([r["psnr_db"] for r in same])))
    return np.array(sorted(points))


def main() -> None:
    rows, anchors = _rows(), _anchors()
    codecs = ("hevc444", "avif444", "jxl", "webp", "jpeg2000")
    print("| framing | bpp at 2e-2, 4e-3, 5e-4, 1e-4 | " + " | ".join(codecs) + " |")
    print("| --- | --- |" + " ---: |" * len(codecs))
    for name, saving in (("format 1.0", lambda n: 0),
                         ("format 2.0", lambda n: 23 if n < 16384 + 512 else 22),
                         ("format 2.0, lower bound (21 bytes)", lambda n: 21)):
        points = curve(rows, saving)
        cells = [f"{bd_rate(anchors[c][:, 0], anchors[c][:, 1], points[:, 0], points[:, 1]).value:+.2f} %"
                 for c in codecs]
        print(f"| {name} | " + ", ".join(f"{b:.4f}" for b in points[:, 0]) + " | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
