"""Metric values on hand-computed cases, and the two data-set averaging conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coolchic.metrics import (
    MS_SSIM_MIN_SIDE,
    bpp,
    mean_psnr,
    ms_ssim,
    ms_ssim_db,
    mse,
    psnr,
    psnr_images,
    psnr_of_mean_mse,
)


def test_psnr_of_a_constant_offset_image_is_known():
    ref = np.full((4, 5, 3), 100, np.uint8)
    test = ref + np.uint8(3)
    assert mse(ref, test) == 9.0  # no uint8 wrap-around: computed in float64
    assert mse(test, ref) == 9.0
    assert psnr_images(ref, test, 8) == pytest.approx(20 * math.log10(255 / 3), abs=1e-12)
    wide = np.full((2, 2, 1), 1000, np.uint16)
    assert psnr_images(wide, wide - np.uint16(1), 16) == pytest.approx(
        20 * math.log10(65535), abs=1e-12)


def test_psnr_is_infinite_for_identical_images_and_uses_max_value():
    x = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert psnr_images(x, x, 8) == math.inf
    assert psnr(np.zeros(4), np.full(4, 0.1), max_value=1.0) == pytest.approx(20.0)


def test_rgb_psnr_pools_the_mse_over_channels():
    ref = np.zeros((1, 1, 3), np.uint8)
    test = np.array([[[3, 0, 0]]], np.uint8)  # MSE = 9 / 3 = 3 over all samples
    assert psnr_images(ref, test, 8) == pytest.approx(10 * math.log10(255**2 / 3))


def test_metrics_refuse_mismatched_shapes_and_bad_arguments():
    with pytest.raises(ValueError, match="same shape"):
        mse(np.zeros((2, 2, 3)), np.zeros((2, 2, 1)))
    with pytest.raises(ValueError, match="bit_depth must be 8 or 16"):
        psnr_images(np.zeros((1, 1, 1)), np.zeros((1, 1, 1)), 10)
    with pytest.raises(ValueError, match="max_value"):
        psnr(np.zeros(2), np.ones(2), max_value=0)


def test_bpp_counts_bits_of_the_whole_file_per_pixel():
    assert bpp(1000, 100, 80) == 1.0
    assert bpp(0, 1, 1) == 0.0
    assert bpp(3, 2, 3) == 4.0
    with pytest.raises(ValueError):
        bpp(10, 0, 5)


def test_the_two_averaging_conventions_on_a_hand_computed_example():
    mses = [1e-3, 1e-4]  # images in [0, 1]: 30 dB and 40 dB
    psnrs = [psnr_of_mean_mse([m], 1.0) for m in mses]
    assert psnrs == pytest.approx([30.0, 40.0])
    assert mean_psnr(psnrs) == pytest.approx(35.0)
    assert psnr_of_mean_mse(mses, 1.0) == pytest.approx(10 * math.log10(1 / 5.5e-4))
    assert psnr_of_mean_mse(mses, 1.0) == pytest.approx(32.5963731, abs=1e-6)
    assert psnr_of_mean_mse([0.0, 0.0], 255) == math.inf
    with pytest.raises(ValueError):
        mean_psnr([])


def test_ms_ssim_of_identical_images_is_one_and_noise_lowers_it():
    rng = np.random.default_rng(0)
    side = MS_SSIM_MIN_SIDE
    ref = rng.integers(0, 256, (side, side + 3, 3)).astype(np.uint8)
    assert ms_ssim(ref, ref, 8) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(ref.astype(int) + rng.integers(-20, 21, ref.shape), 0, 255).astype(np.uint8)
    value = ms_ssim(ref, noisy, 8)
    assert 0.0 < value < 1.0
    assert ms_ssim(noisy, ref, 8) == pytest.approx(value, abs=1e-12)
    gray = ref[:, :, 0].astype(np.uint16) * 257
    assert ms_ssim(gray, gray, 16) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_is_nan_for_images_too_small_for_five_scales():
    x = np.zeros((MS_SSIM_MIN_SIDE - 1, 400, 3), np.uint8)
    assert math.isnan(ms_ssim(x, x, 8))
    assert math.isnan(ms_ssim_db(ms_ssim(x, x, 8)))


def test_ms_ssim_db_is_minus_ten_log_of_the_complement():
    assert ms_ssim_db(0.9) == pytest.approx(10.0)
    assert ms_ssim_db(0.99) == pytest.approx(20.0)
    assert ms_ssim_db(1.0) == math.inf


def test_the_small_image_threshold_is_exactly_pytorch_msssims():
    import torch
    from pytorch_msssim import ms_ssim as library_ms_ssim

    x = torch.zeros(1, 1, MS_SSIM_MIN_SIDE - 1, MS_SSIM_MIN_SIDE - 1)
    with pytest.raises(AssertionError):
        library_ms_ssim(x, x, data_range=1.0)
    assert ms_ssim(np.zeros((MS_SSIM_MIN_SIDE,) * 2, np.uint8),
                   np.zeros((MS_SSIM_MIN_SIDE,) * 2, np.uint8), 8) == pytest.approx(1.0)
