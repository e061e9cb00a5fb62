"""Seed spread of the float training: the true (rounded-latent) RD cost that `overfit` ends
with, for a few ARM configurations and seeds, on the 256x256 centre crop of kodim01 at
lambda 5e-4, the quick preset scaled to ITERATIONS. Contexts above 12 need
experiments/kodak-quick-context/context24.patch applied (see results/kodak-quick-context/README.md).

    python experiments/kodak-quick-context/seeds.py 2000 12-12-12 15-11-11 --seeds 0,1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from coolchic.config import ArmConfig, DecoderConfig
from coolchic.evaluate.datasets import load_image
from coolchic.presets import get_preset
from coolchic.quant import make_quantizer
from coolchic.train import overfit, rd_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("iterations", type=int)
    parser.add_argument("archs", nargs="+", help="context-hidden-hidden..., e.g. 12-12-12")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("--lmbda", type=float, default=5e-4)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    image = load_image(opts.kodak / "kodim01.png", crop=256)
    x = torch.from_numpy(image.pixels).permute(2, 0, 1)[None].float() / 255
    preset = get_preset("quick").scaled_to(opts.iterations)
    print("| ARM | seed | true J | MSE | latent bytes (estimate) |\n| --- | ---: | ---: | ---: | ---: |")
    for spec in opts.archs:
        context, *hidden = (int(v) for v in spec.split("-"))
        config = DecoderConfig(arm=ArmConfig(context, tuple(hidden)))
        for seed in (int(s) for s in opts.seeds.split(",")):
            model = overfit(x, config, preset, opts.lmbda, seed=seed, threads=1)
            with torch.no_grad():
                loss, mse, bpp = rd_loss(model, x, opts.lmbda, make_quantizer("round"))
            print(f"| {spec} | {seed} | {float(loss):.6f} | {mse:.6f} | "
                  f"{bpp * x.shape[-1] * x.shape[-2] / 8:.0f} |", flush=True)


if __name__ == "__main__":
    main()
