"""The weight-step search, old and new, on trained quick models: the true RD cost
(distortion of the fixed-point decoder + lambda x the exact bits of latents and format
3.0 weights) after integerizing the same float model with

- `first rise`: each step searched from its start until the cost rises (coolchic 0.2's
  search, here with the format 3.0 costs);
- `window 3`: every step within 3 of the start, then on while falling (coolchic 0.3);
- `every step`: the whole step range.

Each run trains the models it lacks (preset quick scaled to 3000 iterations, `--arch
auto`, seed 0, about a minute each on one core) and keeps them in --models.

    python experiments/kodak-quick-v3/step_search.py ../shared/data/kodak --models /tmp/kqmodels \\
        --images kodim03,kodim05,kodim09,kodim19,kodim21,kodim23 --lambdas 2e-2,4e-3

Measured (the 12 models above, on the AMD EPYC VM with another job on the other core):
window 3 is 0.18 % below first rise (geometric mean of the ratios; better on 9, worse on 1),
every step 0.20 %; mean times 3.05 s, 3.84 s and 5.62 s per integerization.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import coolchic.quant as quant
from coolchic.config import auto_arch, get_arch
from coolchic.encode import effective_config
from coolchic.entropy.fixedpoint import IntegerArm
from coolchic.entropy.latents import latent_bits
from coolchic.evaluate.datasets import load_image
from coolchic.payload import weights_bits
from coolchic.presets import get_preset
from coolchic.train import overfit


def _first_rise(cost, start: int) -> int:
    lo, hi = quant.FRAC_RANGE
    best, best_cost = start, cost(start)
    for direction in (1, -1):
        f, improved = best + direction, False
        while lo <= f <= hi:
            c = cost(f)
            if c >= best_cost:
                break
            best, best_cost, improved = f, c, True
            f += direction
        if improved:
            break
    return best


def _every_step(cost, start: int) -> int:
    lo, hi = quant.FRAC_RANGE
    return min(range(lo, hi + 1), key=lambda f: (cost(f), abs(f - start)))


SEARCHES = {"first rise": _first_rise, "window 3": quant._step_search, "every step": _every_step}


def float_model(path: Path, pixels: np.ndarray, lmbda: float):
    """The quick preset scaled to 3000 iterations, trained on `pixels` once and cached at `path`."""
    if path.exists():
        return torch.load(path, weights_only=False)
    h, w, _ = pixels.shape
    config = effective_config(get_arch(auto_arch(lmbda, h, w)), h, w)
    x = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    model = overfit(x, config, get_preset("quick").scaled_to(3000), lmbda, seed=0).cpu()
    torch.save(model, path)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kodak", type=Path)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--images", default="kodim03,kodim05,kodim09,kodim19,kodim21,kodim23")
    parser.add_argument("--lambdas", default="2e-2,4e-3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.models.mkdir(parents=True, exist_ok=True)
    original = quant._step_search
    ratios, times = [], []
    for lmbda in (float(v) for v in args.lambdas.split(",")):
        for image in args.images.split(","):
            pixels = load_image(args.kodak / f"{image}.png", crop=256).pixels
            model = float_model(args.models / f"{image}@{lmbda!r}.pt", pixels, lmbda)
            costs, seconds = {}, {}
            for name, search in SEARCHES.items():
                quant._step_search = search
                start = time.perf_counter()
                s = quant._Search(model, pixels.astype(np.int64), 8, lmbda)
                w = s.run(60, per_layer=True).weights
                seconds[name] = time.perf_counter() - start
                bits = weights_bits(w.layers()) + latent_bits(s.schedule, list(s.grids), IntegerArm(w.arm))
                costs[name] = s.distortion(w.mlp, w.residual) + lmbda * bits / s.n_pixels
            quant._step_search = original
            ratios.append([costs[n] / costs["first rise"] for n in SEARCHES])
            times.append([seconds[n] for n in SEARCHES])
            cells = ", ".join(f"{n} {r:.4f}" for n, r in zip(SEARCHES, ratios[-1]))
            print(f"{image} {lmbda:g}: {cells}", flush=True)
    mean = np.exp(np.log(np.array(ratios)).mean(0))
    print("geometric mean of the RD cost ratios: "
          + ", ".join(f"{n} {r:.4f}" for n, r in zip(SEARCHES, mean)))
    print("mean seconds: " + ", ".join(f"{n} {t:.2f}" for n, t in zip(SEARCHES, np.mean(times, 0))))


if __name__ == "__main__":
    main()
