"""Paper-grade preset on whole Kodak images (issue 5): our points beside the classical anchors.

Reads the rows of the run folders (``run/`` for kodim01/07/15/23, ``run-b/`` for
kodim04/08/13/19: copies of the evaluations' folders) and the per-image tables of their
anchors' runs (``anchors/``, ``anchors-b/``: the same images, ``--only-baselines``), then
prints each image's
points and BD-rates, and the BD-rate of the mean curve over the images that have every
lambda. Only finished encodes are in the rows, so this runs on a partial run too.

The rows give the bytes as encoded (coolchic 0.2 wrote format 2.0 for the first 8
encodes, coolchic 0.4 format 4.0 for the last 4); the committed bitstreams are all in
format 4.0 (the first 8 rewritten by `coolchic upgrade`, same decoded images), and every
table is printed for both. Last, the Cool-chic releases v3.4 and v5.0 (their published
per-image Kodak results, packaged in coolchic/evaluate/reference/) on the same images
against the same anchors, and our RD cost against theirs at the lambdas both have.

    python experiments/kodak-paper-grade/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from coolchic.evaluate.bdrate import bd_rate
from coolchic.evaluate.plots import rd_figure, save_rd_plot
from coolchic.evaluate.published import PublishedCurve, paper_per_image
from coolchic.evaluate.report import complete_points, curves
from coolchic.evaluate.store import Row
from coolchic.metrics import mean_psnr

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-paper-grade"  # the run's data
# (our run folder, its anchors' folder): the first 4 images, then 4 more (stop 25)
RUNS = (("run", "anchors"), ("run-b", "anchors-b"))
ANCHORS = ("hevc444", "avif444", "jxl", "webp")
LAMBDAS = (5e-4, 4e-3, 2e-2)


def our_rows() -> list[dict]:
    """Our finished encodes of every run folder present, each with the folder it came from."""
    return [{**json.loads(p.read_text()), "run": run}
            for run, _ in RUNS
            for p in sorted((HERE / run / "rows" / "coolchic-slow").glob("*.json"))]


def _anchor_rows() -> list[dict]:
    """The anchors' rows of every anchors folder present."""
    return [row for _, anchors in RUNS if (HERE / anchors / "per_image.tsv").is_file()
            for row in read_table(HERE / anchors / "per_image.tsv")]


def read_table(path: Path) -> list[dict]:
    """Rows of a per_image.tsv (comment lines skipped), numbers as floats."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    names = lines[0].split("\t")
    rows = [dict(zip(names, line.split("\t"), strict=True)) for line in lines[1:]]
    for row in rows:
        for key in ("bpp", "psnr_db", "quality"):
            row[key] = float(row[key])
    return rows


def _curve(rows: list[dict]) -> np.ndarray:
    """(n, 2) of (bpp, PSNR), by rate."""
    return np.array(sorted((r["bpp"], r["psnr_db"]) for r in rows))


def bd_cell(anchor: np.ndarray, ours: np.ndarray) -> str:
    """BD-rate of `ours` against `anchor` ((n, 2) curves of bpp, PSNR) and the overlap, as a cell."""
    result = bd_rate(anchor[:, 0], anchor[:, 1], ours[:, 0], ours[:, 1])
    return f"{result.value:+.2f} % ({result.overlap:.2f})"


def as_committed(rows: list[dict]) -> list[dict]:
    """The rows with the bytes and bpp of the committed bitstream files."""
    out = []
    for r in rows:
        path = HERE / r["run"] / "bitstreams" / "coolchic-slow" / f"{r['image']}@{r['lmbda']!r}.bin"
        n = path.stat().st_size
        out.append({**r, "bytes": n, "bpp": 8.0 * n / (r["width"] * r["height"])})
    return out


def main() -> None:
    encoded = our_rows()
    for title, ours in (("as encoded", encoded), ("committed files (format 4.0)", as_committed(encoded))):
        print(f"\n## {title}\n")
        _report(ours)
    _releases(as_committed(encoded))
    _plot(as_committed(encoded))


def _report(ours: list[dict]) -> None:
    table = _anchor_rows()
    anchors = {a: [r for r in table if r["codec"] == a] for a in ANCHORS}
    images = sorted({r["image"] for r in ours})
    print("| image | lambda | bytes | bpp | PSNR (dB) | encode (min) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in sorted(ours, key=lambda r: (r["image"], r["lmbda"])):
        print(f"| {r['image']} | {r['lmbda']:g} | {r['bytes']} | {r['bpp']:.4f} | "
              f"{r['psnr_db']:.2f} | {r['encode_s'] / 60:.1f} |")
    print("\nBD-rate of ours per image (overlap of the quality ranges in brackets):\n")
    print("| image | points | " + " | ".join(ANCHORS) + " |")
    print("| --- | ---: |" + " ---: |" * len(ANCHORS))
    complete = []
    for image in images:
        mine = [r for r in ours if r["image"] == image]
        if len(mine) == len(LAMBDAS):
            complete.append(image)
        if len(mine) < 2:
            continue
        cells = [bd_cell(_curve([r for r in anchors[a] if r["image"] == image]), _curve(mine))
                 for a in ANCHORS]
        print(f"| {image} | {len(mine)} | " + " | ".join(cells) + " |")
    if len(complete) < 2:
        print(f"\nmean curve: needs 2 or more complete images, {len(complete)} so far")
        return

    def mean_curve(rows: list[dict], key: str) -> np.ndarray:
        groups: dict[float, list[dict]] = {}
        for r in rows:
            if r["image"] in complete:
                groups.setdefault(r[key], []).append(r)
        return np.array(sorted((np.mean([r["bpp"] for r in g]), mean_psnr([r["psnr_db"] for r in g]))
                               for g in groups.values() if len(g) == len(complete)))

    mine = mean_curve(ours, "lmbda")
    cells = [bd_cell(mean_curve(anchors[a], "quality"), mine) for a in ANCHORS]
    print(f"\nmean curve over {', '.join(complete)}: " + "; ".join(
        f"vs {a} {c}" for a, c in zip(ANCHORS, cells, strict=True)))


def _releases(ours: list[dict]) -> None:
    """Published Cool-chic releases on our images: BD-rates against our anchors (all five
    published lambdas, and the three nearest ours: 4e-4, 4e-3, 2e-2), then J ours / J theirs
    at the lambdas both ran (4e-3, 2e-2; J = MSE on [0, 1] + lambda bpp)."""
    table = _anchor_rows()
    images = sorted({r["image"] for r in ours})
    print("\n## Cool-chic releases on the same images, against the same anchors\n")
    print("| release | lambdas | image | " + " | ".join(ANCHORS) + " |")
    print("| --- | --- | --- |" + " ---: |" * len(ANCHORS))
    for version in ("v3.4", "v5.0"):
        points = paper_per_image(version)
        for label, keep in (("all 5", lambda lm: True), ("4e-4, 4e-3, 2e-2", lambda lm: lm >= 4e-4)):
            for image in (*images, "mean"):
                chosen = images if image == "mean" else [image]
                theirs = _release_curve(points, chosen, keep)
                cells = []
                for a in ANCHORS:
                    rows = [r for r in table if r["codec"] == a and r["image"] in chosen]
                    by_q: dict[float, list[dict]] = {}
                    for r in rows:
                        by_q.setdefault(r["quality"], []).append(r)
                    anchor = np.array(sorted((np.mean([r["bpp"] for r in g]),
                                              mean_psnr([r["psnr_db"] for r in g]))
                                             for g in by_q.values() if len(g) == len(chosen)))
                    cells.append(bd_cell(anchor, theirs))
                print(f"| {version} | {label} | {image} | " + " | ".join(cells) + " |")
    print("\n| image | lambda | ours: bpp / PSNR | v3.4: bpp / PSNR | J ours / J v3.4 | v5.0: bpp / PSNR |"
          " J ours / J v5.0 |")
    print("| --- | ---: | --- | --- | ---: | --- | ---: |")
    releases = {v: paper_per_image(v) for v in ("v3.4", "v5.0")}
    for r in sorted(ours, key=lambda r: (r["lmbda"], r["image"])):
        key = (r["image"], r["lmbda"])
        if key not in releases["v3.4"]:
            continue
        cells = [f"{r['bpp']:.4f} / {r['psnr_db']:.2f}"]
        for version in ("v3.4", "v5.0"):
            bpp, psnr = releases[version][key]
            cells += [f"{bpp:.4f} / {psnr:.2f}",
                      f"{rd_cost(r['lmbda'], r['bpp'], r['psnr_db']) / rd_cost(r['lmbda'], bpp, psnr):.3f}"]
        print(f"| {r['image']} | {r['lmbda']:g} | " + " | ".join(cells) + " |")


def _release_curve(points: dict[tuple[str, float], tuple[float, float]], images: list[str],
                   keep=lambda lmbda: True) -> np.ndarray:
    """(n, 2) of (mean bpp, mean PSNR) by rate: a release's published points averaged over
    `images`, at the lambdas that `keep` accepts and every one of the images has."""
    groups: dict[float, list[tuple[float, float]]] = {}
    for (name, lm), point in points.items():
        if name in images and keep(lm):
            groups.setdefault(lm, []).append(point)
    return np.array(sorted((np.mean([b for b, _ in g]), mean_psnr([q for _, q in g]))
                           for g in groups.values() if len(g) == len(images)))


def _as_row(r: dict) -> Row:
    """A row of ours (JSON) or of an anchors table (strings) as the toolkit's Row."""
    def number(key: str) -> float | None:
        value = r.get(key)
        return None if value in (None, "-", "") else float(value)
    return Row(codec=r["codec"], image=r["image"], width=int(r["width"]), height=int(r["height"]),
               lmbda=number("lmbda") if "lmbda" in r else number("lambda"),
               quality=number("quality"), bytes=int(r["bytes"]), bpp=float(r["bpp"]),
               psnr_db=float(r["psnr_db"]), mse=float(r["mse"]), ms_ssim=float(r["ms_ssim"]),
               encode_s=float(r["encode_s"]), decode_s=float(r["decode_s"]),
               mac_per_pixel=number("mac_per_pixel"), preset=r["preset"], revision=r["revision"])


def _plot(ours: list[dict]) -> None:
    """rd.png: mean curves over the images we coded at every lambda: ours (committed files),
    the anchors, and the Cool-chic releases' published points on the same images."""
    complete = sorted(i for i in {r["image"] for r in ours}
                      if sum(r["image"] == i for r in ours) == len(LAMBDAS))
    rows = [_as_row(r) for r in ours + [r for r in _anchor_rows() if r["codec"] in ANCHORS]
            if r["image"] in complete]
    measured = {codec: complete_points(points, len(complete))
                for codec, points in curves(rows).items()}
    published = []
    for version in ("v3.4", "v5.0"):
        points = _release_curve(paper_per_image(version), complete)
        published.append(PublishedCurve(
            key=f"coolchic-{version}", label=f"Cool-chic {version}, same images",
            citation=f"Cool-chic release {version}, published per-image results",
            dataset="Kodak", group="coolchic", bpp=tuple(points[:, 0]),
            psnr_db=tuple(points[:, 1]), ms_ssim=None))
    figure = rd_figure(measured, published, title=(
        f"Paper-grade preset (slow) on {len(complete)} whole Kodak images "
        f"({', '.join(complete)}), mean curves"), max_bpp=1.0)
    print(f"\nwrote {save_rd_plot(HERE / 'rd.png', figure)}")


def rd_cost(lmbda: float, bpp: float, psnr_db: float) -> float:
    """True RD cost J: MSE on [0, 1] (from the 8-bit PSNR) + lambda bpp."""
    return 10 ** (-psnr_db / 10) + lmbda * bpp


if __name__ == "__main__":
    main()
