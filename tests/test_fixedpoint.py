import numpy as np
import pytest
import torch

from coolchic.config import ArmConfig
from coolchic.entropy.fixedpoint import ARM_FRAC, IntegerArm
from coolchic.entropy.tables import LOG_SCALE_FRAC_BITS, LOG_SCALE_MIN_FP, MU_FRAC_BITS, N_SCALE
from coolchic.model.arm import Arm
from coolchic.quant import quantize_layer


def _arm_pair(seed: int = 0, frac: int = 10):
    torch.manual_seed(seed)
    arm = Arm(ArmConfig(context=12, hidden=(12, 12)))
    with torch.no_grad():
        for layer in arm.layers:
            layer.weight.normal_(0, 0.3)
            layer.bias.normal_(0, 0.3)
    layers = [quantize_layer(m.weight, m.bias, frac, frac) for m in arm.layers]
    return arm, IntegerArm(layers)


def test_integer_arm_matches_its_float_reference_within_quantization_error():
    arm, iarm = _arm_pair()
    rng = np.random.default_rng(1)
    ctx = rng.integers(-20, 21, size=(5000, 12)).astype(np.float64)
    centers, rows = iarm.table_rows(ctx)
    with torch.no_grad():
        ref = arm(torch.from_numpy(ctx).float()).double().numpy()
    delta = rows // N_SCALE - (1 << (MU_FRAC_BITS - 1))
    mu = centers + delta / (1 << MU_FRAC_BITS)
    log_scale = (rows % N_SCALE + LOG_SCALE_MIN_FP) / (1 << LOG_SCALE_FRAC_BITS)
    inside = (ref[:, 1] > -4.4) & (ref[:, 1] < 4.3)
    assert np.max(np.abs(mu - ref[:, 0])) < 0.08
    assert np.max(np.abs(log_scale - ref[:, 1])[inside]) < 0.1
    assert inside.mean() > 0.5


def test_integer_arm_is_identical_across_batchings_runs_and_thread_counts():
    _, iarm = _arm_pair(seed=3)
    rng = np.random.default_rng(2)
    ctx = rng.integers(-300, 301, size=(4000, 12)).astype(np.float64)
    whole = iarm.table_rows(ctx)
    pieces = [iarm.table_rows(ctx[i : i + 7]) for i in range(0, len(ctx), 7)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = iarm.table_rows(ctx)
    finally:
        torch.set_num_threads(threads)
    for k in range(2):
        assert np.array_equal(whole[k], np.concatenate([p[k] for p in pieces]))
        assert np.array_equal(whole[k], single[k])


def test_integer_arm_outputs_stay_in_table_range_for_extreme_inputs():
    _, iarm = _arm_pair(seed=4, frac=14)
    ctx = np.full((3, 12), 32767.0)
    ctx[1] = -32767.0
    ctx[2] = 0.0
    centers, rows = iarm.table_rows(ctx)
    assert rows.min() >= 0 and rows.max() < 32 * N_SCALE
    assert np.abs(centers).max() <= 32767


@pytest.mark.parametrize("frac", [2, 8, 14])
def test_hidden_activations_use_the_documented_fixed_point_scale(frac):
    assert ARM_FRAC == 8
    _, iarm = _arm_pair(frac=frac)
    centers, rows = iarm.table_rows(np.zeros((1, 12)))
    assert centers.dtype == np.int64 and rows.dtype == np.int64
