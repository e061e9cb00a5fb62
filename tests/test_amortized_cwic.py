"""System (a): the content-weighted codec (Li et al., CVPR 2018) and the training skeleton."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from coolchic.amortized import cwic, registry
from coolchic.amortized.codec import AmortizedCodec, write_stream
from coolchic.amortized.schedule import LrSchedule
from coolchic.amortized.training import TrainOptions, TrainProgress, load_model, stage_at, train
from coolchic.bitstream import BitstreamError, CodecId, read_bitstream
from coolchic.cli import app
from tests.conftest import synthetic_image

TINY = {"code_channels": 8, "levels": 4, "features": 8, "context_hidden": (2,), "map_hidden": (2,)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed=0, use_map=True):
    torch.manual_seed(seed)
    model = cwic.build(TINY)
    model.use_map = use_map
    return model


@pytest.mark.parametrize("use_map", [False, True], ids=["stage1", "stage2"])
def test_decompress_of_compress_is_the_encoders_reconstruction_bit_for_bit(use_map):
    model = _model(use_map=use_map)
    image = synthetic_image(20, 27)
    data = model.compress(image)
    header, _ = read_bitstream(data)
    assert header.codec_id == CodecId.CWIC and (header.height, header.width) == (20, 27)
    out = model.decompress(data)
    assert out.dtype == np.uint8 and out.shape == (20, 27, 3)
    assert np.array_equal(out, model.reconstruct(image))
    assert isinstance(model, AmortizedCodec) and registry.get("cwic").load() is cwic


def test_a_stream_is_refused_by_other_weights_and_corrupt_codes_raise_a_bitstream_error():
    model = _model()
    data = model.compress(synthetic_image(16, 16))
    with pytest.raises(BitstreamError, match="written by cwic weights"):
        _model(seed=1).decompress(data)
    bad = write_stream(model.entry, height=16, width=16, model_crc=model.model_crc(), quality=0,
                       fields=b"\x01", codes=b"\xff\xff\xff\xff")
    with pytest.raises(BitstreamError, match="corrupt CWIC codes"):
        model.decompress(bad)


def test_the_importance_map_keeps_n_over_l_channels_per_level():
    model = _model()
    p = torch.tensor([0.0, 0.3, 0.6, 0.99]).reshape(1, 1, 1, 4)  # levels 0, 1, 2, 3 of L = 4
    kept = model.mask(p)[0, :, 0, :].sum(dim=0)
    assert kept.tolist() == [2.0, 4.0, 6.0, 8.0]


def test_forward_gives_an_image_and_a_rate_with_gradients_through_binarizer_and_map():
    model = _model()
    x_hat, rate = model(torch.rand(2, 3, 16, 24))
    assert x_hat.shape == (2, 3, 16, 24) and rate.shape == (2,) and bool(torch.all(rate > 0))
    (x_hat.square().mean() + rate.mean()).backward()
    assert model.encoder_tail[-1].weight.grad.abs().sum() > 0  # through the binarizer
    assert model.importance[-1].weight.grad.abs().sum() > 0  # through the mask


def test_every_map_value_passes_a_gradient_to_the_groups_it_can_switch_even_at_the_top_level():
    model = _model()  # n = 8, L = 4: groups of 2 channels, steps at L p = 1, 2, 3
    for value, live in ((0.99, {3}), (0.80, {3}), (0.60, {2, 3}), (0.30, {1, 2}), (0.01, {1})):
        p = torch.tensor([[[[value]]]], requires_grad=True)
        for group in range(4):
            (grad,) = torch.autograd.grad(model.mask(p)[0, 2 * group].sum(), p)
            assert (float(grad) > 0) == (group in live), (value, group)


def test_the_map_penalty_acts_only_above_the_kept_target_and_only_in_stage_2():
    model = _model()
    x = torch.rand(2, 3, 16, 16)
    model.use_map = False
    assert float(model.training_terms(x)[2]) == 0.0
    model.use_map = True
    with torch.no_grad():
        model.importance[-1].weight.zero_()
        model.importance[-1].bias.fill_(3.0)  # p = 0.95 everywhere: every bit kept
    model.kept_target = 0.5
    _, _, penalty = model.training_terms(x)
    assert float(penalty.detach()) == pytest.approx(model.map_weight * 0.5)
    penalty.backward()
    assert float(model.importance[-1].bias.grad) > 0  # descent lowers the map
    model.kept_target = 1.0
    assert float(model.training_terms(x)[2].detach()) == 0.0
    x_hat, rate = model(x)
    assert torch.equal(x_hat, model.training_terms(x)[0]) and torch.equal(rate, model.training_terms(x)[1])


def test_stages_split_the_steps_in_order():
    assert [stage_at(cwic.STAGES, s, 4) for s in range(4)] == [0, 0, 1, 1]
    assert [stage_at(cwic.STAGES, s, 3) for s in range(3)] == [0, 0, 1]


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(synthetic_image(24, 32, seed=seed)).save(folder / f"{seed}.png")
    return folder


@pytest.mark.parametrize("schedule", [LrSchedule(), LrSchedule(kind="cosine", warmup=1, final_fraction=0.1)],
                         ids=["constant", "cosine"])
def test_an_interrupted_training_resumes_to_the_same_weights_as_an_uninterrupted_one(data_dir, tmp_path,
                                                                                      schedule):
    options = TrainOptions(steps=4, batch=2, crop=16, lr=1e-3, checkpoint_every=3, schedule=schedule)
    seen: list[TrainProgress] = []
    straight = train("cwic", data_dir, tmp_path / "a", options, config=TINY, callback=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4] and [p.stage for p in seen] == [0, 0, 1, 1]

    def stop_after_two(progress):
        if progress.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("cwic", data_dir, tmp_path / "b", options, config=TINY, callback=stop_after_two)
    resumed = train("cwic", data_dir, tmp_path / "b", options, config=TINY)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    shipped = load_model(tmp_path / "b" / "model.pt")
    assert shipped.use_map and shipped.model_crc() == straight.model_crc()
    with pytest.raises(ValueError, match="belongs to another run"):
        train("cwic", data_dir, tmp_path / "b", TrainOptions(steps=4, batch=3, crop=16), config=TINY)


def test_the_train_command_runs_and_refuses_bad_input_in_one_line(data_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["amortized", "train", "cwic", "--data", str(data_dir), "--steps", "1",
                                 "--batch", "1", "--crop", "16", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model.pt").exists()
    for args in (["progressive", "--data", str(data_dir)], ["cwic", "--data", str(tmp_path / "none")],
                 ["cwic", "--data", str(data_dir), "--crop", "12"]):
        bad = runner.invoke(app, ["amortized", "train", *args, "-o", str(tmp_path / "x")])
        assert bad.exit_code == 2 and "Traceback" not in bad.output
