"""The quick protocol with three integerizations of the same trained models (issue 5).

Each 256x256 centre crop of the 24 Kodak images is trained once per lambda exactly as
`coolchic encode --preset quick` trains it (3000 iterations, `--arch auto`, seed 0, one
thread); the trained model is then integerized three ways and each result is written as a
real bitstream, decoded, and measured:

- ``group``: one weight step and one bias step per module group (ARM, synthesis MLP,
  residual convolutions): the integerization before this change;
- ``layer``: then each layer's own steps (`coolchic.quant`, ``per_layer``);
- ``layer+refine60``: then the greedy refinement of the integers, 60 trials per group
  (the quick preset's setting after this change).

So the gain of each change is measured on identical models, free of training noise. Rows
are one JSON file per (image, lambda) under ``OUT/rows``: the run resumes, and shards
(``--shard 1/2``, ``--shard 2/2``) can run side by side. ``--report`` prints the mean
rate and PSNR per lambda and the BD-rates against the classical codecs of the committed
quick run (``../kodak-quick/per_image.tsv``: the same crops; those codecs' outputs do not
depend on the machine).

    python experiments/kodak-quick-quant/run.py ../shared/data/kodak -o results/kodak-quick-quant --shard 1/2
    python experiments/kodak-quick-quant/run.py ../shared/data/kodak -o results/kodak-quick-quant --shard 2/2
    python experiments/kodak-quick-quant/run.py --report -o results/kodak-quick-quant
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[2] / "results" / "kodak-quick-quant"  # the run's data
LAMBDAS = (1e-4, 5e-4, 4e-3, 2e-2)  # the quick protocol's (coolchic.evaluate.reproduce)
VARIANTS = {"group": (False, 0), "layer": (True, 0), "layer+refine60": (True, 60)}
ANCHORS = ("hevc444", "avif444", "jpeg2000", "webp", "jxl")


def encode_variants(image, lmbda: float, save: Path | None = None, arch: str = "auto") -> dict:
    import torch

    from coolchic.bitstream import CodecId, Header, write_bitstream
    from coolchic.config import auto_arch, get_arch
    from coolchic.decode import decode
    from coolchic.encode import effective_config, model_sections
    from coolchic.metrics import psnr_images
    from coolchic.presets import get_preset
    from coolchic.quant import integerize
    from coolchic.train import overfit

    pixels, depth = image.pixels, image.bit_depth
    h, w, c = pixels.shape
    arch = auto_arch(lmbda, h, w) if arch == "auto" else arch
    x = torch.from_numpy(pixels.astype(np.float32) / ((1 << depth) - 1)).permute(2, 0, 1)[None].contiguous()
    start = time.perf_counter()
    model = overfit(x, effective_config(get_arch(arch), h, w), get_preset("quick"), lmbda, seed=0, threads=1)
    row = {"image": image.name, "lmbda": lmbda, "arch": arch, "train_s": time.perf_counter() - start}
    if save is not None:  # the float model, to try other integerizations without training
        save.mkdir(parents=True, exist_ok=True)
        torch.save(model, save / f"{image.name}@{lmbda:g}.pt")
    header = Header(codec_id=CodecId.COOLCHIC, height=h, width=w, channels=c, bit_depth=depth)
    for name, (per_layer, trials) in VARIANTS.items():
        start = time.perf_counter()
        q = integerize(model, pixels, bit_depth=depth, lmbda=lmbda, refine_trials=trials, per_layer=per_layer)
        seconds = time.perf_counter() - start
        data = write_bitstream(header, model_sections(q, header))
        decoded = decode(data)
        row[name] = {"bytes": len(data), "bpp": 8 * len(data) / (h * w),
                     "psnr_db": psnr_images(pixels, decoded, depth), "integerize_s": seconds}
    return row


def run(opts) -> None:
    import torch

    from coolchic.evaluate.datasets import list_images, load_image

    torch.set_num_threads(1)
    rows = opts.out / "rows"
    rows.mkdir(parents=True, exist_ok=True)
    index, count = (int(v) for v in opts.shard.split("/"))
    lambdas = [float(v) for v in opts.lambdas.split(",")] if opts.lambdas else LAMBDAS
    jobs = [(p, lm) for p in list_images(opts.kodak) for lm in lambdas]
    for k, (path, lmbda) in enumerate(jobs):
        target = rows / f"{path.stem}@{lmbda:g}.json"
        if k % count != index - 1 or target.exists():
            continue
        row = encode_variants(load_image(path, crop=256), lmbda, opts.save_models, opts.arch)
        row["machine"] = f"{platform.processor() or platform.machine()} {_cpu()}"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1))
        tmp.replace(target)
        print(f"{k + 1}/{len(jobs)} {target.name} train {row['train_s']:.1f} s "
              + " ".join(f"{n}: {row[n]['bpp']:.4f} bpp {row[n]['psnr_db']:.2f} dB" for n in VARIANTS),
              flush=True)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def _anchor_rows(path: Path) -> dict[str, dict[float, dict[str, tuple[float, float]]]]:
    """codec -> setting -> image -> (bpp, psnr_db), read by ../kodak-quick-arch/bdrate_auto.py."""
    import importlib.util

    source = Path(__file__).resolve().parents[1] / "kodak-quick-arch" / "bdrate_auto.py"
    spec = importlib.util.spec_from_file_location("bdrate_auto", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rows(path)


def _curve(settings: dict[float, dict[str, tuple[float, float]]], n_images: int) -> np.ndarray:
    from coolchic.metrics import mean_psnr

    points = [(np.mean([v[0] for v in imgs.values()]), mean_psnr([v[1] for v in imgs.values()]))
              for imgs in settings.values() if len(imgs) == n_images]
    return np.array(sorted(points))


def report(opts) -> None:
    from coolchic.evaluate.bdrate import bd_rate
    from coolchic.metrics import mean_psnr

    found = [json.loads(p.read_text()) for p in sorted((opts.out / "rows").glob("*.json"))]
    images = sorted({r["image"] for r in found})
    complete = [lm for lm in LAMBDAS if sum(r["lmbda"] == lm for r in found) == len(images)]
    print(f"{len(found)} rows, {len(images)} images; complete lambdas: {complete}")
    print(f"machine: {found[0]['machine'] if found else '?'}")
    train = [r["train_s"] for r in found]
    print(f"training: {np.mean(train):.1f} s per crop on average ({min(train):.1f}-{max(train):.1f})\n")
    curves = {}
    print("| lambda | arch | " + " | ".join(f"{n}: bpp / PSNR" for n in VARIANTS)
          + " | J ratios (layer, +refine60) / group |")
    print("| --- | --- | " + " | ".join("---" for _ in VARIANTS) + " | --- |")
    for lm in complete:
        rs = [r for r in found if r["lmbda"] == lm]
        cells, costs = [], {}
        for n in VARIANTS:
            bpp = np.mean([r[n]["bpp"] for r in rs])
            psnr = mean_psnr([r[n]["psnr_db"] for r in rs])
            cells.append(f"{bpp:.4f} / {psnr:.2f} dB")
            # true RD cost per image (MSE on [0, 1] + lambda bpp), averaged
            costs[n] = np.mean([10 ** (-r[n]["psnr_db"] / 10) + lm * r[n]["bpp"] for r in rs])
            curves.setdefault(n, {})[lm] = {r["image"]: (r[n]["bpp"], r[n]["psnr_db"]) for r in rs}
        ratios = ", ".join(f"{costs[n] / costs['group']:.4f}" for n in list(VARIANTS)[1:])
        print(f"| {lm:g} | {rs[0]['arch']} | " + " | ".join(cells) + f" | {ratios} |")
    seconds = {n: np.mean([r[n]["integerize_s"] for r in found]) for n in VARIANTS}
    print("\nintegerization, mean s per crop: " + ", ".join(f"{n} {s:.2f}" for n, s in seconds.items()))
    if len(complete) < 2:
        return
    anchors = _anchor_rows(HERE.parent / "kodak-quick" / "per_image.tsv")
    print("\n| integerization | " + " | ".join(ANCHORS) + " |")
    print("| --- | " + " | ".join("---:" for _ in ANCHORS) + " |")
    for n in VARIANTS:
        ours = _curve(curves[n], len(images))
        cells = []
        for a in ANCHORS:
            same = {s: {i: v for i, v in imgs.items() if i in images} for s, imgs in anchors[a].items()}
            ref = _curve(same, len(images))
            r = bd_rate(ref[:, 0], ref[:, 1], ours[:, 0], ours[:, 1])
            cells.append(f"{r.value:+.2f} %")
        print(f"| {n} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kodak", nargs="?", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("-o", "--out", type=Path, default=HERE)
    parser.add_argument("--shard", default="1/1", help="i/n: run every n-th job from the i-th")
    parser.add_argument("--report", action="store_true", help="summarize the rows found")
    parser.add_argument("--save-models", type=Path, help="keep each trained float model here")
    parser.add_argument("--arch", default="auto", help="decoder configuration (default auto, as encode)")
    parser.add_argument("--lambdas", help="comma-separated lambdas (default: the quick protocol's)")
    opts = parser.parse_args()
    report(opts) if opts.report else run(opts)


if __name__ == "__main__":
    main()
