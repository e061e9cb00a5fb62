"""The native training kernels (coolchic/model/kernels.cpp): the same functions as the
torch ones in float32 too, the fused soft-round quantizer equal to its definition, and a
graceful fall-back to the torch kernels where no compiler works. (Float64 equality with
the reference model: tests/test_speed_paths.py.)"""

import numpy as np
import pytest
import torch

import coolchic.model.fused as fused
import coolchic.model.native as native
from coolchic.config import DecoderConfig, SynthesisConfig, get_arch, grid_shapes
from coolchic.model.coolchic import CoolChic
from coolchic.presets import get_preset
from coolchic.quant import kumaraswamy_noise, make_quantizer, soft_round
from coolchic.train import overfit
from tests.test_speed_paths import _fused_loss, _random_model, _reference_loss


def _native_or_skip() -> fused.Kernels:
    kernels = fused.native_kernels()
    if kernels is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable_reason()}")
    return kernels


def test_native_float32_training_gradients_follow_the_float64_reference():
    kernels = _native_or_skip()
    model, image, noise = _random_model(get_arch("default"), 45, 70, seed=11)
    params = list(model.parameters())
    ref = _reference_loss(model, image, noise, 1e-3)
    ref_grads = torch.autograd.grad(ref[2], params)
    model32 = model.float()
    new = _fused_loss(model32, image.float(), [n.float() for n in noise], 1e-3, kernels)
    for a, b in zip(ref, new):
        assert abs(float(a.detach()) - float(b.detach())) <= 1e-5 * abs(float(a.detach()))
    for a, b in zip(ref_grads, torch.autograd.grad(new[2], list(model32.parameters()))):
        assert torch.allclose(a.float(), b, rtol=1e-3, atol=1e-4 * float(a.abs().max()))


@pytest.mark.parametrize("channels", [1, 2, 5])
def test_native_training_handles_gray_and_other_channel_counts(channels):
    kernels = _native_or_skip()  # 5 channels: the torch synthesis (native takes 1 to 4)
    torch.manual_seed(channels)
    config = DecoderConfig(synthesis=SynthesisConfig((6,), 2))
    model = CoolChic(config, 19, 26, channels).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    image = torch.rand(1, channels, 19, 26, dtype=torch.float64)
    noise = [torch.rand_like(y) - 0.5 for y in model.latents]
    params = list(model.parameters())
    ref = _reference_loss(model, image, noise, 1e-3)
    new = _fused_loss(model, image, noise, 1e-3, kernels)
    for a, b in zip(ref, new):
        assert torch.allclose(a, b, rtol=1e-10, atol=0)
    for a, b in zip(torch.autograd.grad(ref[2], params), torch.autograd.grad(new[2], params)):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10 * float(a.abs().max()))


def test_native_kernels_give_the_same_bits_on_every_call():
    kernels = _native_or_skip()
    model, image, noise = _random_model(DecoderConfig(), 33, 47, seed=2, dtype=torch.float32)
    params = list(model.parameters())
    runs = []
    for junk in range(3):  # different heap contents each time
        _ = [torch.randn(1000 * (junk + 1)) for _ in range(junk * 5)]
        loss = _fused_loss(model, image, noise, 1e-3, kernels)[2]
        runs.append((loss.detach(), *torch.autograd.grad(loss, params)))
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))


@pytest.mark.parametrize("size", [(3, 5), (33, 47), (70, 45)])
def test_native_kernels_give_the_same_bits_on_any_thread_count(size):
    kernels = _native_or_skip()
    # default arch (2 convolutions: halo rows shared by the parts) and 3 rows (fewer rows
    # than parts); float32, where a change in the order of additions would show
    model, image, noise = _random_model(get_arch("default"), *size, seed=5, dtype=torch.float32)
    params = list(model.parameters())
    runs = []
    for threads in (1, 2, 3, 4, 8):
        with native.threads(threads):
            loss = _fused_loss(model, image, noise, 1e-3, kernels)[2]
            runs.append((loss.detach(), *torch.autograd.grad(loss, params)))
    assert all(float(g.abs().sum()) > 0 for g in runs[0][1:])  # every gradient reached
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))


def test_an_encode_is_the_same_on_one_and_on_two_training_threads():
    _native_or_skip()
    torch.manual_seed(3)
    image = torch.rand(1, 3, 40, 52)
    preset = get_preset("medium").scaled_to(12)
    before = torch.get_num_threads()
    models = [overfit(image, get_arch("default"), preset, 1e-3, threads=n) for n in (1, 2)]
    assert torch.get_num_threads() == before  # torch's own setting restored
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("path", ["native", "torch"])
def test_the_fused_soft_round_quantizer_equals_its_definition_with_the_same_noise(dtype, path,
                                                                                   monkeypatch):
    if path == "native":
        _native_or_skip()
    else:
        monkeypatch.setattr(native, "library", lambda: None)
    y0 = torch.randn(3, 29, 31, dtype=dtype) * 4
    y0[0, 0, :5] = torch.tensor([0.5, -0.5, 2.0, -3.0, 1.4999])  # rounding boundaries
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    weights = torch.linspace(-1, 1, y0.numel(), dtype=dtype).view(y0.shape)

    def noise(kind, p):  # the definition's noise, drawn as the fused quantizer draws it
        if kind == "kumaraswamy":
            return lambda y: kumaraswamy_noise(y, p)
        return lambda y: torch.randn_like(y) * p

    cases = [("kumaraswamy", t, a) for t, a in ((0.3, 1.5), (0.1, 1.0), (0.8, 3.0))]
    cases += [("gaussian", t, std) for t, std in ((0.3, 0.25), (0.1, 0.1))]  # a phase's noise="gaussian"
    for kind, t, p in cases:
        draw = noise(kind, p)
        definition = lambda y, t=t, draw=draw: soft_round(soft_round(y, t) + draw(y), t)  # noqa: E731
        outs = []
        for fn in (definition, make_quantizer("softround", temperature=t, noise_shape=p, noise=kind)):
            y = y0.clone().requires_grad_()
            torch.manual_seed(7)
            q = fn(y)
            (grad,) = torch.autograd.grad((q * weights).sum(), y)
            outs.append((q.detach(), grad))
        (q_ref, g_ref), (q_new, g_new) = outs
        assert torch.allclose(q_new, q_ref, rtol=0, atol=tol * 8)
        assert torch.allclose(g_new, g_ref, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("size", [(37, 53, 7), (64, 64, 7), (20, 71, 3), (5, 3, 2), (1, 1, 3), (2, 9, 4)])
def test_the_native_upsampling_cascade_and_its_adjoint_equal_the_torch_ones(size):
    kernels = _native_or_skip()
    h, w, n = size
    torch.manual_seed(h * w)
    grids = [torch.randn(1, 1, a, b, dtype=torch.float64, requires_grad=True)
             for a, b in grid_shapes(h, w, n)]
    ref = fused.upsample_stack(grids, kernels=fused.EAGER)
    new = fused.upsample_stack(grids, kernels=kernels)
    assert new.shape == ref.shape
    assert torch.allclose(new, ref, rtol=0, atol=1e-13)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ref, grids[1:], g), torch.autograd.grad(new, grids[1:], g)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_loading_the_native_kernels_leaves_the_floating_point_environment_alone():
    _native_or_skip()
    tiny = np.float32(1e-40)  # subnormal: flush-to-zero would make it 0
    assert tiny * np.float32(1.0) != 0
    assert float(torch.tensor([1e-40]) * 1.0) != 0
