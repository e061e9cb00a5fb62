"""CUDA checks for a GPU machine (issue 5's determinism contract, issue 4's CUDA paths).

1. Every bitstream in a folder decodes on the GPU (upsampling and synthesis on CUDA) to
   the same image as on the CPU, bit for bit.
2. The time of one training iteration on CUDA against the CPU, on a random 256x256 and
   a random 768x512 image, with the default decoder.

    python benchmarks/cuda_check.py results/kodak-quick-7000/bitstreams
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from coolchic.decode import decode


def check_decodes(folder: Path) -> None:
    files = sorted(folder.glob("*.bin"))
    same, start = 0, time.perf_counter()
    for path in files:
        data = path.read_bytes()
        if np.array_equal(decode(data, device="cuda"), decode(data, device="cpu")):
            same += 1
        else:
            print(f"MISMATCH {path.name}")
    print(f"decode: {same} of {len(files)} files identical on cuda and cpu "
          f"({time.perf_counter() - start:.1f} s)", flush=True)


def time_training(height: int, width: int, device: str, iterations: int) -> float:
    from coolchic.config import get_arch
    from coolchic.encode import effective_config
    from coolchic.presets import get_preset
    from coolchic.train import overfit

    image = torch.rand(1, 3, height, width)
    config = effective_config(get_arch("default"), height, width)
    preset = get_preset("medium").scaled_to(iterations)
    overfit(image, config, get_preset("medium").scaled_to(20), 1e-3, seed=0, device=device)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    overfit(image, config, preset, 1e-3, seed=0, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bitstreams", type=Path)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    check_decodes(args.bitstreams)
    for h, w in ((256, 256), (512, 768)):
        for device in ("cuda", "cpu"):
            ms = time_training(h, w, device, args.iterations if device == "cuda" else 30)
            print(f"training {w}x{h} on {device}: {ms:.2f} ms per iteration (total, incl. evaluations)",
                  flush=True)


if __name__ == "__main__":
    main()
