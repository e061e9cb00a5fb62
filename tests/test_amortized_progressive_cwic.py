"""System (d) on the binary codes of system (a): tiny random-init cwic models, tiny images."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from coolchic.amortized import checkpoints, cwic
from coolchic.amortized import progressive_cwic as pc
from coolchic.amortized.progressive import build_model, compress, decompress, integer_net
from coolchic.cli import app
from coolchic.metrics import psnr_images
from tests.conftest import synthetic_image

TINY = {"code_channels": 8, "levels": 4, "features": 8, "context_hidden": (2,), "map_hidden": (2,)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cwic(seed: int = 0) -> cwic.Cwic:
    torch.manual_seed(seed)
    return cwic.build(TINY).eval()


def _coder(model: cwic.Cwic, *, layer_depth: int = 2):
    torch.manual_seed(1)
    coder = build_model(pc.layered_config(model, layer_depth=layer_depth, hidden=(2,)))
    coder.source_crc = model.model_crc()
    return coder


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for seed in range(2):
        Image.fromarray(synthetic_image(40, 48, seed=seed)).save(folder / f"{seed}.png")
    return folder


def test_cwic_codes_come_back_exactly_through_the_progressive_coder():
    model = _cwic()
    coder = _coder(model)
    image = synthetic_image(24, 32, seed=3)
    bits = pc.layered_code(model, image)
    assert bits.shape == (8, 3, 4) and bits.dtype == np.uint8
    net = integer_net(coder)
    assert np.array_equal(decompress(net, coder.config, compress(net, coder.config, bits)), bits)
    report = pc.image_report(coder, model, image, name="x")
    assert report.round_trip and report.layer_count == 4 and report.layer_bits == 2 * 3 * 4


def test_decoding_k_layers_gives_exactly_the_first_k_layers_and_zeros_after():
    model = _cwic()
    coder = _coder(model)
    bits = pc.layered_code(model, synthetic_image(24, 40, seed=4))
    net = integer_net(coder)
    for k in range(1, 5):
        config = dataclasses.replace(coder.config, coded_layer_count=k)
        out = decompress(net, config, compress(net, config, bits))
        assert np.array_equal(out[: 2 * k], bits[: 2 * k]) and not out[2 * k :].any()


def test_bytes_never_decrease_and_all_layers_decode_to_cwics_reconstruction_without_its_map():
    model = _cwic()
    coder = _coder(model)
    image = synthetic_image(48, 56, seed=5)
    report = pc.image_report(coder, model, image)
    assert list(report.n_bytes) == sorted(report.n_bytes)
    assert not model.use_map  # stage 1: cwic keeps every bit, as (d) with all layers
    assert report.psnr_db[-1] == psnr_images(image, model.reconstruct(image), 8)
    assert report.psnr_db[-1] == report.cwic_psnr_db
    assert report.cwic_stream_bytes == len(model.compress(image))
    assert report.bits_per_bit(4) == 8 * report.n_bytes[3] / (8 * 6 * 7)


def test_a_coder_fitted_on_another_cwic_model_is_refused():
    coder = _coder(_cwic(seed=0))
    other = _cwic(seed=1)
    with pytest.raises(ValueError, match="fitted on the codes of cwic model [0-9a-f]{8}, not of"):
        pc.image_report(coder, other, synthetic_image(16, 16))
    coder.source_crc = None
    with pytest.raises(ValueError, match="fitted on the codes of no cwic model"):
        pc.check_pair(coder, other)
    with pytest.raises(ValueError, match="layer_depth must divide the cwic model's 8 code channels"):
        pc.layered_config(other, layer_depth=3)


def test_fitting_lowers_the_loss_and_is_reproducible_for_a_seed(data_dir):
    model = _cwic()
    codes = pc.training_codes(model, sorted(data_dir.iterdir()))
    config = pc.layered_config(model, layer_depth=4, hidden=(2,))
    runs = [pc.fit_codes(codes, config, source_crc=model.model_crc(), steps=30, batch=2, crop=4,
                         lr=0.05, seed=7) for _ in range(2)]
    assert runs[0].loss == runs[1].loss and runs[0].model.source_crc == model.model_crc()
    first = pc.fit_codes(codes, config, source_crc=0, steps=1, batch=2, crop=4, lr=0.05, seed=7)
    assert runs[0].loss < first.loss
    with pytest.raises(ValueError, match="smaller than the crop of 6 code positions"):
        pc.fit_codes(codes, config, source_crc=0, steps=1, crop=6)


def test_a_saved_then_shipped_coder_loads_back_and_writes_identical_bytes(data_dir, tmp_path, monkeypatch):
    model = _cwic()
    codes = pc.training_codes(model, sorted(data_dir.iterdir()))
    fitted = pc.fit_codes(codes, pc.layered_config(model, layer_depth=2, hidden=(2,)),
                          source_crc=model.model_crc(), steps=5, batch=2, crop=4).model
    pc.save(fitted, tmp_path / "model.pt")
    monkeypatch.setattr(checkpoints, "FOLDER", tmp_path)
    assert checkpoints.ship(tmp_path / "model.pt", quality=50).name == "progressive-q50.pt"
    shipped = checkpoints.load_shipped("progressive")
    assert shipped.config == fitted.config and shipped.source_crc == model.model_crc()
    assert shipped.quality == 50
    image = synthetic_image(32, 40, seed=6)
    assert pc.image_report(shipped, model, image).n_bytes == pc.image_report(fitted, model, image).n_bytes


def _one_line_error(result, message):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr


def test_the_cli_fits_then_reports_every_layer_and_refuses_bad_input_in_one_line(data_dir, tmp_path):
    runner = CliRunner()
    weights = tmp_path / "cwic.pt"
    torch.save({"model": "cwic", "config": TINY, "state": _cwic().state_dict()}, weights)
    coder = tmp_path / "d" / "model.pt"
    fit = runner.invoke(app, ["amortized", "progressive-fit", "--data", str(data_dir), "--steps", "3",
                              "--cwic-checkpoint", str(weights), "--layer-depth", "4", "--hidden", "2",
                              "--batch", "2", "--crop", "4", "-o", str(coder),
                              "--log", str(tmp_path / "fit.tsv")])
    assert fit.exit_code == 0, fit.output
    assert coder.exists() and "bits/bit" in fit.stdout
    assert (tmp_path / "fit.tsv").read_text().splitlines()[1].startswith("3\t")
    image = tmp_path / "img.png"
    Image.fromarray(synthetic_image(24, 32, seed=8)).save(image)
    args = ["amortized", "progressive-cwic", "--checkpoint", str(coder), "--cwic-checkpoint", str(weights)]
    tsv = tmp_path / "r.tsv"
    result = runner.invoke(app, [*args, str(image), str(image), "--tsv", str(tsv)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "mean of 2" in result.stdout and "exact" in result.stdout and "dB k=2" in result.stdout
    assert len(tsv.read_text().splitlines()) == 3
    _one_line_error(runner.invoke(app, [*args, str(tmp_path / "none.png")]), "no such image file")
    _one_line_error(runner.invoke(app, ["amortized", "progressive-fit", "--data", str(data_dir),
                                        "--cwic-checkpoint", str(weights), "--layer-depth", "3"]),
                    "layer_depth must divide")
    _one_line_error(runner.invoke(app, ["amortized", "progressive-cwic", "--checkpoint", str(weights),
                                        "--cwic-checkpoint", str(weights), str(image)]),
                    "holds cwic weights, not progressive")


def test_the_shipped_progressive_coder_was_fitted_on_the_codes_of_the_shipped_cwic():
    pc.check_pair(checkpoints.load_shipped("progressive"), checkpoints.load_shipped("cwic"))
