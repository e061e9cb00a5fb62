"""Batched training (issue 27): an encode does not depend on its batch; the batched model
is the reference model; its bitstreams decode with the normal decoder. No timing here:
benchmarks/batched.py measures speed."""

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from coolchic.cli import app
from coolchic.config import get_arch
from coolchic.decode import decode
from coolchic.encode import effective_config, encode
from coolchic.encode_batch import encode_batch, plan_batches
from coolchic.io import write_image
from coolchic.model.batched import BatchedCoolChic, hash_uniform, position_sum
from coolchic.model.coolchic import CoolChic
from coolchic.presets import Preset, Warmup, get_preset
from coolchic.train_batch import overfit_batch
from tests.conftest import synthetic_image

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# two sizes (one of them odd, so that no per-encode count is a multiple of anything) and a
# lambda per image
IMAGES = [synthetic_image(24, 32, seed=0), synthetic_image(19, 23, seed=1),
          synthetic_image(24, 32, seed=2), synthetic_image(24, 32, seed=3)]
LMBDAS = [1e-3, 4e-3, 2e-2, 8e-3]
SEEDS = [0, 1, 2, 3]


def _batched(images, lmbdas, seeds, **kw):
    kw.setdefault("preset", "fast")
    return encode_batch(images, lmbda=lmbdas, seed=seeds, iterations=40, **kw)


@pytest.fixture(scope="module", params=["auto", "default"])
def together(request):
    """All four encodes in one call (batches of 3 and 1 by size), and each one alone."""
    arch = request.param
    many = _batched(IMAGES, LMBDAS, SEEDS, arch=arch)
    alone = [_batched([im], [lm], [s], arch=arch)[0] for im, lm, s in zip(IMAGES, LMBDAS, SEEDS)]
    return many, alone


def test_an_encode_gives_the_same_bytes_alone_and_beside_other_encodes(together):
    many, alone = together
    assert [r.data for r in many] == [r.data for r in alone]
    assert len({r.data for r in many}) == len(many)  # and the encodes are not all alike


def test_an_encode_gives_the_same_bytes_at_any_batch_cap_and_position():
    capped = _batched(IMAGES[::-1], LMBDAS[::-1], SEEDS[::-1], arch="default", batch=2)
    whole = _batched(IMAGES, LMBDAS, SEEDS, arch="default")
    assert [r.data for r in capped[::-1]] == [r.data for r in whole]


def test_gaussian_softround_noise_trains_in_batches_independently_of_the_batch():
    from dataclasses import replace

    fast = get_preset("fast")
    gaussian = replace(fast, name="fast-gauss", phases=(
        replace(fast.phases[0], noise="gaussian", noise_shape=(0.25, 0.1)), *fast.phases[1:]))
    many = _batched(IMAGES[:3], LMBDAS[:3], SEEDS[:3], arch="default", preset=gaussian)
    alone = [_batched([im], [lm], [s], arch="default", preset=gaussian)[0]
             for im, lm, s in zip(IMAGES[:3], LMBDAS[:3], SEEDS[:3])]
    assert [r.data for r in many] == [r.data for r in alone]
    kumaraswamy = _batched(IMAGES[:1], LMBDAS[:1], SEEDS[:1], arch="default")
    assert kumaraswamy[0].data != alone[0].data  # the noise is not ignored


def test_batched_bitstreams_decode_to_the_encoders_reconstruction(together):
    many, _ = together
    for r in many:
        assert np.array_equal(decode(r.data), r.reconstruction)
        assert r.report.n_bytes == len(r.data)


def test_a_batched_encodes_rd_cost_is_close_to_a_single_encodes():
    """A loose sanity bound: the batched path is another float path and other noise, not
    another recipe (on this tiny image the single encode's J varies by a few % per seed)."""
    image = synthetic_image(24, 32, seed=5)
    batched = encode_batch([image], lmbda=4e-3, preset="fast", iterations=150, seed=1)[0].report
    single = encode(image, lmbda=4e-3, preset="fast", iterations=150, seed=1).report
    cost = [10 ** (-r.psnr_db / 10) + r.lmbda * r.bpp for r in (batched, single)]
    assert 0.75 < cost[0] / cost[1] < 1.10


@pytest.mark.parametrize("arch, size", [("default", (20, 27)), ("lop", (13, 9)), ("lite", (16, 16)),
                                        ("lite-noconv", (5, 7))])
def test_the_batched_model_computes_the_reference_model_values_and_gradients(arch, size):
    """In float64, against autograd of ``CoolChic.forward`` (learned taps included)."""
    h, w = size
    config = effective_config(get_arch(arch), h, w)
    batched = BatchedCoolChic.from_seeds(config, h, w, 3, [3, 4]).double()
    with torch.no_grad():
        batched.latents.normal_(0, 2)
        batched.networks.add_(torch.randn_like(batched.networks) * 0.05)
    image = torch.rand(2, 3, h, w, dtype=torch.float64)
    q = torch.round(batched.latents.detach()).requires_grad_()
    mse, rate = batched.loss_terms(q, image)
    (mse.sum() + 1e-3 * rate.sum()).backward()
    for b in range(2):
        model = CoolChic(config, h, w, 3).double()
        model.load_state_dict({k: v.double() for k, v in batched.model(b).state_dict().items()})
        with torch.no_grad():  # the float32 copy rounded the weights: take them exactly
            for name, t in batched.weights(batched.networks.detach()).items():
                model.get_parameter(name).copy_(t[b])
        grids = [torch.round(y.detach()).requires_grad_() for y in model.latents]
        given = iter(grids)
        x_hat, bits = model(lambda y, given=given: next(given))  # the rounded grids, in order
        ref_mse = ((x_hat - image[b : b + 1]) ** 2).mean()
        (ref_mse + 1e-3 * bits).backward()
        assert float(mse[b].detach()) == pytest.approx(float(ref_mse.detach()), rel=1e-12)
        assert float(rate[b].detach()) == pytest.approx(float(bits.detach()), rel=1e-12)
        grad_q = torch.cat([g.grad.reshape(-1) for g in grids])
        torch.testing.assert_close(q.grad[b, : grad_q.numel()], grad_q, rtol=1e-10, atol=1e-12)
        grads = batched.weights(batched.networks.grad)
        for name, p in model.named_parameters():
            if not name.startswith("latents."):
                torch.testing.assert_close(grads[name][b], p.grad, rtol=1e-10, atol=1e-12)


def test_position_sums_do_not_depend_on_the_other_axes():
    x = torch.randn(5, 3, 1001)
    whole = position_sum(x)
    for b in range(5):
        assert torch.equal(position_sum(x[b : b + 1])[0], whole[b])
    assert torch.allclose(whole, x.double().sum(-1).float(), rtol=1e-5, atol=1e-4)


def test_the_noise_is_uniform_and_a_function_of_seed_step_and_position_only():
    index = torch.arange(4096)
    seeds = torch.tensor([[0], [1], [7]])
    u = hash_uniform(seeds, torch.tensor(3), index)
    assert u.dtype == torch.float32 and 0 < u.min() and u.max() < 1
    assert abs(float(u.mean()) - 0.5) < 0.02 and abs(float(u.var()) - 1 / 12) < 0.005
    assert torch.equal(hash_uniform(seeds[1:2], torch.tensor(3), index)[0], u[1])
    assert not torch.equal(u[0], u[1])
    assert not torch.equal(hash_uniform(seeds, torch.tensor(4), index), u)


def test_batches_are_planned_by_key_in_input_order_under_the_cap():
    assert plan_batches(["a", "b", "a", "a", "b"], None) == [[0, 2, 3], [1, 4]]
    assert plan_batches(["a", "b", "a", "a", "b"], 2) == [[0, 2], [3], [1, 4]]


def test_batched_training_restores_the_thread_count_and_refuses_what_it_cannot_run():
    threads = torch.get_num_threads()
    image = torch.rand(1, 3, 8, 8)
    config = effective_config(get_arch("lite"), 8, 8)
    overfit_batch(image, config, get_preset("fast").scaled_to(3), [1e-3], seeds=[0])
    assert torch.get_num_threads() == threads
    warm = Preset("warm", get_preset("fast").phases, "", warmup=Warmup(2, 5))
    with pytest.raises(ValueError, match="warm-up"):
        overfit_batch(image, config, warm, [1e-3], seeds=[0])
    with pytest.raises(ValueError, match="lambdas"):
        overfit_batch(image, config, get_preset("fast"), [1e-3, 2e-3], seeds=[0])
    array = synthetic_image(8, 8)
    for bad, match in (({"arch": "best"}, "batched"), ({"arch": "race"}, "batched"),
                       ({"lmbda": [1e-3]}, "one lambda"), ({"lmbda": -1.0}, "lambda"),
                       ({"batch": 0}, "batch")):
        with pytest.raises(ValueError, match=match):
            encode_batch([array, array], **{"lmbda": 1e-3, **bad})


def test_the_cli_encodes_several_images_into_a_folder(tmp_path: Path):
    names = []
    for k, image in enumerate(IMAGES[:3]):
        names.append(tmp_path / f"im{k}.png")
        write_image(names[-1], image, 8)
    out = tmp_path / "out"
    out.mkdir()
    runner = CliRunner()
    result = runner.invoke(app, ["encode", *map(str, names), "-o", str(out), "--iterations", "20",
                                 "--batch", "2"])
    assert result.exit_code == 0, result.output
    for k, image in enumerate(IMAGES[:3]):
        assert decode(out / f"im{k}.bin").shape == image.shape
        assert f"im{k}.bin" in result.output
    for args in (["-o", str(tmp_path / "missing")], ["-o", str(out), "--target-bpp", "1"],
                 ["-o", str(out), "--batch", "0"], ["-o", str(out), "--codec", "cwic"]):
        result = runner.invoke(app, ["encode", *map(str, names), "--iterations", "2", *args])
        assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.gpu
@gpu
def test_on_cuda_an_encode_gives_the_same_bytes_alone_beside_others_and_with_graphs():
    many = _batched(IMAGES, LMBDAS, SEEDS, arch="default", device="cuda")
    alone = [_batched([im], [lm], [s], arch="default", device="cuda")[0]
             for im, lm, s in zip(IMAGES, LMBDAS, SEEDS)]
    eager = _batched(IMAGES, LMBDAS, SEEDS, arch="default", device="cuda", graphs=False)
    assert [r.data for r in many] == [r.data for r in alone]
    assert [r.data for r in many] == [r.data for r in eager]


def test_gray_and_16_bit_images_encode_in_batches_and_decode():
    gray = synthetic_image(16, 20, channels=1, seed=4)
    deep = (synthetic_image(16, 20, seed=5).astype(np.uint16) * 257) ^ 0x55
    results = encode_batch([gray, deep, gray[::-1].copy()], lmbda=1e-3, preset="fast", iterations=20)
    for image, r in zip([gray, deep, gray[::-1]], results):
        decoded = decode(r.data)
        assert decoded.shape == image.shape and decoded.dtype == image.dtype
        assert np.array_equal(decoded, r.reconstruction)
