"""System (b): the context-based convolutional entropy model (Li, Ma, You, Zhang, Zuo, TIP 2020)."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from coolchic.amortized import ccn, registry
from coolchic.amortized.causal import Wavefront
from coolchic.amortized.codec import AmortizedCodec, write_stream
from coolchic.amortized.codes import decode_codes
from coolchic.amortized.training import TrainOptions, load_model, train
from coolchic.bitstream import BitstreamError, CodecId, read_bitstream
from coolchic.cli import app
from coolchic.entropy.coder import SymbolDecoder
from tests.conftest import synthetic_image

TINY = {"code_channels": 4, "levels": 4, "features": 8, "context_hidden": (2, 3), "context_depth": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed=0):
    """A tiny model whose codes use every level (a fresh encoder's sigmoid sits near 0.5)."""
    torch.manual_seed(seed)
    model = ccn.build(TINY)
    with torch.no_grad():
        model.encoder[-1].weight.mul_(300.0)
        for layer in model.context.layers:
            layer.bias.normal_(0, 0.5)
    return model


def test_decompress_of_compress_is_the_encoders_reconstruction_bit_for_bit():
    model = _model()
    image = synthetic_image(20, 27)
    data = model.compress(image)
    header, _ = read_bitstream(data)
    assert header.codec_id == CodecId.CCN and (header.height, header.width) == (20, 27)
    symbols = model.symbols(image)
    assert symbols.shape == (4, 3, 4) and len(np.unique(symbols)) >= 3
    out = model.decompress(data)
    assert out.dtype == np.uint8 and out.shape == (20, 27, 3)
    assert np.array_equal(out, model.reconstruct(image))
    assert isinstance(model, AmortizedCodec) and registry.get("ccn").load() is ccn


def test_the_ccn_layers_have_constrain_5_then_6_and_num_output_channels_times_group_out():
    model = _model()
    layers = model.context.layers
    assert [layer.constrain for layer in layers] == [5, 6, 6]
    assert [(layer.group_in, layer.group_out) for layer in layers] == [(1, 2), (2, 3), (3, 4)]
    assert [layer.weight.shape[:2] for layer in layers] == [(8, 4), (12, 8), (16, 12)]
    # code-level masks of the 3-D zig-zag order w = c + y + x, kernel 3x3, depth 1
    first = layers[0].mask.reshape(4, 2, 4, 1, 3, 3)[:, 0, :, 0].int()  # (C_out, C_in, kh, kw)
    assert first[1, 1].tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 0]]  # own channel: earlier waves
    assert first[1, 0].tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]  # previous channel: one wave more
    assert first[1, 2].tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]  # next channel: two waves back
    assert first[1, 3].sum() == 0 and first[3, 1].sum() == 0  # beyond the depth
    hidden = layers[1].mask.reshape(4, 3, 4, 2, 3, 3)[:, 0, :, 0].int()
    assert hidden[1, 1].tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]  # constrain 6: same wave too


def test_sub_blocks_are_the_zigzag_hyperplanes_and_decode_like_one_symbol_at_a_time():
    model = _model()
    image = synthetic_image(24, 40)
    symbols = model.symbols(image)  # (4, 3, 5)
    shape = symbols.shape
    front = Wavefront.build(model.context.order, shape)
    assert front.n_waves == 4 + 3 + 5 - 2
    for k in range(front.n_waves):
        c, y, x = front.wave(k)
        assert np.all(c + y + x == k)
    _, sections = read_bitstream(model.compress(image))
    net, alphabet = model.integer_net(), model.alphabet()
    assert np.array_equal(decode_codes(net, alphabet, sections[3], shape), symbols)
    # reference: one symbol per step, the whole network recomputed on the partial code
    decoder = SymbolDecoder(sections[3], inline_escapes=True)
    every = np.nonzero(np.ones(shape, bool))
    seq = np.full(shape, -1)
    for c, y, x in zip(front.c, front.y, front.x):
        state = net.start(*shape[1:])
        known = seq >= 0
        net.set_inputs(state, *np.nonzero(known), np.asarray(alphabet.inputs)[seq[known]])
        logits = net.evaluate(state, *every).reshape(*shape, -1)[c, y, x][None]
        seq[c, y, x] = decoder.decode_pmf(alphabet.pmf(logits))[0]
    decoder.finish()
    assert np.array_equal(seq, symbols)


def test_forward_gives_an_image_and_the_cross_entropy_rate_with_gradients_to_the_encoder():
    model = _model()
    x_hat, rate = model(torch.rand(2, 3, 16, 24))
    assert x_hat.shape == (2, 3, 16, 24) and rate.shape == (2,)
    assert bool(torch.all(rate > 0)) and bool(torch.all(rate < 4 * 2 * 3 * 8))  # < 8 bits a code
    (x_hat.square().mean() + rate.mean()).backward()
    assert model.encoder[-1].weight.grad.abs().sum() > 0
    assert model.context.layers[0].weight.grad.abs().sum() > 0


def test_real_bytes_are_the_integer_models_ideal_length_plus_at_most_the_flush_words():
    model = _model()
    image = synthetic_image(24, 32)
    _, sections = read_bitstream(model.compress(image))
    real = 8 * len(sections[3])
    ideal = model.estimate_bits(image)
    assert ideal <= real <= ideal + 32 + 64


def test_a_stream_is_refused_by_other_weights_and_corrupt_codes_raise_a_bitstream_error():
    model = _model()
    data = model.compress(synthetic_image(16, 16))
    with pytest.raises(BitstreamError, match="written by ccn weights"):
        _model(seed=1).decompress(data)
    bad = write_stream(model.entry, height=16, width=16, model_crc=model.model_crc(), quality=0,
                       codes=b"\xff\xff\xff\xff")
    with pytest.raises(BitstreamError, match="corrupt CCN codes"):
        model.decompress(bad)
    cpm_stream = write_stream(registry.get("cpm"), height=16, width=16, model_crc=model.model_crc(),
                              quality=0, codes=b"")
    with pytest.raises(BitstreamError, match="a cpm stream cannot be decoded by ccn"):
        model.decompress(cpm_stream)
    with pytest.raises(ValueError, match="levels must lie in 2..255"):
        ccn.build({"levels": 1})


def test_training_runs_through_the_library_and_the_command(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(2):
        Image.fromarray(synthetic_image(24, 32, seed=seed)).save(folder / f"{seed}.png")
    model = train("ccn", folder, tmp_path / "a", TrainOptions(steps=2, batch=2, crop=16), config=TINY)
    assert load_model(tmp_path / "a" / "model.pt").model_crc() == model.model_crc()
    result = CliRunner().invoke(app, ["amortized", "train", "ccn", "--data", str(folder), "--steps", "1",
                                      "--batch", "1", "--crop", "16", "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
