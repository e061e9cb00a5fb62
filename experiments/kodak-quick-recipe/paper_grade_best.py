"""`--arch best` on the paper-grade images: per image and lambda, the lower RD cost of the
default decoder's encode (results/kodak-paper-grade/, committed format 4.0 files) and the
synth decoder's (``full/rows``: run.py's variant arch-a, which is synth, paper-grade preset,
whole images, CPU), then the BD-rates of both curves against the same anchors.

    python experiments/kodak-quick-recipe/paper_grade_best.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from coolchic.metrics import mean_psnr

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-recipe"  # the run's data
PAPER = HERE.parent / "kodak-paper-grade"


def _paper_report():
    """experiments/kodak-paper-grade/report.py, loaded by path (experiments are no package)."""
    source = Path(__file__).resolve().parents[1] / "kodak-paper-grade" / "report.py"
    spec = importlib.util.spec_from_file_location("paper_grade_report", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cost(r: dict) -> float:
    """True RD cost J: MSE on [0, 1] + lambda bpp."""
    return 10 ** (-r["psnr_db"] / 10) + r["lmbda"] * r["bpp"]


def main() -> None:
    report = _paper_report()
    default = {(r["image"], r["lmbda"]): r for r in
               report.as_committed([r for r in report.our_rows() if r["run"] == "run"])}
    synth = {}
    for path in sorted((HERE / "full" / "rows").glob("arch-a-*-slow-full-cpu.json")):
        r = json.loads(path.read_text())
        synth[(r["image"], r["lmbda"])] = {**r, "bytes": path.with_suffix(".bin").stat().st_size}
    print("| image | lambda | default bytes / PSNR | synth bytes / PSNR | J synth / J default | best |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    best = {}
    for key in sorted(default):
        d, s = default[key], synth.get(key)
        best[key] = d if s is None or _cost(d) <= _cost(s) else s
        cells = ("-", "-") if s is None else (f"{s['bytes']:,} / {s['psnr_db']:.2f}",
                                              f"{_cost(s) / _cost(d):.4f}")
        print(f"| {key[0]} | {key[1]:g} | {d['bytes']:,} / {d['psnr_db']:.2f} | {cells[0]} | "
              f"{cells[1]} | {'synth' if best[key] is s else 'default'} |")

    table = report.read_table(PAPER / "anchors" / "per_image.tsv")
    images = sorted({k[0] for k in default})
    print("\nBD-rate per image and of the mean curve (overlap in brackets):\n")
    print("| curve | image | " + " | ".join(report.ANCHORS) + " |")
    print("| --- | --- |" + " ---: |" * len(report.ANCHORS))
    for name, rows in (("default", default), ("best", best)):
        for image in (*images, "mean"):
            chosen = images if image == "mean" else [image]
            ours = _mean_curve([r for k, r in rows.items() if k[0] in chosen], "lmbda", len(chosen))
            cells = []
            for a in report.ANCHORS:
                anchor = [r for r in table if r["codec"] == a and r["image"] in chosen]
                cells.append(report.bd_cell(_mean_curve(anchor, "quality", len(chosen)), ours))
            print(f"| {name} | {image} | " + " | ".join(cells) + " |")


def _mean_curve(rows: list[dict], key: str, n_images: int) -> np.ndarray:
    """(n, 2) of (mean bpp, mean PSNR) per setting held by all n_images, by rate."""
    groups: dict[float, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    return np.array(sorted((np.mean([r["bpp"] for r in g]), mean_psnr([r["psnr_db"] for r in g]))
                           for g in groups.values() if len(g) == n_images))


if __name__ == "__main__":
    main()
