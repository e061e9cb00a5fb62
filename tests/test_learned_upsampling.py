"""Learned upsampling (format 5.0): every twin of the taps computes the same thing. The
decoders (numpy, native, torch) give the same image bit for bit; the training kernels
(plain model, torch bands, native) the same loss and gradients, the taps' included; the
taps survive the bitstream; and format 4.0 (bicubic) images are unchanged."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from coolchic.bitstream import BitstreamError, SectionId, read_bitstream
from coolchic.config import DecoderConfig, SynthesisConfig, UpsamplingConfig, get_arch
from coolchic.decode import decode
from coolchic.decoder import native as native_decoder
from coolchic.decoder.constants import BICUBIC, UPS_FRAC, UPS_TAP_MAX, level_taps
from coolchic.decoder.dispatch import synthesize
from coolchic.decoder.reconstruct_torch import synthesize as synthesize_torch
from coolchic.encode import encode
from coolchic.entropy.fixedpoint import QLayer
from coolchic.model import fused
from coolchic.model.coolchic import CoolChic
from coolchic.model.upsampling import taps_tensor, upsample_cascade
from coolchic.payload import (
    NetworkWeights,
    check_taps,
    pack_config,
    pack_weights,
    unpack_config,
    unpack_weights,
)
from coolchic.quant import make_quantizer, quantize_taps

LEARNED = UpsamplingConfig(learned=True)


def _layer(rng, out, inp, w_frac, b_frac, conv=False):
    shape = (out, inp, 3, 3) if conv else (out, inp)
    return QLayer(rng.integers(-300, 301, size=shape), rng.integers(-3000, 3001, size=out), w_frac, b_frac)


def _random_taps(rng, levels, spread):
    sent = np.array(BICUBIC)[[0, 1, 3]] + rng.integers(-spread, spread + 1, size=(levels, 3))
    taps = np.empty((levels, 4), dtype=np.int64)
    taps[:, [0, 1, 3]] = sent
    taps[:, 2] = (1 << UPS_FRAC) - sent.sum(axis=1)
    return taps


def _cases():
    rng = np.random.default_rng(11)
    for h, w, n, spread, latent in ((9, 13, 4, 60, 40), (33, 70, 6, 400, 300), (2, 5, 2, 200, 20),
                                    (17, 17, 5, 2000, 32767)):
        grids = [rng.integers(-latent, latent + 1, size=(-(-h // 2**k), -(-w // 2**k))) for k in range(n)]
        mlp = [_layer(rng, 6, n, 9, 10), _layer(rng, 3, 6, 9, 10)]
        taps = np.clip(_random_taps(rng, n - 1, spread), -UPS_TAP_MAX, UPS_TAP_MAX)
        taps[:, 2] = (1 << UPS_FRAC) - taps[:, [0, 1, 3]].sum(axis=1)
        yield grids, mlp, [_layer(rng, 3, 3, 11, 12, conv=True)], taps


def test_decoders_with_learned_taps_agree_bit_for_bit():
    native = native_decoder.kernels() is not None
    for grids, mlp, residual, taps in _cases():
        ref = synthesize(grids, mlp, residual, bit_depth=8, taps=taps, kernel="numpy")
        on_torch = synthesize_torch(grids, mlp, residual, bit_depth=8, taps=taps, device="cpu")
        assert np.array_equal(ref, on_torch)
        if native:
            native_image = synthesize(grids, mlp, residual, bit_depth=8, taps=taps, kernel="native")
            assert np.array_equal(ref, native_image)
        # the taps matter: the bicubic decode differs
        assert not np.array_equal(ref, synthesize(grids, mlp, residual, bit_depth=8, kernel="numpy"))


def test_bicubic_taps_given_explicitly_decode_as_no_taps():
    for grids, mlp, residual, _ in _cases():
        bicubic = level_taps(None, len(grids) - 1)
        assert np.array_equal(synthesize(grids, mlp, residual, bit_depth=8, kernel="numpy"),
                              synthesize(grids, mlp, residual, bit_depth=8, taps=bicubic, kernel="numpy"))


def test_the_fixed_point_cascade_clips_each_pass_and_stays_on_integers():
    rng = np.random.default_rng(2)
    grids = [torch.from_numpy(rng.integers(-(1 << 31), 1 << 31, size=(-(-20 // 2**k), -(-24 // 2**k)))
                              .astype(np.float64))[None, None] for k in range(5)]
    wild = torch.stack([taps_tensor(row, torch.float64) for row in
                        np.tile([-2048, 2048, 2048, -1024], (4, 1))])  # gain 7 per pass
    out = upsample_cascade(grids, floor=True, taps=wild)
    assert out.abs().max() <= 2.0**36 and torch.equal(out, torch.floor(out))


@pytest.mark.parametrize("kernel", ["eager", "native"])
def test_training_kernels_give_the_plain_models_loss_and_gradients_taps_included(kernel):
    kernels = fused.EAGER if kernel == "eager" else fused.native_kernels()
    if kernels is None:
        pytest.skip("native kernels unavailable")
    torch.manual_seed(0)
    config = DecoderConfig(synthesis=SynthesisConfig(hidden=(5,), residual_convs=2), upsampling=LEARNED)
    for h, w in ((37, 53), (20, 31)):
        model = CoolChic(config, h, w, 3).double()
        with torch.no_grad():
            for y in model.latents:
                y.normal_(0, 3)
            model.upsampling.p.normal_(0, 1)
            for p in model.synthesis.parameters():
                p.normal_(0, 0.3)
        image = torch.rand(1, 3, h, w, dtype=torch.float64)
        quantize = make_quantizer("ste")
        grads = []
        for fast in (False, True):
            model.zero_grad()
            if fast:
                mse, rate = model.loss_terms(quantize, image, kernels=kernels)
            else:
                x_hat, rate = model(quantize)
                mse = torch.mean((x_hat - image) ** 2)
            (mse + 1e-4 * rate).backward()
            grads.append([float(mse.detach()), model.upsampling.p.grad.clone(), model.latents[1].grad.clone(),
                          model.latents[-1].grad.clone(), model.synthesis.mlp[0].weight.grad.clone()])
        (a, *ga), (b, *gb) = grads
        assert a == pytest.approx(b, rel=1e-12)
        assert ga[0].abs().max() > 0  # the taps get a gradient
        for x, y in zip(ga, gb):
            assert torch.allclose(x, y, rtol=1e-9, atol=1e-12)


def test_learned_taps_start_bicubic_and_keep_unit_gain():
    model = CoolChic(DecoderConfig(upsampling=LEARNED), 64, 64, 3)
    assert torch.allclose(model.taps(), taps_tensor(None, torch.float32).repeat(6, 1))
    with torch.no_grad():
        model.upsampling.p.normal_(0, 1)
    assert torch.allclose(model.taps().sum(1), torch.ones(6))
    q = quantize_taps(model.taps())
    assert (q.sum(1) == 1 << UPS_FRAC).all()
    assert np.abs(q / (1 << UPS_FRAC) - model.taps().detach().numpy()).max() < 3 / (1 << UPS_FRAC)
    wild = torch.tensor([[-1.9, 1.9, 2.9, -1.9], [0.1, 0.3, 0.5, 0.1]])  # tap 2 would be 2.9
    assert np.array_equal(quantize_taps(wild), [BICUBIC, [102, 307, 513, 102]])


def test_the_taps_survive_the_weights_payload_and_the_flag_the_config():
    config = replace(get_arch("default"), upsampling=LEARNED)
    bicubic = replace(config, upsampling=UpsamplingConfig())
    assert unpack_config(pack_config(config)) == config
    assert unpack_config(pack_config(bicubic)) == bicubic
    rng = np.random.default_rng(5)
    layers = {"arm": (_layer(rng, 12, 12, 8, 8), _layer(rng, 12, 12, 8, 8), _layer(rng, 2, 12, 8, 8)),
              "mlp": (_layer(rng, 14, 7, 8, 8), _layer(rng, 3, 14, 8, 8)),
              "residual": (_layer(rng, 3, 3, 8, 8, conv=True),)}
    taps = _random_taps(rng, 6, 100)
    weights = NetworkWeights(**layers, taps=taps)
    back = unpack_weights(pack_weights(weights, config, 3), config, 3)
    assert np.array_equal(back.taps, taps)
    assert unpack_weights(pack_weights(weights, bicubic, 3), bicubic, 3).taps is None


def test_taps_out_of_range_are_refused_on_both_sides(monkeypatch):
    bad = np.array([[-36, 268, 900 - 3000, -108 + 3000]])
    with pytest.raises(ValueError, match="outside"):
        check_taps(bad, ValueError)
    with pytest.raises(BitstreamError, match="sum"):
        check_taps(np.array([[0, 0, 0, 0]]), BitstreamError)
    # a WEIGHTS stream whose taps decode out of range is corrupt, not a crash
    config = DecoderConfig(synthesis=SynthesisConfig(hidden=(2,), residual_convs=0), upsampling=LEARNED)
    config = replace(config, latents=replace(config.latents, n_grids=2))
    rng = np.random.default_rng(0)
    weights = NetworkWeights(tuple(_layer(rng, o, i, 8, 8) for o, i in ((12, 12), (12, 12), (2, 12))),
                             (_layer(rng, 2, 2, 8, 8), _layer(rng, 3, 2, 8, 8)), (),
                             np.array([[-36, 268, 900, -108]]))
    data = pack_weights(weights, config, 3)
    assert np.array_equal(unpack_weights(data, config, 3).taps, [[-36, 268, 900, -108]])
    import coolchic.payload as payload
    with monkeypatch.context() as m:  # an encoder without the check forges the stream
        m.setattr(payload, "check_taps", lambda taps, error: None)
        forged = pack_weights(replace(weights, taps=payload.taps_from_sent([[3000, 268, -108]])), config, 3)
    with pytest.raises(BitstreamError, match="upsampling taps"):
        unpack_weights(forged, config, 3)


def test_an_encode_with_learned_taps_decodes_to_its_reconstruction():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:29, 0:41]
    image = np.clip(np.stack([128 + 60 * np.sin(xx / 5.0), 128 + 60 * np.cos(yy / 7.0), 100 + xx + yy], -1)
                    + rng.normal(0, 5, (29, 41, 3)), 0, 255).astype(np.uint8)
    config = replace(get_arch("default"), upsampling=LEARNED)
    result = encode(image, lmbda=1e-3, preset="fast", iterations=60, arch=config)
    assert np.array_equal(decode(result.data), result.reconstruction)
    _, sections = read_bitstream(result.data)
    found = unpack_config(sections[SectionId.CONFIG])
    assert found.upsampling.learned
    taps = unpack_weights(sections[SectionId.WEIGHTS], found, 3).taps
    assert taps.shape == (found.latents.n_grids - 1, 4) and not (taps == BICUBIC).all()


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (2, 3)])
def test_images_too_small_for_a_second_grid_encode_with_the_learned_default(shape):
    image = (np.arange(shape[0] * shape[1] * 3) * 37 % 251).astype(np.uint8).reshape(*shape, 3)
    result = encode(image, lmbda=1e-3, iterations=5)
    assert np.array_equal(decode(result.data), result.reconstruction)
