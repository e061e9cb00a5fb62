"""Prototype: does an ARM that also reads the co-located latents of the next coarser grid
code the latents in fewer bits, at the same MAC budget?

Training-only experiment (no bitstream): the ARM is evaluated eagerly in float with extra
inputs gathered from grid k+1 (decoded before grid k when grids are decoded coarsest
first); everything else is the codec's training (`coolchic.train.overfit`, preset
`quick`, the native synthesis kernels). The result is the true RD cost D + lambda R of
the float model with rounded latents, R the latents' Laplace bits (the weights' bits are
left out: the variants differ by at most 12 weights). Variants:

- `base`: the default ARM (12 spatial neighbours), computed by the same eager code;
- `up1`: 12 spatial neighbours + the co-located coarser latent (698 MAC/pixel at 768x512);
- `up5`: 8 spatial neighbours + the co-located coarser latent and its 4 neighbours
  (698 MAC/pixel).

    python experiments/kodak-quick-intergrid/run.py ../shared/data/kodak --variant up1 \
        --images kodim01,kodim07 --lmbda 4e-3 -o results/kodak-quick-intergrid/rows
    python experiments/kodak-quick-intergrid/run.py --report results/kodak-quick-intergrid/rows
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import coolchic.train as train
from coolchic.complexity import mac_per_pixel
from coolchic.config import ArmConfig, DecoderConfig, get_arch, grid_shapes
from coolchic.model.arm import gather_contexts
from coolchic.model.coolchic import CoolChic, laplace_bits
from coolchic.model.fused import synthesis_mse, upsample_stack
from coolchic.presets import get_preset
from coolchic.quant import make_quantizer

ROWS = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-intergrid" / "rows"  # the run's data
CROP = 256
# offsets (row, col) in grid k+1 around the co-located latent (r // 2, c // 2)
COARSE = {"base": (), "up1": ((0, 0),), "up5": ((0, 0), (-1, 0), (0, -1), (0, 1), (1, 0))}
SPATIAL = {"base": 12, "up1": 12, "up5": 8}


def gather_coarse(grids: list[torch.Tensor], offsets) -> torch.Tensor:
    """(N, len(offsets)) latents of grid k+1 around each latent's parent; 0 outside the
    grid and for the coarsest grid."""
    blocks = []
    for k, grid in enumerate(grids):
        h, w = grid.shape[-2:]
        if k + 1 == len(grids):
            blocks.append(grid.new_zeros(h * w, len(offsets)))
            continue
        coarse = nn.functional.pad(grids[k + 1][0, 0], (1, 1, 1, 1))
        rows = torch.arange(h, device=grid.device) // 2 + 1
        cols = torch.arange(w, device=grid.device) // 2 + 1
        views = [coarse[(rows + dr)[:, None], (cols + dc)[None, :]] for dr, dc in offsets]
        blocks.append(torch.stack(views, dim=-1).reshape(h * w, len(offsets)))
    return torch.cat(blocks, dim=0)


class InterGrid(CoolChic):
    offsets: tuple = ()

    def __init__(self, config: DecoderConfig, height: int, width: int, channels: int):
        super().__init__(config, height, width, channels)
        first = self.arm.layers[0]
        self.arm.layers[0] = nn.Linear(first.in_features + len(self.offsets), first.out_features)

    def loss_terms(self, quantize, image, *, kernels=train.EAGER):
        q = [quantize(y) for y in self.latents]
        inputs = gather_contexts(q, self.config.arm.context)
        if self.offsets:
            inputs = torch.cat([inputs, gather_coarse(q, self.offsets)], dim=1)
        params = self.arm(inputs)
        flat = torch.cat([g.reshape(-1) for g in q])
        rate = laplace_bits(flat, params[:, 0], params[:, 1]).sum()
        syn = self.synthesis
        mse = synthesis_mse(q[0], upsample_stack(q, kernels=kernels), image,
                            [(m.weight, m.bias) for m in syn.mlp],
                            [(m.weight, m.bias) for m in syn.residual], kernels=kernels)
        return mse, rate


def variant_config(variant: str) -> DecoderConfig:
    base = get_arch("default")
    return replace(base, arm=ArmConfig(context=SPATIAL[variant], hidden=base.arm.hidden))


def variant_macs(variant: str, height: int = 512, width: int = 768) -> float:
    config = variant_config(variant)
    extra = len(COARSE[variant]) * config.arm.hidden[0]
    n_latents = sum(h * w for h, w in grid_shapes(height, width, config.latents.n_grids))
    return mac_per_pixel(config, height, width).total + extra * n_latents / (height * width)


def load_crop(path: Path) -> torch.Tensor:
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    h, w, _ = a.shape
    top, left = (h - CROP) // 2, (w - CROP) // 2
    a = a[top:top + CROP, left:left + CROP]
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def encode(image: torch.Tensor, variant: str, lmbda: float, iterations: int | None) -> dict:
    InterGrid.offsets = COARSE[variant]
    preset = get_preset("quick")
    if iterations:
        preset = preset.scaled_to(iterations)
    train.CoolChic = InterGrid  # overfit builds its model through this name
    start = time.perf_counter()
    model = train.overfit(image, variant_config(variant), preset, lmbda, threads=1)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        mse, rate = model.loss_terms(make_quantizer("round"), image, kernels=train.native_kernels())
    mse, bpp = float(mse), float(rate) / model.n_pixels()
    return {"variant": variant, "lmbda": lmbda, "iterations": preset.iterations, "mse": mse,
            "bpp": bpp, "psnr_db": -10 * math.log10(mse), "cost": mse + lmbda * bpp,
            "encode_s": round(seconds, 1), "mac_per_pixel": round(variant_macs(variant), 1)}


def report(folder: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    by = {(r["image"], r["lmbda"], r["variant"]): r for r in rows}
    variants = [v for v in COARSE if any(k[2] == v for k in by)]
    print("| lambda | variant | MAC/pixel | pairs | mean J / J base | range | mean bpp | mean PSNR (dB) |")
    print("| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for lmbda in sorted({k[1] for k in by}):
        for v in variants:
            keys = [k for k in by if k[1] == lmbda and k[2] == v and (k[0], lmbda, "base") in by]
            if not keys:
                continue
            ratios = [by[k]["cost"] / by[(k[0], lmbda, "base")]["cost"] for k in keys]
            bpp = np.mean([by[k]["bpp"] for k in keys])
            psnr = -10 * math.log10(np.mean([by[k]["mse"] for k in keys]))
            print(f"| {lmbda:g} | {v} | {by[keys[0]]['mac_per_pixel']} | {len(keys)} | "
                  f"{np.mean(ratios):.4f} | {min(ratios):.4f}-{max(ratios):.4f} | {bpp:.4f} | {psnr:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path)
    parser.add_argument("--variant", choices=tuple(COARSE), default="up1")
    parser.add_argument("--images", default="kodim01")
    parser.add_argument("--lmbda", type=float, default=4e-3)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("-o", "--out", type=Path, default=ROWS)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    if args.report is not None:
        report(args.report)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.images.split(","):
        target = args.out / f"{name}@{args.lmbda:g}@{args.variant}.json"
        if target.exists():
            continue
        row = {"image": name, **encode(load_crop(args.dataset / f"{name}.png"), args.variant,
                                       args.lmbda, args.iterations)}
        target.write_text(json.dumps(row, indent=1) + "\n")
        print(json.dumps(row))


if __name__ == "__main__":
    main()
