"""How many latent grids: 6, 7 (the codec's) or 8 on the quick protocol's crops (issue 5).

Issue 5 lists an image-size-adaptive number of grids among the architecture choices to
measure. Every decoder configuration has 7 grids (1 to 1/64 of the image's resolution; a
256x256 crop's coarsest is 4x4, a 768x512 image's 12x8). Here each 256x256 centre crop
is encoded as `coolchic encode --preset quick` does it (`--arch auto`, seed 0, one
thread), once per grid count, with everything else the same: the configuration's other
fields, the recipe, the integerization. Each result is a real bitstream, decoded and
measured: bytes, PSNR, the true RD cost J = MSE + lambda bpp and the decoder's MAC/pixel
(the synthesis reads one channel per grid, so fewer grids cost fewer multiplies).

Rows are one JSON file per (image, lambda, grids) under ``OUT/rows``: the run resumes,
and shards (``--shard 1/2``, ``--shard 2/2``) run side by side.

    python experiments/kodak-quick-grids/run.py ../shared/data/kodak --shard 1/2
    python experiments/kodak-quick-grids/run.py ../shared/data/kodak --shard 2/2
    python experiments/kodak-quick-grids/run.py --report
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-grids"  # the run's data
IMAGES = ("kodim01", "kodim04", "kodim07", "kodim10", "kodim13", "kodim16", "kodim19", "kodim22")
LAMBDAS = (4e-3, 2e-2)  # where the quick curve loses to HEVC 4:4:4
GRIDS = (7, 6, 8)  # 7 first: the reference


def encode_one(image, lmbda: float, n_grids: int, iterations: int | None = None) -> dict:
    import torch

    from coolchic.bitstream import CodecId, Header, write_bitstream
    from coolchic.complexity import mac_per_pixel
    from coolchic.config import LatentConfig, auto_arch, get_arch
    from coolchic.decode import decode
    from coolchic.encode import effective_config, model_sections
    from coolchic.metrics import psnr_images
    from coolchic.presets import get_preset
    from coolchic.quant import integerize
    from coolchic.train import overfit

    pixels, depth = image.pixels, image.bit_depth
    h, w, c = pixels.shape
    preset = get_preset("quick")
    if iterations:  # a smoke test of the script
        preset = preset.scaled_to(iterations)
    arch = auto_arch(lmbda, h, w)
    config = effective_config(replace(get_arch(arch), latents=LatentConfig(n_grids=n_grids)), h, w)
    x = torch.from_numpy(pixels.astype(np.float32) / ((1 << depth) - 1)).permute(2, 0, 1)[None].contiguous()
    start = time.perf_counter()
    model = overfit(x, config, preset, lmbda, seed=0, threads=1)
    q = integerize(model, pixels, bit_depth=depth, lmbda=lmbda, refine_trials=preset.refine_trials)
    seconds = time.perf_counter() - start
    header = Header(codec_id=CodecId.COOLCHIC, height=h, width=w, channels=c, bit_depth=depth)
    data = write_bitstream(header, model_sections(q, header))
    psnr = psnr_images(pixels, decode(data), depth)
    bpp = 8 * len(data) / (h * w)
    return {"image": image.name, "lmbda": lmbda, "arch": arch, "n_grids": config.latents.n_grids,
            "bytes": len(data), "bpp": bpp, "psnr_db": psnr, "j": 10 ** (-psnr / 10) + lmbda * bpp,
            "mac_per_pixel": mac_per_pixel(config, h, w, c).total, "encode_s": seconds}


def run(opts) -> None:
    import torch

    from coolchic.evaluate.datasets import load_image

    torch.set_num_threads(1)
    rows = opts.out / "rows"
    rows.mkdir(parents=True, exist_ok=True)
    index, count = (int(v) for v in opts.shard.split("/"))
    jobs = [(name, lm, g) for lm in LAMBDAS for name in IMAGES for g in GRIDS]
    for k, (name, lmbda, grids) in enumerate(jobs):
        target = rows / f"{name}@{lmbda:g}-g{grids}.json"
        if k % count != index - 1 or target.exists():
            continue
        row = encode_one(load_image(opts.kodak / f"{name}.png", crop=256), lmbda, grids, opts.iterations)
        row["machine"] = f"{platform.machine()} {_cpu()}"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1))
        tmp.replace(target)
        print(f"{k + 1}/{len(jobs)} {target.name}: {row['bytes']} B {row['psnr_db']:.2f} dB "
              f"J {row['j']:.6f} ({row['encode_s']:.0f} s)", flush=True)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def report(opts) -> None:
    from coolchic.evaluate.report import paired_cost_cells

    found = [json.loads(p.read_text()) for p in sorted((opts.out / "rows").glob("*.json"))]
    by = {(r["image"], r["lmbda"], r["n_grids"]): r for r in found}
    print(f"{len(found)} rows; machine: {found[0]['machine'] if found else '?'}\n")
    print("| lambda | grids | MAC/px | crops | mean bpp | mean PSNR | J / J(7 grids), geometric mean "
          "(range) | better on | encode s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for lm in LAMBDAS:
        for g in GRIDS:
            pairs = [(by[(i, lm, g)], by[(i, lm, 7)]) for i in IMAGES
                     if (i, lm, g) in by and (i, lm, 7) in by]
            if not pairs:
                continue
            print(f"| {lm:g} | {g} | {pairs[0][0]['mac_per_pixel']:.0f} | "
                  + paired_cost_cells(pairs, reference=g == 7))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kodak", nargs="?", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("-o", "--out", type=Path, default=HERE)
    parser.add_argument("--shard", default="1/1", help="i/n: run every n-th job from the i-th")
    parser.add_argument("--report", action="store_true", help="summarize the rows found")
    parser.add_argument("--iterations", type=int, help="scale the preset (smoke tests only)")
    opts = parser.parse_args()
    report(opts) if opts.report else run(opts)


if __name__ == "__main__":
    main()
