"""BD-rate of `--arch auto` on the quick protocol, from measured rows only.

auto picks `default` for every 256x256 crop at lambda 1e-4, 5e-4 and 4e-3 and `lite` at
2e-2 (coolchic.config.auto_arch), so its curve is: the default rows of
../kodak-quick/per_image.tsv at the first three lambdas, and the lite rows of
per_image.tsv here at 2e-2. Anchors: the classical codecs of ../kodak-quick.

    python experiments/kodak-quick-arch/bdrate_auto.py
"""

from pathlib import Path

import numpy as np

from coolchic.evaluate.bdrate import bd_quality, bd_rate
from coolchic.metrics import mean_psnr

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-arch"  # the run's data


def rows(path: Path) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
    """codec -> setting -> image -> (bpp, psnr_db)."""
    out: dict = {}
    for line in path.read_text().splitlines():
        if line.startswith(("#", "codec\t")):
            continue
        f = line.split("\t")
        setting = f[4] if f[4] != "-" else f[5]
        out.setdefault(f[0], {}).setdefault(float(setting), {})[f[1]] = (float(f[7]), float(f[8]))
    return out


def curve(settings: dict[float, dict[str, tuple[float, float]]]) -> np.ndarray:
    """(bpp, mean PSNR) per setting over the 24 images, sorted by bpp."""
    points = [(np.mean([v[0] for v in imgs.values()]), mean_psnr([v[1] for v in imgs.values()]))
              for imgs in settings.values() if len(imgs) == 24]
    return np.array(sorted(points))


def main() -> None:
    committed = rows(HERE.parent / "kodak-quick" / "per_image.tsv")
    lite = rows(HERE / "per_image.tsv")["coolchic-quick-it3000-lite"]
    default = committed["coolchic-quick"]
    auto = {s: imgs for s, imgs in default.items() if s != 2e-2} | {2e-2: lite[2e-2]}
    print("| curve | against | BD-rate PSNR | BD-PSNR | overlap |\n| --- | --- | ---: | ---: | ---: |")
    for name, settings in (("default (committed run)", default), ("auto", auto)):
        ours = curve(settings)
        for anchor in ("hevc444", "avif444", "jpeg2000", "webp", "jxl"):
            a = curve(committed[anchor])
            rate = bd_rate(a[:, 0], a[:, 1], ours[:, 0], ours[:, 1])
            psnr = bd_quality(a[:, 0], a[:, 1], ours[:, 0], ours[:, 1])
            print(f"| {name} | {anchor} | {rate.value:+.2f} % | {psnr.value:+.3f} dB | {rate.overlap:.2f} |")
    for name, settings in (("default", default), ("auto", auto)):
        print(name, "lowest point:", curve(settings)[0].round(4).tolist())


if __name__ == "__main__":
    main()
