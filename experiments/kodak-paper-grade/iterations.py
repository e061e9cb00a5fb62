"""Iterations of the paper-grade preset on whole Kodak images (issue 5): the `slow` recipe
scaled to 11,000, 22,000 (its own count) and 44,000 iterations, same decoder (`default`),
seed 0, lambda 4e-3, all on one machine with one revision (rows in ``rows/<iterations>/``,
copied from the run folders), and beside them the committed 22,000-iteration files of
``../run`` (older revisions and machines), all under results/kodak-paper-grade/.
J = MSE on [0, 1] + lambda bpp.

    python experiments/kodak-paper-grade/iterations.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-paper-grade" / "iterations"  # rows
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402  (experiments/kodak-paper-grade/report.py)

REFERENCE = 22000  # the preset's own count: J is given relative to its run here


def cost(r: dict) -> float:
    return report.rd_cost(r["lmbda"], r["bpp"], r["psnr_db"])


def main() -> None:
    runs = {int(folder.name): {(r["image"], r["lmbda"]): r for r in map(
        lambda p: json.loads(p.read_text()), sorted(folder.glob("*.json")))}
        for folder in sorted((HERE / "rows").iterdir()) if folder.is_dir()}
    committed = {(r["image"], r["lmbda"]): r
                 for r in report.as_committed([r for r in report.our_rows() if r["run"] == "run"])}
    counts = sorted(runs)
    print("| image | lambda | iterations | bytes | PSNR (dB) | J / J at 22,000 | encode (min) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in sorted(runs[REFERENCE], key=lambda k: (k[1], k[0])):
        ref = cost(runs[REFERENCE][key])
        for n in counts:
            if key in runs[n]:
                r = runs[n][key]
                print(f"| {key[0]} | {key[1]:g} | {n:,} | {r['bytes']:,} | {r['psnr_db']:.2f} | "
                      f"{cost(r) / ref:.4f} | {r['encode_s'] / 60:.1f} |")
        if key in committed:
            r = committed[key]
            print(f"| {key[0]} | {key[1]:g} | 22,000 (committed run) | {r['bytes']:,} | "
                  f"{r['psnr_db']:.2f} | {cost(r) / ref:.4f} | {r['encode_s'] / 60:.1f} |")
    print()
    for n in counts:
        ratios = [cost(runs[n][k]) / cost(runs[REFERENCE][k]) for k in runs[REFERENCE] if k in runs[n]]
        if n != REFERENCE and ratios:
            print(f"{n:,} iterations: mean J / J at 22,000 = {sum(ratios) / len(ratios):.4f} "
                  f"over {len(ratios)} (image, lambda) pairs, range {min(ratios):.4f}-{max(ratios):.4f}")


if __name__ == "__main__":
    main()
