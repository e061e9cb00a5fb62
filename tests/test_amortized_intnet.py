"""The exact integer probability path of the amortized codecs: tables, integer context
network, integer PMFs, wavefront coding of a code tensor."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from coolchic.amortized.causal import Wavefront, WaveOrder, conv_mask
from coolchic.amortized.codes import Alphabet, code_bits, decode_codes, encode_codes
from coolchic.amortized.intnet import IntegerContextNet, IntLayer, quantize_layers
from coolchic.amortized.masked import ContextConfig, ContextModel
from coolchic.amortized.probability import (
    LOGIT_FRAC,
    binary_pmf,
    exp_table,
    exp_table_sha256,
    pmf_from_logits,
)
from coolchic.entropy.coder import EntropyError, SymbolDecoder

EXP_SHA256 = "c99c4d38186aa84e7e4596344c2f3887af9c21bc08205e18b82787b11aea4f9f"

# A numpy-only net and code, run in this process and in a fresh single-threaded one.
SCRIPT = """
import hashlib, sys
import numpy as np
from coolchic.amortized.causal import WaveOrder, conv_mask
from coolchic.amortized.codes import Alphabet, encode_codes
from coolchic.amortized.intnet import IntegerContextNet, IntLayer

def numpy_net_bytes():
    rng = np.random.default_rng(7)
    order = WaveOrder.zigzag(4)
    layers, g_in = [], 1
    for i, g_out in enumerate((8, 8, 5)):
        mask = conv_mask(order, (5, 5), constrain=5 if i == 0 else 6, group_in=g_in, group_out=g_out)
        w = rng.integers(-3000, 3001, mask.shape) * mask
        layers.append(IntLayer(w, rng.integers(-5000, 5001, mask.shape[0]), 12, 12))
        g_in = g_out
    net = IntegerContextNet(order, layers)
    symbols = rng.integers(0, 5, (4, 32, 32))
    return encode_codes(net, Alphabet.centered(5), symbols)
"""


def _net(order, alphabet, *, hidden=(6, 6), kernel=(3, 3), seed=0, depth=None):
    torch.manual_seed(seed)
    model = ContextModel(order, ContextConfig(kernel_size=kernel, hidden=hidden,
                                              outputs=alphabet.outputs, depth=depth))
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.normal_(0, 0.5)
    return model, IntegerContextNet(order, quantize_layers(*model.export()))


def test_exp_table_is_pinned_and_ends_where_it_would_round_to_zero():
    table = exp_table()
    assert exp_table_sha256() == EXP_SHA256
    assert table[0] == 1 << 24 and table[-1] == 1 and table.size == 278
    assert np.all(np.diff(table) <= 0)


def test_integer_pmfs_are_valid_close_to_softmax_and_symmetric_for_bits():
    rng = np.random.default_rng(0)
    logits = rng.integers(-400, 400, (2000, 6))
    q = pmf_from_logits(logits)
    assert q.min() >= 1 and np.all(q.sum(axis=1) == 1 << 24)
    p = np.exp(logits / 2**LOGIT_FRAC)
    p /= p.sum(axis=1, keepdims=True)
    assert np.max(np.abs(q / 2**24 - p)) < 1e-6
    l = np.arange(-300, 301)
    bits = binary_pmf(l)
    assert np.array_equal(bits[:, 1], bits[::-1, 0])
    assert bits[-1, 0] == 1  # a very sure 1 still leaves the 0 coding


def test_integer_net_matches_its_float_model_within_one_logit_step_or_so():
    order = WaveOrder.zigzag(3)
    model, net = _net(order, Alphabet.centered(4), kernel=(5, 5))
    rng = np.random.default_rng(1)
    inputs = np.asarray(Alphabet.centered(4).inputs)[rng.integers(0, 4, (3, 9, 11))]
    with torch.no_grad():
        ref = model(torch.from_numpy(inputs).float()[None])[0].numpy()  # (C, 4, H, W)
    state = net.start(9, 11)
    c, y, x = np.nonzero(np.ones((3, 9, 11), bool))
    net.set_inputs(state, c, y, x, inputs[c, y, x])
    logits = net.evaluate(state, c, y, x) / 2**LOGIT_FRAC
    assert np.max(np.abs(logits - ref[c, :, y, x])) < 0.15


@pytest.mark.parametrize("order,alphabet", [
    (WaveOrder.zigzag(3), Alphabet.binary()),
    (WaveOrder.channel_major(3, radius=1), Alphabet.centered(6)),
    (WaveOrder.progressive(layer_count=3, layer_depth=1, radius=1), Alphabet.binary()),
], ids=["zigzag-bits", "channel-major-6", "progressive-bits"])
def test_wavefront_decoding_equals_sequential_decoding_and_the_encoder(order, alphabet):
    """The decoder decodes a wave at a time; the reference decodes one symbol at a time,
    recomputing the whole network on the partially decoded code (undecoded inputs 0)."""
    _, net = _net(order, alphabet, seed=2)
    rng = np.random.default_rng(3)
    shape = (3, 4, 5)
    symbols = rng.integers(0, alphabet.size, shape)
    coded = rng.random(shape) < 0.8
    data = encode_codes(net, alphabet, symbols, coded=coded)
    wave = decode_codes(net, alphabet, data, shape, coded=coded)
    assert np.array_equal(wave, np.where(coded, symbols, -1))

    front = Wavefront.build(order, shape, coded)
    every = np.nonzero(np.ones(shape, bool))
    decoder = SymbolDecoder(data, inline_escapes=True)
    seq = np.full(shape, -1)
    for c, y, x in zip(front.c, front.y, front.x):
        state = net.start(*shape[1:])
        known = seq >= 0
        net.set_inputs(state, *np.nonzero(known), np.asarray(alphabet.inputs)[seq[known]])
        logits = net.evaluate(state, *every).reshape(*shape, -1)[c, y, x][None]
        seq[c, y, x] = decoder.decode_pmf(alphabet.pmf(logits))[0]
    decoder.finish()
    assert np.array_equal(seq, wave)


def test_coded_size_is_the_ideal_length_plus_at_most_the_flush_and_length_words():
    order = WaveOrder.zigzag(4)
    _, net = _net(order, Alphabet.binary(), kernel=(5, 5), depth=2)
    symbols = np.random.default_rng(4).integers(0, 2, (4, 16, 16))
    data = encode_codes(net, Alphabet.binary(), symbols)
    ideal = code_bits(net, Alphabet.binary(), symbols)
    assert ideal <= 8 * len(data) <= ideal + 32 + 64


def test_encoding_is_identical_with_one_and_two_torch_threads():
    order = WaveOrder.zigzag(4)
    symbols = np.random.default_rng(5).integers(0, 3, (4, 24, 24))
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            _, net = _net(order, Alphabet.centered(3), hidden=(8,), kernel=(5, 5), seed=6)
            out.append(encode_codes(net, Alphabet.centered(3), symbols))
    finally:
        torch.set_num_threads(threads)
    assert out[0] == out[1]


def test_bytes_are_identical_in_a_fresh_single_threaded_process_that_never_imports_torch():
    namespace: dict = {}
    exec(SCRIPT, namespace)
    here = hashlib.sha256(namespace["numpy_net_bytes"]()).hexdigest()
    code = SCRIPT + "print(hashlib.sha256(numpy_net_bytes()).hexdigest(), 'torch' in sys.modules)"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    assert done.stdout.split() == [here, "False"]


def test_a_weight_outside_the_causal_mask_or_an_inexact_layer_is_refused():
    order = WaveOrder.zigzag(2)
    mask = conv_mask(order, (3, 3), constrain=5)
    weight = mask.astype(np.int64)
    weight[0, 0, 1, 1] = 1  # the code itself
    with pytest.raises(ValueError, match="outside the causal mask"):
        IntegerContextNet(order, [IntLayer(weight, np.zeros(2, np.int64), 0, 0)])
    huge = mask.astype(np.int64) * (1 << 15)
    with pytest.raises(ValueError, match="2\\^53"):
        IntegerContextNet(order, [IntLayer(huge, np.zeros(2, np.int64), 0, 0)], input_max=1 << 36)


def test_truncated_or_padded_code_data_raises_an_entropy_error():
    order = WaveOrder.zigzag(2)
    _, net = _net(order, Alphabet.binary())
    symbols = np.random.default_rng(8).integers(0, 2, (2, 8, 8))
    data = encode_codes(net, Alphabet.binary(), symbols)
    with pytest.raises(EntropyError):
        decode_codes(net, Alphabet.binary(), data[:-4], symbols.shape)
    with pytest.raises(EntropyError):
        decode_codes(net, Alphabet.binary(), data + b"\0\0\0\0", symbols.shape)
