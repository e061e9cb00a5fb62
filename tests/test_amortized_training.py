"""Training of the amortized models: data folders, validation split, schedules, device, named
configurations, recipe."""

import dataclasses
import json
import math

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import coolchic
from coolchic.amortized import checkpoints, registry
from coolchic.amortized.data import fixed_crops, split_files
from coolchic.amortized.schedule import LrSchedule, lr_at
from coolchic.amortized.training import (
    BEST,
    RECIPE,
    TrainOptions,
    image_files,
    load_model,
    parameter_count,
    train,
)
from coolchic.cli import app
from tests.conftest import synthetic_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def bsds_like(tmp_path):
    """train/ (2 images), test/ (1 image, one in a sub-folder), val/ (2 images), as BSDS500."""
    layout = {"train": ["a.png", "b.png"], "test": ["sub/c.png"], "val": ["d.png", "e.png"]}
    for folder, names in layout.items():
        for seed, name in enumerate(names):
            path = tmp_path / "bsds" / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(synthetic_image(24, 32, seed=seed)).save(path)
    (tmp_path / "bsds" / "train" / "notes.txt").write_text("not an image")
    return tmp_path / "bsds"


def test_several_data_folders_give_the_union_of_their_images_and_nothing_else(bsds_like):
    both = image_files([bsds_like / "train", bsds_like / "test"])
    assert [p.name for p in both] == ["c.png", "a.png", "b.png"]  # sorted by path: test/ < train/
    assert len(image_files(bsds_like)) == 5
    assert image_files(bsds_like / "train") == image_files([bsds_like / "train"])
    assert len(image_files([bsds_like / "train", bsds_like / "train"])) == 2  # each file once


def test_a_missing_or_empty_folder_among_several_raises(bsds_like, tmp_path):
    with pytest.raises(ValueError, match="no such data folder"):
        image_files([bsds_like / "train", tmp_path / "none"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        image_files([tmp_path / "empty"])
    with pytest.raises(ValueError, match="no data folder"):
        image_files([])


def test_the_train_command_takes_repeated_data_folders_and_reports_the_image_count(bsds_like, tmp_path):
    result = CliRunner().invoke(app, [
        "amortized", "train", "cwic", "--data", str(bsds_like / "train"), "--data", str(bsds_like / "test"),
        "--steps", "1", "--batch", "1", "--crop", "16", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "3 training images under" in result.output
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=False)["images"] == 3


# --- schedule, validation, device, named configs, recipe (issue 29: training that can reach the papers)

TINY = {"code_channels": 8, "levels": 4, "features": 8, "context_hidden": (2,), "map_hidden": (2,)}


@pytest.fixture
def images(tmp_path):
    """train/ (3 images) and val/ (2 images) of 24 x 32 pixels."""
    for folder, seeds in (("train", range(3)), ("val", range(10, 12))):
        (tmp_path / folder).mkdir()
        for seed in seeds:
            Image.fromarray(synthetic_image(24, 32, seed=seed)).save(tmp_path / folder / f"{seed}.png")
    return tmp_path


def _options(**kw):
    return TrainOptions(**{"steps": 4, "batch": 2, "crop": 16, "lr": 1e-3, **kw})


def _same_weights(a, b) -> bool:
    return all(torch.equal(value, b.state_dict()[key]) for key, value in a.state_dict().items())


def test_the_constant_schedule_is_the_peak_rate_itself_and_cosine_warms_up_then_falls():
    assert [lr_at(LrSchedule(), lr=3e-4, step=s, total=10) for s in range(10)] == [3e-4] * 10
    cosine = LrSchedule(kind="cosine", warmup=2, final_fraction=0.1)
    rates = [lr_at(cosine, lr=1.0, step=s, total=10) for s in range(10)]
    assert rates[:3] == [0.5, 1.0, 1.0]  # linear warm-up, then the peak
    assert all(a > b for a, b in zip(rates[2:], rates[3:])) and rates[-1] > 0.1
    assert lr_at(cosine, lr=1.0, step=10, total=10) == pytest.approx(0.1)
    step = LrSchedule(kind="step", every=3, factor=0.5)
    assert [lr_at(step, lr=1.0, step=s, total=9) for s in range(9)] == [1, 1, 1, .5, .5, .5, .25, .25, .25]


def test_a_bad_schedule_raises_naming_what_is_allowed():
    with pytest.raises(ValueError, match="constant, cosine, step"):
        LrSchedule(kind="linear")
    with pytest.raises(ValueError, match="every >= 1"):
        LrSchedule(kind="step")
    with pytest.raises(ValueError, match="final_fraction"):
        LrSchedule(kind="cosine", final_fraction=2.0)
    with pytest.raises(ValueError, match="cpu, cuda"):
        _options(device="tpu")


def test_the_validation_split_depends_on_file_names_only_and_leaves_both_sides_non_empty(tmp_path):
    files = [tmp_path / "a" / f"{i}.png" for i in range(10)]
    train_files, held = split_files(files, fraction=0.2)
    assert len(held) == 2 and sorted(train_files + held) == sorted(files) and not set(held) & set(train_files)
    assert split_files(files[::-1], fraction=0.2)[1] == held
    assert [p.name for p in split_files([tmp_path / "b" / p.name for p in files], fraction=0.2)[1]] == [
        p.name for p in held]
    assert len(split_files(files[:2], fraction=0.9)[0]) == 1
    for fraction in (0.0, 1.0):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            split_files(files, fraction=fraction)


def test_validation_crops_are_the_same_every_time_and_leave_the_training_generator_alone(images):
    files = image_files(images / "val")
    first = fixed_crops(files, count=5, crop=16, seed=0)
    assert first.shape == (5, 3, 16, 16) and torch.equal(first, fixed_crops(files, count=5, crop=16, seed=0))
    assert not torch.equal(first, fixed_crops(files, count=5, crop=16, seed=1))


def test_validating_changes_no_weight_and_keeps_the_best_model(images):
    plain = train("cwic", images / "train", images / "plain", _options(), config=TINY)
    seen = []
    validated = train("cwic", images / "train", images / "val-run", _options(val_every=1, val_crops=3),
                      config=TINY, val_data=images / "val", callback=seen.append)
    assert _same_weights(plain, validated)
    losses = [p.validation.loss for p in seen]
    assert [p.validation.step for p in seen] == [1, 2, 3, 4] and all(math.isfinite(v) for v in losses)
    best = torch.load(images / "val-run" / BEST, weights_only=False)
    assert best["val_loss"] == min(losses) and best["step"] == 1 + losses.index(min(losses))
    assert load_model(images / "val-run" / BEST).model_crc() != 0


def test_validation_images_are_held_out_or_separate_never_both_nor_shared(images):
    with pytest.raises(ValueError, match="not both"):
        train("cwic", images / "train", images / "x", _options(val_fraction=0.5), config=TINY,
              val_data=images / "val")
    with pytest.raises(ValueError, match="also training images"):
        train("cwic", images, images / "x", _options(), config=TINY, val_data=images / "val")
    train("cwic", images / "train", images / "held", _options(steps=1, val_fraction=0.34), config=TINY)
    assert json.loads((images / "held" / RECIPE).read_text())["images"] == {"train": 2, "validation": 1}


def test_the_recipe_records_the_run_and_its_seconds_across_a_resume(images):
    def stop_after_two(progress):
        if progress.step == 2:
            raise KeyboardInterrupt

    out = images / "run"
    with pytest.raises(KeyboardInterrupt):
        train("cwic", images / "train", out, _options(), config_name="small", callback=stop_after_two,
              command={"argv": "coolchic amortized train cwic"})
    first = json.loads((out / RECIPE).read_text())
    assert first["steps_done"] == 2 and not first["finished"] and first["seconds"] > 0
    model = train("cwic", images / "train", out, _options(), config_name="small")
    recipe = json.loads((out / RECIPE).read_text())
    assert recipe["steps_done"] == 4 and recipe["finished"] and recipe["seconds"] >= first["seconds"]
    assert recipe["model"] == "cwic" and recipe["config_name"] == "small" and recipe["config_overrides"] == {}
    assert recipe["parameters"] == parameter_count(model) == sum(p.numel() for p in model.parameters())
    assert recipe["config"]["code_channels"] == model.config.code_channels
    assert recipe["images"] == {"train": 3, "validation": 0} and recipe["device"] == "cpu"
    assert recipe["torch"] == torch.__version__ and recipe["coolchic"] == coolchic.__version__
    assert recipe["options"]["schedule"]["kind"] == "constant" and recipe["command"] is None
    assert not list(out.glob("*.tmp"))


def test_a_checkpoint_from_before_schedules_and_validation_resumes_bit_for_bit(images):
    straight = train("cwic", images / "train", images / "a", _options(), config=TINY)

    def stop_after_two(progress):
        if progress.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("cwic", images / "train", images / "b", _options(), config=TINY, callback=stop_after_two)
    path = images / "b" / "checkpoint.pt"
    saved = torch.load(path, weights_only=False)
    for key in ("schedule", "device", "val_fraction", "val_every", "val_crops"):
        del saved["options"][key]  # as the version before them wrote it
    del saved["seconds"], saved["cuda_rng"]
    torch.save(saved, path)
    assert _same_weights(straight, train("cwic", images / "train", images / "b", _options(), config=TINY))


def test_cuda_without_a_gpu_is_one_clear_error(images, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        train("cwic", images / "train", images / "x", _options(device="cuda"), config=TINY)
    result = CliRunner().invoke(app, ["amortized", "train", "cwic", "--data", str(images / "train"),
                                      "--device", "cuda", "-o", str(images / "x")])
    assert result.exit_code == 2 and "no CUDA device" in result.output and "Traceback" not in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_resumes_bit_for_bit_and_its_files_load_on_the_cpu(images):
    options = _options(device="cuda", val_every=2, val_crops=2)
    straight = train("cwic", images / "train", images / "a", options, config=TINY, val_data=images / "val")
    assert next(straight.parameters()).is_cuda

    def stop_after_two(progress):
        if progress.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("cwic", images / "train", images / "b", options, config=TINY, val_data=images / "val",
              callback=stop_after_two)
    assert _same_weights(straight, train("cwic", images / "train", images / "b", options, config=TINY,
                                         val_data=images / "val"))
    for name in ("model.pt", BEST, "checkpoint.pt"):
        state = torch.load(images / "b" / name, map_location="cpu", weights_only=False)["state"]
        assert all(t.device.type == "cpu" for t in state.values())
        assert load_model(images / "b" / name).model_crc() != 0
    recipe = json.loads((images / "b" / RECIPE).read_text())
    assert recipe["device"] == "cuda" and recipe["device_name"] == torch.cuda.get_device_name()


@pytest.mark.parametrize("name", ["cwic", "ccn", "cpm"])
def test_the_small_config_is_the_shipped_weights_size_and_every_named_config_builds(name):
    entry = registry.get(name)
    shipped = torch.load(checkpoints.shipped_path(name), map_location="cpu", weights_only=False)
    assert dataclasses.asdict(entry.load().build(entry.config("small")).config) == {
        k: tuple(v) if isinstance(v, list) else v for k, v in shipped["config"].items()}
    big = "large" if name == "ccn" else "paper"  # ccn's larger size is not its paper's network
    assert set(entry.configs()) == {"small", big}
    small, larger = (parameter_count(entry.load().build(entry.config(c))) for c in ("small", big))
    assert larger > small
    with pytest.raises(ValueError, match=f"expected one of small, {big}"):
        entry.config("huge")


def test_the_cli_lists_configs_refuses_an_unknown_one_and_logs_validation_lines(images):
    runner = CliRunner()
    listed = runner.invoke(app, ["amortized", "list", "--configs"])
    assert listed.exit_code == 0
    rows = [line.split(" ", 3) for line in listed.stdout.splitlines()]
    sizes = (("cwic", "paper"), ("ccn", "large"), ("cpm", "paper"))
    assert [r[:2] for r in rows] == [[m, c] for m, big in sizes for c in ("small", big)]
    assert rows[0][2] == str(parameter_count(registry.get("cwic").load().build({}))) and rows[0][3] == "{}"
    bad = runner.invoke(app, ["amortized", "train", "cwic", "--data", str(images / "train"), "--config",
                              "huge", "-o", str(images / "x")])
    assert bad.exit_code == 2 and "expected one of small, paper" in bad.output
    log = images / "log.tsv"
    result = runner.invoke(app, [
        "amortized", "train", "cwic", "--data", str(images / "train"), "--val-data", str(images / "val"),
        "--steps", "2", "--batch", "1", "--crop", "16", "--val-every", "1", "--val-crops", "2",
        "--schedule", "cosine", "--warmup", "1", "--log", str(log), "-o", str(images / "run")])
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in log.read_text().splitlines()]
    assert lines[0] == ["step", "stage", "loss", "psnr_db", "bpp", "seconds", "split", "lr"]
    assert [(r[0], r[6]) for r in lines[1:]] == [("1", "val"), ("2", "train"), ("2", "val")]
    recipe = json.loads((images / "run" / RECIPE).read_text())
    assert recipe["command"]["options"]["schedule"] == "cosine" and recipe["images"]["validation"] == 2
    assert (images / "run" / BEST).exists() and "parameters" in result.output
