"""The native decoder (coolchic/decoder_kernels.cpp) against the numpy paths: the same
latents bit for bit on valid streams of every shape and ARM, the same verdict on corrupt
ones, the same image from its synthesis in bands of rows, and a clean fall-back where it
cannot be built. (Pinned synthesis images: tests/test_speed_paths.py.)"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from coolchic import nativebuild
from coolchic.config import grid_shapes
from coolchic.decoder import native
from coolchic.decoder.constants import BICUBIC
from coolchic.decoder.dispatch import decode_latents, synthesize
from coolchic.decoder.latents import decode_waves
from coolchic.entropy.coder import EntropyError
from coolchic.entropy.fixedpoint import IntegerArm, QLayer
from coolchic.entropy.latents import buffer_layout, encode_latents, make_schedule
from coolchic.quant import quantize_layer


@pytest.fixture(params=[v.name for v in nativebuild.variants()])
def each_variant(request, monkeypatch):
    """The native decoder of one CPU variant (portable, x86-64-v3, ...): skipped where it is
    not installed or where this CPU lacks its instructions."""
    variant = next(v for v in nativebuild.variants() if v.name == request.param)
    if not (nativebuild.INSTALL_DIR / nativebuild.library_name(native.SOURCE, variant)).exists():
        pytest.skip(f"the {variant.name} native decoder is not installed")
    if variant not in nativebuild.runnable_variants():
        pytest.skip(f"this CPU cannot run the {variant.name} native decoder")
    monkeypatch.setattr(nativebuild, "runnable_variants", lambda: [variant])
    native._load.cache_clear()
    yield variant
    native._load.cache_clear()


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
    (40, 2, 5, 12, (12, 12), 3.0),  # narrower than the slope, many grids of one column
    (3, 50, 2, 12, (12,), 0.1),  # short and wide; almost every latent zero
    (67, 45, 7, 12, (12, 12), 90.0),  # escapes everywhere
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-ctx{c[3]}-h{len(c[4])}")
def test_the_native_latent_decoder_gives_the_numpy_decoders_latents_bit_for_bit(case, each_variant):
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


def test_corrupt_latent_data_gets_the_same_verdict_from_both_decoders(each_variant):
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


def test_the_native_decoder_needs_no_order_and_decodes_what_the_schedule_orders(each_variant):
    lib = _kernel_or_skip()
    for shapes, context, hidden in ((grid_shapes(23, 31, 5), 12, (12, 12)), (grid_shapes(9, 40, 4), 8, (8,)),
                                    (((1, 1),), 12, (12,)), (grid_shapes(40, 3, 3), 12, ()) ):
        grids = _grids(shapes, seed=4, spread=7.0)
        arm = _arm(6, context, hidden)
        schedule = make_schedule(shapes, context)
        data = encode_latents(schedule, grids, arm)
        layout = buffer_layout(shapes, context)
        assert not hasattr(layout, "order")
        buffer = layout.new_buffer()
        lib.decode_latents(layout, buffer, data, arm)
        assert all(np.array_equal(layout.grid_view(buffer, k), g) for k, g in enumerate(grids))
        reference = schedule.new_buffer()
        decode_waves(schedule, reference, data, arm)
        assert np.array_equal(buffer, reference)  # every cell, borders included


def test_a_layout_the_native_code_cannot_read_is_refused():
    lib = _kernel_or_skip()
    shapes = grid_shapes(16, 20, 3)
    arm = _arm(7, 12, (12,))
    layout = buffer_layout(shapes, 12)
    data = encode_latents(make_schedule(shapes, 12), _grids(shapes, 5, 4.0), arm)
    bad_layouts = [
        replace(layout, offsets=layout.offsets + 1),  # a neighbour that is not causal
        replace(layout, shapes=((16, layout.row_width - 3),) + layout.shapes[1:]),  # wider than its rows
        replace(layout, starts=layout.starts + 1),  # grid 0 not at the start of the buffer
    ]
    for bad in bad_layouts:
        with pytest.raises(ValueError, match="cannot read this layout"):
            lib.decode_latents(bad, layout.new_buffer(), data, arm)


def _qlayer(rng, out, inp, w_frac, *, gain=0.4, bias=0.0, conv=False):
    shape = (out, inp, 3, 3) if conv else (out, inp)
    weight = np.round(rng.normal(0, gain, shape) * (1 << w_frac)).astype(np.int64)
    b = np.round(rng.normal(bias, 0.1, out) * (1 << (w_frac + 1))).astype(np.int64)
    return QLayer(weight, b, w_frac, w_frac + 1)


SYNTH_CASES = [  # (height, width, grids, hidden, residual convs, channels, bit depth, taps)
    (37, 1600, 5, (14,), 4, 3, 8, "wild"),  # bands of 4 rows, the deepest ring of rows
    (50, 300, 7, (12,), 1, 1, 16, "bicubic"),  # gray, 16-bit
    (9, 2000, 3, (6, 5), 2, 2, 8, "mild"),  # two channels: the convolution's general path
    (23, 900, 4, (), 0, 4, 8, "mild"),  # four channels, no hidden layer, no convolution
    (61, 777, 6, (14,), 1, 3, 8, "wild"),  # odd sizes; the last band is short
    (1, 1, 1, (3,), 2, 3, 8, None),  # one pixel
    (5, 2, 3, (4,), 1, 1, 8, "mild"),  # narrower than a vector
    (130, 3, 6, (7,), 3, 3, 16, "wild"),  # a few pixels wide, many rows
    (40, 64, 7, (5,), 1, 3, 8, "gain"),  # cascades clipped at 2^36
    (1, 3000, 5, (6,), 4, 3, 8, "mild"),  # one row: rings no longer than the image
    (3, 4100, 4, (6,), 3, 1, 8, "mild"),  # fewer rows than a band
]


@pytest.mark.parametrize("case", SYNTH_CASES, ids=lambda c: f"{c[0]}x{c[1]}-c{c[5]}-conv{c[4]}-{c[7]}")
def test_the_native_synthesis_in_bands_of_rows_gives_the_numpy_image_bit_for_bit(case, each_variant):
    _kernel_or_skip()
    h, w, n_grids, hidden, n_conv, channels, depth, taps = case
    rng = np.random.default_rng(h * w + n_conv)
    grids = [np.round(rng.laplace(0, 3.0, s)).astype(np.int64) for s in grid_shapes(h, w, n_grids)]
    widths = (n_grids, *hidden, channels)
    # weights at 2^-12 or finer: even upsampled latents clipped at 2^36 keep every sum exact;
    # a small last layer around mid-grey, so that most pixels fall between the clips
    mlp = [_qlayer(rng, b, a, 12) for a, b in zip(widths[:-2], widths[1:-1])]
    mlp.append(_qlayer(rng, channels, widths[-2], 12, gain=0.03, bias=0.5))
    residual = [_qlayer(rng, channels, channels, 12, gain=0.03, conv=True) for _ in range(n_conv)]
    level_taps = None
    if taps == "mild":  # learned taps near the bicubic ones
        level_taps = np.array(BICUBIC) + rng.integers(-40, 41, size=(n_grids - 1, 4))
    elif taps == "wild":  # anywhere in the allowed range
        level_taps = rng.integers(-2048, 2049, size=(n_grids - 1, 4))
    elif taps == "gain":  # a gain of 4 to 8 per pass
        level_taps = rng.integers(1024, 2049, size=(n_grids - 1, 4))
    expected = synthesize(grids, mlp, residual, bit_depth=depth, taps=level_taps, kernel="numpy")
    image = synthesize(grids, mlp, residual, bit_depth=depth, taps=level_taps, kernel="native")
    assert image.dtype == expected.dtype and image.shape == (h, w, channels)
    assert np.array_equal(image, expected)
