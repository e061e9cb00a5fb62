import numpy as np
import torch

from coolchic.config import DecoderConfig, SynthesisConfig
from coolchic.decoder.dispatch import synthesize
from coolchic.model.coolchic import CoolChic
from coolchic.model.upsampling import upsample2x, upsample_cascade
from coolchic.quant import quantize_layer


def test_upsampling_taps_are_the_bicubic_kernel_at_factor_two():
    def keys(t, a=-0.75):
        t = abs(t)
        return (a + 2) * t**3 - (a + 3) * t**2 + 1 if t <= 1 else a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    from coolchic.decoder.constants import TAP_SHIFT, TAPS
    assert [t / (1 << TAP_SHIFT) for t in TAPS] == [keys(d) for d in (1.75, 0.75, 0.25, 1.25)]


def test_upsampling_keeps_constants_and_crops_odd_sizes():
    x = torch.full((1, 1, 3, 4), 7.0)
    y = upsample2x(x, 5, 7)
    assert y.shape == (1, 1, 5, 7) and torch.allclose(y, torch.full_like(y, 7.0))
    grids = [torch.zeros(1, 1, 5, 7), torch.ones(1, 1, 3, 4), torch.ones(1, 1, 2, 2)]
    assert upsample_cascade(grids).shape == (1, 3, 5, 7)


def test_fixed_point_synthesis_matches_the_float_model_within_a_gray_level():
    torch.manual_seed(0)
    config = DecoderConfig(synthesis=SynthesisConfig(hidden=(8,), residual_convs=2))
    model = CoolChic(config, 20, 28, 3)
    with torch.no_grad():
        for y in model.latents:
            y.copy_(torch.round(torch.randn_like(y) * 3))
        for p in model.synthesis.parameters():
            p.normal_(0, 0.2)
        x_float = model(torch.round)[0][0].permute(1, 2, 0).numpy()
    mlp = [quantize_layer(m.weight, m.bias, 14, 14) for m in model.synthesis.mlp]
    residual = [quantize_layer(m.weight, m.bias, 14, 14) for m in model.synthesis.residual]
    grids = [y.detach()[0, 0].numpy().astype(np.int64) for y in model.latents]
    x_int = synthesize(grids, mlp, residual, bit_depth=8).astype(np.float64)
    target = np.clip(x_float * 255, 0, 255)
    error = np.abs(x_int - target)  # rounding alone gives <= 0.5 gray level
    assert error.max() < 0.6 and error.mean() < 0.3
