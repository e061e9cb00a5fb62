"""Whole-image screening of codec ideas (issue 26): real encodes, real bitstreams.

Each variant is a (decoder configuration, training preset) pair run through the public
`coolchic.encode.encode`; its true RD cost J = MSE + lambda * bpp is measured from the file's
size and the decoded image, and compared with the control's on the same (image, lambda):
the report prints, per variant, the geometric mean of J / J_control and its range.

The protocol: 4 whole Kodak images of different content (a portrait, a detailed scene, a
mid-detail one, large smooth areas with sharp edges) at lambda 1e-3 and 1e-2 (about 0.45
and 0.08 bpp), preset `fast` (2800 iterations): 8 encodes a variant, about 4 minutes each
on one core. Rows are JSON files, one per (variant, image, lambda), written when the encode
ends (beside it, the bitstream as ROW.bin), so a run resumes where it stopped; run two
shards side by side on two cores. Each row
also holds the encode's trace: the best true RD cost so far (rounded latents, float
weights) against the iteration and the wall time, so that variants can be compared at
equal time as well as at equal iterations.

    python experiments/screen/run.py 1/2 ROWS --variants default,learned &
    python experiments/screen/run.py 2/2 ROWS --variants default,learned
    python experiments/screen/run.py --report ROWS
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from coolchic.config import DecoderConfig, UpsamplingConfig, get_arch
from coolchic.encode import encode
from coolchic.evaluate.datasets import load_image
from coolchic.presets import Preset, get_preset

KODAK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kodak"
IMAGES = ("kodim04", "kodim13", "kodim19", "kodim23")
LAMBDAS = (1e-3, 1e-2)
CONTROL = "default"
TRACE_EVERY = 100  # iterations between points of the J-against-time trace
LEARNED = UpsamplingConfig(learned=True)


def _recipe(base: str, *, latent_lr: float | None = None, lr: float | None = None,
            gaussian: tuple[float, float] | None = None,
            temperature: tuple[float, float] | None = None, optimizer: str | None = None) -> Preset:
    """Preset `base` with its first phase's learning rates changed, or its softround noise
    made Gaussian of standard deviation `gaussian` (start, end), or its temperature; or
    every phase trained with `optimizer`."""
    preset = get_preset(base)
    first = preset.phases[0]
    first = replace(first, latent_lr=first.latent_lr if latent_lr is None else latent_lr,
                    lr=first.lr if lr is None else lr)
    name = f"{base}-lat{first.latent_lr:g}-net{first.lr:g}"
    if gaussian is not None:
        first = replace(first, noise="gaussian", noise_shape=gaussian)
        name += f"-gauss{gaussian[0]:g}-{gaussian[1]:g}"
    if temperature is not None:
        first = replace(first, temperature=temperature)
        name += f"-t{temperature[0]:g}-{temperature[1]:g}"
    phases = (first, *preset.phases[1:])
    if optimizer is not None:
        phases = tuple(replace(p, optimizer=optimizer) for p in phases)
        name += f"-{optimizer}"
    return replace(preset, name=name, phases=phases)


def _variants() -> dict[str, tuple[DecoderConfig | str, str | Preset]]:
    """name -> (decoder configuration or arch name of `encode`, preset)."""
    learned = replace(get_arch("default"), upsampling=LEARNED)
    synth = replace(get_arch("synth"), upsampling=LEARNED)
    return {
        "default": (get_arch("default"), "fast"),
        "learned": (learned, "fast"),
        "lop": (get_arch("lop"), "fast"),
        "synth": (get_arch("synth"), "fast"),
        "synth-learned": (replace(get_arch("synth"), upsampling=LEARNED), "fast"),
        "race": ("race", "fast"),
        "medium": (learned, "medium"),
        "medium-lat0.15": (learned, _recipe("medium", latent_lr=0.15)),
        "medium-net0.01": (learned, _recipe("medium", lr=1e-2)),
        # paper grade: the control is the first protocol run's row (results/paper-grade/run-0.5.0)
        "slow-lat0.1": (learned, _recipe("slow", latent_lr=0.1)),
        "slow-lat0.2": (learned, _recipe("slow", latent_lr=0.2)),
        "slow-lat0.05": (learned, _recipe("slow", latent_lr=0.05)),
        "slow-synth-learned": (replace(get_arch("synth"), upsampling=LEARNED), "slow"),
        "slow-synth-learned-lat0.1": (replace(get_arch("synth"), upsampling=LEARNED),
                                      _recipe("slow", latent_lr=0.1)),
        # Cool-chic's later recipe (its c3x preset): Gaussian noise of std 0.25 -> 0.1 in the
        # softround phase instead of Kumaraswamy a = 2 -> 1; "cc" also takes its temperature
        # 0.3 -> 0.1 and its learning rates (1e-2 for everything, latents scaled by 16, so
        # 0.16 for ours)
        "slow-gauss": (learned, _recipe("slow", gaussian=(0.25, 0.1))),
        "slow-cc": (learned, _recipe("slow", gaussian=(0.25, 0.1), temperature=(0.3, 0.1),
                                     latent_lr=0.16, lr=1e-2)),
        "gauss": (learned, _recipe("fast", gaussian=(0.25, 0.1))),
        "cc": (learned, _recipe("fast", gaussian=(0.25, 0.1), temperature=(0.3, 0.1),
                                latent_lr=0.16, lr=1e-2)),
        # SOAP (coolchic.soap) instead of Adam in every phase, as Cool-chic 5.0 trains
        # the first synthesis layer's initial weights times 0.1 or 0.3 (Preset.synthesis_gain)
        "gain0.1": (learned, replace(get_preset("fast"), name="fast-gain0.1", synthesis_gain=0.1)),
        "gain0.3": (learned, replace(get_preset("fast"), name="fast-gain0.3", synthesis_gain=0.3)),
        "gain0.03": (learned, replace(get_preset("fast"), name="fast-gain0.03", synthesis_gain=0.03)),
        "slow-gain0.1": (learned, replace(get_preset("slow"), name="slow-gain0.1", synthesis_gain=0.1)),
        "slow-soap": (learned, _recipe("slow", optimizer="soap")),
        "slow-synth-soap": (synth, _recipe("slow", optimizer="soap")),
        "synth-soap": (synth, _recipe("fast", optimizer="soap")),
        "slow-synth-cc": (replace(get_arch("synth"), upsampling=LEARNED),
                          _recipe("slow", gaussian=(0.25, 0.1), temperature=(0.3, 0.1),
                                  latent_lr=0.16, lr=1e-2)),
    }


def _revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(shard: str, rows: Path, names: list[str], images: tuple[str, ...],
        lambdas: tuple[float, ...]) -> None:
    i, n = (int(v) for v in shard.split("/"))
    variants = _variants()
    rows.mkdir(parents=True, exist_ok=True)
    jobs = [(v, im, lm) for im in images for lm in lambdas for v in names]
    for k, (variant, im, lm) in enumerate(jobs):
        target = rows / f"{variant}@{im}@{lm:g}.json"
        if k % n != i - 1 or target.exists():
            continue
        config, preset = variants[variant]
        pixels = load_image(KODAK / f"{im}.png").pixels
        trace: list[tuple[int, float, float]] = []  # (iteration, seconds, best true J so far)
        start = time.perf_counter()

        def record(p, trace=trace, start=start) -> None:
            if p.iteration % TRACE_EVERY == 0 or p.iteration == p.total:
                trace.append((p.iteration, round(time.perf_counter() - start, 2), p.best_loss))

        # the training state is saved every minute: a screening stopped with the session goes
        # on from it (encode_s and the trace then cover this process's part only)
        saves = rows / "partial" / target.stem
        resumed = any(saves.parent.glob(f"{saves.name}.*"))
        result = encode(pixels, lmbda=lm, preset=preset, arch=config, threads=1, callback=record,
                        resume=saves)
        r = result.report
        mse = 10.0 ** (-r.psnr_db / 10.0)
        row = {"variant": variant, "image": im, "lmbda": lm, "preset": r.preset, "bytes": r.n_bytes,
               "bpp": r.bpp, "psnr_db": r.psnr_db, "J": mse + lm * r.bpp,
               "arch": r.arch, "mac_per_pixel": r.mac_per_pixel, "sections": r.section_bytes,
               "encode_s": r.encode_seconds,
               "revision": _revision(), "machine": platform.processor() or platform.machine(),
               "trace": trace, "resumed": resumed}
        target.with_suffix(".bin").write_bytes(result.data)  # the file itself: decode it to check
        target.write_text(json.dumps(row, indent=1) + "\n")
        print(f"{target.name}: {r.n_bytes} bytes, {r.bpp:.4f} bpp, {r.psnr_db:.2f} dB, J {row['J']:.6f}, "
              f"{r.encode_seconds:.0f} s", flush=True)


def report(rows: Path, control: str = CONTROL) -> None:
    data = [json.loads(p.read_text()) for p in sorted(rows.glob("*.json"))]
    by = {(r["variant"], r["image"], r["lmbda"]): r for r in data}
    names = [v for v in _variants() if any(r["variant"] == v for r in data)]
    others = [v for v in names if v != control]
    heads = " | ".join(f"{v}: J / {control}" for v in others)
    print(f"| image | lambda | {control}: bpp / dB | {heads} |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in others) + " |")
    ratios: dict[str, list[float]] = {v: [] for v in others}
    for im in IMAGES:
        for lm in LAMBDAS:
            base = by.get((control, im, lm))
            if base is None:
                continue
            cells = []
            for v in others:
                row = by.get((v, im, lm))
                cells.append("-" if row is None else f"{row['J'] / base['J']:.4f}")
                if row is not None:
                    ratios[v].append(row["J"] / base["J"])
            first = f"{base['bpp']:.4f} / {base['psnr_db']:.2f}"
            print(f"| {im} | {lm:g} | {first} | " + " | ".join(cells) + " |")
    print()
    for v, r in ratios.items():
        if r:
            mean = math.exp(float(np.mean(np.log(r))))
            seconds = np.mean([row["encode_s"] for key, row in by.items() if key[0] == v])
            print(f"{v}: J / {control} geometric mean {mean:.4f} over {len(r)} pairs "
                  f"(range {min(r):.4f} to {max(r):.4f}); encode {seconds:.0f} s on average")


def report_against_protocol(rows: Path, protocol: Path) -> None:
    """Each row beside the paper-grade protocol's row of the same (image, lambda): the
    control is the product's own encode (coolchic-slow, --arch auto) of that run folder."""
    controls = {}
    for path in (protocol / "rows").glob("coolchic-*/*.json"):  # not the anchors
        r = json.loads(path.read_text())
        controls[(r["image"], float(r["lmbda"]))] = r
    print("| variant | image | lambda | control: bpp / dB | variant: bpp / dB | J / control | encode (min) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for path in sorted(rows.glob("*.json")):
        r = json.loads(path.read_text())
        c = controls.get((r["image"], float(r["lmbda"])))
        if c is None:
            continue
        j_control = c["mse"] / 255.0**2 + c["lmbda"] * c["bpp"]
        print(f"| {r['variant']} | {r['image']} | {r['lmbda']:g} | {c['bpp']:.4f} / {c['psnr_db']:.2f} | "
              f"{r['bpp']:.4f} / {r['psnr_db']:.2f} | {r['J'] / j_control:.4f} | {r['encode_s'] / 60:.1f} |")


def plot_time(rows: Path, out: Path) -> None:
    """Best true RD cost so far against wall time, one line per row with a trace, as a
    ratio to the final file's J (the file adds the weights' bits and integer weights), one
    panel per lambda: how much each idea gains per minute, not per iteration."""
    from matplotlib.figure import Figure

    data = [json.loads(p.read_text()) for p in sorted(rows.glob("*.json"))]
    data = [r for r in data if r.get("trace")]
    lambdas = sorted({r["lmbda"] for r in data})
    if not lambdas:
        raise SystemExit(f"no row with a trace in {rows}")
    fig = Figure(figsize=(4.2 * len(lambdas), 3.6), layout="constrained")
    axes = fig.subplots(1, len(lambdas), squeeze=False)[0]
    for ax, lm in zip(axes, lambdas):
        for r in (r for r in data if r["lmbda"] == lm):
            t = np.array([point[1] for point in r["trace"]]) / 60
            best = np.array([point[2] for point in r["trace"]])
            keep = np.isfinite(best)
            ax.plot(t[keep], best[keep] / r["J"], label=f"{r['variant']} {r['image']}")
        ax.set(title=f"lambda {lm:g}", xlabel="wall time (min)", yscale="log",
               ylabel="best true J so far / final file's J")
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shard", nargs="?", help="i/n: run every n-th job from the i-th")
    parser.add_argument("rows", type=Path)
    parser.add_argument("--variants", default="default,learned")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--control", default=CONTROL, help="the variant others are compared with")
    parser.add_argument("--images", default=",".join(IMAGES), help="comma-separated Kodak names")
    parser.add_argument("--lambdas", default=",".join(f"{v:g}" for v in LAMBDAS))
    parser.add_argument("--protocol", type=Path, help="with --report: compare with this paper-grade run")
    parser.add_argument("--plot", type=Path, help="with --report: also plot J against wall time here")
    args = parser.parse_args()
    if args.report and args.plot:
        plot_time(args.rows, args.plot)
    if args.report and args.protocol:
        report_against_protocol(args.rows, args.protocol)
    elif args.report:
        report(args.rows, args.control)
    else:
        run(args.shard, args.rows, args.variants.split(","), tuple(args.images.split(",")),
            tuple(float(v) for v in args.lambdas.split(",")))


if __name__ == "__main__":
    main()
