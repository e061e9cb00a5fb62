"""End-to-end: encode -> bytes -> decode, determinism, rate estimate, 16-bit and gray."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from coolchic.bitstream import read_bitstream
from coolchic.complexity import mac_per_pixel
from coolchic.config import ARCHS
from coolchic.decode import decode, describe
from coolchic.encode import encode
from coolchic.metrics import psnr_images
from tests.conftest import synthetic_image


@pytest.fixture(scope="module")
def encoded():
    return encode(synthetic_image(), lmbda=1e-3, preset="fast", iterations=150, seed=1)


def test_decoding_gives_the_encoders_reconstruction_bit_for_bit(encoded):
    assert np.array_equal(decode(encoded.data), encoded.reconstruction)


def test_reported_psnr_and_bpp_are_those_of_the_decoded_file(encoded):
    r = encoded.report
    assert r.n_bytes == len(encoded.data)
    assert r.bpp == pytest.approx(8 * len(encoded.data) / (24 * 32))
    assert r.psnr_db == pytest.approx(psnr_images(synthetic_image(), decode(encoded.data), 8))
    img = synthetic_image()
    flat = np.broadcast_to(img.reshape(-1, 3).mean(0).round().astype(np.uint8), img.shape)
    assert r.psnr_db > psnr_images(img, flat, 8) + 2  # training learnt more than the mean colour


def test_decoding_with_one_and_two_threads_is_identical(encoded):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = decode(encoded.data)
        torch.set_num_threads(2)
        two = decode(encoded.data)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(one, two)


def test_decoding_in_a_fresh_single_threaded_process_is_identical(encoded, tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(encoded.data)
    out = tmp_path / "a.npy"
    code = ("import sys, numpy as np; from coolchic.decode import decode; "
            "np.save(sys.argv[2], decode(sys.argv[1]))")
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": ""}
    subprocess.run([sys.executable, "-c", code, str(path), str(out)], check=True, env=env)
    assert np.array_equal(np.load(out), encoded.reconstruction)


def test_same_seed_gives_the_same_bitstream():
    img = synthetic_image(12, 10)
    a = encode(img, lmbda=1e-2, iterations=20, seed=3).data
    b = encode(img, lmbda=1e-2, iterations=20, seed=3).data
    assert a == b


def test_info_reports_sections_and_complexity(encoded):
    info = describe(encoded.data)
    assert info.total_bytes == len(encoded.data)
    assert set(info.section_bytes) == {"CONFIG", "WEIGHTS", "LATENTS"}
    assert info.macs.total == pytest.approx(encoded.report.mac_per_pixel)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 1), (5, 3, 3), (9, 65, 1)])
def test_any_size_and_gray_images_round_trip(shape):
    h, w, c = shape
    img = synthetic_image(h, w, c, seed=h * w)
    result = encode(img, lmbda=1e-3, iterations=8)
    out = decode(result.data)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out, result.reconstruction)


def test_sixteen_bit_images_decode_to_sixteen_bits():
    img = synthetic_image(8, 8).astype(np.uint16) * 257
    result = encode(img, lmbda=1e-3, iterations=10)
    out = decode(result.data)
    assert out.dtype == np.uint16 and np.array_equal(out, result.reconstruction)
    assert read_bitstream(result.data)[0].bit_depth == 16


def test_default_configuration_costs_under_700_mac_per_pixel():
    for size in ((512, 768), (768, 512), (64, 64), (1080, 1920)):
        assert mac_per_pixel(ARCHS["default"], *size).total < 700


def test_bad_lambda_preset_and_arch_are_refused_with_value_errors():
    img = synthetic_image(4, 4)
    for kwargs in ({"lmbda": 0}, {"lmbda": -1.0}, {"lmbda": float("nan")},
                   {"lmbda": 1e-3, "preset": "nope"}, {"lmbda": 1e-3, "arch": "nope"},
                   {"lmbda": 1e-3, "device": "tpu"}):
        with pytest.raises(ValueError):
            encode(img, iterations=1, **kwargs)


def test_decoder_imports_no_training_code():
    # torch itself loads torch.optim on import, so the check is on our own modules: none
    # that the decoder loads is a training module or mentions an optimizer.
    code = (
        "import sys, pathlib; import coolchic.decode; "
        "mods = {n: m for n, m in sys.modules.items() if n.startswith('coolchic')}; "
        "bad = [n for n in mods if n in ('coolchic.train', 'coolchic.presets', 'coolchic.quant', "
        "'coolchic.encode')]; "
        "bad += [n for n, m in mods.items() if 'torch.optim' in pathlib.Path(m.__file__).read_text()]; "
        "print(bad); sys.exit(bool(bad))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_decoding_on_the_cpu_never_imports_torch():
    golden = Path(__file__).parent / "golden" / "tiny.bin"
    code = ("import sys; from coolchic.decode import decode; decode(sys.argv[1]); "
            "sys.exit('torch' in sys.modules)")
    subprocess.run([sys.executable, "-c", code, str(golden)], check=True)


def test_weight_scale_choice_is_the_cheapest_of_all_table_columns():
    from coolchic.entropy.coder import rate_bits
    from coolchic.entropy.tables import N_SCALE
    from coolchic.payload import ZERO_MEAN_ROW, best_scale_index

    rng = np.random.default_rng(0)
    values = np.round(rng.laplace(0, 40, 300)).astype(np.int64)
    values[:3] = [4000, -5000, 31]  # escapes
    zeros = np.zeros_like(values)
    brute = [rate_bits(values, zeros, np.full_like(values, ZERO_MEAN_ROW + s)) for s in range(N_SCALE)]
    scale, bits = best_scale_index(values)
    assert bits == pytest.approx(min(brute)) and brute[scale] == pytest.approx(min(brute))


def test_step_search_finds_the_minimum_of_a_unimodal_cost():
    from coolchic.quant import FRAC_RANGE, _downhill

    for target in range(FRAC_RANGE[0], FRAC_RANGE[1] + 1):
        calls = []

        def cost(f, t=target, calls=calls):
            calls.append(f)
            return (f - t) ** 2

        assert _downhill(cost, 8) == target
        assert len(calls) <= abs(target - 8) + 3


def test_auto_arch_picks_the_small_decoder_only_where_the_weights_weigh_on_the_file():
    from coolchic.config import SMALL_FROM, auto_arch, check_arch_name

    # the measured cases: 256x256 crops at 1e-2 and 2e-2 (lite-noconv), 4e-3 (default)
    assert auto_arch(2e-2, 256, 256) == auto_arch(1e-2, 256, 256) == "lite-noconv"
    assert auto_arch(4e-3, 256, 256) == "default"
    assert auto_arch(2e-2, 512, 768) == "default"  # six times the pixels
    assert auto_arch(SMALL_FROM * 6, 512, 768) == "lite-noconv"
    assert check_arch_name("auto") == "auto"
    with pytest.raises(ValueError, match="auto, default"):
        check_arch_name("huge")


def test_an_auto_encode_reports_and_writes_the_arch_it_picked():
    image = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    small = encode(image, lmbda=1e-2, iterations=4)  # 256 pixels: lite-noconv
    explicit = encode(image, lmbda=1e-2, iterations=4, arch="default")
    assert small.report.arch == "lite-noconv" and explicit.report.arch == "default"
    assert describe(small.data).config.arm == ARCHS["lite-noconv"].arm
    assert describe(small.data).config.synthesis == ARCHS["lite-noconv"].synthesis
    assert describe(explicit.data).config.arm == ARCHS["default"].arm
