"""The soft-rounding quantization proxy with noise, q = s_T(s_T(y) + n), as one fused
operation: the function of ``coolchic.quant`` (``soft_round`` and ``kumaraswamy_noise``,
C3, Kim et al., CVPR 2024) with its derivative computed in the same pass.

Composed from torch operations it takes about twenty full-size temporaries and as many
autograd nodes per latent grid (14 ms per training step at 768x512 on the reference CPU);
here it is one pass of the native kernel (or a few in-place torch operations without it),
saving only dq/dy for the backward pass. The uniform draws come from ``torch.rand_like``,
as in ``kumaraswamy_noise``, so a seed gives the same noise either way.
"""

from __future__ import annotations

import math

import torch

from coolchic.model import native


def _soft_round_and_slope(x: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_T(x), s_T'(x)); consumes nothing, allocates three tensors."""
    centre = torch.floor(x).add_(0.5)
    t = torch.sub(x, centre).div_(temperature).tanh_()
    k = 0.5 / math.tanh(0.5 / temperature)  # s_T(x) = centre + k tanh((x - centre) / T)
    slope = torch.square(t).neg_().add_(1.0).mul_(k / temperature)
    return centre.add_(t, alpha=k), slope


def gaussian_from_uniform(u: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """Gaussian noise of standard deviation `std` from uniform draws u on (0, 1), by the
    inverse CDF std sqrt(2) erfinv(2u - 1) (u clamped to [1e-6, 1 - 1e-6], so |noise| <=
    4.75 std); consumes u. Batched training draws its noise so, from hashed uniforms."""
    return u.clamp_(1e-6, 1.0 - 1e-6).mul_(2.0).sub_(1.0).erfinv_().mul_(std * math.sqrt(2.0))


def _torch_forward(y: torch.Tensor, u: torch.Tensor, temperature: float,
                   shape: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`soft_round_noise`'s values and slope in torch; shape None: u is the noise itself."""
    if shape is None:
        noise = u
    else:
        a, b = shape
        noise = u.clamp_(1e-6, 1.0 - 1e-6).neg_().add_(1.0).pow_(1.0 / b).neg_().add_(1.0)
        noise = noise.pow_(1.0 / a).sub_(0.5)  # Kumaraswamy(a, b) - 1/2 by the inverse CDF
    s, slope = _soft_round_and_slope(y, temperature)
    q, slope2 = _soft_round_and_slope(s.add_(noise), temperature)
    return q, slope.mul_(slope2)


class _SoftRoundNoise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, temperature: float, a: float, b: float,
                std: float | None = None) -> torch.Tensor:
        if std is None:
            u, shape = torch.rand_like(y), (a, b)
        else:  # Gaussian noise, drawn here and passed to the kernel as it is (its a = 0)
            u, shape = torch.randn_like(y).mul_(std), None
        lib = native.library()
        if lib is not None and lib.supports(y):
            y = y.contiguous()
            q, slope = torch.empty_like(y), torch.empty_like(y)
            lib.soft_round_noise(y, u, temperature, (0.0, 1.0) if shape is None else shape, q, slope)
        else:
            q, slope = _torch_forward(y.detach(), u, temperature, shape)
        ctx.save_for_backward(slope)
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (slope,) = ctx.saved_tensors
        return grad * slope, None, None, None, None


def soft_round_noise(y: torch.Tensor, temperature: float, shape: tuple[float, float]) -> torch.Tensor:
    """s_T(s_T(y) + n) with n Kumaraswamy(a, b) noise minus 1/2, shape = (a, b); the same
    values and gradient as composing ``quant.soft_round`` and ``quant.kumaraswamy_noise``.
    Uses the native kernel for CPU float tensors when it is available."""
    return _SoftRoundNoise.apply(y, temperature, *shape)


def soft_round_gaussian(y: torch.Tensor, temperature: float, std: float) -> torch.Tensor:
    """s_T(s_T(y) + n) with n Gaussian of standard deviation `std` (``torch.randn_like``
    times std), its gradient computed in the same pass; the native kernel when available."""
    return _SoftRoundNoise.apply(y, temperature, 1.0, 1.0, std)
