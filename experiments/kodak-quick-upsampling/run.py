"""Experiment (issue 5): does a learned upsampling filter pay in our cascade?

Each 2x step of the upsampling cascade (coolchic.model.upsampling) uses the fixed 4-tap
bicubic filter [-9, 67, 225, -27] / 256 (odd outputs: reversed). Variant ``learn`` makes
the 4 taps of each cascade level a trained parameter (initialized at the bicubic ones; the
same symmetric use for both phases and both axes; no extra multiply per pixel), trained
with the plain torch forward of the model (the native kernels have the taps built in).
Variant ``fixed`` is the current codec, trained by the native kernels (the same function
as the plain forward). Both: preset quick (3000 iterations), seed 0, one thread, 256x256
centre crops of 6 Kodak images, lambda 4e-3 (default decoder) and 2e-2 (lite).

Measured: the true RD cost with rounded latents and float weights (no integerization,
which would be the same for both), the learned taps charged 6 levels x 4 taps x 8 bits.
The learned filter is not in the bitstream format: this only sizes the gain.

    python experiments/kodak-quick-upsampling/run.py 1/2 results/kodak-quick-upsampling/rows
    python experiments/kodak-quick-upsampling/run.py 2/2 results/kodak-quick-upsampling/rows
    python experiments/kodak-quick-upsampling/run.py --report results/kodak-quick-upsampling/rows
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import coolchic.train as train_mod
from coolchic.config import auto_arch, get_arch
from coolchic.encode import effective_config
from coolchic.evaluate.datasets import load_image
from coolchic.model.arm import gather_contexts
from coolchic.model.coolchic import CoolChic, laplace_bits
from coolchic.model.upsampling import TAPS, upsample_cascade
from coolchic.presets import get_preset
from coolchic.quant import make_quantizer
from coolchic.train import overfit

KODAK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kodak"

def up_axis(x, taps, dim, n_out):
    # even outputs read inputs j-2..j+1 with taps; odd j-1..j+2 reversed; edges replicated
    n = x.shape[dim]
    idx = torch.arange(-2, n + 2).clamp(0, n - 1)
    xp = x.index_select(dim, idx)

    def sl(a):
        return xp.narrow(dim, a, n)

    even = sum(taps[k] * sl(k) for k in range(4))
    odd = sum(taps[3 - k] * sl(k + 1) for k in range(4))
    y = torch.stack((even, odd), dim=dim + 1 if dim >= 0 else dim)  # interleave
    y = y.flatten(dim - 1, dim) if dim < 0 else y.flatten(dim, dim + 1)
    return y.narrow(dim, 0, n_out)

def cascade(grids, taps):
    acc = grids[-1]
    for lvl, grid in enumerate(reversed(grids[:-1])):
        t = taps[lvl]
        acc = up_axis(acc, t, -1, grid.shape[-1])
        acc = up_axis(acc, t, -2, grid.shape[-2])
        acc = torch.cat((grid, acc), dim=1)
    return acc

class Lup(CoolChic):
    """variant "learn": the taps themselves are parameters; "norm": taps = (bicubic + 0.1 p)
    divided by their sum (unit DC gain), p a parameter from 0 (Adam's steps on the taps a
    tenth of the networks')."""

    def __init__(self, config, h, w, c, variant):
        super().__init__(config, h, w, c)
        self.variant = variant
        t = torch.tensor(TAPS, dtype=torch.float32) / 256
        t = t.repeat(config.latents.n_grids - 1, 1)
        if variant == "learn":
            self.raw_taps = nn.Parameter(t)
        else:
            self.register_buffer("base_taps", t)
            self.raw_taps = nn.Parameter(torch.zeros_like(t))

    @property
    def up_taps(self):
        if self.variant == "learn":
            return self.raw_taps
        t = self.base_taps + 0.1 * self.raw_taps
        return t / t.sum(dim=1, keepdim=True)
    def forward(self, quantize):
        q = [quantize(y) for y in self.latents]
        flat = torch.cat([g.reshape(-1) for g in q])
        params = self.arm(gather_contexts(q, self.config.arm.context))
        rate = laplace_bits(flat, params[:, 0], params[:, 1]).sum()
        return self.synthesis(cascade(q, self.up_taps)), rate
    def loss_terms(self, quantize, image, *, kernels=None):
        x_hat, rate = self.forward(quantize)
        return torch.mean((x_hat - image) ** 2), rate

def check():
    torch.manual_seed(0)
    grids = [torch.randn(1, 1, -(-37 // 2**k), -(-53 // 2**k)) for k in range(5)]
    t = (torch.tensor(TAPS, dtype=torch.float32) / 256).repeat(4, 1)
    a, b = cascade(grids, t), upsample_cascade(grids)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    print("cascade matches the fixed one")

def main():
    if sys.argv[1] == "--report":
        return report(Path(sys.argv[2]))
    check()
    shard, out = sys.argv[1], Path(sys.argv[2])
    i, n = (int(v) for v in shard.split("/"))
    images = ["kodim01", "kodim04", "kodim07", "kodim13", "kodim19", "kodim22"]
    variants = ("fixed", "learn", "norm")
    jobs = [(im, lm, v) for v in variants for im in images for lm in (4e-3, 2e-2)]
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    for k, (im, lm, learn) in enumerate(jobs):
        if k % n != i - 1:
            continue
        target = out / f"{im}@{lm:g}-{learn}.json"
        if target.exists():
            continue
        img = load_image(KODAK / f"{im}.png", crop=256)
        x = torch.from_numpy(img.pixels.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
        h, w = 256, 256
        config = effective_config(get_arch(auto_arch(lm, h, w)), h, w)
        orig = train_mod.CoolChic
        if learn != "fixed":  # the plain torch forward; fixed: the native kernels (same function)
            train_mod.CoolChic = lambda cfg, hh, ww, cc, mode=learn: Lup(cfg, hh, ww, cc, mode)
        t0 = time.perf_counter()
        try:
            model = overfit(x, config, get_preset("quick"), lm, seed=0, threads=1,
                            compile="auto" if learn == "fixed" else "off")
        finally:
            train_mod.CoolChic = orig
        with torch.no_grad():
            mse, rate = model.loss_terms(make_quantizer("round"), x)
        extra = 0 if learn == "fixed" else 6 * 4 * 8  # taps sent as 8-bit integers
        bpp = (float(rate) + extra) / (h * w)
        row = {"image": im, "lmbda": lm, "variant": learn, "mse": float(mse), "bpp": bpp,
               "psnr": -10 * np.log10(float(mse)), "J": float(mse) + lm * bpp,
               "taps": None if learn == "fixed" else model.up_taps.detach().mul(256).tolist(),
               "s": time.perf_counter() - t0}
        target.write_text(json.dumps(row))
        print(k, target.name, f"{bpp:.4f} bpp {row['psnr']:.2f} dB J {row['J']:.6f} {row['s']:.0f} s",
              flush=True)

def report(rows_dir):
    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    by = {(r["variant"], r["image"], r["lmbda"]): r for r in rows}
    others = [v for v in ("learn", "norm") if any(r["variant"] == v for r in rows)]
    heads = " | ".join(f"{v}: bpp / PSNR / J ratio" for v in others)
    print("| lambda | image | fixed: bpp / PSNR / J | " + heads + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in others) + " |")
    ratios = {}
    for lm in sorted({r["lmbda"] for r in rows}):
        for im in sorted({r["image"] for r in rows}):
            a = by.get(("fixed", im, lm))
            if a is None:
                continue
            cells = []
            for v in others:
                b = by.get((v, im, lm))
                if b is None:
                    cells.append("-")
                    continue
                ratios.setdefault((v, lm), []).append(b["J"] / a["J"])
                cells.append(f"{b['bpp']:.4f} / {b['psnr']:.2f} / {b['J'] / a['J']:.4f}")
            first = f"{a['bpp']:.4f} / {a['psnr']:.2f} / {a['J']:.6f}"
            print(f"| {lm:g} | {im} | {first} | " + " | ".join(cells) + " |")
    print()
    for (v, lm), r in sorted(ratios.items()):
        print(f"{v} at lambda {lm:g}: J ratio to fixed, mean {np.mean(r):.4f}, median {np.median(r):.4f}, "
              f"range {min(r):.4f}-{max(r):.4f} over {len(r)} crops")


if __name__ == "__main__":
    main()
