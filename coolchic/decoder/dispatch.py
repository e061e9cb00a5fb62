"""Which implementation decodes: the device and the kernel are chosen here, and only here.

Latents always decode on the CPU, with the native decoder (`coolchic.decoder.native`) or
the numpy one (`coolchic.decoder.latents`). Upsampling and synthesis run on the CPU with the
native code or numpy (`coolchic.decoder.reconstruct`), and on any other torch device with
`coolchic.decoder.reconstruct_torch`. All give the same integers bit for bit (the tests that
bind them: docs/architecture.md), so the choice is one of speed only. Torch is imported
only for a device other than the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from coolchic import nativebuild
from coolchic.decoder import native, reconstruct
from coolchic.decoder.constants import level_taps
from coolchic.decoder.latents import decode_waves
from coolchic.entropy.fixedpoint import IntegerArm, QLayer
from coolchic.entropy.latents import Layout, Schedule, make_schedule

Kernel = Literal["auto", "native", "numpy"]


def check_device(device: str) -> str:
    """Validate a device name ('cpu' or 'cuda'); raise ValueError with the reason otherwise."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA device is available")
    return device


def select(kernel: str) -> native.DecoderKernels | None:
    """The native kernels for a `kernel` argument of the decoder, or None for numpy:
    "native" (raise ValueError saying why when unavailable), "numpy", or "auto" (native
    where installed for this CPU, else numpy with a one-line warning)."""
    if kernel not in ("auto", "native", "numpy"):
        raise ValueError(f"unknown kernel {kernel!r}; choose auto, native or numpy")
    lib = None if kernel == "numpy" else native.kernels()
    if kernel == "native" and lib is None:
        raise ValueError(f"the native decoder is unavailable: {native.unavailable_reason()}")
    if kernel == "auto" and lib is None:
        nativebuild.warn_fallback("the native decoder", native.unavailable_reason(),
                                  "decoding runs the numpy path: the same image, slower")
    return lib


def decode_latents(layout: Layout, data: bytes, arm: IntegerArm, *,
                   kernel: Kernel = "auto") -> list[np.ndarray]:
    """Decode the latent grids coded in `data` in the order of `make_schedule`.

    Args:
        layout: the buffer layout (`buffer_layout`; a `Schedule` is one too).
        kernel: "native" runs the whole wave loop in one C++ call, "numpy" one ARM
            evaluation and one constriction call per wave (`select`).

    Returns:
        int64 (h_k, w_k) grids, finest first.

    Raises:
        EntropyError: corrupt data (the same verdict from either kernel).
    """
    lib = select(kernel)
    buffer = layout.new_buffer()
    if lib is not None:
        lib.decode_latents(layout, buffer, data, arm)
    else:
        schedule = layout if isinstance(layout, Schedule) else make_schedule(layout.shapes, layout.context)
        decode_waves(schedule, buffer, data, arm)
    return [layout.grid_view(buffer, k).astype(np.int64) for k in range(len(layout.shapes))]


def synthesize(
    grids: Sequence[np.ndarray],
    mlp: Sequence[QLayer],
    residual: Sequence[QLayer],
    *,
    bit_depth: int,
    taps: np.ndarray | None = None,
    device: str = "cpu",
    kernel: Kernel = "auto",
) -> np.ndarray:
    """Integer latent grids (finest first) -> image (H, W, C), uint8 or uint16; the
    arguments but the last two as in `coolchic.decoder.reconstruct.synthesize`.

    Args:
        device: 'cpu', or a torch device that runs `coolchic.decoder.reconstruct_torch`.
        kernel: on the CPU, "native" runs the synthesis in one C++ call, "numpy" with numpy
            (`select`); unused on other devices.
    """
    if str(device) != "cpu":
        from coolchic.decoder.reconstruct_torch import synthesize as synthesize_torch

        return synthesize_torch(grids, mlp, residual, bit_depth=bit_depth, taps=taps, device=device)
    lib = select(kernel)
    if lib is None:
        return reconstruct.synthesize(grids, mlp, residual, bit_depth=bit_depth, taps=taps)
    layers = [m.T for m in reconstruct.carrying_layers(mlp)]  # (inputs + 1, outputs [+ 1]) each
    conv = [np.concatenate([w.ravel(), b]) for w, b in map(reconstruct.folded, residual)]
    return lib.synthesize(grids, layers, conv, bit_depth=bit_depth, taps=level_taps(taps, len(grids) - 1))
