"""Training = encoding: overfit one image's COOL-CHIC model by minimizing D + lambda * R,
D the MSE on [0, 1] and R the latent rate in bits per pixel (Ladune et al., ICCV 2023)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from coolchic.config import DecoderConfig
from coolchic.model.coolchic import CoolChic
from coolchic.presets import Phase, Preset
from coolchic.quant import make_quantizer


@dataclass(frozen=True)
class Progress:
    """What a training callback receives after each iteration."""

    iteration: int  # 1-based, over all phases
    total: int
    phase: int
    loss: float
    psnr_db: float  # of the training proxy's reconstruction
    bpp: float  # estimated latent rate of the training proxy
    best_loss: float  # best true (rounded-latent) RD cost so far


ProgressCallback = Callable[[Progress], None]


def _lr_factor(phase: Phase, step: int) -> float:
    if phase.schedule == "constant":
        return 1.0
    if phase.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / max(1, phase.iterations)))
    raise ValueError(f"unknown schedule {phase.schedule!r}; choose cosine or constant")


def rd_loss(
    model: CoolChic, image: torch.Tensor, lmbda: float, quantize
) -> tuple[torch.Tensor, float, float]:
    """(loss, mse, bpp) of one forward pass; image is (1, C, H, W) in [0, 1]."""
    x_hat, rate = model(quantize)
    mse = torch.mean((x_hat - image) ** 2)
    bpp = rate / model.n_pixels()
    return mse + lmbda * bpp, float(mse.detach()), float(bpp.detach())


def overfit(
    image: torch.Tensor,
    config: DecoderConfig,
    preset: Preset,
    lmbda: float,
    *,
    seed: int = 0,
    device: str = "cpu",
    callback: ProgressCallback | None = None,
) -> CoolChic:
    """Train a model of `image` ((1, C, H, W) float in [0, 1]) and return the state with the
    lowest true RD cost (latents rounded) seen at the evaluation points."""
    torch.manual_seed(seed)
    _, c, h, w = image.shape
    model = CoolChic(config, h, w, c).to(device)
    image = image.to(device)
    best_loss, best_state = float("inf"), None
    rounding = make_quantizer("round")
    done = 0
    for phase_index, phase in enumerate(preset.phases):
        optimizer = torch.optim.Adam(model.parameters(), lr=phase.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s, p=phase: _lr_factor(p, s))
        quantize = make_quantizer(phase.quantizer)
        for step in range(phase.iterations):
            loss, mse, bpp = rd_loss(model, image, lmbda, quantize)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            done += 1
            last = step == phase.iterations - 1
            if (step + 1) % phase.eval_every == 0 or last:
                with torch.no_grad():
                    true_loss = float(rd_loss(model, image, lmbda, rounding)[0])
                if true_loss < best_loss:
                    best_loss, best_state = true_loss, copy.deepcopy(model.state_dict())
            if callback is not None:
                psnr = -10.0 * math.log10(max(mse, 1e-12))
                callback(Progress(done, preset.iterations, phase_index, float(loss.detach()),
                                  psnr, bpp, best_loss))
        if best_state is not None:  # each phase starts from the best state so far
            model.load_state_dict(best_state)
    return model
