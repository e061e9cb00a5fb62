"""The native decoder (coolchic/decoder_kernels.cpp) against the numpy paths: the same
latents bit for bit on valid streams of every shape and ARM, the same verdict on corrupt
ones, and a clean fall-back where it cannot be built. (Its synthesis against the numpy one:
tests/test_speed_paths.py.)"""

import numpy as np
import pytest
import torch

from coolchic import native_decoder as native
from coolchic.config import grid_shapes
from coolchic.entropy.coder import EntropyError
from coolchic.entropy.fixedpoint import IntegerArm
from coolchic.entropy.latents import decode_latents, encode_latents, make_schedule
from coolchic.quant import quantize_layer


def _kernel_or_skip() -> native.DecoderKernels:
    lib = native.kernels()
    if lib is None:
        pytest.skip(f"native latent decoder unavailable: {native.unavailable_reason()}")
    return lib


def _arm(seed: int, context: int, hidden: tuple[int, ...], gain: float = 1.0) -> IntegerArm:
    torch.manual_seed(seed)
    widths = (context, *hidden, 2)
    layers = [torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
    with torch.no_grad():
        for m in layers:
            m.weight.mul_(gain)
    return IntegerArm([quantize_layer(m.weight, m.bias, 8, 8) for m in layers])


def _grids(shapes, seed: int, spread: float):
    rng = np.random.default_rng(seed)
    return [np.round(rng.laplace(0, spread, s)).astype(np.int64) for s in shapes]


CASES = [  # (height, width, grids, context, hidden, spread)
    (19, 27, 4, 12, (12, 12), 20.0),
    (32, 40, 7, 12, (12,), 2.0),
    (9, 1, 3, 12, (8,), 5.0),  # narrower than the wavefront slope: empty waves
    (1, 1, 1, 4, (3,), 1.0),
    (17, 33, 5, 8, (8, 8, 8), 0.3),
    (24, 24, 5, 1, (), 60.0),  # no hidden layer; many escapes
    (13, 70, 3, 12, (64,), 8.0),  # widest layer allowed
    # the ARMs of coolchic.config.ARCHS, which the native decoder runs with their sizes
    # compiled in (the cases above run its general path, and default's and mid's too)
    (21, 37, 6, 8, (8,), 4.0),  # lite, lite-noconv
    (26, 19, 5, 8, (8, 8), 6.0),  # synth, lop
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-ctx{c[3]}-h{len(c[4])}")
def test_the_native_latent_decoder_gives_the_numpy_decoders_latents_bit_for_bit(case):
    _kernel_or_skip()
    h, w, n_grids, context, hidden, spread = case
    shapes = grid_shapes(h, w, n_grids)
    grids = _grids(shapes, seed=h * w, spread=spread)
    grids[0][0, 0] = 30000  # escapes far out, both signs
    grids[-1][-1, -1] = -29000
    arm = _arm(h + w, context, hidden, gain=3.0)
    schedule = make_schedule(shapes, context)
    data = encode_latents(schedule, grids, arm)
    fast = decode_latents(schedule, data, arm, kernel="native")
    slow = decode_latents(schedule, data, arm, kernel="numpy")
    for original, a, b in zip(grids, fast, slow):
        assert a.dtype == b.dtype == np.int64
        assert np.array_equal(a, b) and np.array_equal(a, original)


def test_corrupt_latent_data_gets_the_same_verdict_from_both_decoders():
    _kernel_or_skip()
    shapes = grid_shapes(16, 24, 4)
    grids = _grids(shapes, seed=3, spread=40.0)
    arm = _arm(5, 12, (12, 12))
    schedule = make_schedule(shapes, 12)
    data = bytearray(encode_latents(schedule, grids, arm))
    rng = np.random.default_rng(0)
    raised = 0
    for trial in range(60):
        bad = bytearray(data)
        if trial % 3 == 0:  # flip bits inside the words
            for _ in range(1 + trial % 5):
                i = int(rng.integers(4, len(bad)))
                bad[i] ^= 1 << int(rng.integers(0, 8))
        elif trial % 3 == 1:  # random words of the declared length
            bad[4:] = rng.integers(0, 256, len(bad) - 4, dtype=np.uint8).tobytes()
        else:  # a truncated stream with consistent length fields
            main = bad[4 : 4 + 4 * int.from_bytes(bad[:4], "little")]
            cut = int(rng.integers(0, len(main) // 4)) * 4
            bad = bytearray(int(cut // 4).to_bytes(4, "little") + main[:cut] + b"\0\0\0\0")
        verdicts = []
        for kernel in ("native", "numpy"):
            try:
                verdicts.append(decode_latents(schedule, bytes(bad), arm, kernel=kernel))
            except EntropyError:
                verdicts.append(None)
        fast, slow = verdicts
        assert (fast is None) == (slow is None)
        if fast is None:
            raised += 1
        else:
            assert all(np.array_equal(a, b) for a, b in zip(fast, slow))
    assert raised > 0  # the corruptions exercised the error paths


def test_a_container_whose_lengths_disagree_is_refused_before_decoding():
    _kernel_or_skip()
    shapes = grid_shapes(8, 8, 2)
    schedule = make_schedule(shapes, 12)
    arm = _arm(1, 12, (12,))
    data = encode_latents(schedule, _grids(shapes, 1, 3.0), arm)
    for bad in (data[:-1], data + b"\0", data[:3]):
        with pytest.raises(EntropyError):
            decode_latents(schedule, bad, arm, kernel="native")


def test_without_the_native_decoder_auto_decodes_with_numpy_and_native_says_why(monkeypatch):
    shapes = grid_shapes(12, 10, 3)
    schedule = make_schedule(shapes, 12)
    arm = _arm(2, 12, (12, 12))
    grids = _grids(shapes, 2, 6.0)
    data = encode_latents(schedule, grids, arm)
    monkeypatch.setattr(native, "_load", lambda: "no C++ compiler found (set CXX)")
    assert native.kernels() is None
    decoded = decode_latents(schedule, data, arm)
    assert all(np.array_equal(a, b) for a, b in zip(grids, decoded))
    with pytest.raises(ValueError, match="no C\\+\\+ compiler"):
        decode_latents(schedule, data, arm, kernel="native")
    with pytest.raises(ValueError, match="auto, native or numpy"):
        decode_latents(schedule, data, arm, kernel="fast")


def test_the_native_decoder_is_built_without_fast_math_or_fused_multiply_adds():
    assert not any("fast-math" in flag for flag in native.FLAGS)
    assert "-ffp-contract=off" in native.FLAGS


def test_the_sample_bitstream_decodes_to_the_same_image_with_either_decoder():
    _kernel_or_skip()
    from pathlib import Path

    from coolchic.decode import decode

    sample = Path(__file__).resolve().parent.parent / "samples" / "kodim23.bin"
    native_image = decode(sample, kernel="native")
    numpy_image = decode(sample, kernel="numpy")
    assert native_image.shape == (512, 768, 3) and np.array_equal(native_image, numpy_image)
