"""Training-recipe and decoder variants on the quick protocol's crops or whole images (issue 5).

The recipe's learning rates, temperature and warm-up were chosen on 750-iteration runs
(coolchic/presets.py); the quick preset now runs 7000 and the paper-grade one 22,000. Here
each variant is a change to the quick preset's phases at the same total iteration count,
encoded exactly as `coolchic encode --preset quick` does it (`--arch auto`, seed 0, one
thread) through `coolchic.encode.encode`: a real bitstream, measured on its decoded image.
The score is the true RD cost J = MSE + lambda * bpp (MSE on [0, 1], bpp of the whole file)
against the unchanged preset on the same crop.

Decoder variants (`arch-*`) replace `--arch auto` by a configuration of their own, under
700 MAC/pixel like the default, that moves multiplies from the ARM to the synthesis. They
also run on whole images (`--crop 0`), with another preset (`--preset slow`) and on CUDA
(`--device cuda`); rows only compare with the base's rows of the same setting.

Rows are one JSON file per (variant, image, lambda) under ``OUT/rows``: the run resumes,
and shards (``--shard 1/2``, ``--shard 2/2``) run side by side.

    python experiments/kodak-quick-recipe/run.py ../shared/data/kodak --variants base,lat2e-1 --shard 1/2
    python experiments/kodak-quick-recipe/run.py ../shared/data/kodak --variants base,arch-a \
        --lambdas 5e-4,4e-3 --shard 1/2
    python experiments/kodak-quick-recipe/run.py --report
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-recipe"  # the run's data
IMAGES = ("kodim01", "kodim04", "kodim07", "kodim10", "kodim13", "kodim16", "kodim19", "kodim22")
LAMBDAS = (4e-3, 2e-2)  # where the quick curve loses to HEVC 4:4:4 (the default of --lambdas)


def _main_phase(preset, **changes):
    main, *rest = preset.phases
    return replace(preset, phases=(replace(main, **changes), *rest))


def _ste_phase(preset, **changes):
    *first, ste = preset.phases
    return replace(preset, phases=(*first, replace(ste, **changes)))


def _split(preset, n_ste: int):
    """The same total with `n_ste` straight-through iterations."""
    main, ste = preset.phases
    total = main.iterations + ste.iterations
    return replace(preset, phases=(replace(main, iterations=total - n_ste), replace(ste, iterations=n_ste)))


def _warmup(preset, candidates: int, iterations: int):
    from coolchic.presets import Warmup

    main, ste = preset.phases
    return replace(preset, warmup=Warmup(candidates, iterations),
                   phases=(replace(main, iterations=main.iterations - candidates * iterations), ste))


def _arch(arm: tuple[int, tuple[int, ...]], synthesis: tuple[tuple[int, ...], int]):
    from coolchic.config import ArmConfig, DecoderConfig, SynthesisConfig

    return DecoderConfig(arm=ArmConfig(*arm), synthesis=SynthesisConfig(*synthesis))


def _same(preset):
    return preset


# name -> (what changes, preset -> preset, decoder or None for auto); every variant keeps
# its preset's iteration count
VARIANTS = {
    "base": ("the preset unchanged", _same),
    "lat2e-1": ("latents' peak lr 0.2 (not 0.4)", lambda p: _main_phase(p, latent_lr=2e-1)),
    "net1e-2": ("networks' peak lr 0.01 (not 0.02)", lambda p: _main_phase(p, lr=1e-2)),
    "temp05": ("softround temperature 0.5 -> 0.05 (not 0.1)",
               lambda p: _main_phase(p, temperature=(0.5, 0.05))),
    "ste1400": ("1400 straight-through iterations (not 700)", lambda p: _split(p, 1400)),
    "ste-lr1e-3": ("straight-through peak lr 1e-3 (not 1e-4)", lambda p: _ste_phase(p, lr=1e-3)),
    "warm4x150": ("warm-up: best of 4 initializations after 150 iterations, from the budget",
                  lambda p: _warmup(p, 4, 150)),
    "arch-a": ("ARM 8 -> 8 -> 8, synthesis 24 + 2 convs (639 MAC/px)", _same, ((8, (8, 8)), ((24,), 2))),
    "arch-b": ("ARM 12 -> 8 -> 8, synthesis 20 + 2 convs (642 MAC/px)", _same, ((12, (8, 8)), ((20,), 2))),
    "arch-c": ("ARM 12 -> 10 -> 10, synthesis 14 + 2 convs (667 MAC/px)", _same,
               ((12, (10, 10)), ((14,), 2))),
    # the two below need ../kodak-quick-context/context24.patch (ARM contexts up to 24)
    "ctx16": ("ARM context 16 -> 11 -> 11, default synthesis (692 MAC/px)", _same,
              ((16, (11, 11)), ((14,), 1))),
    "ctx24": ("ARM context 24 -> 9 -> 9, default synthesis (686 MAC/px)", _same,
              ((24, (9, 9)), ((14,), 1))),
    "seed1": ("the preset unchanged, initialization seed 1 (not 0)", _same),
}
SEEDS = {"seed1": 1}  # variants that only change the training's seed (the others use 0)


def _setting(opts) -> str:
    """What rows compare within: preset, image size and device."""
    return f"{opts.preset}-{'full' if opts.crop == 0 else f'c{opts.crop}'}-{opts.device}"


def run(opts) -> None:
    import torch

    from coolchic.encode import encode
    from coolchic.evaluate.datasets import load_image
    from coolchic.evaluate.provenance import machine_description
    from coolchic.presets import get_preset

    torch.set_num_threads(1)
    rows = opts.out / "rows"
    rows.mkdir(parents=True, exist_ok=True)
    index, count = (int(v) for v in opts.shard.split("/"))
    names = opts.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    lambdas = [float(v) for v in opts.lambdas.split(",")]
    images = opts.images.split(",")
    setting = _setting(opts)
    jobs = [(v, name, lm) for v in names for lm in lambdas for name in images]
    for k, (variant, name, lmbda) in enumerate(jobs):
        target = rows / f"{variant}-{name}@{lmbda:g}-{setting}.json"
        if k % count != index - 1 or target.exists():
            continue
        what, change, *arch = VARIANTS[variant]
        preset = change(get_preset(opts.preset))
        if opts.iterations:  # a smoke test of the script
            preset = preset.scaled_to(opts.iterations)
        image = load_image(opts.kodak / f"{name}.png", crop=opts.crop or None)
        config = _arch(*arch[0]) if arch else None
        result = encode(image.pixels, lmbda=lmbda, preset=preset, arch=config,
                        seed=SEEDS.get(variant, 0), threads=1, device=opts.device)
        report = result.report
        if opts.crop == 0:  # whole images: keep the bitstream beside its row
            target.with_suffix(".bin").write_bytes(result.data)
        mse = 10 ** (-report.psnr_db / 10)
        row = {"variant": variant, "image": name, "lmbda": lmbda, "setting": setting,
               "arch": report.arch, "mac_per_pixel": report.mac_per_pixel,
               "iterations": report.iterations, "bytes": report.n_bytes, "bpp": report.bpp,
               "psnr_db": report.psnr_db, "j": mse + lmbda * report.bpp,
               "encode_s": report.encode_seconds, "machine": machine_description(opts.device)}
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1))
        tmp.replace(target)
        print(f"{k + 1}/{len(jobs)} {target.name}: {row['bytes']} B {row['psnr_db']:.2f} dB "
              f"J {row['j']:.6f} ({row['encode_s']:.0f} s)", flush=True)


def report(opts) -> None:
    import numpy as np

    from coolchic.evaluate.report import paired_cost_cells

    found = [json.loads(p.read_text()) for p in sorted((opts.out / "rows").glob("*.json"))]
    for r in found:  # rows of the first run: quick preset, 256x256 crops, CPU
        r.setdefault("setting", "quick-c256-cpu")
    by = {(r["variant"], r["image"], r["lmbda"], r["setting"]): r for r in found}
    print(f"{len(found)} rows; machines: {', '.join(sorted({r['machine'] for r in found}))}\n")
    print("| setting | variant | change | lambda | images | mean bpp | mean PSNR | "
          "J / J(base), geometric mean (range) | better on | encode s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for setting in sorted({r["setting"] for r in found}):
        for variant, (what, *_) in VARIANTS.items():
            for lm in sorted({r["lmbda"] for r in found}):
                pairs = [(by[(variant, i, lm, setting)], by[("base", i, lm, setting)])
                         for i in sorted({r["image"] for r in found})
                         if (variant, i, lm, setting) in by and ("base", i, lm, setting) in by]
                if not pairs:
                    continue
                print(f"| {setting} | {variant} | {what} | {lm:g} | "
                      + paired_cost_cells(pairs, reference=variant == "base"))
    print("\nPer image, J / J(base); oracle: geometric mean of min(J, J(base)) / J(base), "
          "what keeping the better of the two per image gives:")
    for setting in sorted({r["setting"] for r in found}):
        for variant in VARIANTS:
            for lm in sorted({r["lmbda"] for r in found}):
                ratios = {i: by[(variant, i, lm, setting)]["j"] / by[("base", i, lm, setting)]["j"]
                          for i in sorted({r["image"] for r in found})
                          if variant != "base" and (variant, i, lm, setting) in by
                          and ("base", i, lm, setting) in by}
                if ratios:
                    oracle = np.exp(np.mean(np.log(np.minimum(list(ratios.values()), 1.0))))
                    print(f"{setting} {variant} {lm:g}: oracle {oracle:.4f}; "
                          + " ".join(f"{i.removeprefix('kodim')} {v:.3f}" for i, v in ratios.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kodak", nargs="?", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("-o", "--out", type=Path, default=HERE)
    parser.add_argument("--variants", default="base", help="comma-separated names")
    parser.add_argument("--lambdas", default=",".join(f"{v:g}" for v in LAMBDAS))
    parser.add_argument("--images", default=",".join(IMAGES))
    parser.add_argument("--crop", type=int, default=256, help="centre crop N x N (0: whole image)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shard", default="1/1", help="i/n: run every n-th job from the i-th")
    parser.add_argument("--report", action="store_true", help="summarize the rows found")
    parser.add_argument("--iterations", type=int, help="scale the preset (smoke tests only)")
    opts = parser.parse_args()
    report(opts) if opts.report else run(opts)


if __name__ == "__main__":
    main()
