"""The weight-step search with and without the weight priors, on trained quick models:
the true RD cost (distortion of the fixed-point decoder + lambda x the exact bytes of the
WEIGHTS section and the bits of the latents) after integerizing the same float model

- `blind`: searching with the weights coded as they are, then letting pack_weights name
  the prior that codes the resulting integers best (what `coolchic upgrade` gives);
- `with prior`: searching with the weights coded against the registered prior of the
  nearest lambda (coolchic 0.4's encoder), pack_weights choosing likewise.

It reuses the float models of experiments/kodak-quick-v3/step_search.py (quick preset scaled
to 3000 iterations, `--arch auto`, seed 0, 256x256 centre crops), training those missing.

    python experiments/weight-prior/search.py ../shared/data/kodak --models /tmp/kqmodels \\
        --images kodim03,kodim05,kodim09,kodim19,kodim21,kodim23
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch

import coolchic.quant as quant
from coolchic.entropy.fixedpoint import IntegerArm
from coolchic.entropy.latents import latent_bits
from coolchic.evaluate.datasets import load_image
from coolchic.payload import pack_weights

_spec = importlib.util.spec_from_file_location(
    "step_search", Path(__file__).resolve().parents[1] / "kodak-quick-v3" / "step_search.py")
step_search = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step_search)


def _cost(model, pixels: np.ndarray, lmbda: float, blind: bool) -> tuple[float, int]:
    original = quant.priors_for
    if blind:
        quant.priors_for = lambda config, channels: []
    try:
        s = quant._Search(model, pixels.astype(np.int64), 8, lmbda)
        w = s.run(60, per_layer=True).weights
    finally:
        quant.priors_for = original
    n_bytes = len(pack_weights(w, model.config, model.channels))
    bits = 8 * n_bytes + latent_bits(s.schedule, list(s.grids), IntegerArm(w.arm))
    return s.distortion(w.mlp, w.residual) + lmbda * bits / s.n_pixels, n_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kodak", type=Path)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--images", default="kodim03,kodim05,kodim09,kodim19,kodim21,kodim23")
    parser.add_argument("--lambdas", default="1e-4,5e-4,4e-3,2e-2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.models.mkdir(parents=True, exist_ok=True)
    print("| image | lambda | WEIGHTS bytes, blind | with prior | J with prior / J blind |")
    print("| --- | ---: | ---: | ---: | ---: |")
    ratios: dict[float, list[float]] = {}
    for lmbda in (float(v) for v in args.lambdas.split(",")):
        for image in args.images.split(","):
            pixels = load_image(args.kodak / f"{image}.png", crop=256).pixels
            model = step_search.float_model(args.models / f"{image}@{lmbda!r}.pt", pixels, lmbda)
            j_blind, b_blind = _cost(model, pixels, lmbda, blind=True)
            j_prior, b_prior = _cost(model, pixels, lmbda, blind=False)
            ratios.setdefault(lmbda, []).append(j_prior / j_blind)
            print(f"| {image} | {lmbda:g} | {b_blind} | {b_prior} | {j_prior / j_blind:.4f} |",
                  flush=True)
    print()
    for lmbda, r in ratios.items():
        print(f"lambda {lmbda:g}: geometric mean J ratio {np.exp(np.mean(np.log(r))):.4f}, "
              f"better on {sum(v < 1 for v in r)} of {len(r)}")


if __name__ == "__main__":
    main()
