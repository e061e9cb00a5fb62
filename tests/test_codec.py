"""End-to-end: encode -> bytes -> decode, determinism, rate estimate, 16-bit and gray."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from coolchic.bitstream import read_bitstream
from coolchic.complexity import mac_per_pixel
from coolchic.config import ARCHS, UpsamplingConfig
from coolchic.decode import decode, describe
from coolchic.encode import effective_config, encode
from coolchic.metrics import psnr_images
from coolchic.presets import get_preset
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


def test_every_named_configuration_costs_under_700_mac_per_pixel():
    for name, config in ARCHS.items():
        for size in ((512, 768), (768, 512), (64, 64), (1080, 1920)):
            assert mac_per_pixel(config, *size).total < 700, name


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


def _plain_tensor_bits(values, scale, code):
    """Bits of a tensor at log-scale index `scale`, computed the plain way (per value)."""
    from coolchic.entropy.coder import rate_bits
    from coolchic.payload import ZERO_MEAN_ROW, coarse_row, shift_of

    k = shift_of(scale)
    coarse = values >> k
    bits = rate_bits(coarse, np.zeros_like(coarse), np.full_like(coarse, coarse_row(scale)))
    bits += rate_bits(np.array([scale]), np.array([code.centre]), np.array([ZERO_MEAN_ROW + code.scale]))
    return bits + k * values.size


@pytest.mark.parametrize("spread", [0.5, 3, 40, 900])
def test_weight_scale_choice_is_the_cheapest_of_all_scale_indices(spread):
    from coolchic.payload import S_MAX, W_SCALE_CODE, tensor_plan

    rng = np.random.default_rng(0)
    values = np.round(rng.laplace(0, spread, 300)).astype(np.int64)
    values[:3] = [4000, -5000, 31]  # escapes at small scales
    brute = [_plain_tensor_bits(values, s, W_SCALE_CODE) for s in range(S_MAX + 1)]
    scale, bits = tensor_plan(values, W_SCALE_CODE)
    assert bits == pytest.approx(min(brute)) and brute[scale] == pytest.approx(min(brute))


def test_wide_weights_cost_close_to_their_entropy_not_escapes():
    """Format 3 sends the low bits of wide tensors raw. Format 2 coded every value beyond
    +-30 as an escape (Exp-Golomb): 10.1 bits a value here, against 8.35 for the entropy."""
    from coolchic.entropy.coder import rate_bits
    from coolchic.payload import W_SCALE_CODE, ZERO_MEAN_ROW, shift_of, tensor_plan

    rng = np.random.default_rng(1)
    b = 60.0
    values = np.round(rng.laplace(0, b, 2000)).astype(np.int64)
    scale, bits = tensor_plan(values, W_SCALE_CODE)
    assert shift_of(scale) >= 2
    entropy = values.size * np.log2(2 * np.e * b)  # of a Laplace of scale b on unit bins, nearly
    assert bits < entropy + 0.05 * values.size
    zeros = np.zeros_like(values)
    escapes_only = min(rate_bits(values, zeros, np.full_like(values, ZERO_MEAN_ROW + s)) for s in range(144))
    assert bits < escapes_only - 1.5 * values.size


def test_coded_weights_size_matches_the_estimate_and_round_trips():
    from coolchic.config import ARCHS
    from coolchic.entropy.fixedpoint import QLayer
    from coolchic.payload import (
        PRIOR_ID_BITS,
        NetworkWeights,
        layer_shapes,
        pack_weights,
        unpack_weights,
        weights_bits,
    )

    rng = np.random.default_rng(2)
    # the layers alone (the taps: test_learned_upsampling)
    config = replace(ARCHS["synth"], upsampling=UpsamplingConfig())
    groups = {}
    for i, (name, shapes) in enumerate(layer_shapes(config, 3).items()):
        groups[name] = tuple(
            QLayer(np.round(rng.laplace(0, 10 ** (j % 3), w)).astype(np.int64),
                   np.round(rng.normal(120 * j, 5, b)).astype(np.int64), 3 + j + i, 9 - j)
            for j, (w, b) in enumerate(shapes))
    weights = NetworkWeights(groups["arm"], groups["mlp"], groups["residual"])
    data = pack_weights(weights, config, 3, prior_id=0)
    back = unpack_weights(data, config, 3)
    for a, b in zip(weights.layers(), back.layers()):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
        assert (a.w_frac, a.b_frac) == (b.w_frac, b.b_frac)
    estimate = (weights_bits(weights.layers()) + PRIOR_ID_BITS) / 8
    assert estimate <= len(data) <= estimate + 10  # one varint and the stream's last word


def test_config_packs_into_few_bytes_and_round_trips():
    from coolchic.bitstream import BitstreamError
    from coolchic.config import (
        ARCHS,
        ArmConfig,
        DecoderConfig,
        LatentConfig,
        SynthesisConfig,
        UpsamplingConfig,
    )
    from coolchic.payload import pack_config, unpack_config

    extreme = DecoderConfig(LatentConfig(12), ArmConfig(12, (64,) * 4), SynthesisConfig((64,) * 4, 4))
    smallest = DecoderConfig(LatentConfig(1), ArmConfig(1, ()), SynthesisConfig((), 0))
    for config in (*ARCHS.values(), extreme, smallest):
        data = pack_config(config)
        assert unpack_config(data) == config
    # 4 bytes; the learned-upsampling flag, last so that 4.0 payloads read as 0, adds one
    assert len(pack_config(replace(ARCHS["default"], upsampling=UpsamplingConfig()))) == 4
    assert len(pack_config(ARCHS["default"])) == 5
    for bad, why in ((b"", "empty"), (b"\x9a\x00", "not minimal"), (b"\xff" * 12, "trailing data")):
        with pytest.raises(BitstreamError, match=why):
            unpack_config(bad)


def test_step_search_finds_the_minimum_of_a_unimodal_cost():
    from coolchic.quant import FRAC_RANGE, SCAN_RADIUS, _step_search

    for target in range(FRAC_RANGE[0], FRAC_RANGE[1] + 1):
        calls = []

        def cost(f, t=target, calls=calls):
            calls.append(f)
            return (f - t) ** 2

        assert _step_search(cost, 8) == target
        assert len(set(calls)) <= 2 * SCAN_RADIUS + 1 + max(0, abs(target - 8) - SCAN_RADIUS + 1)


def test_step_search_looks_past_a_bump_that_stopped_the_old_search():
    from coolchic.quant import _step_search

    bumpy = {5: 3.0, 6: 2.0, 7: 2.5, 8: 1.0, 9: 1.5}  # from 6, the next step rises before the dip
    assert _step_search(lambda f: bumpy.get(f, 9.0), 6) == 8


def test_auto_arch_picks_the_small_decoder_only_where_the_weights_weigh_on_the_file():
    from coolchic.config import SMALL_FROM, SYNTH_FROM, auto_arch, check_arch_name

    # the measured cases: 256x256 crops at 1e-2 and 2e-2 (lite-noconv), 4e-3 (default)
    assert auto_arch(2e-2, 256, 256) == auto_arch(1e-2, 256, 256) == "lite-noconv"
    assert auto_arch(4e-3, 256, 256) == "default"
    assert auto_arch(SMALL_FROM * 6, 512, 768) == "lite-noconv"
    # below that, whole images: synth at low rates, default above (measured at 2e-2, 4e-3, 5e-4)
    assert auto_arch(2e-2, 512, 768) == auto_arch(SYNTH_FROM, 512, 768) == "synth"
    assert auto_arch(4e-3, 512, 768) == auto_arch(5e-4, 512, 768) == "default"
    assert check_arch_name("auto") == "auto" and check_arch_name("best") == "best"
    with pytest.raises(ValueError, match="auto, best, race, default"):
        check_arch_name("huge")


def test_an_auto_encode_reports_and_writes_the_arch_it_picked():
    image = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    small = encode(image, lmbda=1e-2, iterations=4)  # 256 pixels: lite-noconv
    explicit = encode(image, lmbda=1e-2, iterations=4, arch="default")
    assert small.report.arch == "lite-noconv" and explicit.report.arch == "default"
    assert describe(small.data).config.arm == ARCHS["lite-noconv"].arm
    assert describe(small.data).config.synthesis == ARCHS["lite-noconv"].synthesis
    assert describe(explicit.data).config.arm == ARCHS["default"].arm

def test_a_recipe_and_a_decoder_of_ones_own_encode_like_their_named_equals():
    from dataclasses import replace

    from coolchic.config import ArmConfig, DecoderConfig
    from coolchic.presets import get_preset

    image = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    named = encode(image, lmbda=1e-3, preset="medium", iterations=6, arch="default")
    own = encode(image, lmbda=1e-3, preset=get_preset("medium").scaled_to(6), arch=ARCHS["default"])
    assert own.data == named.data and own.report.arch == "custom"
    custom = DecoderConfig(arm=ArmConfig(context=4, hidden=(5,)))
    lr_changed = replace(get_preset("medium"), name="mine").scaled_to(6)
    result = encode(image, lmbda=1e-3, preset=lr_changed, arch=custom)
    assert result.report.preset == "mine" and result.report.iterations == 6
    assert describe(result.data).config.arm == custom.arm
    assert np.array_equal(decode(result.data), result.reconstruction)


def test_spec_weights_section_states_the_codes_constants():
    import re

    from coolchic import payload as p

    spec = (Path(__file__).parent.parent / "bitstream_spec.md").read_text()
    section = " ".join(spec[spec.index("### 5.2 WEIGHTS"):spec.index("### 5.3 LATENTS")].split())
    shift = re.search(r"SHIFT = \(([0-9, ]+)\)", section).group(1)
    assert tuple(int(v) for v in shift.split(",")) == p.SHIFT_SCALE
    assert f"S − SHIFT[k] ≤ {p.COARSE_MAX_SCALE}" in section
    assert f"scale index S (0..{p.S_MAX})" in section
    assert f"centre {p.W_FRAC_CODE.centre} and table row 16 × 144 + {p.W_FRAC_CODE.scale}" in section
    assert f"centre w_frac and row 16 × 144 + {p.B_FRAC_CODE.scale}" in section
    for code in (p.W_SCALE_CODE, p.B_SCALE_CODE):
        assert f"parameter centre {code.centre} and row 16 × 144 + {code.scale}" in section


def test_best_keeps_the_candidate_of_lowest_rd_cost_and_counts_progress_over_both():
    from coolchic.config import best_candidates

    image = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    lmbda = 1e-5  # small enough for auto to pick default on 256 pixels
    assert best_candidates(lmbda, 16, 16) == ("default", "synth")
    assert best_candidates(1e-2, 16, 16) == ("lite-noconv",)
    assert best_candidates(2e-2, 512, 768) == ("synth", "default")  # low rate, whole image
    seen = []
    best = encode(image, lmbda=lmbda, iterations=6, arch="best", callback=seen.append)
    singles = {name: encode(image, lmbda=lmbda, iterations=6, arch=name) for name in ("default", "synth")}

    def cost(r):
        return 10 ** (-r.report.psnr_db / 10) + lmbda * r.report.bpp

    winner = min(singles, key=lambda name: cost(singles[name]))
    assert best.report.arch == winner and best.data == singles[winner].data
    assert best.report.iterations == 12 and [p.iteration for p in seen] == list(range(1, 13))
    assert all(p.total == 12 for p in seen)
    assert describe(singles["synth"].data).config.synthesis.residual_convs == 2
    assert np.array_equal(decode(singles["synth"].data), singles["synth"].reconstruction)


def test_race_encodes_with_the_candidate_whose_short_run_costs_least():
    from coolchic.config import RACE_FRACTION, race_candidates
    from coolchic.quant import make_quantizer
    from coolchic.train import overfit, rd_loss

    image = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    lmbda = 1e-5
    assert race_candidates(lmbda, 16, 16) == ("default", "lop")
    assert race_candidates(1e-2, 16, 16) == ("lite-noconv",)
    assert race_candidates(2e-2, 512, 768) == ("synth", "default")
    seen = []
    raced = encode(image, lmbda=lmbda, iterations=40, arch="race", callback=seen.append)
    short = round(40 * RACE_FRACTION)  # each candidate's short run, in iterations
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    costs = {}
    for name in ("default", "lop"):
        config = effective_config(ARCHS[name], 16, 16)
        model = overfit(x, config, get_preset("fast").scaled_to(40).scaled_to(short), lmbda)
        with torch.no_grad():
            costs[name] = float(rd_loss(model, x, lmbda, make_quantizer("round"))[0])
    winner = min(costs, key=costs.get)
    assert raced.report.arch == winner
    assert raced.data == encode(image, lmbda=lmbda, iterations=40, arch=winner).data
    total = 2 * short + 40
    assert raced.report.iterations == total and [p.iteration for p in seen] == list(range(1, total + 1))
    # a race of one candidate is a plain encode
    single = encode(image, lmbda=1e-2, iterations=8, arch="race")
    assert single.report.arch == "lite-noconv" and single.report.iterations == 8
