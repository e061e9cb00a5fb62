import numpy as np
import torch

from coolchic.config import CONTEXT_COLS, CONTEXT_ROWS, context_offsets, grid_shapes, wavefront_slope
from coolchic.decoder.dispatch import decode_latents
from coolchic.entropy.fixedpoint import IntegerArm
from coolchic.entropy.latents import (
    coding_parameters,
    encode_latents,
    fill_buffer,
    latent_bits,
    make_schedule,
)
from coolchic.quant import quantize_layer


def _random_arm(seed=0, context=12):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(a, b) for a, b in ((context, 8), (8, 2))]
    return IntegerArm([quantize_layer(m.weight, m.bias, 8, 8) for m in layers])


def _random_grids(shapes, seed=0, spread=4):
    rng = np.random.default_rng(seed)
    return [np.round(rng.laplace(0, spread, s)).astype(np.int64) for s in shapes]


def test_every_context_neighbour_is_decoded_in_an_earlier_wave():
    for context in (1, 4, 8, 12):
        slope = wavefront_slope(context)
        for dr, dc in context_offsets(context):
            assert slope * dr + dc < 0


def test_schedule_visits_every_latent_once_in_nondecreasing_waves():
    shapes = grid_shapes(13, 21, 5)
    s = make_schedule(shapes, 12)
    assert len(s.order) == sum(h * w for h, w in shapes)
    assert len(np.unique(s.order)) == len(s.order)
    assert s.wave_bounds[0] == 0 and s.wave_bounds[-1] == len(s.order)


def test_schedule_orders_latents_by_wave_then_grid_then_row():
    for shapes in (grid_shapes(13, 21, 5), grid_shapes(9, 1, 3), [(5, 2), (9, 30), (1, 1)]):
        for context in (1, 4, 12):
            s = make_schedule(shapes, context)
            slope = wavefront_slope(context)
            keys, flat = [], []  # (wave, grid, row) of every latent, and its buffer index
            for k, (h, w) in enumerate(shapes):
                rows, cols = np.divmod(np.arange(h * w), w)
                keys.append(np.stack([slope * rows + cols, np.full(h * w, k), rows]))
                flat.append(s.starts[k] + (rows + CONTEXT_ROWS) * s.row_width + cols + CONTEXT_COLS)
            keys = np.concatenate(keys, axis=1)
            expected = np.concatenate(flat)[np.lexsort(keys[::-1])]
            assert np.array_equal(s.order, expected)
            waves = np.sort(keys[0])
            assert np.array_equal(s.wave_bounds, np.searchsorted(waves, np.arange(waves[-1] + 2)))


def test_latents_round_trip_through_the_wavefront_decoder():
    shapes = grid_shapes(19, 27, 4)
    grids = _random_grids(shapes, spread=20)
    grids[0][3, 4] = 5000  # an escape
    arm = _random_arm()
    schedule = make_schedule(shapes, 12)
    data = encode_latents(schedule, grids, arm)
    decoded = decode_latents(schedule, data, arm)
    for a, b in zip(grids, decoded):
        assert np.array_equal(a, b)
    bits = latent_bits(schedule, grids, arm)
    assert abs(8 * len(data) - bits) < 0.02 * bits + 128


def test_images_narrower_than_the_wavefront_slope_round_trip_despite_empty_waves():
    for h, w in ((9, 1), (7, 2), (1, 1)):
        shapes = grid_shapes(h, w, 3)
        schedule = make_schedule(shapes, 12)
        grids = _random_grids(shapes, seed=h)
        arm = _random_arm(seed=w)
        decoded = decode_latents(schedule, encode_latents(schedule, grids, arm), arm)
        assert all(np.array_equal(a, b) for a, b in zip(grids, decoded))
    assert (np.diff(make_schedule(grid_shapes(9, 1, 3), 12).wave_bounds) == 0).any()


def test_changing_a_later_latent_changes_no_earlier_probability():
    shapes = grid_shapes(10, 12, 3)
    schedule = make_schedule(shapes, 12)
    arm = _random_arm(seed=5)
    grids = _random_grids(shapes, seed=1)
    buffer = fill_buffer(schedule, grids)
    _, c0, r0 = coding_parameters(schedule, buffer, arm)
    p = len(schedule.order) // 3  # a latent in the middle of the decoding order
    buffer[schedule.order[p]] += 17
    _, c1, r1 = coding_parameters(schedule, buffer, arm)
    wave_of = np.searchsorted(schedule.wave_bounds, np.arange(len(schedule.order)), side="right") - 1
    up_to_p = wave_of <= wave_of[p]
    assert np.array_equal(c0[up_to_p], c1[up_to_p]) and np.array_equal(r0[up_to_p], r1[up_to_p])
    # the change is seen by some later latent, so the check above could fail
    assert not (np.array_equal(c0, c1) and np.array_equal(r0, r1))
