"""System (c): conditional probability models (Mentzer et al., CVPR 2018)."""

import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from coolchic.amortized import cpm, registry
from coolchic.amortized.codec import AmortizedCodec, write_stream
from coolchic.amortized.masked import MaskedConv3d
from coolchic.amortized.training import TrainOptions, load_model, train
from coolchic.bitstream import BitstreamError, CodecId, Header, SectionId, read_bitstream, write_bitstream
from coolchic.cli import app
from tests.conftest import synthetic_image

TINY = {"code_channels": 4, "centres": 3, "features": 8, "context_hidden": (3,)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed=0, heatmap_bias=None):
    """A tiny model with codes spread over the centres (random init puts them all near 0)."""
    torch.manual_seed(seed)
    model = cpm.build(TINY)
    with torch.no_grad():
        model.encoder[-1].weight.mul_(200.0)
        for layer in model.context.layers:
            layer.bias.normal_(0, 0.5)
        if heatmap_bias is not None:
            model.encoder[-1].weight[-1].zero_()
            model.encoder[-1].bias[-1] = heatmap_bias
    return model


def test_decompress_of_compress_is_the_encoders_reconstruction_bit_for_bit():
    model = _model()
    image = synthetic_image(20, 27)
    data = model.compress(image)
    header, _ = read_bitstream(data)
    assert header.codec_id == CodecId.CPM and (header.height, header.width) == (20, 27)
    symbols = model.symbols(image)
    assert symbols.shape == (4, 3, 4) and len(np.unique(symbols)) >= 3  # several centres used
    out = model.decompress(data)
    assert out.dtype == np.uint8 and out.shape == (20, 27, 3)
    assert np.array_equal(out, model.reconstruct(image))
    assert isinstance(model, AmortizedCodec) and registry.get("cpm").load() is cpm


def test_masked_codes_are_coded_as_their_own_symbol_and_decode_exactly():
    model = _model(heatmap_bias=-1.5)  # y = sigmoid(-1.5) = 0.18: ceil(4 * 0.18) = 1 channel kept
    image = synthetic_image(16, 24)
    symbols = model.symbols(image)
    assert np.all(model.kept_counts(image) == 1)
    assert np.all(symbols[1:] == model.masked_symbol) and np.all(symbols[0] < model.masked_symbol)
    assert np.array_equal(model.decompress(model.compress(image)), model.reconstruct(image))


def test_the_heatmap_keeps_ceil_k_y_channels_and_its_gradient_is_a_ramp_centred_on_each_step():
    model = _model()
    y = torch.tensor([0.01, 0.2, 0.26, 0.6, 0.999]).reshape(1, 1, 1, 5).requires_grad_()
    mask = model.mask(y)  # K = 4
    assert mask[0, :, 0].sum(dim=0).tolist() == [1.0, 1.0, 2.0, 3.0, 4.0]
    (grad,) = torch.autograd.grad(mask[0, 2, 0].sum(), y, retain_graph=True)
    # clamp((4 y - 2 + 1) / 2, 0, 1): slope 2 for 4 y in (1, 3), masked (y = 0.26) or kept (0.6)
    assert grad[0, 0, 0].tolist() == [0.0, 0.0, 2.0, 2.0, 0.0]
    (grad,) = torch.autograd.grad(mask[0, 1, 0, 0], y, retain_graph=True)
    assert grad[0, 0, 0, 0] == 2.0  # one channel kept: the next one still learns
    (grad,) = torch.autograd.grad(mask[0, 0, 0].sum(), y, allow_unused=True)
    assert grad is None or not grad.any()  # channel 0 is always kept


def test_quantization_is_the_nearest_centre_forward_and_the_soft_assignment_backward():
    model = _model()
    with torch.no_grad():
        model.centres.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    z = torch.tensor([-3.0, -0.4, 0.3, 1.3, 5.0]).reshape(1, 1, 1, 5).requires_grad_()
    z_hat, index = model.quantize(z)
    assert index.flatten().tolist() == [0, 0, 1, 2, 2]
    assert z_hat.flatten().tolist() == [-1.0, -1.0, 0.5, 2.0, 2.0]
    z_hat.sum().backward()
    z2 = z.detach().clone().requires_grad_()
    weights = torch.softmax(-(z2[..., None] - model.centres.detach()).square(), dim=-1)
    (weights * model.centres.detach()).sum().backward()
    assert torch.allclose(z.grad, z2.grad)


def test_the_context_model_is_one_shared_3x3x3_kernel_masked_in_channel_major_order():
    layer = _model().context.layers[0]
    assert isinstance(layer, MaskedConv3d) and layer.shared and layer.weight.shape == (3, 1, 3, 3, 3)
    w = layer.masked_weight().detach()  # (4 * 3, 4, 3, 3)
    mask = layer.mask.reshape(4, 3, 4, 3, 3)[:, 0].int()  # (C_out, C_in, kh, kw)
    assert mask[1, 0].tolist() == [[1] * 3] * 3  # all 9 taps of the previous channel
    assert mask[1, 1].tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]  # causal half of its own
    assert mask[1, 2].sum() == 0 and mask[2, 0].sum() == 0  # no later channel, depth 1
    blocks = w.reshape(4, 3, 4, 3, 3)  # (C_out, g_out, C_in, kh, kw)
    for c in range(1, 4):  # the same weights at the same channel offset
        assert torch.equal(blocks[c, :, c], blocks[1, :, 1])
        assert torch.equal(blocks[c, :, c - 1], blocks[1, :, 0])
    hidden = _model().context.layers[1].mask.reshape(4, 4, 4, 3, 3, 3)[:, 0, :, 0].int()
    assert hidden[1, 1].tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]  # constrain 6: own tap too


def test_forward_rate_is_the_cross_entropy_of_the_coded_symbols_and_gradients_reach_everything():
    model = _model()
    x = torch.rand(2, 3, 16, 24)
    x_hat, rate = model(x)
    assert x_hat.shape == x.shape and rate.shape == (2,)
    with torch.no_grad():
        z, y = model.analyse(x)
        z_hat, index = model.quantize(z)
        mask = model.mask(y)
        logits = model.context(model.context_inputs(z_hat * mask))
        target = torch.where(mask > 0, index, model.masked_symbol)
        nats = F.cross_entropy(logits.movedim(2, 1), target, reduction="none")  # (B, K, h, w)
        expected = nats.flatten(1).sum(1) / np.log(2)
    assert torch.allclose(rate, expected, rtol=1e-5)
    (x_hat.square().mean() + rate.mean()).backward()
    assert model.centres.grad.abs().sum() > 0
    assert model.encoder[-1].weight.grad[:-1].abs().sum() > 0  # codes, via the soft assignment
    assert model.encoder[-1].weight.grad[-1].abs().sum() > 0  # heatmap, via the mask
    assert model.context.layers[0].weight.grad.abs().sum() > 0


def test_real_bytes_are_the_integer_models_ideal_length_plus_at_most_the_flush_words():
    model = _model()
    image = synthetic_image(24, 32)
    _, sections = read_bitstream(model.compress(image))
    real = 8 * len(sections[3])
    ideal = model.estimate_bits(image)
    assert ideal <= real <= ideal + 32 + 64  # length word, at most two flush words


def test_a_stream_is_refused_by_other_weights_and_corrupt_codes_raise_a_bitstream_error():
    model = _model()
    data = model.compress(synthetic_image(16, 16))
    with pytest.raises(BitstreamError, match="written by cpm weights"):
        _model(seed=1).decompress(data)
    bad = write_stream(model.entry, height=16, width=16, model_crc=model.model_crc(), quality=0,
                       codes=b"\xff\xff\xff\xff")
    with pytest.raises(BitstreamError, match="corrupt CPM codes"):
        model.decompress(bad)
    crc = struct.pack("<I", model.model_crc())
    for config in (b"", b"\xff", b"\x00\x02\x00", b"\x00\x07"):  # short, 255, a field, version 7
        bad = write_bitstream(Header(CodecId.CPM, 16, 16, 3, 8),
                              [(SectionId.CONFIG, crc + config), (SectionId.LATENTS, b"")])
        with pytest.raises(BitstreamError, match="CPM CONFIG"):
            model.decompress(bad)
    with pytest.raises(ValueError, match="unknown CPM config field"):
        cpm.build({"levels": 3})


def test_training_runs_through_the_library_and_the_command(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(2):
        Image.fromarray(synthetic_image(24, 32, seed=seed)).save(folder / f"{seed}.png")
    options = TrainOptions(steps=2, batch=2, crop=16, lr=1e-3)
    model = train("cpm", folder, tmp_path / "a", options, config=TINY)
    shipped = load_model(tmp_path / "a" / "model.pt")
    assert shipped.model_crc() == model.model_crc()
    log = tmp_path / "log.tsv"
    result = CliRunner().invoke(app, ["amortized", "train", "cpm", "--data", str(folder), "--steps", "1",
                                      "--batch", "1", "--crop", "16", "-o", str(tmp_path / "b"),
                                      "--log", str(log)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "model.pt").exists()
    header, line = log.read_text().splitlines()
    assert header.split("\t") == ["step", "stage", "loss", "psnr_db", "bpp", "seconds", "split", "lr"]
    assert line.split("\t")[:2] == ["1", "0"] and line.split("\t")[6:] == ["train", "0.0001"]
