"""The rate-distortion objective of amortized training: the loss of a batch, and its value on
the fixed validation crops.

Loss of a batch: MSE (images in [0, 1]) + lmbda * rate in bits per pixel, the rate being the
model's own estimate (`forward`), plus the model's own regulariser where it has one
(``training_terms(x) -> (x_hat, rate, penalty)``, used in place of `forward`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from coolchic.metrics import mean_psnr


@dataclass(frozen=True)
class BatchTerms:
    """The objective of one batch (scalars are 0-d tensors that carry gradients)."""

    loss: torch.Tensor  # mse + lmbda * bpp + penalty
    mse: torch.Tensor  # mean squared error over the batch, images in [0, 1]
    bpp: torch.Tensor  # mean estimated rate, bits per pixel
    x_hat: torch.Tensor  # (B, 3, H, W) reconstruction


@dataclass(frozen=True)
class Validation:
    """The objective on the validation crops, after some step."""

    step: int  # training steps done when it was measured
    loss: float  # mean over the crops of the training loss
    psnr_db: float  # mean over the crops of each crop's PSNR (dB), `metrics.mean_psnr`
    bpp: float  # mean estimated rate, bits per pixel


def batch_terms(model: torch.nn.Module, x: torch.Tensor, *, lmbda: float) -> BatchTerms:
    """The loss of crops `x` (B, 3, H, W) in [0, 1] under `model`'s training proxy."""
    if hasattr(model, "training_terms"):
        x_hat, rate, penalty = model.training_terms(x)
    else:
        (x_hat, rate), penalty = model(x), 0.0
    mse = torch.mean((x_hat - x) ** 2)
    bpp = rate.mean() / (x.shape[-2] * x.shape[-1])
    return BatchTerms(mse + lmbda * bpp + penalty, mse, bpp, x_hat)


def _psnr_db(mse: float) -> float:
    return -10 * math.log10(max(mse, 1e-12))


def validate(model: torch.nn.Module, crops: torch.Tensor, *, lmbda: float, batch: int,
             step: int) -> Validation:
    """The objective on `crops` (N, 3, H, W), in batches of `batch`, in eval mode without
    gradients; leaves the model in train mode and every random generator as it found them
    (the training run that validates is the run that does not, bit for bit)."""
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if crops.is_cuda else None
    model.eval()
    losses, bpps, psnrs = [], [], []
    try:
        with torch.no_grad():
            for start in range(0, len(crops), batch):
                x = crops[start : start + batch]  # (b, 3, H, W)
                terms = batch_terms(model, x, lmbda=lmbda)
                per_crop = torch.mean((terms.x_hat - x) ** 2, dim=(1, 2, 3))  # (b,)
                losses.append(float(terms.loss) * len(x))
                bpps.append(float(terms.bpp) * len(x))
                psnrs.extend(_psnr_db(float(m)) for m in per_crop)
    finally:
        model.train()
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    n = len(crops)
    return Validation(step, sum(losses) / n, mean_psnr(psnrs), sum(bpps) / n)
