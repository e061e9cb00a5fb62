"""The command line through typer's CliRunner: success paths and every bad-input case give
exit 2, one line on stderr, no traceback and no output file."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from coolchic.cli import app
from tests.conftest import synthetic_image

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    Image.fromarray(synthetic_image(16, 20)).save(d / "img.png")
    result = runner.invoke(app, ["encode", str(d / "img.png"), "--lmbda", "0.001", "-o",
                                 str(d / "img.bin"), "--iterations", "12"])
    assert result.exit_code == 0, result.output
    return d


def _assert_clean_failure(result, must_not_exist=None):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0 and result.stderr.strip()
    if must_not_exist is not None:
        assert not must_not_exist.exists()


def test_encode_prints_bpp_psnr_and_time_and_writes_the_file(files):
    assert (files / "img.bin").stat().st_size > 20
    result = runner.invoke(app, ["encode", str(files / "img.png"), "-l", "0.01", "-o",
                                 str(files / "again.bin"), "--iterations", "4"])
    assert result.exit_code == 0
    assert "bpp" in result.stdout and "dB" in result.stdout and " s" in result.stdout


def test_decode_writes_a_png_that_equals_the_library_decode(files):
    from coolchic.decode import decode

    out = files / "img_decoded.png"
    result = runner.invoke(app, ["decode", str(files / "img.bin"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(out)), decode(files / "img.bin"))


def test_decode_defaults_to_the_bitstream_name_with_png(files):
    result = runner.invoke(app, ["decode", str(files / "img.bin")])
    assert result.exit_code == 0 and (files / "img.png").exists()


def test_info_shows_sections_and_mac_per_pixel(files):
    result = runner.invoke(app, ["info", str(files / "img.bin")])
    assert result.exit_code == 0
    for word in ("LATENTS", "WEIGHTS", "CONFIG", "MAC/pixel", "weight prior"):
        assert word in result.stdout


@pytest.mark.parametrize("mutation", ["truncate", "flip", "junk", "empty"])
def test_bad_bitstreams_are_refused_cleanly(files, mutation):
    data = (files / "img.bin").read_bytes()
    bad = {
        "truncate": data[: len(data) // 2],
        "flip": data[:20] + bytes([data[20] ^ 0x5A]) + data[21:],
        "junk": b"not a bitstream at all" * 10,
        "empty": b"",
    }[mutation]
    path = files / f"{mutation}.bin"
    path.write_bytes(bad)
    out = files / f"{mutation}.png"
    _assert_clean_failure(runner.invoke(app, ["decode", str(path), "-o", str(out)]), out)


def test_bad_images_and_arguments_are_refused_cleanly(files):
    (files / "notimg.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = files / "x.bin"
    cases = [
        ["encode", str(files / "notimg.png"), "-o", str(out)],
        ["encode", str(files / "missing.png"), "-o", str(out)],
        ["encode", str(files / "img.png"), "--lmbda", "0", "-o", str(out)],
        ["encode", str(files / "img.png"), "--lmbda", "-1", "-o", str(out)],
        ["encode", str(files / "img.png"), "--lmbda", "nan", "-o", str(out)],
        ["encode", str(files / "img.png"), "--preset", "nope", "-o", str(out)],
        ["encode", str(files / "img.png"), "--arch", "nope", "-o", str(out)],
        ["encode", str(files / "img.png"), "--iterations", "0", "-o", str(out)],
        ["encode", str(files / "img.png"), "-o", str(files / "no" / "dir" / "x.bin")],
        ["decode", str(files / "img.bin"), "-o", str(files / "no" / "dir" / "x.png")],
        ["decode", str(files / "missing.bin")],
        ["info", str(files / "missing.bin")],
    ]
    for args in cases:
        _assert_clean_failure(runner.invoke(app, args), out)


def test_encode_passes_threads_and_compile_and_refuses_bad_values(files):
    ok = runner.invoke(app, ["encode", str(files / "img.png"), "-o", str(files / "t.bin"),
                             "--iterations", "3", "--threads", "2", "--compile", "off"])
    assert ok.exit_code == 0, ok.output
    out = files / "bad.bin"
    for args in (["--threads", "0"], ["--compile", "sometimes"]):
        result = runner.invoke(app, ["encode", str(files / "img.png"), "-o", str(out),
                                     "--iterations", "3", *args])
        _assert_clean_failure(result, out)


def test_version_names_the_package_and_the_format_it_writes():
    from coolchic import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert f"coolchic {__version__}" in result.output and "format 5." in result.output


def test_several_bitstreams_decode_each_and_a_bad_one_is_reported_without_stopping_the_others(tmp_path):
    from pathlib import Path

    sample = (Path(__file__).resolve().parents[1] / "samples" / "kodim23.bin").read_bytes()
    (tmp_path / "a.bin").write_bytes(sample)
    (tmp_path / "b.bin").write_bytes(b"not a bitstream")
    (tmp_path / "c.bin").write_bytes(sample)
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, ["decode", *(str(tmp_path / f"{n}.bin") for n in "abc"), "-o", str(out)])
    assert result.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), np.asarray(Image.open(out / "c.png")))
    assert "b.bin" in result.output and "1 of 3" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["decode", str(tmp_path / "a.bin"), str(tmp_path / "c.bin"),
                                 "-o", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "existing folder" in result.output


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_encode_into_an_unwritable_folder_is_refused_before_training(tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(synthetic_image(8, 8)).save(image)
    result = runner.invoke(app, ["encode", str(image), "--lmbda", "1e-3", "-o", "/proc/self/x.bin",
                                 "--iterations", "50"])
    assert result.exit_code == 2
    assert "cannot write to /proc/self" in result.output


def test_an_encode_into_a_log_prints_a_progress_line_per_tenth_and_whole_summary_lines(tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(synthetic_image(16, 24)).save(image)
    result = runner.invoke(app, ["encode", str(image), "--lmbda", "1e-3", "--iterations", "40",
                                 "-o", str(tmp_path / "x.bin")])
    assert result.exit_code == 0, result.output
    progress = [line for line in result.output.splitlines() if line.startswith("encoding: ")]
    assert progress[0].startswith("encoding: 1/40") and progress[-1].startswith("encoding: 40/40")
    assert 4 <= len(progress) <= 11
    summary = [line for line in result.output.splitlines() if "bytes" in line]
    assert len(summary) == 1 and "MAC/pixel" in summary[0] and "encoded in" in summary[0]
