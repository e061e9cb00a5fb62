"""The amortized codecs through the main command line: `encode --codec`, `decode`, `info`, with
tiny freshly trained checkpoints (explicit files and a stand-in for the shipped folder)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from coolchic.amortized import checkpoints
from coolchic.amortized.training import TrainOptions, train
from coolchic.bitstream import CodecId, read_bitstream
from coolchic.cli import app
from coolchic.decode import decode
from tests.conftest import synthetic_image

runner = CliRunner()
TINY = {
    "cwic": {"code_channels": 8, "levels": 4, "features": 8, "context_hidden": (2,), "map_hidden": (2,)},
    "ccn": {"code_channels": 4, "levels": 4, "features": 8, "context_hidden": (2,), "context_depth": 1},
    "cpm": {"code_channels": 4, "centres": 3, "features": 8, "context_hidden": (3,)},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Folder with img.png and <model>/model.pt for each codec (2 training steps each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("amortized_cli")
    data = root / "data"
    data.mkdir()
    for seed in range(2):
        Image.fromarray(synthetic_image(24, 32, seed=seed)).save(data / f"{seed}.png")
    Image.fromarray(synthetic_image(20, 27, seed=5)).save(root / "img.png")
    for name, config in TINY.items():
        train(name, data, root / name, TrainOptions(steps=2, batch=1, crop=16, lr=1e-3), config=config)
    torch.set_num_threads(threads)
    return root


@pytest.fixture
def shipped(trained, tmp_path, monkeypatch):
    """A stand-in for the shipped checkpoints: cpm at qualities 40 and 80, nothing else."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(checkpoints, "FOLDER", folder)
    for quality in (40, 80):
        checkpoints.ship(trained / "cpm" / "model.pt", quality=quality)
    return folder


def _assert_clean_failure(result, message, must_not_exist=None):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    if must_not_exist is not None:
        assert not must_not_exist.exists()


@pytest.mark.parametrize("name", ["cwic", "ccn", "cpm"])
def test_encode_then_decode_with_a_checkpoint_gives_the_encoders_reconstruction(trained, tmp_path, name):
    weights = trained / name / "model.pt"
    out = tmp_path / "img.bin"
    result = runner.invoke(app, ["encode", str(trained / "img.png"), "--codec", name,
                                 "--checkpoint", str(weights), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "bpp" in result.stdout and "dB" in result.stdout and f"{name} quality 0" in result.stdout
    header, _ = read_bitstream(out.read_bytes())
    assert header.codec_id == CodecId[name.upper()]
    png = tmp_path / "img.png"
    result = runner.invoke(app, ["decode", str(out), "--checkpoint", str(weights), "-o", str(png)])
    assert result.exit_code == 0, result.output
    model = checkpoints.load(weights)
    expected = model.reconstruct(np.asarray(Image.open(trained / "img.png")))
    assert np.array_equal(np.asarray(Image.open(png)), expected)
    assert np.array_equal(decode(out, checkpoint=weights), expected)
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0
    assert f"{name} (id {int(header.codec_id)})" in info.stdout and "LATENTS" in info.stdout


def test_quality_picks_a_shipped_point_exactly_and_the_decoder_finds_it_again_by_the_streams_quality(
        trained, shipped, tmp_path):
    out = tmp_path / "q.bin"
    result = runner.invoke(app, ["encode", str(trained / "img.png"), "--codec", "cpm", "--quality", "80",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "cpm quality 80 (cpm-q80.pt)" in result.stdout
    assert "quality 80" in runner.invoke(app, ["info", str(out)]).stdout
    png = tmp_path / "q.png"
    assert runner.invoke(app, ["decode", str(out), "-o", str(png)]).exit_code == 0
    model = checkpoints.load_shipped("cpm", quality=80)
    assert np.array_equal(np.asarray(Image.open(png)),
                          model.reconstruct(np.asarray(Image.open(trained / "img.png"))))
    default = runner.invoke(app, ["encode", str(trained / "img.png"), "--codec", "cpm", "-o",
                                  str(tmp_path / "d.bin")])
    assert "cpm quality 40" in default.stdout  # nearest 50; ties go to the lower quality
    low, high = (tmp_path / "5.bin"), (tmp_path / "95.bin")
    for quality, path in (("5", low), ("95", high), ("40.5", low)):
        _assert_clean_failure(runner.invoke(app, ["encode", str(trained / "img.png"), "--codec", "cpm",
                                                  "--quality", quality, "-o", str(path)]),
                              f"no shipped cpm checkpoint of quality {quality}; cpm ships qualities 40, 80",
                              path)
    listed = runner.invoke(app, ["amortized", "list"])
    assert listed.exit_code == 0 and listed.stdout.splitlines() == [
        "cwic", "ccn", "cpm 40 80", "progressive"]
    (shipped / "cpm-q80.pt").unlink()
    _assert_clean_failure(runner.invoke(app, ["decode", str(out), "-o", str(tmp_path / "x.png")]),
                          "no shipped cpm checkpoint of quality 80", tmp_path / "x.png")


def test_a_missing_checkpoint_or_a_bad_option_gives_one_line(trained, shipped, tmp_path):
    img, out = str(trained / "img.png"), tmp_path / "bad.bin"
    cases = [
        (["--codec", "ccn"], "no shipped ccn checkpoint"),
        (["--codec", "nope"], "unknown codec 'nope'; expected one of coolchic, cwic, ccn, cpm"),
        (["--codec", "cwic", "--lmbda", "0.01"], "--lmbda only apply to the coolchic codec"),
        (["--codec", "cpm", "--quality", "50", "--checkpoint", str(trained / "cpm" / "model.pt")],
         "not both"),
        (["--codec", "cpm", "--quality", "120"], "quality must lie in 0..100"),
        (["--codec", "cpm", "--checkpoint", str(trained / "cwic" / "model.pt")],
         "holds cwic weights, not cpm"),
        (["--codec", "cpm", "--checkpoint", str(tmp_path / "none.pt")], "no such checkpoint file"),
        (["--checkpoint", str(trained / "cpm" / "model.pt")], "--checkpoint is for the amortized codecs"),
    ]
    for args, message in cases:
        _assert_clean_failure(runner.invoke(app, ["encode", img, "-o", str(out), *args]), message, out)
    coded = tmp_path / "ccn.bin"
    result = runner.invoke(app, ["encode", img, "--codec", "ccn", "--checkpoint",
                                 str(trained / "ccn" / "model.pt"), "-o", str(coded)])
    assert result.exit_code == 0, result.output
    png = tmp_path / "ccn.png"
    _assert_clean_failure(runner.invoke(app, ["decode", str(coded), "-o", str(png)]),
                          "no shipped ccn checkpoint of quality 0", png)
    _assert_clean_failure(runner.invoke(app, ["decode", str(coded), "--checkpoint",
                                              str(trained / "cpm" / "model.pt"), "-o", str(png)]),
                          "holds cpm weights, not ccn", png)
    data = coded.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) - 7])
    _assert_clean_failure(runner.invoke(app, ["decode", str(tmp_path / "cut.bin"), "-o", str(png)]),
                          "truncated", png)


def test_decoding_an_amortized_stream_loads_no_training_code(trained, tmp_path):
    weights = trained / "cpm" / "model.pt"
    out = tmp_path / "img.bin"
    result = runner.invoke(app, ["encode", str(trained / "img.png"), "--codec", "cpm",
                                 "--checkpoint", str(weights), "-o", str(out)])
    assert result.exit_code == 0, result.output
    code = (
        "import sys, pathlib; from coolchic.decode import decode; "
        "decode(sys.argv[1], checkpoint=sys.argv[2]); "
        "mods = {n: m for n, m in sys.modules.items() if n.startswith('coolchic')}; "
        "bad = [n for n in mods if n in ('coolchic.train', 'coolchic.presets', 'coolchic.quant', "
        "'coolchic.encode', 'coolchic.amortized.training')]; "
        "bad += [n for n, m in mods.items() if 'torch.optim' in pathlib.Path(m.__file__).read_text()]; "
        "print(bad); sys.exit(bool(bad))"
    )
    subprocess.run([sys.executable, "-c", code, str(out), str(weights)], check=True)


def test_shipping_keeps_the_weights_and_writes_every_config_field(trained, shipped, tmp_path):
    original = checkpoints.load(trained / "cpm" / "model.pt")
    copy = checkpoints.load_shipped("cpm", quality=40)
    assert copy.model_crc() == original.model_crc() and copy.quality == 40
    payload = torch.load(shipped / "cpm-q40.pt", weights_only=False)
    assert payload["quality"] == 40 and set(payload["config"]) == {
        "code_channels", "centres", "features", "sigma", "context_hidden", "context_kernel"}
    assert sorted(checkpoints.shipped("cpm")) == [40, 80] and checkpoints.shipped("cwic") == {}
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a coolchic checkpoint"):
        checkpoints.load(tmp_path / "junk.pt")


@pytest.mark.parametrize("name", ["cwic", "ccn", "cpm"])
def test_a_gray_image_decodes_to_a_gray_image(trained, tmp_path, name):
    weights = trained / name / "model.pt"
    gray = tmp_path / "gray.png"
    Image.fromarray(synthetic_image(20, 27, channels=1, seed=6)[:, :, 0]).save(gray)
    out, png = tmp_path / "gray.bin", tmp_path / "gray-out.png"
    assert runner.invoke(app, ["encode", str(gray), "--codec", name, "--checkpoint", str(weights),
                               "-o", str(out)]).exit_code == 0
    assert read_bitstream(out.read_bytes())[0].channels == 1
    result = runner.invoke(app, ["decode", str(out), "--checkpoint", str(weights), "-o", str(png)])
    assert result.exit_code == 0, result.output
    decoded = Image.open(png)
    assert decoded.mode == "L" and "20x27x1" not in result.stdout and "27x20x1" in result.stdout
    model = checkpoints.load(weights)
    pixels = np.asarray(Image.open(gray))[:, :, None]
    expected = model.reconstruct(pixels)
    assert expected.shape == (20, 27, 1)
    assert np.array_equal(np.asarray(decoded)[:, :, None], expected)
    assert "1 channel(s)" in runner.invoke(app, ["info", str(out)]).stdout
    from coolchic.amortized.api import encode as encode_amortized

    result = encode_amortized(gray, codec=name, checkpoint=weights)
    assert result.reconstruction.shape == (20, 27, 1) and result.data == out.read_bytes()
    assert np.array_equal(decode(out, checkpoint=weights), expected)
