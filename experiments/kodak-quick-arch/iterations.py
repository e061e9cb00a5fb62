"""4500 against 3000 training iterations on 8 crops of the quick protocol, auto decoder.

3000: default rows of ../kodak-quick (lambda 1e-4, 5e-4, 4e-3) and lite rows of
per_image.tsv here (2e-2), as `auto` picks; 4500: it4500/per_image.tsv (`--arch auto`).
BD-rate against x265 HEVC 4:4:4 on the same 8 crops (rows of ../kodak-quick).

    python experiments/kodak-quick-arch/iterations.py
"""

from pathlib import Path

import numpy as np

from coolchic.evaluate.bdrate import bd_rate
from coolchic.metrics import mean_psnr

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-arch"  # the run's data
IMAGES = [f"kodim{i:02d}" for i in (1, 4, 7, 10, 13, 16, 19, 22)]


def rows(path: Path) -> dict[str, dict[float, dict[str, tuple[float, float, float]]]]:
    """codec -> setting -> image -> (bpp, psnr_db, mse)."""
    out: dict = {}
    for line in path.read_text().splitlines():
        if line.startswith(("#", "codec\t")):
            continue
        f = line.split("\t")
        setting = float(f[4] if f[4] != "-" else f[5])
        out.setdefault(f[0], {}).setdefault(setting, {})[f[1]] = (float(f[7]), float(f[8]), float(f[9]))
    return out


def point(images: dict[str, tuple[float, float, float]]) -> tuple[float, float]:
    return float(np.mean([images[i][0] for i in IMAGES])), float(mean_psnr([images[i][1] for i in IMAGES]))


def main() -> None:
    committed = rows(HERE.parent / "kodak-quick" / "per_image.tsv")
    short = {s: committed["coolchic-quick"][s] for s in (1e-4, 5e-4, 4e-3)}
    short[2e-2] = rows(HERE / "per_image.tsv")["coolchic-quick-it3000-lite"][2e-2]
    long = rows(HERE / "it4500" / "per_image.tsv")["coolchic-quick-it4500"]
    print("| lambda | 3000: bpp / PSNR | 4500: bpp / PSNR | J 4500 / J 3000 |\n| --- | --- | --- | ---: |")
    for s in sorted(long):
        cost = [sum(d[s][i][2] / 255**2 + s * d[s][i][0] for i in IMAGES) for d in (short, long)]
        (b0, p0), (b1, p1) = point(short[s]), point(long[s])
        print(f"| {s:g} | {b0:.4f} / {p0:.2f} dB | {b1:.4f} / {p1:.2f} dB | {cost[1] / cost[0]:.4f} |")
    hevc = np.array(sorted(point(d) for d in committed["hevc444"].values()))
    for name, d in (("3000", short), ("4500", long)):
        ours = np.array(sorted(point(v) for v in d.values()))
        r = bd_rate(hevc[:, 0], hevc[:, 1], ours[:, 0], ours[:, 1])
        print(f"{name} iterations: BD-rate vs hevc444 on the 8 crops {r.value:+.2f} %"
              f" (overlap {r.overlap:.2f})")


if __name__ == "__main__":
    main()
