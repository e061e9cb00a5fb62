"""Correctness of the fast paths (issue 4): the decoder's integer results are pinned bit for
bit to what the code computed before they were optimized, and the hand-fused training
kernels compute the same function, values and gradients, as the plain reference model.
No timing here: benchmarks/speed.py measures speed."""

import hashlib

import numpy as np
import pytest
import torch

import coolchic.decoder.native as native_decoder
import coolchic.decoder.reconstruct as reconstruct
import coolchic.decoder.reconstruct_torch as reconstruct_torch
import coolchic.model.fused as fused
import coolchic.model.native as native
from coolchic.config import ArmConfig, DecoderConfig, LatentConfig, SynthesisConfig, grid_shapes
from coolchic.decoder.constants import TAP_SHIFT, TAPS
from coolchic.decoder.dispatch import decode_latents, synthesize
from coolchic.entropy.fixedpoint import IntegerArm, QLayer
from coolchic.entropy.latents import encode_latents, make_schedule
from coolchic.model.coolchic import CoolChic, laplace_bits
from coolchic.model.upsampling import (
    band_matrix,
    upsample2x,
    upsample_axis,
    upsample_cascade,
)
from coolchic.presets import get_preset
from coolchic.train import adam, overfit

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# SHA-256 prefixes of outputs computed by the code before the speed work (commit 2f6cb6a):
# the optimized decoder must reproduce them exactly.
PINNED = {
    "arm_default": "02933a52881efe61",
    "arm_lite": "f2bb06e1108deed3",
    "arm_linear": "a88a98d44b875485",
    "arm_deep": "34c4779ba24f2372",
    "synth_kodaklike": "f3609bdc55789609",
    "synth_deep": "56a01df79695d042",
    "synth_gray16": "e08e2414059a50ef",
    "synth_extreme": "1155105d2262d4c1",
    "synth_onegrid": "ba5ccbfa93734ad5",
    "up_1x1": "bd325903dd3ebdf6",
    "up_2x3": "984b3a3b6227fd21",
    "up_17x30": "915c4ce55f7a9df9",
    "up_64x9": "1cc2502678d5da2c",
    # format 2 framing (varint word counts); the range-coded words are those format 1 pinned
    # as 49c5cee4a3dee804 and d6990601b3c9929d
    "latents_default": "4a9f1e7a42b24729",
    "latents_lite": "c06ea42b1486d038",
}


def _digest(*arrays: np.ndarray) -> str:
    m = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        m.update(str(a.dtype).encode() + str(a.shape).encode())
        m.update(a.tobytes())
    return m.hexdigest()[:16]


def _layer(rng, out, inp, w_frac, b_frac, conv=False):
    shape = (out, inp, 3, 3) if conv else (out, inp)
    if w_frac > 12:  # full-range weights
        w = rng.integers(-(1 << 15), (1 << 15) + 1, size=shape)
    else:
        w = np.round(rng.normal(0, 0.4, shape) * (1 << w_frac)).astype(np.int64)
    b = np.round(rng.normal(0, 0.4, out) * (1 << b_frac)).astype(np.int64)
    return QLayer(w.astype(np.int64), b, w_frac, b_frac)


ARM_CASES = {  # widths, weight fractional bits, context value spread
    "default": ((12, 12, 12, 2), 8, 30),
    "lite": ((8, 8, 2), 6, 4),
    "linear": ((4, 2), 12, 300),
    "deep": ((12, 20, 16, 8, 2), 14, 32767),
}


@pytest.mark.parametrize("name", list(ARM_CASES))
def test_integer_arm_table_rows_are_bit_identical_to_the_pinned_ones(name):
    widths, frac, spread = ARM_CASES[name]
    rng = np.random.default_rng(len(name))
    layers = [_layer(rng, b, a, frac, frac + 1) for a, b in zip(widths[:-1], widths[1:])]
    contexts = rng.integers(-spread, spread + 1, size=(3001, widths[0])).astype(np.float64)
    assert _digest(*IntegerArm(layers).table_rows(contexts)) == PINNED["arm_" + name]


SYNTH_CASES = {  # h, w, grids, hidden widths, residual convs, channels, bit depth, spread
    "kodaklike": (37, 53, 6, (14,), 1, 3, 8, 3),
    "deep": (19, 30, 5, (9, 7), 2, 3, 8, 20),
    "gray16": (16, 11, 4, (), 0, 1, 16, 2),
    "extreme": (9, 13, 4, (5,), 1, 3, 8, 32767),
    "onegrid": (7, 5, 1, (3,), 3, 3, 8, 5),
}


def _synth_inputs(name):
    h, w, n, hidden, res, c, depth, spread = SYNTH_CASES[name]
    rng = np.random.default_rng(h * w)
    grids = [np.clip(np.round(rng.laplace(0, spread, s)), -32767, 32767).astype(np.int64)
             for s in grid_shapes(h, w, n)]
    widths = (n, *hidden, c)
    mlp = [_layer(rng, b, a, 9, 10) for a, b in zip(widths[:-1], widths[1:])]
    residual = [_layer(rng, c, c, 11, 12, conv=True) for _ in range(res)]
    return grids, mlp, residual, depth


def _kernel_or_skip(kernel):
    if kernel == "native" and native_decoder.kernels() is None:
        pytest.skip(f"native decoder unavailable: {native_decoder.unavailable_reason()}")
    return kernel


@pytest.mark.parametrize("kernel", ["numpy", "native"])
@pytest.mark.parametrize("name", list(SYNTH_CASES))
def test_fixed_point_synthesis_is_bit_identical_to_the_pinned_images(name, kernel):
    grids, mlp, residual, depth = _synth_inputs(name)
    image = synthesize(grids, mlp, residual, bit_depth=depth, kernel=_kernel_or_skip(kernel))
    assert _digest(image) == PINNED["synth_" + name]


@pytest.mark.parametrize("band", [1, 40, 200])
def test_synthesis_in_bands_of_rows_equals_the_synthesis_in_one_band(band, monkeypatch):
    for name in ("kodaklike", "deep", "onegrid"):
        grids, mlp, residual, depth = _synth_inputs(name)
        whole = synthesize(grids, mlp, residual, bit_depth=depth, kernel="numpy")
        monkeypatch.setattr(reconstruct, "BAND_PIXELS", band)
        assert np.array_equal(synthesize(grids, mlp, residual, bit_depth=depth, kernel="numpy"), whole)
        monkeypatch.undo()


def _odd_synthesis_cases():
    """The pinned cases, then odd sizes and thin images."""
    cases = [_synth_inputs(name) for name in SYNTH_CASES]
    rng = np.random.default_rng(3)
    for h, w, n in ((1, 1, 1), (2, 70, 3), (61, 2, 4), (33, 129, 7)):  # odd sizes, thin images
        grids = [rng.integers(-40, 41, size=s) for s in grid_shapes(h, w, n)]
        mlp = [_layer(rng, 5, n, 9, 10), _layer(rng, 3, 5, 9, 10)]
        cases.append((grids, mlp, [_layer(rng, 3, 3, 11, 12, conv=True)] * 2, 8))
    return cases


def test_numpy_synthesis_equals_the_torch_synthesis_bit_for_bit(monkeypatch):
    for grids, mlp, residual, depth in _odd_synthesis_cases():
        ref = reconstruct_torch.synthesize(grids, mlp, residual, bit_depth=depth, device="cpu")
        for band in (1, 1 << 14):  # one row at a time, and the default bands
            monkeypatch.setattr(reconstruct, "BAND_PIXELS", band)
            assert np.array_equal(synthesize(grids, mlp, residual, bit_depth=depth, kernel="numpy"), ref)


def test_native_synthesis_equals_the_numpy_synthesis_bit_for_bit():
    _kernel_or_skip("native")
    for grids, mlp, residual, depth in _odd_synthesis_cases():
        ref = synthesize(grids, mlp, residual, bit_depth=depth, kernel="numpy")
        image = synthesize(grids, mlp, residual, bit_depth=depth, kernel="native")
        assert image.dtype == ref.dtype and np.array_equal(image, ref)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (17, 30), (64, 9)])
def test_fixed_point_upsampling_is_bit_identical_to_the_pinned_one(shape):
    rng = np.random.default_rng(7)
    # the pinned values were drawn in this order, one shape after the other
    for h, w in [(1, 1), (2, 3), (17, 30), (64, 9)]:
        t = [torch.from_numpy(rng.integers(-(1 << 31), 1 << 31, size=s).astype(np.float64))[None, None]
             for s in grid_shapes(h, w, 5)]
        if (h, w) == shape:
            break
    out = upsample_cascade(t, floor=True).numpy()
    assert _digest(out) == PINNED[f"up_{shape[0]}x{shape[1]}"]


def _reference_upsample2x(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """The 4-tap filter written out tap by tap: the definition the block products implement."""
    def axis(x, dim, out_len):
        n = x.shape[dim]
        index = torch.arange(-2, n + 2).clamp(0, n - 1)
        xp = x.index_select(dim, index)
        even = sum(t * xp.narrow(dim, k, n) for k, t in enumerate(TAPS))
        odd = sum(t * xp.narrow(dim, k + 1, n) for k, t in enumerate(reversed(TAPS)))
        out = torch.stack((even, odd), dim=dim if dim == -1 else -2)
        out = out.flatten(-2) if dim == -1 else out.flatten(-3, -2)
        return out.narrow(dim, 0, out_len) / (1 << TAP_SHIFT)
    return axis(axis(x, -1, out_w), -2, out_h)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 2), (20, 37), (40, 33)])
def test_float_upsampling_equals_the_tap_by_tap_filter(shape):
    torch.manual_seed(0)
    x = torch.randn(1, 3, *shape, dtype=torch.float64)
    for out_h in (2 * shape[0] - 1, 2 * shape[0]):
        for out_w in (2 * shape[1] - 1, 2 * shape[1]):
            if out_h and out_w:
                ref = _reference_upsample2x(x, out_h, out_w)
                assert torch.allclose(upsample2x(x, out_h, out_w), ref, rtol=1e-12, atol=1e-12)


def test_upsampling_any_output_range_equals_the_same_rows_of_the_whole_axis():
    # exactly for integer values (the decoder's fixed point: every sum is exact), and to
    # rounding for real values (BLAS may sum a sub-range in another order on some CPUs)
    torch.manual_seed(1)
    real = torch.randn(1, 2, 23, 9, dtype=torch.float64)
    integer = torch.round(real * (1 << 20))
    band = band_matrix(torch.float64)
    for x, tolerance in ((integer, 0.0), (real, 1e-14)):
        whole = upsample_axis(x, -2, 0, 46, band)
        for start, stop in ((0, 1), (3, 17), (17, 46), (45, 46), (10, 45)):
            part = upsample_axis(x, -2, start, stop, band)
            assert torch.allclose(part, whole[:, :, start:stop], rtol=0, atol=tolerance)


@pytest.mark.parametrize("dim", [-1, -2])
def test_upsampling_gradient_is_the_adjoint_of_the_upsampling(dim):
    torch.manual_seed(2)
    band = band_matrix(torch.float64)
    for shape, (start, stop) in (((1, 2, 5, 7), (0, 10)), ((1, 1, 19, 21), (3, 31)),
                                 ((2, 1, 1, 1), (0, 1)), ((1, 3, 40, 40), (37, 80))):
        stop = min(stop, 2 * shape[dim])
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        y = upsample_axis(x, dim, start, stop, band)
        g = torch.randn_like(y)
        (grad,) = torch.autograd.grad(y, x, g)
        # <U x, g> = <x, U^T g> for every x, g characterizes the adjoint
        assert torch.allclose((y * g).sum(), (x * grad).sum(), rtol=1e-12)
        x2 = torch.randn_like(x)
        assert torch.allclose((upsample_axis(x2, dim, start, stop, band) * g).sum(),
                              (x2 * grad).sum(), rtol=1e-12)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: upsample_axis(t, dim, 1, 6, band), (x,))


LATENT_CASES = {"default": (23, 35, 5, (12, 12, 12, 2), 6), "lite": (12, 40, 3, (8, 8, 2), 40)}


@pytest.mark.parametrize("kernel", ["numpy", "native"])
@pytest.mark.parametrize("name", list(LATENT_CASES))
def test_latent_bitstreams_are_byte_identical_to_the_pinned_ones_and_decode(name, kernel):
    h, w, n, widths, spread = LATENT_CASES[name]
    rng = np.random.default_rng(h + w)
    layers = [_layer(rng, b, a, 7, 7) for a, b in zip(widths[:-1], widths[1:])]
    shapes = grid_shapes(h, w, n)
    grids = [np.round(rng.laplace(0, spread, s)).astype(np.int64) for s in shapes]
    grids[0][1, 2] = 4000  # an escape
    schedule = make_schedule(shapes, widths[0])
    arm = IntegerArm(layers)
    data = encode_latents(schedule, grids, arm)
    assert hashlib.sha256(data).hexdigest()[:16] == PINNED["latents_" + name]
    for a, b in zip(grids, decode_latents(schedule, data, arm, kernel=_kernel_or_skip(kernel))):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("size", [(11, 3), (5, 40), (22000, 2)])
def test_the_decoding_order_is_by_wave_then_grid_then_raster_position(size):
    # narrow grids: several latents of a grid share a wave; (22000, 2): waves past 2^16
    shapes = grid_shapes(*size, 2 if size[1] == 2 else 4)
    schedule = make_schedule(shapes, 12)
    keys = []
    for k, (h, w) in enumerate(shapes):
        for r in range(h):
            for c in range(w):
                keys.append((3 * r + c, k, r, c))
    positions = {}
    for k, (h, w) in enumerate(shapes):
        view = schedule.grid_view(np.arange(schedule.buffer_size), k)
        for r in range(h):
            for c in range(w):
                positions[(k, r, c)] = view[r, c]
    expected = [positions[(k, r, c)] for _, k, r, c in sorted(keys)]
    assert schedule.order.tolist() == expected


MODEL_CASES = [
    (DecoderConfig(), (37, 53)),
    (DecoderConfig(latents=LatentConfig(3), arm=ArmConfig(8, (8,)),
                   synthesis=SynthesisConfig((9, 5), 2)), (20, 71)),
    (DecoderConfig(latents=LatentConfig(2), arm=ArmConfig(4, ()),
                   synthesis=SynthesisConfig((), 0)), (5, 3)),
    (DecoderConfig(latents=LatentConfig(1), synthesis=SynthesisConfig((6,), 1)), (4, 9)),
]


def _random_model(config, h, w, seed, dtype=torch.float64, device="cpu"):
    torch.manual_seed(seed)
    model = CoolChic(config, h, w, 3).to(dtype)
    with torch.no_grad():
        for y in model.latents:
            y.normal_(0, 3)
        for p in [*model.arm.parameters(), *model.synthesis.parameters()]:
            p.normal_(0, 0.3)
    image = torch.rand(1, 3, h, w, dtype=dtype)
    noise = [torch.rand_like(y) - 0.5 for y in model.latents]
    return model.to(device), image.to(device), [n.to(device) for n in noise]


def _reference_loss(model, image, noise, lmbda):
    it = iter(noise)
    x_hat, rate = model(lambda y: y + next(it))
    mse = torch.mean((x_hat - image) ** 2)
    return mse, rate, mse + lmbda * rate


def _fused_loss(model, image, noise, lmbda, kernels=fused.EAGER):
    it = iter(noise)
    mse, rate = model.loss_terms(lambda y: y + next(it), image, kernels=kernels)
    return mse, rate, mse + lmbda * rate


def _kernels(name):
    """The torch kernels, or the native ones (the test is skipped where they cannot be built)."""
    if name == "torch":
        return fused.EAGER
    kernels = fused.native_kernels()
    if kernels is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable_reason()}")
    return kernels


def _assert_fused_matches_reference(model, image, noise, kernels=fused.EAGER):
    """Fused and reference losses agree in value and in every parameter's gradient."""
    params = list(model.parameters())
    ref = _reference_loss(model, image, noise, 1e-3)
    new = _fused_loss(model, image, noise, 1e-3, kernels)
    for a, b in zip(ref, new):
        assert torch.allclose(a, b, rtol=1e-10, atol=0)
    for a, b in zip(torch.autograd.grad(ref[2], params), torch.autograd.grad(new[2], params)):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10 * float(a.abs().max()))


@pytest.mark.parametrize("kernels", ["torch", "native"])
@pytest.mark.parametrize("case", range(len(MODEL_CASES)))
@pytest.mark.parametrize("band", [7, 200, 1 << 14])
def test_fused_training_kernels_compute_the_reference_model_values_and_gradients(case, band, kernels,
                                                                                  monkeypatch):
    monkeypatch.setattr(fused, "ARM_BAND", band)
    monkeypatch.setattr(fused, "SYNTHESIS_BAND", band)
    config, (h, w) = MODEL_CASES[case]
    model, image, noise = _random_model(config, h, w, seed=case)
    _assert_fused_matches_reference(model, image, noise, _kernels(kernels))


@pytest.mark.parametrize("kernels", ["torch", "native"])
def test_fused_losses_without_gradients_equal_the_training_values(kernels):
    kernels = _kernels(kernels)
    config, (h, w) = MODEL_CASES[1]
    model, image, noise = _random_model(config, h, w, seed=3)
    with_grad = _fused_loss(model, image, noise, 1e-3, kernels)
    with torch.no_grad():
        without = _fused_loss(model, image, noise, 1e-3, kernels)
    for a, b in zip(with_grad, without):
        assert torch.allclose(a.detach(), b, rtol=1e-12, atol=0)


def test_laplace_rate_and_its_gradient_equal_autograd_of_the_reference_formula():
    torch.manual_seed(4)
    n = 4000
    y = torch.round(torch.randn(n, dtype=torch.float64) * 6)
    y[:50] = 40.0  # far tails: probabilities floored at 2^-24
    mu = (torch.randn(n, dtype=torch.float64) * 3).requires_grad_()
    log_scale = (torch.randn(n, dtype=torch.float64) * 3).requires_grad_()  # beyond the clamp too
    bits = laplace_bits(y, mu, log_scale).sum()
    bits.backward()
    valid = torch.ones(n, dtype=torch.float64)
    fused_bits, g = fused._laplace_rate(y, mu.detach(), log_scale.detach(), valid, grads=True)
    assert torch.allclose(fused_bits, bits.detach(), rtol=1e-12)
    assert torch.allclose(g[0], mu.grad, rtol=1e-7, atol=1e-9)
    assert torch.allclose(g[1], log_scale.grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kernels", ["torch", "native"])
def test_training_in_float32_follows_the_reference_float64_values(kernels):
    kernels = _kernels(kernels)
    model, image, noise = _random_model(DecoderConfig(), 30, 41, seed=5)
    ref = _reference_loss(model, image, noise, 1e-3)
    model32 = model.float()
    new = _fused_loss(model32, image.float(), [n.float() for n in noise], 1e-3, kernels)
    for a, b in zip(ref, new):
        assert abs(float(a.detach()) - float(b.detach())) <= 1e-5 * abs(float(a.detach()))


def test_training_restores_the_thread_count_and_refuses_unknown_compile_modes():
    threads = torch.get_num_threads()
    image = torch.rand(1, 3, 6, 7)
    preset = get_preset("fast").scaled_to(2)
    overfit(image, DecoderConfig(), preset, 1e-3, threads=1)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="compile"):
        overfit(image, DecoderConfig(), preset, 1e-3, compile="sometimes")
    assert torch.get_num_threads() == threads


@pytest.mark.gpu
@gpu
def test_fixed_point_synthesis_on_cuda_equals_the_cpu_bit_for_bit():
    for name in SYNTH_CASES:
        grids, mlp, residual, depth = _synth_inputs(name)
        cpu = synthesize(grids, mlp, residual, bit_depth=depth)
        assert np.array_equal(synthesize(grids, mlp, residual, bit_depth=depth, device="cuda"), cpu)


@pytest.mark.gpu
@gpu
def test_fused_training_kernels_on_cuda_compute_the_reference_values():
    config, (h, w) = MODEL_CASES[0]
    model, image, noise = _random_model(config, h, w, seed=0, device="cuda")
    _assert_fused_matches_reference(model, image, noise)


def test_training_adam_is_fused_where_torch_has_it_and_plain_elsewhere(monkeypatch):
    p = torch.nn.Parameter(torch.randn(5))
    assert adam([{"params": [p], "lr": 1e-2}]).defaults["fused"]
    plain = torch.optim.Adam

    def without_fused(groups, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be CUDA tensors")
        return plain(groups, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", without_fused)
    assert not adam([{"params": [p], "lr": 1e-2}]).defaults["fused"]
