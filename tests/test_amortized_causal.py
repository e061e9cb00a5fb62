"""Masks of the masked 3-D convolution, written out by hand, and the wavefront schedule."""

import numpy as np
import pytest
import torch

from coolchic.amortized.causal import Wavefront, WaveOrder, conv_mask
from coolchic.amortized.masked import ContextConfig, ContextModel, MaskedConv3d


def test_zigzag_input_masks_written_out_match_the_definition():
    # w = c + y + x; constrain 5 keeps the taps with (c_i - c_o) + dy + dx < 0
    m = conv_mask(WaveOrder.zigzag(2), (3, 3), constrain=5).astype(int)
    assert m.shape == (2, 2, 3, 3)
    assert m[0, 0].tolist() == [[1, 1, 0],
                                [1, 0, 0],
                                [0, 0, 0]]
    assert m[0, 1].tolist() == [[1, 0, 0],  # a later channel: only dy + dx < -1
                                [0, 0, 0],
                                [0, 0, 0]]
    assert m[1, 0].tolist() == [[1, 1, 1],  # an earlier channel: dy + dx < 1
                                [1, 1, 0],
                                [1, 0, 0]]
    assert m[1, 1].tolist() == m[0, 0].tolist()


def test_zigzag_hidden_masks_add_exactly_the_taps_of_the_same_wave():
    m5 = conv_mask(WaveOrder.zigzag(2), (3, 3), constrain=5).astype(int)
    m6 = conv_mask(WaveOrder.zigzag(2), (3, 3), constrain=6).astype(int)
    assert m6[0, 0].tolist() == [[1, 1, 1],
                                 [1, 1, 0],
                                 [1, 0, 0]]
    assert m6[0, 1].tolist() == [[1, 1, 0],
                                 [1, 0, 0],
                                 [0, 0, 0]]
    assert m6[1, 0].tolist() == [[1, 1, 1],
                                 [1, 1, 1],
                                 [1, 1, 0]]
    assert np.all(m6 >= m5)


def test_groups_repeat_the_code_level_mask_in_blocks_of_consecutive_channels():
    order = WaveOrder.zigzag(3)
    code = conv_mask(order, (3, 5), constrain=6)
    m = conv_mask(order, (3, 5), constrain=6, group_in=2, group_out=4)
    assert m.shape == (12, 6, 3, 5)
    for o in range(12):
        for i in range(6):
            assert np.array_equal(m[o, i], code[o // 4, i // 2])


def test_channel_major_mask_sees_the_causal_half_of_its_own_channel_and_all_earlier_channels():
    m = conv_mask(WaveOrder.channel_major(2, radius=1), (3, 3), constrain=5).astype(int)
    assert m[0, 0].tolist() == [[1, 1, 1],
                                [1, 0, 0],
                                [0, 0, 0]]
    assert m[1, 0].tolist() == [[1] * 3] * 3
    assert m[0, 1].tolist() == [[0] * 3] * 3


def test_progressive_mask_sees_whole_earlier_layers_and_the_zigzag_part_of_its_own_layer():
    order = WaveOrder.progressive(layer_count=2, layer_depth=2, radius=1)
    m = conv_mask(order, (3, 3), constrain=5).astype(int)
    for c_out in (2, 3):  # layer 1
        for c_in in (0, 1):  # layer 0
            assert m[c_out, c_in].tolist() == [[1] * 3] * 3
        assert m[c_in, c_out].sum() == 0  # layer 0 never reads layer 1
    zig = conv_mask(WaveOrder.zigzag(2), (3, 3), constrain=5).astype(int)
    assert np.array_equal(m[2:, 2:], zig)


def test_depth_limits_the_reach_along_code_channels():
    m = conv_mask(WaveOrder.zigzag(4), (3, 3), constrain=6, depth=1)
    reach = m.any(axis=(2, 3))
    assert not reach[3, 0] and not reach[3, 1] and reach[3, 2] and reach[3, 3]


@pytest.mark.parametrize("kwargs,message", [
    ({"constrain": 4}, r"constrain must be one of \(5, 6\)"),
    ({"constrain": 5, "group_in": 0}, "group_in and group_out"),
])
def test_bad_mask_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv_mask(WaveOrder.zigzag(2), (3, 3), **kwargs)
    with pytest.raises(ValueError, match="odd"):
        conv_mask(WaveOrder.zigzag(2), (2, 3), constrain=5)


@pytest.mark.parametrize("order", [
    WaveOrder.zigzag(3),
    WaveOrder.progressive(layer_count=3, layer_depth=1, radius=1),
    WaveOrder.channel_major(3, radius=1),
], ids=["zigzag", "progressive", "channel_major"])
def test_every_logit_depends_only_on_codes_of_earlier_waves(order):
    torch.manual_seed(0)
    model = ContextModel(order, ContextConfig(kernel_size=(3, 3), hidden=(3, 3), outputs=2))
    shape = (1, 3, 4, 5)
    codes = torch.randn(shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: model.double()(z), codes)
    # (C, outputs, H, W) outputs x (C, H, W) inputs: does output p move with input q?
    moves = jac[0].abs().sum(dim=1)[..., 0, :, :, :].reshape(60, 60) > 0
    c, y, x = np.meshgrid(range(3), range(4), range(5), indexing="ij")
    wave = order.waves(c, y, x).reshape(60)
    assert not np.any(moves.numpy() & (wave[None, :] >= wave[:, None]))
    assert moves.any()


def test_the_float_layer_applies_its_mask_to_the_weight():
    layer = MaskedConv3d(WaveOrder.zigzag(2), (3, 3), constrain=5, group_out=2)
    assert torch.all(layer.masked_weight()[layer.mask == 0] == 0)
    assert torch.count_nonzero(layer.masked_weight()) == int(layer.mask.sum())


def test_wavefront_covers_every_coded_position_once_in_wave_then_channel_row_column_order():
    order = WaveOrder.zigzag(3)
    rng = np.random.default_rng(0)
    coded = rng.random((3, 4, 6)) < 0.7
    front = Wavefront.build(order, (3, 4, 6), coded)
    assert sorted(front.flat().tolist()) == np.flatnonzero(coded).tolist()
    keys = list(zip(order.waves(front.c, front.y, front.x), front.c, front.y, front.x))
    assert keys == sorted(keys)
    for k in range(front.n_waves):
        c, y, x = front.wave(k)
        assert c.size and len(set(order.waves(c, y, x).tolist())) == 1
    full = Wavefront.build(order, (3, 4, 6))
    assert full.n_waves == order.n_waves(4, 6) == 3 + 3 + 5 and full.size == 72


def test_no_code_of_a_wave_is_in_the_context_of_another_code_of_that_wave():
    order = WaveOrder.progressive(layer_count=2, layer_depth=3, radius=2)
    mask = conv_mask(order, (5, 5), constrain=5)
    front = Wavefront.build(order, (6, 5, 7))
    for k in range(front.n_waves):
        c, y, x = front.wave(k)
        dy, dx = y[:, None] - y[None, :], x[:, None] - x[None, :]  # (input, output) offsets
        near = (np.abs(dy) <= 2) & (np.abs(dx) <= 2)
        taps = mask[c[None, :], c[:, None], np.clip(dy + 2, 0, 4), np.clip(dx + 2, 0, 4)]
        assert not np.any(near & taps)
