"""Evaluation images (listing, centre crops) and the classical codec registry."""

import shutil

import numpy as np
import pytest
from PIL import Image

from coolchic.evaluate import baselines, yuv
from coolchic.evaluate.datasets import centre_crop, list_images, load_image
from coolchic.evaluate.errors import EvaluationError
from coolchic.metrics import psnr_images
from tests.conftest import synthetic_image


def test_images_are_listed_sorted_and_filtered_by_stem_or_file_name(tmp_path):
    for name in ("b.png", "a.ppm", "c.png"):
        Image.fromarray(synthetic_image(8, 8)).save(tmp_path / name)
    (tmp_path / "notes.md").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.ppm", "b.png", "c.png"]
    assert [p.name for p in list_images(tmp_path, names=["c", "a.ppm"])] == ["c.png", "a.ppm"]


@pytest.mark.parametrize("setup, message", [
    (lambda d: d / "missing", "not found"),
    (lambda d: d, "no images"),
])
def test_a_missing_or_empty_folder_is_a_clear_error(tmp_path, setup, message):
    with pytest.raises(EvaluationError, match=message):
        list_images(setup(tmp_path))


def test_an_unknown_image_name_is_a_clear_error(tmp_path):
    Image.fromarray(synthetic_image(8, 8)).save(tmp_path / "a.png")
    with pytest.raises(EvaluationError, match="kodim99"):
        list_images(tmp_path, names=["kodim99"])


def test_centre_crop_takes_the_middle_and_keeps_short_sides_whole():
    pixels = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    crop = centre_crop(pixels, 4)
    assert crop.shape == (4, 4, 3)
    assert np.array_equal(crop, pixels[1:5, 3:7])  # odd margins: extra pixel bottom/right
    assert centre_crop(pixels, 8).shape == (7, 8, 3)
    assert centre_crop(pixels, None) is pixels
    with pytest.raises(EvaluationError):
        centre_crop(pixels, 0)


def test_load_image_crops_and_refuses_gray_images(tmp_path):
    Image.fromarray(synthetic_image(20, 30)).save(tmp_path / "rgb.png")
    Image.fromarray(synthetic_image(20, 30)[:, :, 0]).save(tmp_path / "gray.png")
    image = load_image(tmp_path / "rgb.png", crop=16)
    assert (image.name, image.pixels.shape, image.bit_depth) == ("rgb", (16, 16, 3), 8)
    with pytest.raises(EvaluationError, match="RGB"):
        load_image(tmp_path / "gray.png")


def test_ycbcr_round_trip_loses_at_most_one_level():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    back = yuv.ycbcr_to_rgb(yuv.to_uint8(yuv.rgb_to_ycbcr(rgb)))
    assert np.abs(back.astype(int) - rgb).max() <= 1
    grey = np.full((4, 4, 3), 77, np.uint8)
    assert np.allclose(yuv.rgb_to_ycbcr(grey)[1:], 128.0)  # grey has no chroma


def test_chroma_down_and_up_sampling_keeps_flat_and_linear_planes():
    flat = np.full((6, 8), 100.0)
    assert np.allclose(yuv.upsample_chroma(yuv.downsample_chroma(flat)), 100.0)
    ramp = np.tile(np.arange(8.0), (6, 1))
    up = yuv.upsample_chroma(yuv.downsample_chroma(ramp))
    assert np.allclose(up[:, 1:-1], ramp[:, 1:-1])  # centre-sited bilinear: exact inside
    assert yuv.pad_even(np.zeros((5, 7, 3))).shape == (6, 8, 3)


def _available(name):
    return baselines.CODECS[name].missing() is None


@pytest.mark.parametrize("name", [n for n in baselines.CODECS if n != "vvc420"])
def test_each_available_codec_round_trips_and_higher_quality_costs_more_bits(name):
    codec = baselines.CODECS[name]
    if not _available(name):
        pytest.skip(f"{name}: {codec.missing()}")
    rgb = synthetic_image(40, 56)
    low, high = codec.qualities[0], codec.qualities[-1]
    sizes, psnrs = [], []
    for quality in (low, high):
        data = codec.encode(rgb, quality)
        decoded = codec.decode(data, 40, 56)
        assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
        sizes.append(len(data))
        psnrs.append(psnr_images(rgb, decoded, 8))
    assert sizes[1] > sizes[0] and psnrs[1] > psnrs[0]
    assert codec.version()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_hevc_handles_odd_sizes():
    rgb = synthetic_image(33, 47)
    codec = baselines.CODECS["hevc444"]
    decoded = codec.decode(codec.encode(rgb, 22), 33, 47)
    assert decoded.shape == rgb.shape and psnr_images(rgb, decoded, 8) > 35


def test_a_missing_tool_is_reported_with_how_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    assert "ffmpeg" in baselines.CODECS["hevc444"].missing()
    assert "vvencapp" in baselines.CODECS["vvc420"].missing()


def test_an_unknown_codec_name_lists_the_known_ones():
    with pytest.raises(EvaluationError, match="jpeg420"):
        baselines.get_codec("bpg")
