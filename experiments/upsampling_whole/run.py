"""Screening (issue 26): learned upsampling filters on whole Kodak images, before building.

Same training recipe as the product (the phases of a preset, Adam, cosine schedule,
soft-round + Kumaraswamy noise, then straight-through), the rate from the product's native
ARM kernel, the upsampling cascade and the synthesis in plain torch so that filters can be
learned. Variants, all through this same path (so they differ only in the filters):

- ``fixed``: today's codec, the bicubic taps [-9, 67, 225, -27] / 256 at every level;
- ``taps``: each cascade level's 4 taps learned (the symmetric 8-tap transposed filter of
  Cool-chic's upsampling, Philippe et al., arXiv 2411.19249), as (bicubic + s p) / sum
  with p trained from 0 (unit gain at DC);
- ``taps+pre``: ``taps`` plus a separable symmetric 7-tap filter on each grid but the
  coarsest before it joins the stack (their "pre-concatenation" filter), started at identity.

Measured: the true RD cost J = MSE + lambda * bpp with rounded latents and float weights,
the learned filters charged 8 bits per coefficient. Rows are JSON files, one per job, so a
run resumes where it stopped.

    python experiments/upsampling_whole/run.py 1/2 results/screening/round0 &
    python experiments/upsampling_whole/run.py 2/2 results/screening/round0
    python experiments/upsampling_whole/run.py --report results/screening/round0
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coolchic.config import auto_arch, get_arch
from coolchic.decoder.constants import TAP_SHIFT, TAPS
from coolchic.encode import effective_config
from coolchic.evaluate.datasets import load_image
from coolchic.model import fused
from coolchic.model.coolchic import CoolChic
from coolchic.presets import get_preset
from coolchic.quant import make_quantizer

KODAK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kodak"
IMAGES = ("kodim04", "kodim13", "kodim19", "kodim23")
LAMBDAS = (1e-3, 1e-2)
VARIANTS = ("fixed", "taps", "taps+pre")
PRE_TAPS = 7  # length of the pre-concatenation filter (odd, symmetric)


def _pad(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    n = x.shape[dim]
    idx = torch.arange(-before, n + after).clamp(0, n - 1)
    return x.index_select(dim, idx)


def up_axis(x: torch.Tensor, taps: torch.Tensor, dim: int, n_out: int) -> torch.Tensor:
    """2x along dim (-1 or -2): output 2j reads inputs j-2 .. j+1 with taps, 2j+1 reads
    j-1 .. j+2 with the taps reversed; edges replicated (the codec's convention)."""
    n = x.shape[dim]
    xp = _pad(x, dim, 2, 2)  # input i at i + 2
    even = sum(taps[k] * xp.narrow(dim, k, n) for k in range(4))
    odd = sum(taps[3 - k] * xp.narrow(dim, k + 1, n) for k in range(4))
    if dim == -1:
        y = torch.stack((even, odd), dim=-1).flatten(-2)
    else:
        y = torch.stack((even, odd), dim=-2).flatten(-3, -2)
    return y.narrow(dim, 0, n_out)


def filter_axis(x: torch.Tensor, half: torch.Tensor, dim: int) -> torch.Tensor:
    """Symmetric odd filter [h_k .. h_1, h_0, h_1 .. h_k] along dim, edges replicated."""
    k = half.numel() - 1
    n = x.shape[dim]
    xp = _pad(x, dim, k, k)
    out = half[0] * xp.narrow(dim, k, n)
    for j in range(1, k + 1):
        out = out + half[j] * (xp.narrow(dim, k - j, n) + xp.narrow(dim, k + j, n))
    return out


class Filters(nn.Module):
    """The learned filters of one variant (none for ``fixed``)."""

    def __init__(self, variant: str, n_grids: int):
        super().__init__()
        self.variant = variant
        base = torch.tensor(TAPS, dtype=torch.float32) / (1 << TAP_SHIFT)
        self.register_buffer("base", base.repeat(n_grids - 1, 1))  # (levels, 4)
        self.learn_taps = variant != "fixed"
        self.p = nn.Parameter(torch.zeros(n_grids - 1, 4), requires_grad=self.learn_taps)
        self.pre = variant == "taps+pre"
        half = torch.zeros(n_grids - 1, PRE_TAPS // 2 + 1)
        half[:, 0] = 1.0
        self.pre_half = nn.Parameter(half, requires_grad=self.pre)

    def taps(self) -> torch.Tensor:
        t = self.base + 0.1 * self.p
        return t / t.sum(dim=1, keepdim=True)

    def coefficients(self) -> int:
        return (self.p.numel() if self.learn_taps else 0) + (self.pre_half.numel() if self.pre else 0)

    def inputs(self, grids: list[torch.Tensor], kernels) -> tuple[torch.Tensor, torch.Tensor]:
        """(finest grid, the other grids cascaded to grid 1 and then 2x horizontally): the
        inputs of the product's fused synthesis kernel, which does the last vertical 2x
        pass itself with the bicubic taps. So the last level's vertical pass is not
        learned in this screening (its horizontal pass and every other level are)."""
        if not self.learn_taps:
            return grids[0], fused.upsample_stack(grids, kernels=kernels)
        taps = self.taps()
        acc = grids[-1]
        levels = len(grids) - 1
        for level, grid in enumerate(reversed(grids[:-1])):  # level 0: the coarsest step
            t = taps[level]
            acc = up_axis(acc, t, -1, grid.shape[-1])
            if self.pre:
                h = self.pre_half[level]
                grid = filter_axis(filter_axis(grid, h, -1), h, -2)
            if level == levels - 1:
                return grid, acc
            acc = torch.cat((grid, up_axis(acc, t, -2, grid.shape[-2])), dim=1)
        raise ValueError("needs two grids at least")


def loss_terms(model: CoolChic, filters: Filters, quantize, image, kernels):
    q = [quantize(y) for y in model.latents]
    rate = fused.arm_rate(q, [(m.weight, m.bias) for m in model.arm.layers],
                          model.config.arm.context, kernels=kernels)
    finest, coarser = filters.inputs(q, kernels)
    syn = model.synthesis
    mse = fused.synthesis_mse(finest, coarser, image, [(m.weight, m.bias) for m in syn.mlp],
                              [(m.weight, m.bias) for m in syn.residual], kernels=kernels)
    return mse, rate


def train(image, config, preset, lmbda, variant, kernels):
    torch.manual_seed(0)
    _, c, h, w = image.shape
    model = CoolChic(config, h, w, c)
    filters = Filters(variant, config.latents.n_grids)
    pixels = h * w
    best, best_state = float("inf"), None
    for phase in preset.phases:
        latents = list(model.latents)
        nets = [p for n, p in model.named_parameters() if not n.startswith("latents.")]
        nets += [p for p in filters.parameters() if p.requires_grad]
        opt = torch.optim.Adam([{"params": latents, "lr": phase.latent_lr or phase.lr},
                                {"params": nets, "lr": phase.lr}])
        for step in range(phase.iterations):
            f = 0.5 * (1 + math.cos(math.pi * step / phase.iterations))
            opt.param_groups[0]["lr"] = (phase.latent_lr or phase.lr) * f
            opt.param_groups[1]["lr"] = phase.lr * f
            if phase.quantizer == "softround":
                t = step / max(1, phase.iterations - 1)
                (t0, t1), (a0, a1) = phase.temperature, phase.noise_shape
                quantize = make_quantizer("softround", temperature=t0 + (t1 - t0) * t,
                                          noise_shape=a0 + (a1 - a0) * t)
            else:
                quantize = make_quantizer(phase.quantizer)
            mse, rate = loss_terms(model, filters, quantize, image, kernels)
            loss = mse + lmbda * rate / pixels
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % phase.eval_every == 0 or step == phase.iterations - 1:
                with torch.no_grad():
                    m, r = loss_terms(model, filters, make_quantizer("round"), image, kernels)
                j = float(m) + lmbda * float(r) / pixels
                if j < best:
                    best = j
                    best_state = (
                        {k: v.clone() for k, v in model.state_dict().items()},
                        {k: v.clone() for k, v in filters.state_dict().items()},
                    )
        model.load_state_dict(best_state[0])
        filters.load_state_dict(best_state[1])
    with torch.no_grad():
        m, r = loss_terms(model, filters, make_quantizer("round"), image, kernels)
    return model, filters, float(m), float(r)


def check(kernels) -> None:
    """At their initial values the learned filters are the codec's."""
    torch.manual_seed(0)
    grids = [torch.randn(1, 1, -(-37 // 2**k), -(-53 // 2**k)) for k in range(5)]
    a = Filters("fixed", 5).inputs(grids, kernels)
    b = Filters("taps+pre", 5).inputs(grids, kernels)
    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shard", help="i/n, or --report")
    ap.add_argument("out", type=Path)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.report:
        return report(args.out)
    check(fused.native_kernels())
    i, n = (int(v) for v in args.shard.split("/"))
    torch.set_num_threads(1)
    kernels = fused.native_kernels()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(im, lm, v) for im in IMAGES for lm in LAMBDAS for v in VARIANTS]
    for k, (im, lm, variant) in enumerate(jobs):
        target = args.out / f"{im}@{lm:g}-{variant}.json"
        if k % n != i - 1 or target.exists():
            continue
        img = load_image(KODAK / f"{im}.png")
        x = torch.from_numpy(img.pixels.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
        h, w = x.shape[-2:]
        config = effective_config(get_arch(auto_arch(lm, h, w)), h, w)
        t0 = time.perf_counter()
        _, filters, mse, rate = train(x, config, get_preset(args.preset), lm, variant, kernels)
        bpp = (rate + 8 * filters.coefficients()) / (h * w)
        row = {"image": im, "lmbda": lm, "variant": variant, "preset": args.preset,
               "mse": mse, "bpp": bpp, "psnr": -10 * math.log10(mse), "J": mse + lm * bpp,
               "taps": filters.taps().mul(256).tolist(),
               "pre": filters.pre_half.detach().tolist() if filters.pre else None,
               "seconds": time.perf_counter() - t0}
        target.write_text(json.dumps(row))
        print(target.name, f"{bpp:.4f} bpp {row['psnr']:.2f} dB J {row['J']:.6f} "
              f"{row['seconds']:.0f} s", flush=True)


def report(rows_dir: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    by = {(r["variant"], r["image"], r["lmbda"]): r for r in rows}
    ratios: dict = {}
    heads = " | ".join(f"{v}: J / fixed" for v in VARIANTS[1:])
    print(f"| image | lambda | fixed: bpp / dB | {heads} |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in VARIANTS[1:]) + " |")
    for im in IMAGES:
        for lm in LAMBDAS:
            a = by.get(("fixed", im, lm))
            if a is None:
                continue
            cells = []
            for v in VARIANTS[1:]:
                b = by.get((v, im, lm))
                if b is None:
                    cells.append("-")
                    continue
                ratios.setdefault(v, []).append(b["J"] / a["J"])
                cells.append(f"{b['J'] / a['J']:.4f}")
            print(f"| {im} | {lm:g} | {a['bpp']:.4f} / {a['psnr']:.2f} | " + " | ".join(cells) + " |")
    for v, r in ratios.items():
        print(f"{v}: J / fixed geometric mean {math.exp(np.mean(np.log(r))):.4f} over {len(r)} "
              f"(range {min(r):.4f}-{max(r):.4f})")


if __name__ == "__main__":
    main()
